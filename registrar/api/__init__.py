"""The REST API under /api/v1/ (Django REST Framework), with its OpenAPI schema."""
