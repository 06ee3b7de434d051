"""The study review page, its JSON and its actions: what the clinician sees (and, reading blinded, does not
see yet), what is recorded, where they go next."""

from __future__ import annotations

import gzip
import io
import json
import re
from typing import Any

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from classifier.explain import heatmap_to_stored_png
from radiology import services
from radiology.governance.models import ModelVersion
from radiology.models import Adjudication, AuditEvent, Prediction, Radiograph, Review, Study
from tests.conftest import fixture_bytes
from tests.factories import ClinicianFactory, RadiographFactory
from tests.web.conftest import MakeStudy

pytestmark = pytest.mark.django_db
JSON: dict[str, Any] = {"HTTP_ACCEPT": "application/json"}


def _page(study: Study, radiograph: Any = None) -> str:
    url = reverse("radiology:study_detail", args=[study.pk])
    return f"{url}?r={radiograph.pk}" if radiograph is not None else url


def _data(client: Client, study: Study) -> dict[str, Any]:
    response = client.get(reverse("radiology:study_status", args=[study.pk]))
    assert response.status_code == 200
    return response.json()


def _embedded(page: str) -> dict[str, Any]:
    match = re.search(r'<script id="study-data" type="application/json">(.*?)</script>', page, re.S)
    assert match, "the page embeds the study's data"
    return json.loads(match.group(1))


def _review_url(radiograph: Any) -> str:
    return reverse("radiology:radiograph_review", args=[radiograph.pk])


