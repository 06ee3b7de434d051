"""The retraining loop: reviewed radiographs exported in the manifest layout, and classifier.train
trains two steps on the export."""

from __future__ import annotations

import csv
import datetime as dt
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command

from radiology.models import Adjudication, Label
from tests.conftest import IMAGES
from tests.factories import PatientFactory, PredictionFactory, RadiographFactory, ReviewFactory, StudyFactory

pytestmark = pytest.mark.django_db

FILES = [
    ("kaggle_fractured_1.jpg", True),
    ("kaggle_fractured_2.jpg", True),
    ("kaggle_not_fractured_1.jpg", False),
    ("kaggle_not_fractured_2.jpg", False),
    ("fracatlas_fractured_IMG0000480.jpg", True),
    ("fracatlas_not_fractured_IMG0000263.jpg", False),
]


@pytest.fixture
def reviewed(clinician: Any, admin: Any) -> list[Any]:
    out = []
    for i, (name, fractured) in enumerate(FILES):
        study = StudyFactory.create(patient=PatientFactory.create(), body_region="wrist")
        radiograph = RadiographFactory.create(
            study=study,
            status="predicted",
            format="JPEG",
            sha256=f"{i:064x}",
            image=ContentFile((IMAGES / name).read_bytes(), name="x.jpg"),
            dicom_attributes={"Manufacturer": "Acme", "StationName": "ED1"},
        )
        prediction = PredictionFactory.create(radiograph=radiograph, model_version="lite0-cam-v1")
        review = ReviewFactory.create(
            prediction=prediction,
            reviewer=clinician,
            decision="override",
            reason_code="other",
            final_label=Label.FRACTURED if fractured else Label.NOT_FRACTURED,
        )
        out.append((radiograph, review))
    # A second reader's adjudicated label outranks the first reader's final call.
    radiograph, review = out[2]
    Adjudication.objects.create(
        radiograph=radiograph,
        review=review,
        trigger="model_disagrees",
        state="decided",
        adjudicator=admin,
        label=Label.FRACTURED,
        decided_at=review.created_at,
    )
    RadiographFactory.create()  # never reviewed: not exported
    return out


def test_export_writes_the_manifest_with_provenance(reviewed: list[Any], tmp_path: Path) -> None:
    out = tmp_path / "export"
    call_command("export_training_set", "--since", "2000-01-01", "--out", str(out), stdout=StringIO())
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert len(rows) == 6
    by_radiograph = {int(r["radiograph"]): r for r in rows}
    adjudicated = by_radiograph[reviewed[2][0].pk]
    assert adjudicated["label"] == "fractured" and adjudicated["reference"] == "adjudicated"
    assert {r["split"] for r in rows} == {"train", "val"}
    first = rows[0]
    assert first["site"] == "Acme" and first["station"] == "ED1" and first["model_version"] == "lite0-cam-v1"
    assert first["reviewer_role"] == "clinician" and (out / first["path"]).is_file()


def test_export_refuses_a_folder_with_content(reviewed: list[Any], tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(CommandError, match="not empty"):
        call_command("export_training_set", "--since", "2000-01-01", "--out", str(tmp_path))


def test_export_since_a_later_date_is_empty(reviewed: list[Any], tmp_path: Path) -> None:
    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    call_command("export_training_set", "--since", tomorrow, "--out", str(tmp_path / "e"), stdout=StringIO())
    assert list(csv.DictReader((tmp_path / "e" / "manifest.csv").open())) == []


def test_classifier_train_trains_two_steps_on_the_export(reviewed: list[Any], tmp_path: Path) -> None:
    from classifier.train import main

    export = tmp_path / "export"
    call_command("export_training_set", "--since", "2000-01-01", "--out", str(export), stdout=StringIO())
    run = tmp_path / "run"
    args = ["--data", str(export), "--arch", "tiny", "--size", "32", "--epochs", "2", "--max-steps", "1"]
    args += ["--batch-size", "4", "--out", str(run), "--verbose", "0", "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    assert (run / "model.keras").is_file() and (run / "card.json").is_file()
