"""Celery tasks: thin adapters over the services, safe to run twice."""
from celery import shared_task

from registrar import services


@shared_task
def purge_expired_bindings():
    return services.purge_expired_bindings()


@shared_task
def prune_trace():
    return services.prune_trace()
