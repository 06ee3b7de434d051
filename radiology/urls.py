"""The web pages. Every URL here is in the role matrix of tests/web/test_role_matrix.py, which walks this
URL configuration: a new URL without an entry there fails the test."""

from django.urls import path

from radiology import reading_views, views
from radiology.governance import views as governance_views

app_name = "radiology"

urlpatterns = [
    path("", views.home, name="home"),
    path("queue/", views.queue, name="queue"),
    path("queue/rows/", views.queue_rows, name="queue_rows"),
    path("studies/new/", views.study_upload, name="study_upload"),
    path("studies/inspect-dicom/", views.dicom_inspect, name="dicom_inspect"),
    path("studies/<int:pk>/", reading_views.study_detail, name="study_detail"),
    path("studies/<int:pk>/status/", reading_views.study_status, name="study_status"),
    path("studies/<int:pk>/leave/", reading_views.study_leave, name="study_leave"),
    path("studies/<int:pk>/confirm/", reading_views.study_confirm, name="study_confirm"),
    path("studies/<int:pk>/unaided/", reading_views.study_unaided, name="study_unaided"),
    path(
        "studies/<int:pk>/read-without-model/",
        reading_views.study_read_without_model,
        name="study_read_without_model",
    ),
    path("radiographs/<int:pk>/image/", views.radiograph_image, name="radiograph_image"),
    path("radiographs/<int:pk>/review/", reading_views.radiograph_review, name="radiograph_review"),
    path("radiographs/<int:pk>/pixels/", reading_views.radiograph_pixels, name="radiograph_pixels"),
    path("reader/settings/", reading_views.reader_settings, name="reader_settings"),
    path("adjudications/", reading_views.adjudication_list, name="adjudications"),
    path("adjudications/<int:pk>/decide/", reading_views.adjudication_decide, name="adjudication_decide"),
    path("radiographs/<int:pk>/retry/", views.radiograph_retry, name="radiograph_retry"),
    path("predictions/<int:pk>/heatmap/", views.heatmap_image, name="heatmap_image"),
    path("audit/", views.audit_dashboard, name="audit_dashboard"),
    path("audit/settings/", reading_views.site_settings, name="site_settings"),
    path("audit/predictions.csv", views.prediction_export, name="prediction_export"),
    path("audit/models/", governance_views.governance, name="governance"),
    path("audit/models/promote/", governance_views.governance_promote, name="governance_promote"),
    path("audit/models/rollback/", governance_views.governance_rollback, name="governance_rollback"),
    path("audit/models/status/", governance_views.governance_status, name="governance_status"),
    path("audit/models/alerts/<int:pk>/ack/", governance_views.drift_acknowledge, name="drift_acknowledge"),
    path("audit/monitoring/", governance_views.governance_monitoring, name="governance_monitoring"),
    path(
        "audit/monitoring/refresh/",
        governance_views.governance_monitoring_refresh,
        name="governance_monitoring_refresh",
    ),
]
