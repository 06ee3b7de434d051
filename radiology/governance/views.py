"""Admin pages of model governance: the registry with the active/shadow comparison and the promotion
gate, monitoring per subgroup and site, drift alerts. Thin: selectors read, registry services write."""

from __future__ import annotations

import hashlib
from functools import cache, partial
from pathlib import Path
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template import Engine
from django.views.decorators.http import require_GET, require_POST

from radiology.access import admin_required
from radiology.governance import monitoring, registry
from radiology.governance.comparison import comparison_for_page, comparison_request_refresh
from radiology.governance.models import DriftAlert, ModelVersion
from radiology.governance.services import drift_alert_acknowledge


@cache
def template_stamp(name: str) -> str:
    """A digest of a template's source: part of its kept renderings' keys, so a new release of the page
    never serves a rendering made by the old one."""
    origin = Engine.get_default().get_template(name).origin.name
    return hashlib.sha256(Path(origin).read_bytes()).hexdigest()[:12]


def _client_ip(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR")


@admin_required
@require_GET
def governance(request: HttpRequest) -> HttpResponse:
    # Not the cards: a released model's card holds its OOD reference (megabytes of JSON) and the page
    # shows none of it.
    versions = list(
        ModelVersion.objects.select_related("status_changed_by")
        .defer("card")
        .order_by("status", "-registered_at")
    )
    active = next((v for v in versions if v.status == ModelVersion.Status.ACTIVE), None)
    comparisons = []
    for shadow in (v for v in versions if v.status == ModelVersion.Status.SHADOW):
        # The last comparison the worker stored, never computed here (a bootstrap takes seconds); a stale
        # or missing one is asked for, and the page says so.
        shown = comparison_for_page(active=active.version, shadow=shadow.version) if active else None
        comparison = shown.comparison if shown else None
        gate = None
        if comparison is not None or active is None:
            gate = registry.promotion_gate(candidate=shadow, active=active, comparison=comparison)
        comparisons.append(
            {"shadow": shadow, "comparison": comparison, "stale": bool(shown and shown.stale), "gate": gate}
        )
    if any(c["stale"] for c in comparisons):
        comparison_request_refresh()
    return render(
        request,
        "radiology/governance.html",
        {
            "versions": versions,
            "active": active,
            "comparisons": comparisons,
            "alerts": DriftAlert.objects.filter(acknowledged_at__isnull=True)[:50],
            "can_roll_back": ModelVersion.objects.filter(
                status=ModelVersion.Status.RETIRED, deactivated_at__isnull=False
            ).exists(),
            "nav": "governance",
            "template_stamp": template_stamp("radiology/governance.html"),
        },
    )


def _registry_action(request: HttpRequest, action: Any, **kwargs: Any) -> HttpResponse:
    try:
        version = action(actor=request.user, **kwargs)
    except registry.RegistryError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{version.version} is now {version.get_status_display().lower()}.")
    return redirect("radiology:governance")


@admin_required
@require_POST
def governance_promote(request: HttpRequest) -> HttpResponse:
    return _registry_action(
        request,
        registry.model_version_promote,
        version=request.POST.get("version", ""),
        justification=request.POST.get("justification", ""),
    )


@admin_required
@require_POST
def governance_rollback(request: HttpRequest) -> HttpResponse:
    return _registry_action(
        request, registry.model_version_rollback, justification=request.POST.get("justification", "")
    )


@admin_required
@require_POST
def governance_status(request: HttpRequest) -> HttpResponse:
    return _registry_action(
        request,
        registry.model_version_set_status,
        version=request.POST.get("version", ""),
        status=request.POST.get("status", ""),
        reason=request.POST.get("justification", ""),
    )


@admin_required
@require_POST
def drift_acknowledge(request: HttpRequest, pk: int) -> HttpResponse:
    drift_alert_acknowledge(alert_id=pk, actor=request.user)
    return redirect("radiology:governance")


@admin_required
@require_GET
def governance_monitoring(request: HttpRequest) -> HttpResponse:
    by = request.GET.get("by", "body_region")
    if by not in monitoring.DIMENSIONS:
        by = "body_region"
    filters = {"model_version": request.GET.get("model_version", ""), "month": request.GET.get("month", "")}
    choices = monitoring.monitoring_choices()
    last_build = monitoring.monitoring_last_build()
    if filters["month"] not in {m.isoformat() for m in choices["month"]}:
        filters["month"] = ""
    return render(
        request,
        "radiology/monitoring.html",
        {
            "by": by,
            "by_label": monitoring.DIMENSION_LABELS[by],
            "dimensions": list(monitoring.DIMENSION_LABELS.items()),
            "filters": filters,
            "choices": choices,
            # The summary's watermark: every rebuild replaces the cells and adds a build, so the newest build
            # names the summary; the page keeps its rendered table per watermark and view.
            "stamp": last_build.pk if last_build else None,
            "template_stamp": template_stamp("radiology/monitoring.html"),
            # Called by the template only when its rendering for this watermark and view is not kept already
            # (a template calls a callable it is given).
            "rows": partial(monitoring.monitoring_table, by=by, filters=filters),
            "reliability": partial(monitoring.monitoring_reliability, filters=filters),
            "last_build": last_build,
            "nav": "governance",
        },
    )


REFRESH_MESSAGES = {
    "sent": (messages.SUCCESS, "A worker is rebuilding the summary; reload this page in a minute."),
    "already_asked": (
        messages.INFO,
        "A rebuild was asked for less than a minute ago; reload this page when the worker has finished.",
    ),
    "not_sent": (
        messages.ERROR,
        "The worker could not be reached, so the summary was not rebuilt; the nightly rebuild will run "
        "once it is back.",
    ),
}


@admin_required
@require_POST
def governance_monitoring_refresh(request: HttpRequest) -> HttpResponse:
    level, text = REFRESH_MESSAGES[monitoring.monitoring_request_refresh()]
    messages.add_message(request, level, text)
    return redirect("radiology:governance_monitoring")
