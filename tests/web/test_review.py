"""The review page and the review POST: what the clinician sees, what is recorded, where they go next."""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import reverse
from PIL import Image

from classifier.explain import heatmap_to_stored_png
from radiology.models import AuditEvent, Prediction, Review, Study
from tests.web.conftest import MakeStudy

pytestmark = pytest.mark.django_db


def _page(study: Study, radiograph: Any = None) -> str:
    url = reverse("radiology:study_detail", args=[study.pk])
    return f"{url}?r={radiograph.pk}" if radiograph is not None else url


def _review_url(radiograph: Any) -> str:
    return reverse("radiology:radiograph_review", args=[radiograph.pk])


def test_the_page_shows_verdict_threshold_and_model_version(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    study = make_study(probabilities=[0.934], threshold=0.42, model_version="lite0-2026.11")
    page = clinician_client.get(_page(study)).content.decode()
    assert "Fracture likely — 0.93" in page
    assert "operating threshold 0.42" in page
    assert "Model lite0-2026.11" in page
    assert "not validated for locating a fracture" in page  # the heatmap's known weakness, stated
    prediction = Prediction.objects.get(radiograph__study=study)
    assert reverse("radiology:heatmap_image", args=[prediction.pk]) in page
    assert 'id="viewer"' in page and 'data-action="heatmap"' in page and 'data-action="invert"' in page


def test_the_page_opens_on_the_most_suspicious_radiograph_awaiting_review(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    study = make_study(probabilities=[0.9, 0.3, 0.6], reviews=[("confirm",)])
    third = study.radiographs.get(position=2)
    page = clinician_client.get(_page(study)).content.decode()
    assert f'data-selected="{third.pk}"' in page
    assert "Fracture likely — 0.60" in page


def test_thumbnails_link_every_radiograph_of_the_study(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    study = make_study(probabilities=[0.9, 0.3, None])
    page = clinician_client.get(_page(study)).content.decode()
    for radiograph in study.radiographs.all():
        assert f'href="?r={radiograph.pk}"' in page
    third = study.radiographs.get(position=2)
    third_page = clinician_client.get(_page(study, third)).content.decode()
    assert "Classifying…" in third_page and 'id="confirm-form"' not in third_page


def test_earlier_reviews_of_the_radiograph_are_listed_with_their_reviewers(
    clinician_client: Client, make_study: MakeStudy, admin: Any
) -> None:
    study = make_study(probabilities=[0.9], reviews=[("confirm",)])
    radiograph = study.radiographs.get()
    from radiology import services

    services.review_submit(
        radiograph_id=radiograph.pk,
        reviewer=admin,
        decision="override",
        reason_code="other",
        reason_text="Old healed callus",
    )
    page = clinician_client.get(_page(study, radiograph)).content.decode()
    history = page[page.index('<ol class="history">') :]
    assert "by audit.admin" in history and "by dr.ada" in history
    assert "Old healed callus" in history
    assert history.index("by audit.admin") < history.index("by dr.ada")  # newest first


def test_confirm_records_the_models_label_and_moves_to_the_next_study(
    clinician_client: Client, make_study: MakeStudy, clinician: Any
) -> None:
    first = make_study(probabilities=[0.95], accession_number="FIRST")
    second = make_study(probabilities=[0.6], accession_number="SECOND")
    radiograph = first.radiographs.get()
    response = clinician_client.post(_review_url(radiograph), {"decision": "confirm"})
    assert response.status_code == 302
    assert response["Location"] == _page(second)
    review = Review.objects.get(radiograph=radiograph)
    assert (review.decision, review.final_label, review.reviewer) == ("confirm", "fractured", clinician)
    first.refresh_from_db()
    assert first.state == Study.State.REVIEWED
    assert AuditEvent.objects.filter(action=AuditEvent.Action.REVIEW_SUBMITTED, actor=clinician).count() == 1
    follow = clinician_client.get(response["Location"])
    assert "Next in the queue: SECOND" in follow.content.decode()


def test_after_a_review_the_next_radiograph_of_the_same_study_comes_first(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    study = make_study(probabilities=[0.2, 0.9, 0.5])
    make_study(probabilities=[0.99])
    first, second, third = study.radiographs.order_by("position")
    response = clinician_client.post(_review_url(second), {"decision": "confirm"})
    assert response["Location"] == _page(study, third)  # the most suspicious still waiting
    response = clinician_client.post(_review_url(third), {"decision": "confirm"})
    assert response["Location"] == _page(study, first)


def test_after_the_last_study_the_clinician_returns_to_the_queue(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    study = make_study(probabilities=[0.9])
    response = clinician_client.post(
        _review_url(study.radiographs.get()), {"decision": "confirm"}, follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("radiology:queue")
    assert "No studies await review" in response.content.decode()


def test_override_records_label_reason_and_text(clinician_client: Client, make_study: MakeStudy) -> None:
    study = make_study(probabilities=[0.8])
    radiograph = study.radiographs.get()
    response = clinician_client.post(
        _review_url(radiograph),
        {
            "decision": "override",
            "final_label": "not_fractured",
            "reason_code": "hardware",
            "reason_text": "Plate and screws",
        },
    )
    assert response.status_code == 302
    review = Review.objects.get(radiograph=radiograph)
    assert (review.decision, review.final_label, review.reason_code, review.reason_text) == (
        "override",
        "not_fractured",
        "hardware",
        "Plate and screws",
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"decision": "override", "final_label": "not_fractured"}, "Choose a reason for the override."),
        (
            {"decision": "override", "final_label": "not_fractured", "reason_code": "other"},
            "Describe the reason when you choose",
        ),
        (
            {"decision": "override", "final_label": "fractured", "reason_code": "hardware"},
            "An override must change the label",
        ),
        ({"decision": "maybe"}, "Select a valid choice"),
    ],
)
def test_an_incomplete_review_is_refused_with_the_reason_and_nothing_is_recorded(
    clinician_client: Client, make_study: MakeStudy, data: dict[str, str], message: str
) -> None:
    study = make_study(probabilities=[0.8])
    radiograph = study.radiographs.get()
    response = clinician_client.post(
        _review_url(radiograph), {**data, "reason_text": data.get("reason_text", "")}
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert message in page.replace("&#x27;", "'")
    assert not Review.objects.exists()
    assert re.search(r'<details class="override" id="override" open>', page) or data["decision"] == "maybe"


def test_reviewing_a_radiograph_without_prediction_is_refused(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    study = make_study(probabilities=[None])
    response = clinician_client.post(_review_url(study.radiographs.get()), {"decision": "confirm"})
    assert response.status_code == 400
    assert "no prediction to review yet" in response.content.decode()
    assert not Review.objects.exists()


def test_queue_neighbours_give_previous_and_next(clinician_client: Client, make_study: MakeStudy) -> None:
    high = make_study(probabilities=[0.99])
    middle = make_study(probabilities=[0.7])
    low = make_study(probabilities=[0.1])
    page = clinician_client.get(_page(middle)).content.decode()
    assert f'id="previous-study" href="{_page(high)}"' in page
    assert f'id="next-study" href="{_page(low)}"' in page


def test_forms_carry_csrf_tokens_and_pages_have_no_inline_script_or_style(
    clinician_client: Client, make_study: MakeStudy
) -> None:
    study = make_study(probabilities=[0.9])
    for url in (_page(study), reverse("radiology:queue"), reverse("radiology:study_upload")):
        page = clinician_client.get(url).content.decode()
        assert page.count('method="post"') == page.count('name="csrfmiddlewaretoken"') > 0
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), url
        assert not re.search(r"\sstyle=", page), url
        assert not re.search(r"\son[a-z]+=", page), url


def test_admin_can_send_a_failed_radiograph_again(
    admin_client_: Client, make_study: MakeStudy, dispatched: Any, django_capture_on_commit_callbacks: Any
) -> None:
    study = make_study(probabilities=[], failed=1)
    radiograph = study.radiographs.get()
    page = admin_client_.get(_page(study)).content.decode()
    assert "Could not be classified" in page and "Send to the classifier again" in page
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(reverse("radiology:radiograph_retry", args=[radiograph.pk]))
    assert response.status_code == 302
    radiograph.refresh_from_db()
    assert radiograph.status == "queued"
    assert dispatched.sent == [radiograph.pk]


def test_review_page_queries_do_not_grow_with_radiographs_and_reviews(
    clinician_client: Client, make_study: MakeStudy, django_assert_max_num_queries: Any
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
    # session, user, groups; study, radiographs, predictions, reviews; previous and next in the queue;
    # the session save (an UPDATE in a savepoint pair inside the test transaction).
    with django_assert_max_num_queries(12):
        clinician_client.get(_page(big))


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
