"""DICOM result objects, built with highdicom: the model's result as a TID 1500 measurement report
(Comprehensive 3D SR) plus one Secondary Capture per image with the boxes burned in, and the clinician's
final call as a second SR that names the first as its predecessor.

Pure construction: these functions take pydicom datasets and plain values and return datasets; reading
records and storing files is radiology.dicomnet.delivery's work.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DA, TM

from classifier.cells import Box

MANUFACTURER = "Fracture Review"
# Codes with no standard equivalent live in this private coding scheme (declared in each SR's
# CodingSchemeIdentificationSequence by highdicom when used).
SCHEME = "99FRACREV"

FRACTURE_FINDING = Code("125605004", "SCT", "Fracture of bone")
PRESENT = Code("52101004", "SCT", "Present")
ABSENT = Code("2667000", "SCT", "Absent")
PROCEDURE = Code("363680008", "SCT", "Radiographic imaging procedure")
UNITLESS = Code("1", "UCUM", "no units")
COMMENT = Code("121106", "DCM", "Comment")

TRIAGE_BAND = Code("FR-BAND", SCHEME, "Fracture triage band")
BANDS = {
    "fracture": Code("FR-BAND-FRACTURE", SCHEME, "Fracture"),
    "doubt": Code("FR-BAND-DOUBT", SCHEME, "Doubt"),
    "no_fracture": Code("FR-BAND-NO-FRACTURE", SCHEME, "No fracture"),
}
# An image the model declined (outside its intended use): its band, and why, instead of a finding.
NOT_ANALYSED = Code("FR-BAND-NOT-ANALYSED", SCHEME, "Not analysed")
NOT_ANALYSED_REASON = Code("FR-NOT-ANALYSED-REASON", SCHEME, "Why the model did not analyse the image")
PROBABILITY = Code("FR-PROBABILITY", SCHEME, "Calibrated probability of fracture")
SENSITIVE_POINT = Code("FR-THRESHOLD-SENSITIVE", SCHEME, "Sensitive operating point")
SPECIFIC_POINT = Code("FR-THRESHOLD-SPECIFIC", SCHEME, "Specific operating point")
LABEL_THRESHOLD = Code("FR-THRESHOLD", SCHEME, "Operating threshold of the label")
BOX_SCORE = Code("FR-BOX-SCORE", SCHEME, "Fracture localisation score")
REVIEW_DECISION = Code("FR-REVIEW-DECISION", SCHEME, "Clinician's decision on the model's result")
DECISIONS = {
    "confirm": Code("FR-CONFIRMED", SCHEME, "Confirmed"),
    "override": Code("FR-OVERRIDDEN", SCHEME, "Overridden"),
}
REVIEW_REASON = Code("FR-REVIEW-REASON", SCHEME, "Reason for the override")

SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
FINAL_SERIES_NUMBER = 9903


@dataclass(frozen=True)
class ImageResult:
    """One radiograph's prediction, with the DICOM source it is about (header only is enough for the SR)."""

    source: Dataset
    probability: float
    label: str
    band: str
    threshold: float
    threshold_sensitive: float | None
    threshold_specific: float | None
    boxes: Sequence[Box] = field(default_factory=tuple)


@dataclass(frozen=True)
class ImageNotAnalysed:
    """One radiograph the model declined: the guardrail's code and its label (GuardrailRefusal.Code)."""

    source: Dataset
    code: str
    label: str

    @property
    def reason(self) -> Code:
        return Code(f"FR-NOT-ANALYSED-{self.code.upper().replace('_', '-')}", SCHEME, self.label[:64])


@dataclass(frozen=True)
class ImageReview:
    source: Dataset
    decision: str  # Review.Decision value
    final_label: str  # Label value
    reason_code: str
    reason_label: str
    reason_text: str


