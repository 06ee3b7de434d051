"""The model registry and the promotion gate: validation, one active version, refusals, rollback."""

from __future__ import annotations

import shutil
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.utils import timezone

from radiology.governance.models import ModelVersion, ShadowPrediction
from radiology.governance.registry import (
    RegistryError,
    model_version_promote,
    model_version_register,
    model_version_rollback,
    promotion_gate,
)
from radiology.models import AuditEvent, Label
from tests.factories import PredictionFactory, RadiographFactory, ReviewFactory, StudyFactory

pytestmark = pytest.mark.django_db


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def test_register_model_validates_and_records_the_checksum(tiny_model_dir: Path) -> None:
    out = StringIO()
    call_command("register_model", str(tiny_model_dir), "--status", "active", stdout=out)
    version = ModelVersion.objects.get()
    assert version.version == "tiny-test" and version.status == "active"
    assert len(version.artifact_sha256) == 64 and version.card["version"] == "tiny-test"
    assert AuditEvent.objects.filter(action=AuditEvent.Action.MODEL_REGISTERED).count() == 1
    # The same artifact again is the same row, not a second version.
    call_command("register_model", str(tiny_model_dir), stdout=StringIO())
    assert ModelVersion.objects.count() == 1


def test_register_model_refuses_a_missing_card(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = _copy(tiny_model_dir, tmp_path / "m")
    (broken / "card.json").unlink()
    with pytest.raises(CommandError, match="no model card"):
        call_command("register_model", str(broken))
    assert not ModelVersion.objects.exists()


def test_register_model_refuses_a_corrupt_archive(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = _copy(tiny_model_dir, tmp_path / "m")
    data = bytearray((broken / "model.keras").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "model.keras").write_bytes(bytes(data))
    with pytest.raises(CommandError, match=r"damaged|not a \.keras"):
        call_command("register_model", str(broken))
    assert not ModelVersion.objects.exists()


def test_the_same_version_with_other_weights_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_version_register(path=tiny_model_dir)
    other = _copy(tiny_model_dir, tmp_path / "m")
    with (other / "model.keras").open("ab") as handle:
        handle.write(b"\0")  # a different file (zip readers ignore trailing bytes)
    with pytest.raises(RegistryError, match="already registered with other weights"):
        model_version_register(path=other)


def test_the_database_allows_one_active_version(tiny_model_dir: Path, shadow_model_dir: Path) -> None:
    model_version_register(path=tiny_model_dir, status="active")
    shadow = model_version_register(path=shadow_model_dir, status="shadow")
    shadow.status = ModelVersion.Status.ACTIVE
    with pytest.raises(IntegrityError), transaction.atomic():
        shadow.save()
    with pytest.raises(RegistryError, match="already active"):
        ModelVersion.objects.filter(pk=shadow.pk).delete()
        model_version_register(path=shadow_model_dir, status="active")


def _reviewed_cases(n: int, *, active_good: bool, shadow_good: bool, seed: int = 0) -> None:
    """n reviewed radiographs in n/2 studies read by both versions; a good version ranks them well."""
    rng = np.random.default_rng(seed)
    studies = [StudyFactory.create() for _ in range(max(1, n // 2))]
    for i in range(n):
        truth = i % 2 == 0

        def score(good: bool, truth: bool = truth) -> float:
            base = (0.75 if truth else 0.25) if good else 0.5
            return float(np.clip(base + rng.normal(0, 0.12 if good else 0.25), 0.01, 0.99))

        radiograph = RadiographFactory.create(study=studies[i // 2], status="predicted")
        a, s = score(active_good), score(shadow_good)
        prediction = PredictionFactory.create(
            radiograph=radiograph,
            model_version="tiny-test",
            probability=a,
            label=Label.FRACTURED if a >= 0.5 else Label.NOT_FRACTURED,
        )
        ReviewFactory.create(
            prediction=prediction,
            final_label=Label.FRACTURED if truth else Label.NOT_FRACTURED,
            decision="confirm" if (a >= 0.5) == truth else "override",
            reason_code="" if (a >= 0.5) == truth else "other",
        )
        ShadowPrediction.objects.create(
            radiograph=radiograph,
            model_version="tiny-shadow",
            probability=s,
            label=Label.FRACTURED if s >= 0.5 else Label.NOT_FRACTURED,
            band="",
            threshold=0.5,
            inference_ms=1.0,
        )


@pytest.fixture
def versions(tiny_model_dir: Path, shadow_model_dir: Path, admin: Any) -> tuple[ModelVersion, ModelVersion]:
    return (
        model_version_register(path=tiny_model_dir, status="active"),
        model_version_register(path=shadow_model_dir, status="shadow"),
    )


def test_promotion_needs_a_justification(versions: Any, admin: Any) -> None:
    with pytest.raises(RegistryError, match="justification"):
        model_version_promote(version="tiny-shadow", actor=admin, justification="ok")


def test_promotion_is_refused_with_too_few_reviewed_cases(versions: Any, admin: Any, settings: Any) -> None:
    settings.GOVERNANCE_PROMOTION_MIN_REVIEWED = 50
    _reviewed_cases(20, active_good=True, shadow_good=True)
    with pytest.raises(
        RegistryError, match="20 reviewed cases read by both versions; the gate needs at least 50"
    ):
        model_version_promote(version="tiny-shadow", actor=admin, justification="better on our wrists")
    assert ModelVersion.objects.get(version="tiny-test").status == "active"
    refusal = AuditEvent.objects.get(action=AuditEvent.Action.MODEL_PROMOTION_REFUSED)
    assert refusal.actor == admin and "50" in refusal.details["reasons"][0]


def test_the_gate_before_any_shared_reviewed_case_says_so_not_one_class(versions: Any) -> None:
    active, shadow = versions
    decision = promotion_gate(candidate=shadow, active=active)

    assert not decision.allowed
    assert decision.reasons[-1] == (
        "no AUC difference can be estimated before a reviewed case has been read by both"
    )
    assert not any("one class" in reason for reason in decision.reasons)


def test_reviewed_cases_of_one_class_are_named_as_such(versions: Any) -> None:
    active, shadow = versions
    _reviewed_cases(1, active_good=True, shadow_good=True)  # one fractured case

    decision = promotion_gate(candidate=shadow, active=active)

    assert "no AUC difference could be estimated (the reviewed cases hold only one class)" in decision.reasons


def test_promotion_is_refused_when_not_shown_non_inferior(versions: Any, admin: Any, settings: Any) -> None:
    settings.GOVERNANCE_PROMOTION_MIN_REVIEWED = 50
    _reviewed_cases(120, active_good=True, shadow_good=False)
    with pytest.raises(RegistryError, match="not shown non-inferior"):
        model_version_promote(version="tiny-shadow", actor=admin, justification="it is newer")
    assert ModelVersion.objects.get(version="tiny-shadow").status == "shadow"


def test_a_non_inferior_shadow_is_promoted_and_rollback_is_one_action(
    versions: Any, admin: Any, settings: Any
) -> None:
    settings.GOVERNANCE_PROMOTION_MIN_REVIEWED = 50
    _reviewed_cases(120, active_good=True, shadow_good=True, seed=1)
    model_version_promote(version="tiny-shadow", actor=admin, justification="non-inferior on 120 local cases")
    statuses = dict(ModelVersion.objects.values_list("version", "status"))
    assert statuses == {"tiny-shadow": "active", "tiny-test": "retired"}
    changes = AuditEvent.objects.filter(action=AuditEvent.Action.MODEL_STATUS_CHANGED).order_by("sequence")
    assert [(c.details["version"], c.details["to"]) for c in changes] == [
        ("tiny-test", "retired"),
        ("tiny-shadow", "active"),
    ]
    assert changes.latest("sequence").details["gate"]["reviewed_cases"] == 120

    model_version_rollback(actor=admin, justification="sensitivity dropped at site B")
    statuses = dict(ModelVersion.objects.values_list("version", "status"))
    assert statuses == {"tiny-shadow": "shadow", "tiny-test": "active"}
    with pytest.raises(RegistryError, match="no previously active version"):
        model_version_rollback(actor=admin, justification="once more, to be sure")
    activated_at = ModelVersion.objects.get(version="tiny-test").activated_at
    assert activated_at is not None and activated_at <= timezone.now()
