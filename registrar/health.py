"""Health of the processes: /healthz for the web process and the runsip processes'
status rows (the operations page reads jobs through ``services.job_statuses``).

``/healthz`` answers 200 with ``{"status": "ok", ...}`` when the database answers a
query, else 503 with ``{"status": "error", ...}``: that is what a load balancer or an
orchestrator needs to know about a web process. The runsip processes seen in the last
15 seconds are listed (``sip.workers``) but do not change the status code — the web
serves fine without them; probe a runsip container with ``manage.py healthcheck --sip``.
"""
import socket
import time

from django.db import DEFAULT_DB_ALIAS, connections
from django.http import JsonResponse
from django.utils import timezone

from registrar import services


def database_status() -> dict:
    """{"ok": True, "latency_ms": ...} or {"ok": False, "error": "<exception class>"}."""
    started = time.monotonic()
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as error:
        # The class only: the message may name hosts and users, and /healthz is public.
        return {"ok": False, "error": type(error).__name__}
    return {"ok": True, "latency_ms": round((time.monotonic() - started) * 1000, 2)}


def worker_summary(status, now) -> dict:
    return {
        "hostname": status.hostname, "pid": status.pid, "listeners": status.listeners,
        "started_at": status.started_at.isoformat(), "last_seen": status.last_seen.isoformat(),
        "seconds_since_seen": round((now - status.last_seen).total_seconds(), 1),
        "credentials": status.credentials, "connections": status.connections,
        "requests_per_second": status.requests_per_second, "received": status.received, "errors": status.errors,
        "registers_stored": status.stored,
    }


def report() -> dict:
    database = database_status()
    result = {"status": "ok" if database["ok"] else "error", "time": timezone.now().isoformat(),
              "database": database}
    if database["ok"]:
        now = timezone.now()
        workers = [worker_summary(status, now) for status in services.live_worker_statuses(now=now)]
        result["sip"] = {"status": "ok" if workers else "none", "workers": workers}
    return result


def healthz(request):
    result = report()
    return JsonResponse(result, status=200 if result["status"] == "ok" else 503,
                        headers={"Cache-Control": "no-store"})


def sip_worker_alive(hostname: str | None = None) -> bool:
    """A runsip process (on ``hostname``, by default this host) reported in the last 15 s."""
    hostname = hostname or socket.gethostname()
    return any(status.hostname == hostname for status in services.live_worker_statuses())
