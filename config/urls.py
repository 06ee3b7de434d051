from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from radiology.auth_views import LoginView

urlpatterns = [
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    # The REST API, its OpenAPI schema (/api/schema/) and Swagger UI (/api/docs/).
    path("api/", include("radiology.api.urls")),
    # DICOMweb STOW-RS (token authentication, like the API).
    path("dicomweb/", include("radiology.dicomnet.urls")),
    path("", include("radiology.urls")),
]

# Under /api/ Django's own errors are problem documents too; elsewhere Django's defaults (templates/4xx.html).
handler400 = "radiology.api.errors.handler400"
handler403 = "radiology.api.errors.handler403"
handler404 = "radiology.api.errors.handler404"
handler500 = "radiology.api.errors.handler500"
