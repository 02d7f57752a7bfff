from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("registrar.api.urls")),
    path("", include("registrar.ops_urls")),
    path("", include("webui.urls")),
]
