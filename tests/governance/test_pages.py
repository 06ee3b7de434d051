"""The admin pages: the comparison of active and shadow, the promotion form and its gate, rollback,
monitoring per subgroup and site. Admins only (the role matrix covers the other roles)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from radiology.governance.models import ModelVersion, MonitoringBuild, MonitoringCell
from radiology.governance.monitoring import monitoring_refresh
from radiology.governance.registry import model_version_register
from radiology.models import AuditEvent
from tests.governance.conftest import RefreshRequests
from tests.governance.test_registry import _reviewed_cases
from worker.governance_tasks import refresh_comparisons, refresh_monitoring

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_versions(tiny_model_dir: Path, shadow_model_dir: Path, settings: Any) -> None:
    settings.GOVERNANCE_PROMOTION_MIN_REVIEWED = 50
    model_version_register(path=tiny_model_dir, status="active")
    model_version_register(path=shadow_model_dir, status="shadow")


def test_the_comparison_shows_both_versions_and_the_gate(two_versions: None, admin_client_: Client) -> None:
    _reviewed_cases(30, active_good=True, shadow_good=True)
    assert refresh_comparisons() == 1  # the worker's task (beat, or asked for by the page)
    body = admin_client_.get(reverse("radiology:governance")).content.decode()
    assert "Active tiny-test against shadow tiny-shadow" in body
    assert '30</div><div class="label">reviewed cases read by both' in body
    assert "AUC difference (shadow − active), paired bootstrap over studies" in body
    assert "30 reviewed cases read by both versions; the gate needs at least 50" in body
    assert "operating threshold" in body and "Bands (rows: active, columns: shadow)" in body


def test_promotion_from_the_page_is_refused_by_the_gate_with_its_reason(
    two_versions: None, admin_client_: Client
) -> None:
    _reviewed_cases(10, active_good=True, shadow_good=True)
    response = admin_client_.post(
        reverse("radiology:governance_promote"),
        {"version": "tiny-shadow", "justification": "looks better to me"},
        follow=True,
    )
    assert "Promotion refused: 10 reviewed cases" in response.content.decode()
    assert ModelVersion.objects.get(version="tiny-shadow").status == "shadow"
    assert AuditEvent.objects.filter(action=AuditEvent.Action.MODEL_PROMOTION_REFUSED).count() == 1


def test_promotion_and_rollback_from_the_page(two_versions: None, admin_client_: Client, admin: Any) -> None:
    _reviewed_cases(120, active_good=True, shadow_good=True, seed=3)
    response = admin_client_.post(
        reverse("radiology:governance_promote"),
        {"version": "tiny-shadow", "justification": "non-inferior locally"},
        follow=True,
    )
    assert "tiny-shadow is now active." in response.content.decode()
    response = admin_client_.post(
        reverse("radiology:governance_rollback"), {"justification": "sensitivity fell at site B"}, follow=True
    )
    assert "tiny-test is now active." in response.content.decode()
    change = AuditEvent.objects.filter(action=AuditEvent.Action.MODEL_STATUS_CHANGED).latest("sequence")
    assert change.actor == admin and change.details["reason"] == "rollback: sensitivity fell at site B"


def test_monitoring_groups_by_site_with_intervals(two_versions: None, admin_client_: Client) -> None:
    _reviewed_cases(40, active_good=True, shadow_good=False)
    assert monitoring_refresh() > 0
    for by in ("body_region", "age_band", "sex", "site", "month"):
        response = admin_client_.get(reverse("radiology:governance_monitoring"), {"by": by})
        assert response.status_code == 200
    body = response.content.decode()
    assert "tiny-test" in body and "tiny-shadow" in body and "Reliability diagram" in body


def test_the_page_answers_from_the_stored_comparison_and_asks_the_worker_for_a_new_one(
    two_versions: None, admin_client_: Client, comparison_requests: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.cache import cache

    import radiology.governance.comparison as comparison_module

    url = reverse("radiology:governance")
    _reviewed_cases(30, active_good=True, shadow_good=True)
    real_compare = comparison_module.compare_versions

    def not_in_a_request(**_: Any) -> None:
        raise AssertionError("the page computed the comparison")

    monkeypatch.setattr(comparison_module, "compare_versions", not_in_a_request)
    # Nothing stored yet: the page says so and asks the worker, once however often it is viewed.
    body = admin_client_.get(url).content.decode()
    assert "Computing the comparison for the first time" in body
    assert "Shown once the comparison is computed" in body
    assert admin_client_.get(url).status_code == 200
    assert comparison_requests == ["refresh_comparisons"]

    # The task writes it; the page shows it, up to date, and asks for nothing.
    monkeypatch.setattr(comparison_module, "compare_versions", real_compare)
    assert refresh_comparisons() == 1
    assert refresh_comparisons() == 0  # evidence unchanged: nothing to recompute
    monkeypatch.setattr(comparison_module, "compare_versions", not_in_a_request)
    cache.delete("governance:comparison:refresh-requested")
    body = admin_client_.get(url).content.decode()
    assert '30</div><div class="label">reviewed cases read by both' in body
    assert "being recomputed" not in body and "Computing the comparison" not in body
    assert "30 reviewed cases read by both versions; the gate needs at least 50" in body
    assert comparison_requests == ["refresh_comparisons"]

    # New evidence: the page still answers from the stored comparison, says it is being recomputed and
    # asks the worker; once the task has run, the page shows the new one.
    _reviewed_cases(12, active_good=True, shadow_good=True, seed=5)
    body = admin_client_.get(url).content.decode()
    assert '30</div><div class="label">reviewed cases read by both' in body
    assert "new evidence since: being recomputed" in body
    assert comparison_requests == ["refresh_comparisons"] * 2
    monkeypatch.setattr(comparison_module, "compare_versions", real_compare)
    assert refresh_comparisons() == 1
    body = admin_client_.get(url).content.decode()
    assert '42</div><div class="label">reviewed cases read by both' in body
    assert "being recomputed" not in body


def test_the_comparison_task_runs_on_the_low_priority_shadow_queue(settings: Any) -> None:
    route = settings.CELERY_TASK_ROUTES["worker.governance_tasks.refresh_comparisons"]
    assert route == {"queue": "shadow"}
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "worker.governance_tasks.refresh_comparisons" in scheduled


def _shadow_predictions_shown(body: str) -> int:
    """The sum of the Predictions column over the shadow version's rows of the monitoring table."""
    return sum(int(n) for n in re.findall(r"<tr><td>tiny-shadow</td><td>[^<]*</td><td>(\d+)</td>", body))