def parse_boxes(raw: Any) -> tuple[Box, ...]:
    """Prediction.boxes as stored: [{"x0", "y0", "x1", "y1", "score"}] (lists of five numbers also read),
    strongest first (as a prediction stores them; rows written before that are ordered here)."""
    boxes = []
    for item in raw or []:
        if isinstance(item, dict):
            values = [item.get(k) for k in ("x0", "y0", "x1", "y1", "score")]
        else:
            values = list(item)[:5]
        numbers = [float(v) for v in values if isinstance(v, int | float)]
        if len(numbers) == 5:
            boxes.append(Box(*numbers))
    return tuple(sorted(boxes, key=lambda b: -b.score))


def _algorithm(version: str) -> Any:
    import highdicom as hd

    return hd.sr.AlgorithmIdentification(name="Fracture Review classifier", version=version[:64])


def _device_context(version: str) -> Any:
    import highdicom as hd

    # A stable UID per model version: every report by the same model names the same device.
    device_uid = generate_uid(entropy_srcs=["fracture-review-model", version])
    return hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid, name="Fracture Review", manufacturer_name=MANUFACTURER, model_name=version[:64]
        ),
    )


def _clip_box(box: Box, rows: int, columns: int) -> np.ndarray | None:
    x0, x1 = sorted((min(max(box.x0, 0.0), columns), min(max(box.x1, 0.0), columns)))
    y0, y1 = sorted((min(max(box.y0, 0.0), rows), min(max(box.y1, 0.0), rows)))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    # A closed polyline: the rectangle's four corners and the first again (SCOORD column, row).
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32)


def build_model_result_sr(
    *,
    results: Sequence[ImageResult | ImageNotAnalysed],
    model_version: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    institution_name: str = "",
) -> Dataset:
    """The model's result on a study as a TID 1500 measurement report: per image its finding, band,
    calibrated probability and operating points (TID 1501), and per box a planar ROI (TID 1410) whose
    closed polyline is drawn on the referenced image, with the box's score. An image the model declined
    has a group of its own with the band "Not analysed" and the guardrail's reason, and no finding: a
    PACS reader sees why there is no result rather than a missing image."""
    import highdicom as hd

    if not results:
        raise ValueError("a result SR needs at least one image")
    algorithm = _algorithm(model_version)
    groups: list[Any] = []
    for index, result in enumerate(results, start=1):
        source = result.source
        tracking = hd.sr.TrackingIdentifier(
            uid=generate_uid(entropy_srcs=[sop_instance_uid, "image", str(index)]),
            identifier=f"Image {index}",
        )
        if isinstance(result, ImageNotAnalysed):
            groups.append(
                hd.sr.MeasurementsAndQualitativeEvaluations(
                    tracking_identifier=tracking,
                    finding_type=FRACTURE_FINDING,
                    algorithm_id=algorithm,
                    qualitative_evaluations=[
                        hd.sr.QualitativeEvaluation(TRIAGE_BAND, NOT_ANALYSED),
                        hd.sr.QualitativeEvaluation(NOT_ANALYSED_REASON, result.reason),
                    ],
                    source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
                )
            )
            continue
        qualitative = [
            hd.sr.QualitativeEvaluation(FRACTURE_FINDING, PRESENT if result.label == "fractured" else ABSENT),
        ]
        if result.band in BANDS:
            qualitative.append(hd.sr.QualitativeEvaluation(TRIAGE_BAND, BANDS[result.band]))
        measurements = [
            hd.sr.Measurement(PROBABILITY, float(result.probability), UNITLESS, algorithm_id=algorithm),
            hd.sr.Measurement(LABEL_THRESHOLD, float(result.threshold), UNITLESS),
        ]
        if result.threshold_sensitive is not None:
            measurements.append(
                hd.sr.Measurement(SENSITIVE_POINT, float(result.threshold_sensitive), UNITLESS)
            )
        if result.threshold_specific is not None:
            measurements.append(hd.sr.Measurement(SPECIFIC_POINT, float(result.threshold_specific), UNITLESS))
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking,
                finding_type=FRACTURE_FINDING,
                algorithm_id=algorithm,
                measurements=measurements,
                qualitative_evaluations=qualitative,
                source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
            )
        )
        rows, columns = int(source.Rows), int(source.Columns)
        for number, box in enumerate(result.boxes, start=1):
            polyline = _clip_box(box, rows, columns)
            if polyline is None:
                continue
            groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(
                        uid=generate_uid(entropy_srcs=[sop_instance_uid, "box", str(index), str(number)]),
                        identifier=f"Image {index} box {number}",
                    ),
                    referenced_region=hd.sr.ImageRegion(
                        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                        graphic_data=polyline,
                        source_image=hd.sr.SourceImageForRegion.from_source_image(source),
                    ),
                    finding_type=FRACTURE_FINDING,
                    algorithm_id=algorithm,
                    measurements=[
                        hd.sr.Measurement(BOX_SCORE, float(box.score), UNITLESS, algorithm_id=algorithm)
                    ],
                )
            )
    return _measurement_report_sr(
        hd.sr.ObservationContext(observer_device_context=_device_context(model_version)),
        groups,
        evidence=[r.source for r in results],
        series=(series_instance_uid, SR_SERIES_NUMBER, "Fracture Review AI result (not verified)"),
        sop_instance_uid=sop_instance_uid,
        institution_name=institution_name,
        is_final=False,  # preliminary: a clinician's final call follows as its own SR
        is_verified=False,
    )


