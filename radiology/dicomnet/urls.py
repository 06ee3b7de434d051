"""DICOMweb: STOW-RS under /dicomweb/."""

from django.urls import path

from radiology.dicomnet.stow import StowStudiesApi

app_name = "dicomweb"

urlpatterns = [
    path("studies", StowStudiesApi.as_view(), name="stow_studies"),
]
