"""The operations endpoints alone, as pbx/urls.py includes them at the root."""
from django.urls import include, path

urlpatterns = [path("", include("registrar.ops_urls"))]
