"""One orientation from upload to stored boxes: a real EXIF-rotated JPEG (orientations 3, 6, 8) is stored with
its EXIF-applied size (what a browser shows), classified in that frame, and its boxes are in that frame."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from radiology import services
from radiology.models import Prediction
from tests.conftest import FakePredictor, fixture_bytes
from worker import tasks

pytestmark = pytest.mark.django_db

EXIF_FILES = {
    3: "images/fracatlas_exif3_fractured_IMG0002588.jpg",
    6: "images/fracatlas_exif6_not_fractured_IMG0000789.jpg",
    8: "images/fracatlas_exif8_not_fractured_IMG0000439.jpg",
}


class RecordingPredictor(FakePredictor):
    """The fake predictor (one box over the middle of the upper-left quarter) that keeps what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[np.ndarray] = []

    def predict(self, images: Any, *, heatmaps: bool = True) -> Any:
        self.images.extend(images)
        return super().predict([np.full_like(image, 200) for image in images], heatmaps=heatmaps)


@pytest.mark.parametrize("orientation", sorted(EXIF_FILES))
def test_an_exif_rotated_upload_is_stored_classified_and_boxed_in_the_browsers_frame(
    orientation: int, clinician: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = fixture_bytes(EXIF_FILES[orientation])
    shown = np.array(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("L"))
    stored_height, stored_width = Image.open(io.BytesIO(data)).size[::-1]
    if orientation in (6, 8):
        assert (stored_width, stored_height) != (shown.shape[1], shown.shape[0])  # the turn matters here

    recording = RecordingPredictor()
    tasks.reset_predictor_for_tests()
    monkeypatch.setattr(tasks, "get_predictor", lambda: recording)
    result = services.study_create(
        uploaded_by=clinician,
        details=services.StudyDetails(
            mrn=f"EXIF-{orientation}",
            patient_name="Exif Test",
            accession_number=f"EX{orientation}",
            body_region="hand",
        ),
        files=[services.UploadedImage(name=f"exif{orientation}.jpg", data=data)],
    )
    (radiograph,) = result.accepted
    assert (radiograph.width, radiograph.height) == (shown.shape[1], shown.shape[0])

    tasks.classify_radiograph.apply(args=[radiograph.pk])
    (seen,) = recording.images
    assert seen.shape == shown.shape
    assert np.abs(seen.astype(int) - shown.astype(int)).mean() < 1.0
    prediction = Prediction.objects.get(radiograph=radiograph)
    (box,) = prediction.boxes
    width, height = shown.shape[1], shown.shape[0]
    assert box["x1"] == pytest.approx(width * 0.375, abs=0.1) and box["y1"] == pytest.approx(
        height * 0.375, abs=0.1
    )
