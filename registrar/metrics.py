"""Prometheus metrics at /metrics, read from the database at each scrape.

Each scrape builds its own CollectorRegistry with one collector that reads the tables,
so the web process keeps no metric state and every web worker answers the same. What
only the SIP worker knows (responses by status, REGISTER latency, messages received)
it accumulates in a :class:`WorkerCounters` and writes into its WorkerStatus row every
few seconds; the collector exposes the rows of the workers alive in the last
``WORKER_METRICS_WITHIN`` with a ``worker="host:pid"`` label (a restarted worker is a
new series, as Prometheus expects of a counter reset).

Access: with the METRICS_TOKEN setting, a scrape needs ``Authorization: Bearer
<token>``; without it, only clients on loopback or private networks are answered
(behind a reverse proxy the proxy's address is what counts, so set a token there).

Websocket clients are counted per web process (the one answering the scrape).
"""
import hmac
import ipaddress
from collections import Counter
from datetime import timedelta

from django.conf import settings
from django.db.models import Count
from django.http import HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from registrar import live, services
from registrar.models import (Alert, AuthAttempt, Ban, Binding, Extension, JobOutcome, JobRun, WebhookDelivery,
                              WorkerStatus)
from registrar.sip.core import SendMessage, StoreRegistration

WORKER_METRICS_WITHIN = timedelta(seconds=30)
# REGISTER latency buckets, seconds: a challenge takes well under a millisecond, a
# stored REGISTER waits for its group commit.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_PENDING_LIMIT = 100_000


# -- in the SIP worker -----------------------------------------------------------------
def response_kind(data: bytes) -> tuple[str, str] | None:
    """(method from CSeq, status) of a response the worker sends; None for anything else."""
    if not data.startswith(b"SIP/2.0 "):
        return None
    status = data[8:11].decode("ascii", "replace")
    start = data.find(b"\r\nCSeq:")
    if start < 0:
        return "", status
    end = data.find(b"\r\n", start + 7)
    words = data[start + 7:end if end >= 0 else None].split()
    return (words[-1].decode("ascii", "replace").upper() if words else ""), status


class WorkerCounters:
    """What the SIP worker counts for /metrics, cheap enough for the event loop:
    responses by method and status, and REGISTER latency (arrival to final answer: the
    challenge or rejection computed at once, or the answer after its group commit)."""

    def __init__(self):
        self.responses = Counter()
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self._arrivals = {}

    def sent(self, data: bytes) -> None:
        kind = response_kind(data)
        if kind is not None:
            self.responses[kind] += 1

    def received(self, actions, arrived: float, now: float) -> None:
        """After the core handled one message (``arrived``/``now``: time.monotonic())."""
        waiting = [action.ticket for action in actions if isinstance(action, StoreRegistration)]
        if waiting:
            if len(self._arrivals) < _PENDING_LIMIT:
                for ticket in waiting:
                    self._arrivals[ticket] = arrived
            return
        for action in actions:
            if isinstance(action, SendMessage) and (response_kind(action.data) or ("",))[0] == "REGISTER":
                self.observe(now - arrived)
                return

    def answered(self, tickets, now: float) -> None:
        """REGISTERs answered after their batch was committed (or failed to be)."""
        for ticket in tickets:
            arrived = self._arrivals.pop(ticket, None)
            if arrived is not None:
                self.observe(now - arrived)

    def observe(self, seconds: float) -> None:
        for index, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                break
        else:
            index = len(LATENCY_BUCKETS)
        self.latency_counts[index] += 1
        self.latency_sum += seconds

    def as_dict(self) -> dict:
        """What the worker writes into its WorkerStatus row (JSON)."""
        return {
            "responses": [[method, status, count] for (method, status), count in sorted(self.responses.items())],
            "register_latency": {"buckets": list(LATENCY_BUCKETS), "counts": list(self.latency_counts),
                                 "sum": self.latency_sum},
        }