def build_final_call_sr(
    *,
    reviews: Sequence[ImageReview],
    model_result_sr: Dataset,
    reviewer_name: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    institution_name: str = "",
) -> Dataset:
    """The clinician's final call per image (fracture present or absent, confirmed or overridden, the
    reason), verified by the reviewer, with the model's result SR as its predecessor document."""
    import highdicom as hd

    if not reviews:
        raise ValueError("a final-call SR needs at least one review")
    person = hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121006", "DCM", "Person"),
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name=_person_name(reviewer_name)
        ),
    )
    groups: list[Any] = []
    for index, review in enumerate(reviews, start=1):
        qualitative = [
            hd.sr.QualitativeEvaluation(
                FRACTURE_FINDING, PRESENT if review.final_label == "fractured" else ABSENT
            ),
            hd.sr.QualitativeEvaluation(REVIEW_DECISION, DECISIONS[review.decision]),
        ]
        if review.reason_code:
            qualitative.append(
                hd.sr.QualitativeEvaluation(
                    REVIEW_REASON,
                    Code(f"FR-REASON-{review.reason_code.upper()}"[:16], SCHEME, review.reason_label),
                )
            )
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=generate_uid(entropy_srcs=[sop_instance_uid, "review", str(index)]),
                identifier=f"Image {index} final call",
            ),
            finding_type=FRACTURE_FINDING,
            qualitative_evaluations=qualitative,
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(review.source)],
        )
        if review.reason_text:
            group[0].ContentSequence.append(
                hd.sr.TextContentItem(
                    name=COMMENT,
                    value=review.reason_text[:1024],
                    relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
                )
            )
        groups.append(group)
    return _measurement_report_sr(
        hd.sr.ObservationContext(observer_person_context=person),
        groups,
        evidence=[r.source for r in reviews],
        series=(series_instance_uid, FINAL_SERIES_NUMBER, "Fracture Review clinician's final call"),
        sop_instance_uid=sop_instance_uid,
        institution_name=institution_name,
        is_final=True,
        is_verified=True,
        verifying_observer_name=_person_name(reviewer_name),
        verifying_organization=institution_name or MANUFACTURER,
        previous_versions=[model_result_sr],
    )


