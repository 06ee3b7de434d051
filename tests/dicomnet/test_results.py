"""The DICOM result objects: a TID 1500 SR that dciodvfy (dicom3tools) and highdicom accept, with the
finding, band, probability, operating points and every box as a polyline on its image; a Secondary Capture
with the boxes burned in; and the final-call SR that names the first as its predecessor."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread

from classifier.decoding import decode_grayscale
from radiology.dicomnet import results
from tests.dicomnet import factory

MODEL = "lite0-cam-v1"


STUDY_UID = "1.2.826.0.1.3680043.8.498.1"


def source(size: int = 512, modality: str = "DX") -> tuple[Dataset, bytes]:
    data = factory.radiograph(size=size, modality=modality, study_uid=STUDY_UID)
    return dcmread(io.BytesIO(data), stop_before_pixels=True), data


def model_result(ds: Dataset, **overrides: object) -> results.ImageResult:
    values: dict[str, object] = {
        "source": ds,
        "probability": 0.83,
        "label": "fractured",
        "band": "fracture",
        "threshold": 0.264,
        "threshold_sensitive": 0.264,
        "threshold_specific": 0.61,
        "boxes": results.parse_boxes(
            [
                {"x0": 50, "y0": 60, "x1": 200, "y1": 220, "score": 0.71},
                {"x0": 300, "y0": 40, "x1": 380, "y1": 90, "score": 0.4},
            ]
        ),
    }
    values.update(overrides)
    return results.ImageResult(**values)  # type: ignore[arg-type]


def dciodvfy(dataset: Dataset, tmp_path: Path) -> str:
    path = tmp_path / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return run.stdout + run.stderr


def errors(report: str) -> list[str]:
    return [line for line in report.splitlines() if line.startswith("Error")]


def content_items(dataset: Dataset) -> list[Dataset]:
    items: list[Dataset] = []

    def walk(node: Dataset) -> None:
        for child in getattr(node, "ContentSequence", []):
            items.append(child)
            walk(child)

    walk(dataset)
    return items


def test_the_model_result_sr_is_a_valid_tid_1500_report(tmp_path: Path) -> None:
    dx, _ = source()
    cr, _ = source(modality="CR")
    sr = results.build_model_result_sr(
        results=[
            model_result(dx),
            model_result(cr, probability=0.12, label="not_fractured", band="no_fracture", boxes=()),
        ],
        model_version=MODEL,
        series_instance_uid=results.new_uid(),
        sop_instance_uid=results.new_uid(),
    )
    report = dciodvfy(sr, tmp_path)
    assert errors(report) == [], report
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    assert (sr.PatientID, sr.StudyInstanceUID) == (dx.PatientID, dx.StudyInstanceUID)

    content = factory.measurement_report(sr)
    groups = content.get_image_measurement_groups()
    rois = content.get_planar_roi_measurement_groups()
    assert len(groups) == 2
    assert len(rois) == 2  # two boxes on the DX, none on the CR
    probability = groups[0].get_measurements(name=results.PROBABILITY)[0]
    assert probability.value == pytest.approx(0.83)
    assert groups[1].get_measurements(name=results.PROBABILITY)[0].value == pytest.approx(0.12)
    band = groups[0].get_qualitative_evaluations(name=results.TRIAGE_BAND)[0]
    assert band.value == results.BANDS["fracture"]
    assert factory.evaluation(groups[1], results.FRACTURE_FINDING) == results.ABSENT
    points = {m.name.meaning: m.value for m in groups[0].get_measurements()}
    assert points[results.SPECIFIC_POINT.meaning] == pytest.approx(0.61)
    assert points[results.SENSITIVE_POINT.meaning] == pytest.approx(0.264)

    region = rois[0].roi
    assert region is not None
    assert region.value.tolist() == [[50, 60], [200, 60], [200, 220], [50, 220], [50, 60]]
    assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == dx.SOPInstanceUID
    assert rois[0].get_measurements(name=results.BOX_SCORE)[0].value == pytest.approx(0.71)
    # The model version is in the algorithm identification and names the observer device.
    texts = [str(getattr(item, "TextValue", "")) for item in content_items(sr)]
    assert MODEL in texts
    evidence = {
        sop.ReferencedSOPInstanceUID
        for series in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    assert evidence == {dx.SOPInstanceUID, cr.SOPInstanceUID}


def test_an_image_the_model_declined_is_a_valid_group_with_its_reason_and_no_finding(tmp_path: Path) -> None:
    dx, _ = source()
    cr, _ = source(modality="CR")
    declined = results.ImageNotAnalysed(
        source=cr, code="out_of_distribution", label="Image unlike the model's training images"
    )
    sr = results.build_model_result_sr(
        results=[model_result(dx), declined],
        model_version=MODEL,
        series_instance_uid=results.new_uid(),
        sop_instance_uid=results.new_uid(),
    )
    report = dciodvfy(sr, tmp_path)
    assert errors(report) == [], report
    groups = factory.measurement_report(sr).get_image_measurement_groups()
    assert len(groups) == 2
    assert factory.evaluation(groups[1], results.TRIAGE_BAND) == results.NOT_ANALYSED
    reason = factory.evaluation(groups[1], results.NOT_ANALYSED_REASON)
    assert (reason.value, reason.scheme_designator) == ("FR-NOT-ANALYSED-OUT-OF-DISTRIBUTION", results.SCHEME)
    assert reason.meaning == "Image unlike the model's training images"
    assert not groups[1].get_qualitative_evaluations(name=results.FRACTURE_FINDING)  # no finding claimed
    assert not groups[1].get_measurements()
    referenced = groups[1].source_images
    assert [ref.referenced_sop_instance_uid for ref in referenced] == [cr.SOPInstanceUID]


def test_boxes_outside_the_image_are_clipped_to_it() -> None:
    dx, _ = source(size=256)
    sr = results.build_model_result_sr(
        results=[
            model_result(dx, boxes=results.parse_boxes([[-20, -5, 300, 120, 0.9], [400, 400, 500, 500, 0.5]]))
        ],
        model_version=MODEL,
        series_instance_uid=results.new_uid(),
        sop_instance_uid=results.new_uid(),
    )
    rois = factory.measurement_report(sr).get_planar_roi_measurement_groups()
    assert len(rois) == 1  # the box wholly outside is dropped
    assert rois[0].roi is not None
    assert rois[0].roi.value.tolist() == [[0, 0], [256, 0], [256, 120], [0, 120], [0, 0]]


def test_the_secondary_capture_shows_the_boxes(tmp_path: Path) -> None:
    dx, data = source()
    full = dcmread(io.BytesIO(data))
    result = model_result(dx)
    gray = decode_grayscale(data)
    rgb = results.draw_boxes(gray, result, MODEL)
    sc = results.build_secondary_capture(
        source=full,
        pixels_rgb=rgb,
        series_instance_uid=results.new_uid(),
        sop_instance_uid=results.new_uid(),
        instance_number=1,
        model_version=MODEL,
    )
    assert errors(dciodvfy(sc, tmp_path)) == []
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert (sc.PatientID, sc.StudyInstanceUID) == (full.PatientID, full.StudyInstanceUID)
    assert sc.BurnedInAnnotation == "YES"
    pixels = dcmread(io.BytesIO(_encoded(sc))).pixel_array
    assert pixels.shape == (*gray.shape, 3)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    # The box's left edge (x = 50, y 60..220) is drawn in red; its inside is the radiograph, untouched.
    assert red[62:218, 50].mean() > 0.9
    assert not red[100:180, 80:170].any()
    assert np.array_equal(pixels[100:180, 80:170, 0], gray[100:180, 80:170])


def test_the_burned_in_boxes_are_numbered_from_the_strongest_beside_the_calibrated_caption(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cv2

    drawn: list[str] = []
    put_text = cv2.putText

    def spy(image: np.ndarray, text: str, *args: object, **kwargs: object) -> np.ndarray:
        drawn.append(text)
        return put_text(image, text, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(cv2, "putText", spy)
    dx, data = source()
    weaker_first = results.parse_boxes(
        [
            {"x0": 300, "y0": 40, "x1": 380, "y1": 90, "score": 0.4},
            {"x0": 50, "y0": 60, "x1": 200, "y1": 220, "score": 0.97},
        ]
    )
    results.draw_boxes(decode_grayscale(data), model_result(dx, boxes=weaker_first), MODEL)
    # No "0.97" beside "p=0.83": an uncalibrated box score would read as a second probability.
    assert drawn == ["1", "2", f"AI Fracture p=0.83 ({MODEL}) - not a diagnosis"]


def _encoded(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_the_final_call_sr_is_verified_and_names_the_model_result_sr(tmp_path: Path) -> None:
    dx, _ = source()
    first = results.build_model_result_sr(
        results=[model_result(dx)],
        model_version=MODEL,
        series_instance_uid=results.new_uid(),
        sop_instance_uid=results.new_uid(),
    )
    review = results.ImageReview(
        source=dx,
        decision="override",
        final_label="not_fractured",
        reason_code="false_alarm",
        reason_label="No fracture where the model saw one",
        reason_text="Nutrient canal, not a fracture line.",
    )
    final = results.build_final_call_sr(
        reviews=[review],
        model_result_sr=first,
        reviewer_name="Ada Lovelace",
        series_instance_uid=results.new_uid(),
        sop_instance_uid=results.new_uid(),
    )
    report = dciodvfy(final, tmp_path)
    assert errors(report) == [], report
    assert (final.CompletionFlag, final.VerificationFlag) == ("COMPLETE", "VERIFIED")
    assert final.VerifyingObserverSequence[0].VerifyingObserverName == "Lovelace^Ada"
    predecessor = final.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == first.SOPInstanceUID
    group = factory.measurement_report(final).get_image_measurement_groups()[0]
    assert factory.evaluation(group, results.FRACTURE_FINDING) == results.ABSENT
    assert factory.evaluation(group, results.REVIEW_DECISION) == results.DECISIONS["override"]
    reason = factory.evaluation(group, results.REVIEW_REASON)
    assert reason.meaning == "No fracture where the model saw one"
    assert "Nutrient canal, not a fracture line." in [
        str(getattr(i, "TextValue", "")) for i in content_items(final)
    ]
