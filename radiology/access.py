"""Role checks for web views: anonymous users go to the login page, users without the role get 403
and an audit event (denied access is itself something an admin must be able to see)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render

from radiology.models import AuditEvent
from radiology.roles import is_admin, is_clinician
from radiology.services import audit_record

View = Callable[..., HttpResponseBase]


def client_ip(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def deny(request: HttpRequest, *, reason: str = "role") -> HttpResponse:
    audit_record(
        action=AuditEvent.Action.ACCESS_DENIED,
        actor=request.user,
        details={"path": request.path[:300], "method": request.method, "reason": reason},
        client_ip=client_ip(request),
    )
    # A clinician refused an admin page is told that, not that their account has no role.
    context = {"has_role": is_clinician(request.user) if request.user.is_authenticated else False}
    return render(request, "403.html", context, status=403)


def _role_required(check: Callable[[Any], bool]) -> Callable[[View], View]:
    def decorator(view: View) -> View:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not check(request.user):
                return deny(request)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


clinician_required = _role_required(is_clinician)
admin_required = _role_required(is_admin)