def _measurement_report_sr(
    observation_context: Any,
    groups: list[Any],
    *,
    evidence: list[Dataset],
    series: tuple[str, int, str],
    sop_instance_uid: str,
    institution_name: str,
    **status: Any,
) -> Dataset:
    """Both of a study's SRs: a complete TID 1500 measurement report of these groups, one instance in its own
    series (UID, number, description). ``status`` holds what differs between them: final or preliminary,
    verified or not, by whom, and the predecessor documents."""
    import highdicom as hd

    series_instance_uid, series_number, description = series
    report = hd.sr.MeasurementReport(
        observation_context=observation_context, procedure_reported=PROCEDURE, imaging_measurements=groups
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        institution_name=institution_name or None,
        is_complete=True,
        **status,
    )
    sr.SeriesDescription = description
    return sr


def _person_name(name: str) -> str:
    """A DICOM PN from a display name ("Jane Doe" -> "Doe^Jane"); a user name without spaces stays whole,
    with a trailing caret that says it is one component on purpose ("dr.ada^", as PS3.5 6.2.1.2 asks)."""
    parts = name.strip().split()
    if len(parts) >= 2:
        return f"{parts[-1]}^{' '.join(parts[:-1])}"[:64]
    return (name.strip() or "Unknown")[:63] + "^"


def draw_boxes(gray: np.ndarray, result: ImageResult, model_version: str) -> np.ndarray:
    """The radiograph as RGB with the model's boxes burned in, numbered in their order (strongest first, as
    parse_boxes gives them), and a caption.

    Numbered rather than labelled with their scores, as in the viewer: a box's score is uncalibrated, and
    "0.97" beside the caption's calibrated "p=0.89" would read as a second, contradicting probability."""
    import cv2

    rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    rows, columns = gray.shape
    scale = max(rows, columns) / 1000.0
    thickness = max(2, round(3 * scale))
    font = max(0.5, 0.8 * scale)
    colour = (255, 40, 40)
    for rank, box in enumerate(result.boxes, start=1):
        polyline = _clip_box(box, rows, columns)
        if polyline is None:
            continue
        x0, y0 = int(polyline[0][0]), int(polyline[0][1])
        x1, y1 = int(polyline[2][0]) - 1, int(polyline[2][1]) - 1
        cv2.rectangle(rgb, (x0, y0), (x1, y1), colour, thickness)
        cv2.putText(
            rgb,
            str(rank),
            (x0, max(y0 - thickness * 2, int(20 * font))),
            cv2.FONT_HERSHEY_SIMPLEX,
            font,
            colour,
            max(1, thickness // 2),
            cv2.LINE_AA,
        )
    band = {"fracture": "Fracture", "doubt": "Doubt", "no_fracture": "No fracture"}.get(
        result.band, result.label
    )
    caption = f"AI {band} p={result.probability:.2f} ({model_version}) - not a diagnosis"
    cv2.putText(
        rgb,
        caption,
        (int(10 * scale) + 4, int(30 * font) + 4),
        cv2.FONT_HERSHEY_SIMPLEX,
        font,
        (255, 220, 0),
        max(1, thickness // 2),
        cv2.LINE_AA,
    )
    return rgb


def build_secondary_capture(
    *,
    source: Dataset,
    pixels_rgb: np.ndarray,
    series_instance_uid: str,
    sop_instance_uid: str,
    instance_number: int,
    model_version: str,
) -> Dataset:
    """A Secondary Capture of one radiograph with the boxes burned in, for viewers that cannot draw SR."""
    import highdicom as hd

    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels_rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_instance_uid,
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    # Type 2C in General Series when the body part is paired: the source's value, or empty (unknown).
    sc.Laterality = str(source.get("Laterality", "") or source.get("ImageLaterality", "") or "").replace(
        "B", ""
    )
    sc.BurnedInAnnotation = "YES"
    sc.SeriesDescription = "Fracture Review AI boxes (not verified)"
    sc.DerivationDescription = f"Boxes of fracture localisation by model {model_version}"[:1024]
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.ConversionType = "WSD"
    now = dt.datetime.now(dt.UTC)
    sc.ContentDate = DA(now.strftime("%Y%m%d"))
    sc.ContentTime = TM(now.strftime("%H%M%S"))
    return sc


def new_uid() -> str:
    return str(generate_uid())
