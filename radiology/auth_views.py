"""The sign-in page: Django's LoginView behind the per-account back-off (radiology/login_throttle.py).

django-axes handles the per username + address lockout in the authentication backend; this view only
answers attempts on an account in its back-off pause, without checking (or counting) the password.
"""

from __future__ import annotations

import math
from typing import Any

from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from radiology.login_throttle import login_backoff_remaining


class LoginView(auth_views.LoginView):
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        wait = login_backoff_remaining(username=str(request.POST.get("username", "")))
        if wait > 0:
            seconds = math.ceil(wait)
            response = render(
                request, "registration/locked_out.html", {"account_pause_seconds": seconds}, status=429
            )
            response["Retry-After"] = str(seconds)
            return response
        return super().post(request, *args, **kwargs)
