"""Operations endpoints, included at the site root: /healthz and /metrics."""
from django.urls import path

from registrar import health, metrics

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("metrics", metrics.metrics, name="metrics"),
]
