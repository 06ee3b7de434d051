"""Swagger UI from the vendored drf-spectacular-sidecar files, under the site's strict CSP.

The split view already serves its start-up script from a URL (script-src 'self'); this subclass also
drops the template's inline <style> block, which style-src 'self' would refuse.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.utils.html import format_html
from drf_spectacular.plumbing import set_query_parameters
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework.request import Request

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="{favicon}">
<link rel="stylesheet" href="{css}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{bundle}"></script>
<script src="{preset}"></script>
<script src="{script}"></script>
</body>
</html>
"""


class SwaggerDocsView(SpectacularSwaggerSplitView):
    url_name = "api:schema"
    title = "Fracture Review API"

    @extend_schema(exclude=True)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        if request.GET.get("script") is not None:
            return super().get(request, *args, **kwargs)
        return HttpResponse(
            format_html(
                _PAGE,
                title=self.title,
                favicon=self._swagger_ui_favicon(),
                css=self._swagger_ui_resource("swagger-ui.css"),
                bundle=self._swagger_ui_resource("swagger-ui-bundle.js"),
                preset=self._swagger_ui_resource("swagger-ui-standalone-preset.js"),
                script=set_query_parameters(
                    url=request.get_full_path(), lang=request.GET.get("lang"), script=""
                ),
            )
        )
