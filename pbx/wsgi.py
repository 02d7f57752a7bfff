"""WSGI entry point, for management tooling; the web process runs pbx.asgi."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pbx.settings")
application = get_wsgi_application()