def test_the_verdict_is_the_band_and_the_calibrated_percentage(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    # 35 %, above a 25 % threshold: the old page said "Fracture likely"; the band says Doubt.
    study = make_study(probabilities=[0.35, 0.934, 0.04], threshold=0.25, model_version="lite0-2026.11")
    page = clinician_client.get(_page(study)).content.decode()
    assert "likely" not in page.lower()
    data = _embedded(page)
    assert [i["prediction"]["text"] for i in data["images"]] == [
        "Doubt · 35 %",
        "Fracture · 93 %",
        "No fracture · 4 %",
    ]
    assert data["images"][0]["prediction"]["model_version"] == "lite0-2026.11"
    # The study summary: the highest band and how many images fall in each.
    assert data["summary"] == {
        "band": "fracture",
        "text": "Fracture · 93 %",
        "breakdown": "1 Fracture · 1 Doubt · 1 No fracture",
    }
    assert "1 Fracture · 1 Doubt · 1 No fracture" in page


def test_a_probability_by_a_threshold_is_written_so_that_it_reads_on_its_side_of_it(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    # lite0-det-v2.4's operating points; 0.06507 is a fixture's probability, No fracture. In whole percent
    # the page said "No fracture · 7 %" beside "No fracture below 7 %".
    study = make_study(probabilities=[0.06507, 0.28])
    Prediction.objects.filter(radiograph__study=study).update(
        threshold_sensitive=0.06957, threshold_specific=0.58287
    )
    Prediction.objects.filter(radiograph__study=study, probability__lt=0.1).update(band="no_fracture")
    near, far = (image["prediction"] for image in _data(clinician_client, study)["images"])
    assert (near["text"], near["percent"], near["threshold_percents"]) == (
        "No fracture · 6.5 %",
        "6.5 %",
        ["7.0 %", "58.3 %"],
    )
    assert (far["percent"], far["threshold_percents"]) == ("28 %", ["7 %", "58 %"])


def test_images_come_in_acquisition_order_and_show_view_laterality_and_study_date(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    study = make_study(
        probabilities=[0.9, 0.2, 0.5], study_date=timezone.localdate().replace(year=2025, month=3, day=4)
    )
    first, second, third = study.radiographs.order_by("position")
    for radiograph, instance, view, side in (
        (first, "3", "PA", "L"),
        (second, "1", "LAT", "L"),
        (third, "2", "", ""),
    ):
        radiograph.dicom_attributes = {
            "InstanceNumber": instance,
            "ViewPosition": view,
            "ImageLaterality": side,
        }
        radiograph.save(update_fields=["dicom_attributes"])
    page = clinician_client.get(_page(study)).content.decode()
    data = _embedded(page)
    assert [i["id"] for i in data["images"]] == [second.pk, third.pk, first.pk]
    assert [(i["number"], i["view"], i["laterality"]) for i in data["images"]] == [
        (1, "LAT", "L"),
        (2, "", ""),
        (3, "PA", "L"),
    ]
    assert "Study date <strong>2025-03-04</strong>" in page
    # The page opens on the first image awaiting review, in that order.
    assert f'data-selected="{second.pk}"' in page


def test_boxes_and_heatmap_follow_what_the_model_card_validates(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    study = make_study(probabilities=[0.9], model_version="boxes-v1")
    prediction = Prediction.objects.get(radiograph__study=study)
    prediction.boxes = [{"x0": 10.0, "y0": 12.0, "x1": 40.0, "y1": 30.0, "score": 0.8}]
    prediction.save(update_fields=["boxes"])
    image = _data(clinician_client, study)["images"][0]["prediction"]
    assert image["boxes"] == prediction.boxes
    assert image["boxes_default"] is False  # not validated: drawn only on request
    assert image["heatmap_url"] is None  # not validated: not offered at all

    ModelVersion.objects.create(
        version="boxes-v1",
        artifact_path="/models/boxes-v1",
        artifact_sha256="0" * 64,
        card={
            "version": "boxes-v1",
            "boxes": {"validated": True, "validation": "pointing game 0.71"},
            "heatmap": {"validated": True},
        },
        status_changed_at=timezone.now(),
    )
    image = _data(clinician_client, study)["images"][0]["prediction"]
    assert image["boxes_default"] is True and image["boxes_caption"] == "pointing game 0.71"
    assert image["heatmap_url"] == reverse("radiology:heatmap_image", args=[prediction.pk])


def test_confirming_the_study_records_every_waiting_image_and_moves_on(
    clinician_client: Client, make_study: MakeStudy, clinician: Any
) -> None:
    study = make_study(probabilities=[0.9, 0.2, 0.6])
    following = make_study(probabilities=[0.3])
    second = study.radiographs.get(position=1)
    override = clinician_client.post(
        _review_url(second),
        {"decision": "override", "final_label": "fractured", "reason_code": "missed_fracture"},
        **JSON,
    )
    assert override.status_code == 200 and override.json()["next"] is None
    response = clinician_client.post(reverse("radiology:study_confirm", args=[study.pk]), **JSON)
    assert response.status_code == 200
    answer = response.json()
    assert answer["next"] == _page(following)
    assert "2 images confirmed" in answer["message"]
    reviews = {
        r.radiograph.position: (r.decision, r.final_label)
        for r in Review.objects.select_related("radiograph")
    }
    assert reviews == {
        0: ("confirm", "fractured"),
        1: ("override", "fractured"),
        2: ("confirm", "fractured"),
    }
    study.refresh_from_db()
    assert study.state == Study.State.REVIEWED


def test_an_override_reason_against_its_direction_is_refused_on_the_web(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    study = make_study(probabilities=[0.9])
    radiograph = study.radiographs.get()
    response = clinician_client.post(
        _review_url(radiograph),
        {"decision": "override", "final_label": "not_fractured", "reason_code": "missed_fracture"},
        **JSON,
    )
    assert response.status_code == 400
    assert response.json()["code"] == "reason_contradicts_label"
    assert not Review.objects.exists()
    # Without JavaScript the same refusal comes back as a message on the page.
    plain = clinician_client.post(
        _review_url(radiograph),
        {"decision": "override", "final_label": "not_fractured", "reason_code": "missed_fracture"},
        follow=True,
    )
    assert "cannot explain a final label" in plain.content.decode()
    assert not Review.objects.exists()


def test_a_blinded_reader_sees_no_band_until_their_own_call(
    clinician_client: Client, make_study: MakeStudy, settings: Any
) -> None:
    settings.BLINDED_READ_DEFAULT = True
    study = make_study(probabilities=[0.93, 0.12])
    page = clinician_client.get(_page(study)).content.decode()
    data = _embedded(page)
    assert all(i["hidden"] and i["prediction"] is None for i in data["images"])
    assert data["summary"] is None
    assert "Fracture ·" not in page and "No fracture ·" not in page and "93 %" not in page
    assert "band-" not in page.split('<script id="study-data"')[0].split("</header>")[0]
    # Confirming before the call is refused; the call reveals the model.
    refused = clinician_client.post(reverse("radiology:study_confirm", args=[study.pk]), **JSON)
    assert refused.status_code == 400 and refused.json()["code"] == "unaided_read_required"
    answer = clinician_client.post(
        reverse("radiology:study_unaided", args=[study.pk]), {"label": "not_fractured"}, **JSON
    )
    assert answer.status_code == 200
    revealed = answer.json()["study"]
    assert [i["prediction"]["band"] for i in revealed["images"]] == ["fracture", "no_fracture"]
    assert [i["unaided"] for i in revealed["images"]] == ["not_fractured", "not_fractured"]
    clinician_client.post(reverse("radiology:study_confirm", args=[study.pk]), **JSON)
    assert sorted(Review.objects.values_list("unaided_label", "final_label")) == [
        ("not_fractured", "fractured"),
        ("not_fractured", "not_fractured"),
    ]
    # Changed their mind after the model (and against a confident band): a second reader is asked.
    assert Adjudication.objects.filter(state="open").count() == 1


def test_the_reader_chooses_blinded_reading_and_is_sent_back_safely(
    clinician_client: Client, clinician: Any
) -> None:
    url = reverse("radiology:reader_settings")
    response = clinician_client.post(url, {"blinded": "on", "next": "/queue/?state=all"})
    assert response.status_code == 302 and response["Location"] == "/queue/?state=all"
    assert services.reader_is_blinded(clinician)
    response = clinician_client.post(url, {"blinded": "off", "next": "https://elsewhere.example/"})
    assert response["Location"] == reverse("radiology:queue")
    assert not services.reader_is_blinded(clinician)


def test_a_second_clinician_adjudicates_and_the_first_cannot(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    study = make_study(probabilities=[0.95])
    radiograph = study.radiographs.get()
    clinician_client.post(
        _review_url(radiograph),
        {"decision": "override", "final_label": "not_fractured", "reason_code": "false_alarm"},
        **JSON,
    )
    adjudication = Adjudication.objects.get(state="open")
    own = clinician_client.get(reverse("radiology:adjudications")).content.decode()
    assert "Your own case" in own
    clinician_client.post(
        reverse("radiology:adjudication_decide", args=[adjudication.pk]), {"label": "fractured"}
    )
    adjudication.refresh_from_db()
    assert adjudication.state == "open"

    colleague = Client()
    colleague.force_login(ClinicianFactory.create(username="dr.grace"))
    queue = colleague.get(reverse("radiology:adjudications")).content.decode()
    assert f'action="{reverse("radiology:adjudication_decide", args=[adjudication.pk])}"' in queue
    assert "just now" in queue and "just now ago" not in queue
    response = colleague.post(
        reverse("radiology:adjudication_decide", args=[adjudication.pk]),
        {"label": "fractured", "notes": "Buckle."},
    )
    assert response.status_code == 302
    adjudication.refresh_from_db()
    assert (adjudication.state, adjudication.label, adjudication.notes) == ("decided", "fractured", "Buckle.")
    shown = _data(colleague, study)["images"][0]["adjudication"]
    assert shown["state"] == "decided" and shown["adjudicator"] == "dr.grace"


def test_a_colleague_reading_the_study_is_shown(clinician_client: Client, make_study: MakeStudy) -> None:
    study = make_study(probabilities=[0.9])
    clinician_client.get(_page(study))  # dr.ada opens it
    colleague = Client()
    colleague.force_login(ClinicianFactory.create(username="dr.grace"))
    page = colleague.get(_page(study)).content.decode()
    assert "dr.ada is reading this study right now." in page
    assert _data(clinician_client, study)["colleague"] is None  # not a colleague to herself


def test_leaving_the_page_frees_the_marker_at_once_and_only_the_readers_own(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    study = make_study(probabilities=[0.9])
    clinician_client.get(_page(study))  # dr.ada opens it
    colleague = Client()
    colleague.force_login(ClinicianFactory.create(username="dr.grace"))
    leave = reverse("radiology:study_leave", args=[study.pk])

    assert colleague.post(leave).status_code == 204  # dr.grace leaving does not free dr.ada's marker
    assert _data(colleague, study)["colleague"] == "dr.ada"

    assert clinician_client.post(leave).status_code == 204  # dr.ada's page sends its beacon as she leaves
    assert "is reading this study right now" not in colleague.get(_page(study)).content.decode()
    assert clinician_client.get(leave).status_code == 405


def test_leaving_needs_the_csrf_token_the_page_sends(clinician: Any, make_study: MakeStudy) -> None:
    study = make_study(probabilities=[0.9])
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(clinician)
    page = browser.get(_page(study)).content.decode()
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert found is not None
    token = found.group(1)
    leave = reverse("radiology:study_leave", args=[study.pk])

    assert browser.post(leave).status_code == 403
    assert browser.post(leave, {"csrfmiddlewaretoken": token}).status_code == 204
    assert _embedded(page)["leave_url"] == leave


def test_files_refused_at_upload_stay_listed_on_the_study_page(
    clinician_client: Client, clinician: Any
) -> None:
    result = services.study_create(
        uploaded_by=clinician,
        details=services.StudyDetails(
            mrn="M-9", patient_name="Ann Example", accession_number="REJ-1", body_region="hand"
        ),
        files=[
            services.UploadedImage("good.jpg", fixture_bytes("images/kaggle_fractured_1.jpg")),
            services.UploadedImage("cut.png", b"\x89PNG\r\n\x1a\nnot really"),
        ],
    )
    assert result.study is not None
    page = clinician_client.get(_page(result.study)).content.decode()
    assert "Not accepted at upload: <strong>cut.png</strong>" in page
    assert _embedded(page)["rejected"][0]["file"] == "cut.png"


def test_the_pixels_keep_a_12_bit_dicom_at_its_own_depth(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    study = make_study(probabilities=[0.4])
    radiograph = study.radiographs.get()
    radiograph.format = Radiograph.Format.DICOM
    radiograph.image.save("x.dcm", ContentFile(fixture_bytes("dicom/monochrome1_voi_12bit.dcm")))
    response = clinician_client.get(reverse("radiology:radiograph_pixels", args=[radiograph.pk]))
    assert response.status_code == 200 and response["Content-Encoding"] == "gzip"
    header = json.loads(response["X-Pixels"])
    assert (header["width"], header["height"], header["bytes_per_pixel"], header["bits"]) == (224, 224, 2, 12)
    assert header["invert"] is True  # MONOCHROME1: shown inverted by default
    assert header["window"]["width"] == 4096.0  # the file's own VOI window, in its own units
    assert set(header["presets"]) == {"default", "bone", "soft", "full"}
    pixels = np.frombuffer(gzip.decompress(response.content), dtype="<u2")
    assert pixels.size == 224 * 224
    assert pixels.max() > 255  # more than 8 bits of levels reach the browser
    assert int(pixels.max()) == header["max_value"]


def test_forms_carry_csrf_tokens_and_pages_have_no_inline_script_or_style(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    study = make_study(probabilities=[0.9])
    for url in (
        _page(study),
        reverse("radiology:queue"),
        reverse("radiology:study_upload"),
        reverse("radiology:adjudications"),
    ):
        page = clinician_client.get(url).content.decode()
        assert page.count('method="post"') == page.count('name="csrfmiddlewaretoken"') > 0
        # Only data blocks, never executable inline script.
        assert not re.search(r"<script(?![^>]*\b(src=|type=\"application/json\"))[^>]*>", page), url
        assert not re.search(r"\sstyle=", page), url
        assert not re.search(r"\son[a-z]+=", page), url


def test_admin_can_send_a_failed_radiograph_again(
    admin_client_: Client, make_study: MakeStudy, dispatched: Any, django_capture_on_commit_callbacks: Any
) -> None:
    study = make_study(probabilities=[], failed=1)
    radiograph = study.radiographs.get()
    page = admin_client_.get(_page(study)).content.decode()
    assert "Send to the classifier again" in page
    assert _embedded(page)["images"][0]["failure_message"] == "The image could not be decoded."
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(reverse("radiology:radiograph_retry", args=[radiograph.pk]))
    assert response.status_code == 302
    radiograph.refresh_from_db()
    assert radiograph.status == "queued"
    assert dispatched.sent == [radiograph.pk]


def test_review_page_queries_do_not_grow_with_radiographs_and_reviews(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def count(study: Study) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert clinician_client.get(_page(study)).status_code == 200
        return len(queries)

    small = make_study(probabilities=[0.9])
    big = make_study(probabilities=[0.9, 0.8, 0.3, 0.2, 0.1, None], reviews=[("confirm",)] * 5)
    make_study(probabilities=[0.5])
    assert count(small) == count(big)


def test_a_review_url_opened_after_signing_in_again_shows_the_radiograph(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    study = make_study(probabilities=[0.9, 0.4])
    radiograph = study.radiographs.get(position=1)
    response = clinician_client.get(_review_url(radiograph))
    assert response.status_code == 302 and response["Location"] == _page(study, radiograph)
    assert not Review.objects.exists()


def test_the_heatmap_is_served_as_a_coloured_overlay_and_a_damaged_one_is_a_404(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    study = make_study(probabilities=[0.8, 0.7])
    first, second = Prediction.objects.filter(radiograph__study=study).order_by("radiograph__position")
    first.heatmap.save("h.png", ContentFile(heatmap_to_stored_png(np.eye(16, dtype=np.float32))))
    response = clinician_client.get(reverse("radiology:heatmap_image", args=[first.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    overlay = Image.open(io.BytesIO(response.content))
    assert overlay.mode == "RGBA"
    assert overlay.size == (first.radiograph.width, first.radiograph.height)  # small: not enlarged

    second.heatmap.save("h.png", ContentFile(b"\x89PNG\r\n\x1a\n truncated"))
    assert clinician_client.get(reverse("radiology:heatmap_image", args=[second.pk])).status_code == 404


def test_the_dashboard_compares_reader_model_and_final_call(
    admin_client_: Client, make_study: MakeStudy, settings: Any, clinician: Any
) -> None:
    settings.BLINDED_READ_DEFAULT = True
    study = make_study(probabilities=[0.9, 0.1])
    fractured, clear = study.radiographs.order_by("position")
    services.unaided_read_record(radiograph_ids=[fractured.pk], reader=clinician, label="not_fractured")
    services.unaided_read_record(radiograph_ids=[clear.pk], reader=clinician, label="not_fractured")
    services.study_confirm(study_id=study.pk, reviewer=clinician)  # the model changed the first call
    adjudication = Adjudication.objects.get(radiograph=fractured)
    services.adjudication_decide(
        adjudication_id=adjudication.pk,
        adjudicator=ClinicianFactory.create(username="dr.grace"),
        label="fractured",
    )
    page = admin_client_.get(reverse("radiology:audit_dashboard")).content.decode()
    assert 'data-changed="1" data-better="1" data-worse="0"' in page
    rows = dict(re.findall(r'<tr data-who="(\w+)"><th scope="row">[^<]+</th>\s*<td>([^<]+)<', page))
    assert rows == {
        "unaided": "0 % ",
        "model": "100 % ",
        "final": "100 % ",
    }  # sensitivity, reference = adjudicated
    assert AuditEvent.objects.filter(action=AuditEvent.Action.ADJUDICATION_DECIDED).count() == 1


def test_radiograph_factory_is_usable_for_the_pixels_of_a_png(clinician_client: Client) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64).astype(np.uint8)).save(buffer, "PNG")
    radiograph = RadiographFactory.create(
        image=ContentFile(buffer.getvalue(), name="p.png"), width=64, height=48
    )
    response = clinician_client.get(reverse("radiology:radiograph_pixels", args=[radiograph.pk]))
    header = json.loads(response["X-Pixels"])
    assert (header["bytes_per_pixel"], header["bits"], header["invert"]) == (1, 8, False)
    assert gzip.decompress(response.content) == np.asarray(Image.open(buffer)).tobytes()
