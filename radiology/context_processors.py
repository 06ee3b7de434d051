from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from radiology.model_artifact import check_model_artifact
from radiology.roles import is_admin, is_clinician


def roles(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    clinician = is_clinician(user)
    context: dict[str, Any] = {"is_clinician": clinician, "is_admin": is_admin(user), "model_problem": ""}
    if clinician:
        # A broken model artifact stops classification; the web application keeps serving and says so.
        status = check_model_artifact()
        if not status.ok:
            context["model_problem"] = status.problem
    return context