# -- in the web process ----------------------------------------------------------------
class RegisCollector:
    def __init__(self, now=None):
        self.now = now or timezone.now()

    def collect(self):
        yield from self._registrar()
        yield from self._jobs()
        yield from self._alerts()
        yield from self._workers()

    def _registrar(self):
        now = self.now
        bindings = Binding.objects.filter(expires_at__gt=now)
        yield GaugeMetricFamily("regis_registrations_active", "Live bindings (registered contacts).",
                                value=bindings.count())
        yield GaugeMetricFamily("regis_extensions_registered", "Extensions with at least one live binding.",
                                value=bindings.values("extension_id").distinct().count())
        yield GaugeMetricFamily("regis_extensions", "Extensions configured.", value=Extension.objects.count())
        yield GaugeMetricFamily("regis_websocket_clients",
                                "Browsers connected to this web process's live websocket.",
                                value=live.connected_clients)
        attempts = GaugeMetricFamily("regis_auth_failures_last_24h",
                                     "Rejected or re-challenged requests in the last 24 hours, by reason.",
                                     labels=["reason"])
        for row in (AuthAttempt.objects.filter(created_at__gt=now - timedelta(hours=24)).values("reason")
                    .annotate(count=Count("id")).order_by("reason")):
            attempts.add_metric([row["reason"]], row["count"])
        yield attempts
        yield GaugeMetricFamily("regis_bans_active", "Source addresses banned now.",
                                value=Ban.objects.filter(lifted_at__isnull=True, expires_at__gt=now)
                                .values("ip").distinct().count())

    def _jobs(self):
        last_run = GaugeMetricFamily("regis_job_last_run_timestamp_seconds", "When the job's last run finished.",
                                     labels=["job"])
        last_ok = GaugeMetricFamily("regis_job_last_run_ok", "1 if the job's last run succeeded, else 0.",
                                    labels=["job"])
        duration = GaugeMetricFamily("regis_job_last_run_duration_seconds", "How long the job's last run took.",
                                     labels=["job"])
        for run in services.last_job_runs():
            last_run.add_metric([run.name], run.finished_at.timestamp())
            last_ok.add_metric([run.name], 1 if run.outcome == JobOutcome.OK else 0)
            duration.add_metric([run.name], run.duration)
        success = GaugeMetricFamily("regis_job_last_success_timestamp_seconds",
                                    "When the job last finished successfully.", labels=["job"])
        for name, finished_at in sorted(services.last_successful_runs().items()):
            success.add_metric([name], finished_at.timestamp())
        runs = GaugeMetricFamily("regis_job_runs_last_24h", "Job runs in the last 24 hours, by outcome.",
                                 labels=["job", "outcome"])
        for row in (JobRun.objects.filter(started_at__gt=self.now - timedelta(hours=24))
                    .values("name", "outcome").annotate(count=Count("id")).order_by("name", "outcome")):
            runs.add_metric([row["name"], row["outcome"]], row["count"])
        yield from (last_run, last_ok, duration, success, runs)

    def _alerts(self):
        since = self.now - timedelta(hours=24)
        raised = GaugeMetricFamily("regis_alerts_last_24h", "Alerts raised in the last 24 hours, by event.",
                                   labels=["event"])
        for row in (Alert.objects.filter(created_at__gt=since).values("event").annotate(count=Count("id"))
                    .order_by("event")):
            raised.add_metric([row["event"]], row["count"])
        yield raised
        deliveries = GaugeMetricFamily("regis_webhook_deliveries_last_24h",
                                       "Webhook delivery attempts in the last 24 hours, by result.",
                                       labels=["result"])
        counts = Counter(WebhookDelivery.objects.filter(created_at__gt=since).values_list("succeeded", flat=True))
        deliveries.add_metric(["ok"], counts[True])
        deliveries.add_metric(["failed"], counts[False])
        yield deliveries

    def _workers(self):
        statuses = list(WorkerStatus.objects.filter(last_seen__gte=self.now - WORKER_METRICS_WITHIN))
        yield GaugeMetricFamily("regis_sip_workers", "runsip processes that reported recently.",
                                value=len(statuses))
        families = {
            "received": CounterMetricFamily("regis_sip_messages_received", "SIP messages received.",
                                            labels=["worker"]),
            "errors": CounterMetricFamily("regis_sip_message_errors", "Messages that raised an unexpected error.",
                                          labels=["worker"]),
            "batches": CounterMetricFamily("regis_sip_register_batches", "Group commits of REGISTERs.",
                                           labels=["worker"]),
            "stored": CounterMetricFamily("regis_sip_registers_stored", "REGISTERs stored.", labels=["worker"]),
        }
        gauges = {
            "requests_per_second": GaugeMetricFamily("regis_sip_requests_per_second",
                                                     "Messages received per second (between the last reports).",
                                                     labels=["worker"]),
            "credentials": GaugeMetricFamily("regis_sip_credentials_cached", "Extensions in the credentials cache.",
                                             labels=["worker"]),
            "connections": GaugeMetricFamily("regis_sip_tcp_connections", "Open TCP connections.",
                                             labels=["worker"]),
        }
        started = GaugeMetricFamily("regis_sip_worker_start_timestamp_seconds", "When the worker started.",
                                    labels=["worker", "listeners"])
        responses = CounterMetricFamily("regis_sip_responses", "SIP responses sent, by the method answered and "
                                                               "status.", labels=["worker", "method", "status"])
        latency = HistogramMetricFamily("regis_sip_register_duration_seconds",
                                        "REGISTER arrival to final answer (challenge, rejection, or the answer "
                                        "after its group commit).", labels=["worker"])
        for status in statuses:
            worker = f"{status.hostname}:{status.pid}"
            for field, family in {**families, **gauges}.items():
                family.add_metric([worker], getattr(status, field))
            started.add_metric([worker, " ".join(status.listeners)], status.started_at.timestamp())
            counters = status.counters or {}
            for method, code, count in counters.get("responses", []):
                responses.add_metric([worker, method, str(code)], count)
            histogram = counters.get("register_latency")
            if histogram:
                cumulative, buckets = 0, []
                for bound, count in zip(list(histogram["buckets"]) + [float("inf")], histogram["counts"]):
                    cumulative += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
                latency.add_metric([worker], buckets, histogram["sum"])
        yield from families.values()
        yield from gauges.values()
        yield from (started, responses, latency)


def exposition(now=None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RegisCollector(now))
    return generate_latest(registry)


def allowed(request) -> bool:
    token = getattr(settings, "METRICS_TOKEN", "")
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_private


def metrics(request):
    if not allowed(request):
        response = HttpResponse("Metrics need a bearer token or a private network.\n", status=403,
                                content_type="text/plain")
        if getattr(settings, "METRICS_TOKEN", ""):
            response.status_code = 401
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