def test_the_kept_monitoring_rendering_follows_each_rebuild_and_view(
    two_versions: None, admin_client_: Client
) -> None:
    url = reverse("radiology:governance_monitoring")
    _reviewed_cases(20, active_good=True, shadow_good=True)
    monitoring_refresh()
    by_sex = admin_client_.get(url, {"by": "sex"}).content.decode()
    by_month = admin_client_.get(url, {"by": "month"}).content.decode()
    assert '<th scope="col">Sex</th>' in by_sex and '<th scope="col">Month</th>' in by_month
    assert _shadow_predictions_shown(by_sex) == _shadow_predictions_shown(by_month) == 20
    _reviewed_cases(16, active_good=True, shadow_good=True, seed=6)
    # The page shows the summary, which changes when it is rebuilt (nightly), not before.
    assert _shadow_predictions_shown(admin_client_.get(url, {"by": "sex"}).content.decode()) == 20
    monitoring_refresh()
    assert _shadow_predictions_shown(admin_client_.get(url, {"by": "sex"}).content.decode()) == 36


def test_operating_points_with_the_same_thresholds_are_one_row_with_both_names() -> None:
    import numpy as np

    from radiology.governance.comparison import Score, _points

    y = np.array([1, 0, 1, 0])
    one_threshold = [Score(p, "", "", 0.3, 0.3, 0.3) for p in (0.9, 0.2, 0.4, 0.5)]
    (row,) = _points(y, one_threshold)
    assert row.name == "operating threshold = sensitive point = specific point"
    assert (row.tp, row.fn, row.tn, row.fp) == (2, 0, 1, 1)
    two = [Score(p, "", "", 0.3, 0.3, 0.7) for p in (0.9, 0.2, 0.4, 0.5)]
    assert [r.name for r in _points(y, two)] == ["operating threshold = sensitive point", "specific point"]


