"""Everything under /api/: version 1 of the API, the problem-type catalogue, the schema and its docs.

The last pattern catches every other /api/ path, so an unknown API URL is a 404 problem document rather
than the web UI's HTML page (and is never redirected by APPEND_SLASH).
"""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView

from radiology.api import batches, exports, integration, radiographs, reading, studies, views
from radiology.api.docs import SwaggerDocsView
from radiology.api.errors import not_found_view

app_name = "api"

urlpatterns = [
    path("v1/studies", studies.StudyCollectionApi.as_view(), name="studies"),
    path("v1/studies/<int:pk>", studies.StudyDetailApi.as_view(), name="study_detail"),
    path("v1/studies/<int:pk>/fhir", integration.StudyFhirApi.as_view(), name="study_fhir"),
    path("v1/studies/<int:pk>/deliveries", integration.StudyDeliveriesApi.as_view(), name="study_deliveries"),
    path("v1/radiographs", radiographs.RadiographListApi.as_view(), name="radiographs"),
    path("v1/radiographs/<int:pk>", radiographs.RadiographDetailApi.as_view(), name="radiograph_detail"),
    path("v1/radiographs/<int:pk>/image", radiographs.RadiographImageApi.as_view(), name="radiograph_image"),
    path(
        "v1/radiographs/<int:pk>/prediction",
        radiographs.RadiographPredictionApi.as_view(),
        name="radiograph_prediction",
    ),
    path(
        "v1/radiographs/<int:pk>/reviews",
        radiographs.ReviewCollectionApi.as_view(),
        name="radiograph_reviews",
    ),
    path(
        "v1/radiographs/<int:pk>/unaided-read",
        reading.UnaidedReadCreateApi.as_view(),
        name="radiograph_unaided_read",
    ),
    path("v1/studies/<int:pk>/confirm", reading.StudyConfirmApi.as_view(), name="study_confirm"),
    path(
        "v1/studies/<int:pk>/read-without-model",
        reading.StudyReadWithoutModelApi.as_view(),
        name="study_read_without_model",
    ),
    path("v1/adjudications", reading.AdjudicationListApi.as_view(), name="adjudications"),
    path(
        "v1/adjudications/<int:pk>/decision",
        reading.AdjudicationDecideApi.as_view(),
        name="adjudication_decide",
    ),
    path(
        "v1/predictions/<int:pk>/heatmap",
        radiographs.PredictionHeatmapApi.as_view(),
        name="prediction_heatmap",
    ),
    path("v1/batches", batches.BatchSubmitApi.as_view(), name="batches"),
    path("v1/batches/<uuid:pk>", batches.BatchDetailApi.as_view(), name="batch_detail"),
    path("v1/exports/results.csv", exports.ResultExportCsvApi.as_view(), name="export_csv"),
    path("v1/exports/results.json", exports.ResultExportJsonApi.as_view(), name="export_json"),
    path("problems/<str:code>", views.ProblemTypeApi.as_view(), name="problem_type"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SwaggerDocsView.as_view(), name="docs"),
    re_path(r"^", not_found_view),
]
