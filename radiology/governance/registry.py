"""The model registry: register an artifact, put it in shadow, promote it through the gate, roll back.

Every change of status is audited with who, when and why. Exactly one version is active (a database
constraint); the worker serves it and every shadow version.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from classifier.card import CardError, read_card, resolve_artifact
from classifier.data import sha256_file
from radiology.governance.comparison import Comparison, compare_versions
from radiology.governance.models import ModelVersion
from radiology.models import AuditEvent
from radiology.services.audit import audit_record
from radiology.services.errors import ServiceError


class RegistryError(ServiceError):
    """A registry action refused, with a reason an administrator can act on."""


def validate_artifact(path: Path) -> tuple[Path, dict[str, Any], str]:
    """(model file, card, SHA-256 of the model file) or RegistryError naming what is wrong.

    The card must pass the classifier's own validation; the ``.keras`` archive must be complete (every
    member's CRC checked) and hold a model configuration.
    """
    try:
        model_file, card_file = resolve_artifact(Path(path))
        card = read_card(card_file)
    except CardError as exc:
        raise RegistryError("invalid_artifact", str(exc)) from None
    try:
        with zipfile.ZipFile(model_file) as archive:
            damaged = archive.testzip()
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        raise RegistryError("invalid_artifact", f"{model_file} is not a .keras archive") from None
    if damaged is not None:
        raise RegistryError("invalid_artifact", f"{model_file} is damaged ({damaged} fails its checksum)")
    if "config.json" not in names:
        raise RegistryError("invalid_artifact", f"{model_file} holds no model configuration")
    return model_file, card, sha256_file(model_file)


def model_version_register(
    *, path: Path, actor: Any = None, status: str = ModelVersion.Status.CANDIDATE, reason: str = ""
) -> ModelVersion:
    """Register the artifact at ``path`` (a model directory or ``.keras`` file beside its card).

    Registering the same artifact again returns the existing row; the same version name with different
    weights is refused (a version names one set of weights forever). ``status`` may be candidate, shadow,
    or active (only when no version is active yet: afterwards activation goes through the gate).
    """
    model_file, card, checksum = validate_artifact(path)
    version = str(card["version"])
    if status not in (ModelVersion.Status.CANDIDATE, ModelVersion.Status.SHADOW, ModelVersion.Status.ACTIVE):
        raise RegistryError(
            "invalid_status", f"a new version can be candidate, shadow or active, not {status!r}"
        )
    with transaction.atomic():
        existing = ModelVersion.objects.select_for_update().filter(version=version).first()
        if existing is not None:
            if existing.artifact_sha256 != checksum:
                raise RegistryError(
                    "version_taken",
                    f"version {version} is already registered with other weights "
                    f"({existing.artifact_sha256[:12]}…); give the new model its own version",
                )
            return existing
        now = timezone.now()
        if status == ModelVersion.Status.ACTIVE and ModelVersion.objects.filter(status=status).exists():
            raise RegistryError(
                "active_exists",
                "a version is already active: register as shadow and promote it through the gate",
            )
        try:
            model_version = ModelVersion.objects.create(
                version=version,
                artifact_path=str(model_file.parent.resolve()),
                artifact_sha256=checksum,
                card=card,
                status=status,
                status_changed_at=now,
                status_changed_by=_person(actor),
                status_reason=reason or "registered",
                activated_at=now if status == ModelVersion.Status.ACTIVE else None,
            )
        except IntegrityError:
            raise RegistryError(
                "conflict", "another registration of this version or an activation won the race"
            ) from None
        audit_record(
            action=AuditEvent.Action.MODEL_REGISTERED,
            actor=actor,
            target=model_version,
            details={
                "version": version,
                "sha256": checksum,
                "path": model_version.artifact_path,
                "status": status,
            },
        )
    return model_version


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()


def model_versions_shadow() -> list[ModelVersion]:
    return list(ModelVersion.objects.filter(status=ModelVersion.Status.SHADOW).order_by("version"))


def model_version_ensure_active(*, path: Path) -> ModelVersion:
    """The active version; on a fresh installation the configured artifact becomes it (audited)."""
    active = model_version_active()
    if active is not None:
        return active
    try:
        return model_version_register(
            path=path, status=ModelVersion.Status.ACTIVE, reason="first model of this installation"
        )
    except RegistryError:
        active = model_version_active()  # another process registered it first
        if active is None:
            raise
        return active


def _person(actor: Any) -> Any:
    return actor if actor is not None and getattr(actor, "is_authenticated", False) else None


def _set_status(
    model_version: ModelVersion,
    status: str,
    *,
    actor: Any,
    reason: str,
    details: dict[str, Any] | None = None,
) -> None:
    previous = model_version.status
    now = timezone.now()
    model_version.status = status
    model_version.status_changed_at = now
    model_version.status_changed_by = _person(actor)
    model_version.status_reason = reason
    if status == ModelVersion.Status.ACTIVE:
        model_version.activated_at = now
    if previous == ModelVersion.Status.ACTIVE:
        model_version.deactivated_at = now
    model_version.save()
    audit_record(
        action=AuditEvent.Action.MODEL_STATUS_CHANGED,
        actor=actor,
        target=model_version,
        details={
            "version": model_version.version,
            "from": previous,
            "to": status,
            "reason": reason,
            **(details or {}),
        },
    )


def _require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if len(reason) < 10:
        raise RegistryError("justification_required", "Write a justification (at least 10 characters).")
    return reason


def model_version_set_status(*, version: str, status: str, actor: Any, reason: str) -> ModelVersion:
    """Candidate <-> shadow, or retire a version that is not active. Activation goes through the gate."""
    reason = _require_reason(reason)
    allowed = {ModelVersion.Status.CANDIDATE, ModelVersion.Status.SHADOW, ModelVersion.Status.RETIRED}
    if status not in allowed:
        raise RegistryError("invalid_status", "use promotion to make a version active")
    with transaction.atomic():
        model_version = _locked(version)
        if model_version.status == ModelVersion.Status.ACTIVE:
            raise RegistryError(
                "is_active", "the active version is replaced by promoting another, not retired"
            )
        if model_version.status != status:
            _set_status(model_version, status, actor=actor, reason=reason)
    return model_version


def _locked(version: str) -> ModelVersion:
    model_version = ModelVersion.objects.select_for_update().filter(version=version).first()
    if model_version is None:
        raise RegistryError("unknown_version", f"no model version {version!r} is registered")
    return model_version


@dataclass(frozen=True)
class GateDecision:
    allowed: bool
    reasons: list[str]
    reviewed_cases: int
    required_cases: int
    margin: float
    difference: float | None
    low: float | None
    high: float | None


def promotion_gate(
    *, candidate: ModelVersion, active: ModelVersion | None, comparison: Comparison | None = None
) -> GateDecision:
    """May ``candidate`` replace ``active``? Enough reviewed cases read by both, and non-inferior: the
    lower bound of the paired AUC difference (candidate - active) above the margin. ``comparison``: the
    page passes the one it shows; promotion itself computes a fresh one."""
    required = settings.GOVERNANCE_PROMOTION_MIN_REVIEWED
    margin = settings.GOVERNANCE_NONINFERIORITY_MARGIN
    reasons: list[str] = []
    if candidate.status != ModelVersion.Status.SHADOW:
        reasons.append(f"only a shadow version can be promoted ({candidate.version} is {candidate.status})")
    if active is None:
        return GateDecision(not reasons, reasons, 0, required, margin, None, None, None)
    if comparison is None:
        comparison = compare_versions(active=active.version, shadow=candidate.version)
    paired = comparison.paired_auc
    if comparison.cases < required:
        reasons.append(
            f"{comparison.cases} reviewed cases read by both versions; the gate needs at least {required}"
        )
    if comparison.cases == 0:
        reasons.append("no AUC difference can be estimated before a reviewed case has been read by both")
    elif paired is None or paired.low != paired.low:  # NaN: one class only, no interval
        reasons.append("no AUC difference could be estimated (the reviewed cases hold only one class)")
    elif paired.low <= margin:
        reasons.append(
            f"not shown non-inferior: the 95 % interval of the AUC difference reaches {paired.low:+.3f}, "
            f"at or below the margin {margin:+.3f}"
        )
    return GateDecision(
        not reasons,
        reasons,
        comparison.cases,
        required,
        margin,
        paired.difference if paired else None,
        paired.low if paired else None,
        paired.high if paired else None,
    )


def model_version_promote(*, version: str, actor: Any, justification: str) -> ModelVersion:
    """Make a shadow version active through the gate; the previous active version is retired."""
    justification = _require_reason(justification)
    with transaction.atomic():
        candidate = _locked(version)
        active = ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.ACTIVE).first()
        decision = promotion_gate(candidate=candidate, active=active)
        if not decision.allowed:
            refused = RegistryError("gate_refused", "Promotion refused: " + "; ".join(decision.reasons))
        else:
            refused = None
            gate = {
                "reviewed_cases": decision.reviewed_cases,
                "auc_difference": decision.difference,
                "interval": [decision.low, decision.high],
                "margin": decision.margin,
            }
            if active is not None:
                _set_status(
                    active,
                    ModelVersion.Status.RETIRED,
                    actor=actor,
                    reason=f"replaced by {version}: {justification}",
                )
            _set_status(
                candidate,
                ModelVersion.Status.ACTIVE,
                actor=actor,
                reason=justification,
                details={"gate": gate, "replaces": active.version if active else None},
            )
    if refused is not None:
        # Its own transaction: the refusal is evidence, kept although nothing else changed.
        audit_record(
            action=AuditEvent.Action.MODEL_PROMOTION_REFUSED,
            actor=actor,
            target=candidate,
            details={"version": version, "reasons": decision.reasons, "justification": justification},
        )
        raise refused
    return candidate


def model_version_rollback(*, actor: Any, justification: str) -> ModelVersion:
    """One action: the version active before the current one becomes active again; the current one goes
    back to shadow (its evidence keeps accumulating). No gate: going back to a known state is always
    allowed."""
    justification = _require_reason(justification)
    with transaction.atomic():
        current = ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.ACTIVE).first()
        previous = (
            ModelVersion.objects.select_for_update()
            .filter(status=ModelVersion.Status.RETIRED, deactivated_at__isnull=False)
            .order_by("-deactivated_at")
            .first()
        )
        if previous is None:
            raise RegistryError("nothing_to_roll_back", "no previously active version to go back to")
        if current is not None:
            _set_status(
                current, ModelVersion.Status.SHADOW, actor=actor, reason=f"rolled back: {justification}"
            )
        _set_status(
            previous,
            ModelVersion.Status.ACTIVE,
            actor=actor,
            reason=f"rollback: {justification}",
            details={"rollback_from": current.version if current else None},
        )
    return previous
