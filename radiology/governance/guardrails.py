"""Intended-use guardrails: a radiograph the model must not be trusted on is *not analysed*, and the
reason is shown instead of a verdict.

Each check reads what the model's card says about its intended use and skips itself when the card (or
the study) does not know:

- modality: only plain radiographs (DX, CR, DR; card["intended_use"]["modalities"]) when the DICOM
  header names one; PNG/JPEG uploads carry no modality and pass;
- body region: card["intended_use"]["body_regions"] (the regions it was trained on), when the study's
  region is known (not "other");
- age: card["intended_use"]["min_age_years"], when the patient's birth date is known;
- colour: radiographs are grey; an image with more than card["ood"]["colour"]["threshold"] of its pixels
  clearly coloured (a photograph, a screenshot) is refused before the model sees it. The grayscale
  conversion in front of the model would otherwise hide the colour from the embedding distance: a
  landscape photo lies within the distance threshold (11.1 against 15.3 for lite0-det-v2.4);
- out of distribution: the distance of the backbone embedding to the training set's centroid
  (card["ood"]), with the threshold fitted on validation so that at most 1 % of in-distribution images
  are flagged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PLAIN_RADIOGRAPHY = ("DX", "CR", "DR")
MODALITY_NAMES = {
    "CT": "a CT image",
    "MR": "an MR image",
    "US": "an ultrasound image",
    "NM": "a nuclear-medicine image",
    "PT": "a PET image",
    "MG": "a mammogram",
    "XA": "an angiography image",
    "RF": "a fluoroscopy image",
    "OT": "an image of another kind",
    "SC": "a secondary capture (a screenshot or scan, not an acquisition)",
    "DOC": "a scanned document",
}


@dataclass(frozen=True)
class Refusal:
    code: str  # GuardrailRefusal.Code
    reason: str  # shown to clinicians instead of a verdict
    details: dict[str, Any] = field(default_factory=dict)


def intended_use(card: Mapping[str, Any]) -> dict[str, Any]:
    use = card.get("intended_use") or {}
    return dict(use) if isinstance(use, Mapping) else {}


def check_modality(modality: str, card: Mapping[str, Any]) -> Refusal | None:
    modality = (modality or "").strip().upper()
    if not modality:
        return None  # PNG / JPEG: nothing to check against
    allowed = [str(m).upper() for m in intended_use(card).get("modalities") or PLAIN_RADIOGRAPHY]
    if modality in allowed:
        return None
    what = MODALITY_NAMES.get(modality, f"modality {modality}")
    return Refusal(
        "modality",
        f"This is {what}; the model reads plain radiographs only ({', '.join(allowed)}).",
        {"modality": modality, "allowed": allowed},
    )


def check_body_region(region: str, card: Mapping[str, Any]) -> Refusal | None:
    regions = intended_use(card).get("body_regions")
    if not regions or not region or region == "other":
        return None
    if region in regions:
        return None
    return Refusal(
        "body_region",
        f"The model was not trained on the {region}; it was trained on {', '.join(regions)}.",
        {"body_region": region, "trained_regions": list(regions)},
    )


def age_in_years(born: dt.date, on: dt.date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def check_age(date_of_birth: dt.date | None, on: dt.date, card: Mapping[str, Any]) -> Refusal | None:
    minimum = intended_use(card).get("min_age_years")
    if minimum is None or date_of_birth is None:
        return None
    age = age_in_years(date_of_birth, on)
    if age >= int(minimum):
        return None
    return Refusal(
        "age",
        f"The patient is {age} years old; the model was validated from {int(minimum)} years "
        "(children's growth plates and fracture patterns differ).",
        {"age_years": age, "min_age_years": int(minimum)},
    )


def ood_reference(card: Mapping[str, Any]) -> dict[str, Any] | None:
    ood = card.get("ood")
    if not isinstance(ood, Mapping) or "centroid" not in ood or "threshold" not in ood:
        return None
    return dict(ood)


def check_distribution(distance: float, ood: Mapping[str, Any]) -> Refusal | None:
    threshold = float(ood["threshold"])
    if distance <= threshold:
        return None
    return Refusal(
        "out_of_distribution",
        "This image is unlike the radiographs the model was trained on (it may not be a "
        "radiograph, or the view, processing or device is unfamiliar). Read it without the model.",
        {"distance": round(float(distance), 4), "threshold": threshold},
    )


def colour_reference(card: Mapping[str, Any]) -> dict[str, Any] | None:
    ood = card.get("ood")
    colour = ood.get("colour") if isinstance(ood, Mapping) else None
    if not isinstance(colour, Mapping) or "threshold" not in colour:
        return None
    return dict(colour)


def check_colour(share: float, colour: Mapping[str, Any]) -> Refusal | None:
    threshold = float(colour["threshold"])
    if share <= threshold:
        return None
    return Refusal(
        "out_of_distribution",
        f"This is a colour picture ({share:.0%} of it clearly coloured), not a radiograph: radiographs are "
        "grey. It may be a photograph or a screenshot. Read it without the model.",
        {"check": "colour", "coloured_share": round(float(share), 4), "threshold": threshold},
    )


def check_metadata(
    *, modality: str, body_region: str, date_of_birth: dt.date | None, on: dt.date, card: Mapping[str, Any]
) -> Refusal | None:
    """The checks that need no pixels, in the order a reader would give them."""
    return (
        check_modality(modality, card)
        or check_body_region(body_region, card)
        or check_age(date_of_birth, on, card)
    )
