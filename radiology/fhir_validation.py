"""Strict validation of the FHIR R4 (4.0.1) Bundles this application sends.

The structure is checked by fhirclient's models (SMART on FHIR's Python models, generated from the FHIR
4.0.1 specification: every element name, type, cardinality of lists and required element, and the format of
dates, instants and other primitives). The models cannot express three rules of the specification, so they
are checked here:

- JSON must not hold empty values ("", [], {}): FHIR R4 JSON, section 2.6.2.
- The codes of the required bindings of the elements this application writes (Bundle.type, the statuses,
  Patient.gender) must be in their value sets.
- Every reference must resolve to an entry of the Bundle (by fullUrl) of a resource type the element allows.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

FHIR_VERSION = "4.0.1"

# Required bindings (FHIR R4 value sets) of the coded elements written by radiology.fhir.
REQUIRED_CODES: dict[tuple[str, str], frozenset[str]] = {
    ("Bundle", "type"): frozenset(
        {
            "document",
            "message",
            "transaction",
            "transaction-response",
            "batch",
            "batch-response",
            "history",
            "searchset",
            "collection",
        }
    ),
    ("Patient", "gender"): frozenset({"male", "female", "other", "unknown"}),
    ("ImagingStudy", "status"): frozenset(
        {"registered", "available", "cancelled", "entered-in-error", "unknown"}
    ),
    ("Observation", "status"): frozenset(
        {
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    ),
    ("DiagnosticReport", "status"): frozenset(
        {
            "registered",
            "partial",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "appended",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    ),
}

# The resource types each Reference element may point at (FHIR R4 targetProfile of the element).
REFERENCE_TARGETS: dict[tuple[str, str], frozenset[str]] = {
    ("ImagingStudy", "subject"): frozenset({"Patient", "Device", "Group"}),
    ("Observation", "subject"): frozenset({"Patient", "Group", "Device", "Location"}),
    ("Observation", "derivedFrom"): frozenset(
        {
            "DocumentReference",
            "ImagingStudy",
            "Media",
            "QuestionnaireResponse",
            "Observation",
            "MolecularSequence",
        }
    ),
    ("Observation", "performer"): frozenset(
        {"Practitioner", "PractitionerRole", "Organization", "CareTeam", "Patient", "RelatedPerson"}
    ),
    ("DiagnosticReport", "subject"): frozenset({"Patient", "Group", "Device", "Location"}),
    ("DiagnosticReport", "result"): frozenset({"Observation"}),
    ("DiagnosticReport", "imagingStudy"): frozenset({"ImagingStudy"}),
}


class FhirValidationError(RuntimeError):
    """The Bundle does not conform: a bug when the Bundle was built here, reported as a server error."""


def validate_bundle(bundle: dict[str, Any]) -> dict[str, Any]:
    """Validate `bundle` (FHIR JSON as Python data) as an R4 Bundle; return the models' own serialisation,
    or raise FhirValidationError listing every problem."""
    from fhirclient.models.bundle import Bundle
    from fhirclient.models.fhirabstractbase import FHIRValidationError

    problems = [f"{path}: empty values are not allowed" for path in _empty_values(bundle, "Bundle")]
    try:
        model = Bundle(copy.deepcopy(bundle), strict=True)
        serialised: dict[str, Any] = model.as_json()
    except (FHIRValidationError, TypeError, ValueError) as exc:
        raise FhirValidationError("; ".join([*problems, _flatten(str(exc))])) from exc
    problems += _binding_problems(serialised)
    problems += _reference_problems(serialised)
    if problems:
        raise FhirValidationError("; ".join(problems))
    return serialised


def _flatten(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _empty_values(value: Any, path: str) -> Iterator[str]:
    if value in ("", [], {}) or (isinstance(value, str) and not value.strip()):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _empty_values(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _empty_values(item, f"{path}[{index}]")


def _resources(bundle: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "Bundle", bundle
    for index, entry in enumerate(bundle.get("entry", [])):
        resource = entry.get("resource")
        if isinstance(resource, dict):
            yield f"Bundle.entry[{index}].resource", resource


def _binding_problems(bundle: dict[str, Any]) -> list[str]:
    problems = []
    for path, resource in _resources(bundle):
        kind = resource.get("resourceType", "")
        for (resource_type, element), codes in REQUIRED_CODES.items():
            if kind == resource_type and element in resource and resource[element] not in codes:
                problems.append(
                    f"{path}.{element}: {resource[element]!r} is not in the required value set "
                    f"({', '.join(sorted(codes))})"
                )
    return problems


def _references_in(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(element path, reference) of every Reference with a `reference` under `value`."""
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str):
            yield path, reference
        for key, item in value.items():
            if key != "reference":
                yield from _references_in(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for item in value:
            yield from _references_in(item, path)


def _reference_problems(bundle: dict[str, Any]) -> list[str]:
    entries = bundle.get("entry", [])
    targets: dict[str, str] = {}
    problems = []
    for index, entry in enumerate(entries):
        full_url = entry.get("fullUrl")
        if not full_url:
            problems.append(f"Bundle.entry[{index}]: no fullUrl, so nothing can reference it")
            continue
        if full_url in targets:
            problems.append(f"Bundle.entry[{index}]: fullUrl {full_url} is used twice")
        targets[full_url] = entry.get("resource", {}).get("resourceType", "")
    for path, resource in _resources(bundle):
        if resource is bundle:
            continue
        kind = resource.get("resourceType", "")
        for element, reference in _references_in(resource, ""):
            where = f"{path}.{element}"
            if reference not in targets:
                problems.append(f"{where}: {reference} does not resolve to an entry of the Bundle")
                continue
            allowed = REFERENCE_TARGETS.get((kind, element))
            if allowed is None:
                problems.append(f"{where}: no known target types for {kind}.{element}")
            elif targets[reference] not in allowed:
                problems.append(
                    f"{where}: refers to a {targets[reference]}; {kind}.{element} allows "
                    f"{', '.join(sorted(allowed))}"
                )
    return problems