def test_rebuild_now_asks_a_worker_once_a_minute_and_the_page_then_says_when_it_was_built(
    two_versions: None, admin_client_: Client, monitoring_requests: RefreshRequests
) -> None:
    page, refresh = (
        reverse("radiology:governance_monitoring"),
        reverse("radiology:governance_monitoring_refresh"),
    )
    body = admin_client_.get(page).content.decode()
    assert "No summary built yet: it is rebuilt nightly." in body
    assert "No reviewed case in the summary yet" in body  # the diagram's card says why it is empty
    assert admin_client_.get(refresh).status_code == 405  # a rebuild is an action, never a link

    first = admin_client_.post(refresh, follow=True).content.decode()
    assert "A worker is rebuilding the summary" in first
    second = admin_client_.post(refresh, follow=True).content.decode()
    assert "A rebuild was asked for less than a minute ago" in second
    assert monitoring_requests.attempts == 1  # however often it is pressed

    _reviewed_cases(12, active_good=True, shadow_good=True)
    refresh_monitoring()  # what the worker runs on that request
    body = admin_client_.get(page).content.decode()
    assert "from 24 predictions" in body  # 12 cases, each read by the active and the shadow version
    assert "No reviewed case in the summary yet" not in body and "Reliability diagram of tiny-test" in body
    build = MonitoringBuild.objects.get()
    assert build.cells > 0 and build.predictions == 24
    assert f'<time datetime="{build.built_at.isoformat()}' in body


def test_rebuild_now_says_so_when_the_worker_cannot_be_reached_and_the_next_press_tries_again(
    two_versions: None, admin_client_: Client, monitoring_requests: RefreshRequests
) -> None:
    refresh = reverse("radiology:governance_monitoring_refresh")
    monitoring_requests.broker_down = True
    body = admin_client_.post(refresh, follow=True).content.decode()
    assert "The worker could not be reached, so the summary was not rebuilt" in body
    monitoring_requests.broker_down = False
    body = admin_client_.post(refresh, follow=True).content.decode()
    assert "A worker is rebuilding the summary" in body
    assert monitoring_requests.attempts == 2


def test_an_empty_filter_says_what_it_filtered(two_versions: None, admin_client_: Client) -> None:
    _reviewed_cases(6, active_good=True, shadow_good=True)
    monitoring_refresh()
    month = MonitoringCell.objects.values_list("month", flat=True).first()
    assert month is not None
    body = admin_client_.get(
        reverse("radiology:governance_monitoring"), {"model_version": "tiny-test", "month": month.isoformat()}
    ).content.decode()
    assert "No predictions in the summary" not in body
    body = admin_client_.get(
        reverse("radiology:governance_monitoring"), {"model_version": "not-a-version"}
    ).content.decode()
    assert "No predictions in the summary for this model version and month" in body


def test_rebuild_records_are_pruned_to_the_newest_and_a_quick_rebuild_reads_under_a_tenth_of_a_second(
    two_versions: None, admin_client_: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import radiology.governance.monitoring as monitoring

    monkeypatch.setattr(monitoring, "BUILDS_KEPT", 3)
    built = []
    for _ in range(5):
        monitoring_refresh()
        built.append(MonitoringBuild.objects.latest("pk").pk)
    # the three newest stay, the one the page reads among them
    assert sorted(MonitoringBuild.objects.values_list("pk", flat=True)) == built[-3:]
    MonitoringBuild.objects.update(seconds=0.02)
    assert "(under 0.1 s)" in admin_client_.get(reverse("radiology:governance_monitoring")).content.decode()
    MonitoringBuild.objects.update(seconds=2.46)
    assert "(2.5 s)" in admin_client_.get(reverse("radiology:governance_monitoring")).content.decode()
