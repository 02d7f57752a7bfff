from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("registrar.api.urls")),
    # Regis as an OAuth 2.0 authorization server (django-oauth-toolkit): token, revoke_token, introspect.
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("", include("registrar.ops_urls")),
    path("", include("webui.urls")),
]
