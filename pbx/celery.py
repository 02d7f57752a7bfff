"""The Celery application; tasks live in each app's tasks.py.

Without REDIS_URL (the embedded default) tasks run eagerly in the caller's process,
so housekeeping still happens without a broker of its own.
"""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pbx.settings")

app = Celery("pbx")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
