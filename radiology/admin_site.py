"""The Django admin for Fracture Review: open to the *admin* role (the group), not to Django's is_staff flag.

Roles live in groups (radiology.roles); a second, separate notion of "staff" would let the two drift apart.
Installed through FractureReviewAdminConfig in INSTALLED_APPS, which makes this the `admin.site` every
admin.py registers with. Anonymous visitors go to the one login page (throttled by django-axes); signed-in
users without the role get the same 403 and audit event as anywhere else in the application.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import update_wrapper
from typing import Any, TypeVar, cast

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

_View = TypeVar("_View", bound=Callable[..., Any])


class FractureReviewAdminSite(admin.AdminSite):
    site_header = "Fracture Review administration"
    site_title = "Fracture Review admin"
    index_title = "Records, audit trail and accounts"
    enable_nav_sidebar = False  # the lists need the width at 1280 px more than a second menu

    def has_permission(self, request: HttpRequest) -> bool:
        from radiology.roles import is_admin  # models are not ready when this module is imported

        return bool(request.user.is_active) and is_admin(request.user)

    def admin_view(self, view: _View, cacheable: bool = False) -> _View:
        inner = super().admin_view(view, cacheable)

        def gate(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            # Django's admin sends everyone it refuses to its login page; a signed-in clinician is instead
            # told "not allowed", and the attempt leaves an audit event, as everywhere else in the app.
            if not request.user.is_authenticated:
                from django.contrib.auth.views import redirect_to_login  # not importable before apps load

                return redirect_to_login(request.get_full_path())  # the one sign-in page
            if not self.has_permission(request):
                from radiology.access import deny

                return deny(request, reason="admin_site")
            return inner(request, *args, **kwargs)

        return cast(_View, update_wrapper(gate, inner))

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """One sign-in page for the whole application (the admin's own form checks is_staff instead)."""
        from django.contrib.auth.views import redirect_to_login

        if request.user.is_authenticated and self.has_permission(request):
            return HttpResponseRedirect(reverse("admin:index", current_app=self.name))
        target = request.GET.get("next") or reverse("admin:index", current_app=self.name)
        return redirect_to_login(target)


class FractureReviewAdminConfig(AdminConfig):
    default_site = "radiology.admin_site.FractureReviewAdminSite"
