"""Operations: recorded housekeeping jobs, alerts (e-mail, signed webhooks), /healthz,
/metrics and JSON logs — on the real database (SQLite by default, PostgreSQL in CI).

The webhook receiver and the SMTP server are real servers on 127.0.0.1, started here.
"""
import copy
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from datetime import datetime, timedelta, timezone as dt_timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.utils import load_backend
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from registrar import alerts, health, jsonlog, services, softparams, tasks
from registrar.metrics import LATENCY_BUCKETS, WorkerCounters, response_kind
from registrar.models import (Alert, AlertEvent, AlertRoute, AuthAttempt, Binding, ExtensionPresence, HourlyStat, JobRun,
                              SoftParameter, SoftParameterChange, TracedMessage, WebhookDelivery, WorkerStatus)
from registrar.sip.core import Attempt, Origin, SendMessage, Source, StoreRegistration, TraceMessage
from registrar.sip.policy import Policy
from registrar.sip.protection import BanDecision
from registrar.sip.reasons import Reason
from registrar.sip.registrar import ContactRequest, RegisterRequest

pytestmark = pytest.mark.django_db
DAY = 86400.0


@pytest.fixture(autouse=True)
def in_process_tasks(celery_eager, monkeypatch, settings):
    """Tasks run here, as in the embedded default, even when REDIS_URL is set; webhook
    retries wait milliseconds instead of seconds."""
    celery_eager(True)
    monkeypatch.setattr(alerts, "EAGER_WEBHOOK_BACKOFF", 0.01)
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


def at(days_ago: float, now: float | None = None) -> datetime:
    return datetime.fromtimestamp((now or time.time()) - days_ago * DAY, tz=dt_timezone.utc)


def attempt(when: float, number="1001", reason=Reason.WRONG_PASSWORD, ip="192.0.2.7"):
    return Attempt(when, Source("udp", ip, 5060), "REGISTER", f"sip:{number}@regis.local", number, number,
                   "Phone/1", "challenged", reason, 401, "")


def register(number, port, when, expires=3600):
    contact = ContactRequest(f"sip:{number}@192.0.2.1:{port}", "", None, "", None, expires)
    request = RegisterRequest(number, f"call-{number}-{port}", 1, False, (contact,))
    origin = Origin("192.0.2.1", port, "udp", "Phone/1", "")
    [outcome] = services.store_registrations([StoreRegistration(1, request, origin, 5, Policy())], when)
    assert outcome.ok


def simulate_month(now: float, days: int = 40):
    """One failed attempt a day for ``days`` days (the write path keeps the hourly
    roll-up too), and a traced message a day."""
    for day in range(days):
        services.record_attempts([attempt(now - day * DAY - 60)])
        services.record_trace([TraceMessage(now - day * DAY - 60, "in", Source("udp", "192.0.2.7", 5060), "1001",
                                            b"REGISTER sip:regis.local SIP/2.0\r\nCall-ID: c\r\n\r\n")])


def last_run(name) -> JobRun:
    return JobRun.objects.filter(name=name).latest("id")


# -- jobs ------------------------------------------------------------------------------
def test_pruning_attempts_keeps_thirty_days_by_default():
    now = time.time()
    simulate_month(now)
    tasks.run_job("prune_auth_attempts")
    kept = sorted(AuthAttempt.objects.values_list("created_at", flat=True))
    assert len(kept) == 30
    assert kept[0] > at(30, now)
    assert last_run("prune_auth_attempts").result == "10 auth attempts deleted"


def test_attempt_retention_follows_its_soft_parameter_once_catalogued():
    if "attempts_retention_days" in softparams.BY_NAME:
        services.set_soft_parameter("attempts_retention_days", 7, actor="t")
    else:  # what catalogue entry 320 will hold; until then the default (30 days) applies
        SoftParameter.objects.create(number=320, name="attempts_retention_days", kind="int", value=7, default=30,
                                     description="")
    simulate_month(time.time(), days=12)
    assert services.prune_auth_attempts() == 5
    assert AuthAttempt.objects.count() == 7


def test_pruning_the_audit_keeps_each_parameters_latest_change():
    services.set_soft_parameter("min_expires", 61, actor="t")
    services.set_soft_parameter("min_expires", 62, actor="t")
    services.set_soft_parameter("min_expires", 63, actor="t")
    services.set_soft_parameter("rate_limit", 300, actor="t")
    ages = {61: 400, 62: 380, 63: 100, 300: 500}
    for change in SoftParameterChange.objects.all():
        SoftParameterChange.objects.filter(pk=change.pk).update(changed_at=at(ages[change.new_value]))
    assert tasks.run_job("prune_parameter_audit") == "2 soft-parameter audit entries deleted"
    # 61 and 62 are past 365 days; 300 is older still but is rate_limit's latest change.
    assert sorted(SoftParameterChange.objects.values_list("new_value", flat=True)) == [63, 300]


def test_pruning_hourly_stats_keeps_ninety_days():
    now = time.time()
    for day in (1, 30, 89, 91, 120):
        services.record_attempts([attempt(now - day * DAY)])
    deleted = services.prune_hourly_stats()
    assert deleted == 2
    assert HourlyStat.objects.count() == 3
    assert min(HourlyStat.objects.values_list("hour", flat=True)) > at(90, now)


def test_purging_bindings_and_pruning_the_trace_are_recorded_jobs():
    now = time.time()
    simulate_month(now, days=3)
    services.create_extension("1001", "pw")
    services.create_extension("1002", "pw")
    register("1001", 5001, now - 2 * 3600)  # expired an hour ago
    register("1002", 5002, now)
    tasks.run_job("purge_expired_bindings")
    tasks.run_job("prune_trace")
    assert list(Binding.objects.values_list("contact_uri", flat=True)) == ["sip:1002@192.0.2.1:5002"]
    assert TracedMessage.objects.count() == 1  # within trace_max_age_hours (24)
    assert last_run("purge_expired_bindings").result == "1 expired bindings deleted"
    assert last_run("prune_trace").result == "2 traced messages deleted"


def test_operations_history_is_pruned_but_each_jobs_last_run_stays():
    now = timezone.now()
    old = now - timedelta(days=10)
    for name in ("a", "a", "b"):
        services.record_job_run(name, old, old, "ok")
    services.record_job_run("a", now, now, "ok")
    ancient = services.raise_alert(AlertEvent.TEST, "old", "", now=now - timedelta(days=100))
    services.raise_alert(AlertEvent.TEST, "new", "")
    services.record_worker_status({"hostname": "gone", "pid": 1, "started_at": 0}, now=now - timedelta(days=2))
    webhook, _ = services.create_webhook("http://127.0.0.1:9/", ["test"])
    services.record_webhook_delivery(webhook.pk, ancient.pk, 1)
    deleted = services.prune_operations_history(now)
    assert deleted == {"job_runs": 2, "webhook_deliveries": 0, "alerts": 1, "worker_statuses": 1}
    assert sorted(JobRun.objects.values_list("name", "started_at")) == [("a", now), ("b", old)]
    assert list(Alert.objects.values_list("subject", flat=True)) == ["new"]
    assert not WebhookDelivery.objects.exists()  # went with its alert


def test_a_failed_job_is_recorded_re_raised_and_alerted(monkeypatch):
    services.set_alert_route(AlertEvent.JOB_FAILED, "ops@example.com")

    def broken():
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(tasks.JOBS, "prune_auth_attempts", broken)
    with pytest.raises(RuntimeError):
        tasks.run_job("prune_auth_attempts")
    with pytest.raises(RuntimeError):
        tasks.run_job("prune_auth_attempts")
    run = last_run("prune_auth_attempts")
    assert (run.outcome, run.result) == ("failed", "RuntimeError: disk on fire")
    assert run.finished_at >= run.started_at and run.duration >= 0
    # Two failures, one alert: failures of one job are told once an hour.
    assert [message.subject for message in mail.outbox] == ["[Regis] Job prune_auth_attempts failed"]
    assert "disk on fire" in mail.outbox[0].body


def test_last_job_runs_lists_the_latest_run_of_each_job():
    tasks.run_job("prune_hourly_stats")
    tasks.run_job("prune_hourly_stats")
    tasks.run_job("prune_auth_attempts")
    runs = services.last_job_runs()
    assert [run.name for run in runs] == ["prune_auth_attempts", "prune_hourly_stats"]
    assert runs[1].pk == last_run("prune_hourly_stats").pk
    assert set(services.last_successful_runs()) == {"prune_auth_attempts", "prune_hourly_stats"}


def test_running_every_job_twice_is_harmless():
    now = time.time()
    simulate_month(now)
    services.create_extension("1001", "pw")
    register("1001", 5001, now)
    services.ban_sources([BanDecision("198.51.100.9", now + 600, 10, "10 failures")])
    for _ in range(21):
        services.record_attempts([attempt(now - 30)])
    for name in sorted(tasks.JOBS):
        tasks.run_job(name)
    counts = (AuthAttempt.objects.count(), HourlyStat.objects.count(), TracedMessage.objects.count(),
              Binding.objects.count(), Alert.objects.count(), ExtensionPresence.objects.count())
    for name in sorted(tasks.JOBS):
        tasks.run_job(name)
    assert (AuthAttempt.objects.count(), HourlyStat.objects.count(), TracedMessage.objects.count(),
            Binding.objects.count(), Alert.objects.count(), ExtensionPresence.objects.count()) == counts
    assert sorted(Alert.objects.values_list("event", flat=True)) == ["ban", "failure_spike"]
    assert JobRun.objects.filter(outcome="ok").count() == 2 * len(tasks.JOBS)


def test_the_embedded_timer_starts_each_scheduled_job_when_due(settings):
    settings.CELERY_BEAT_SCHEDULE = {
        "prune-attempts": {"task": "registrar.tasks.run_job", "args": ("prune_auth_attempts",), "schedule": 3600.0},
        "stats": {"task": "registrar.tasks.run_job", "args": ("prune_hourly_stats",),
                  "schedule": timedelta(seconds=0)},
    }
    due = {}
    assert tasks.run_due_jobs(due) == ["prune-attempts", "stats"]
    assert tasks.run_due_jobs(due) == ["stats"]
    assert JobRun.objects.filter(name="prune_auth_attempts").count() == 1
    assert JobRun.objects.filter(name="prune_hourly_stats").count() == 2


def test_jobs_command_runs_and_lists():
    out = StringIO()
    call_command("jobs", "run", "prune_hourly_stats", stdout=out)
    assert "prune_hourly_stats: 0 hourly roll-ups deleted" in out.getvalue()
    out = StringIO()
    call_command("jobs", "list", stdout=out)
    assert "prune_hourly_stats" in out.getvalue() and "ok" in out.getvalue()
    assert "check_failure_spikes         never ran" in out.getvalue()
    with pytest.raises(CommandError):
        call_command("jobs", "run", "nope")


# -- alerts: checks --------------------------------------------------------------------
def test_a_failure_spike_is_alerted_once_an_hour_per_extension():
    now = time.time()
    services.create_extension("1001", "pw")
    services.create_extension("1002", "pw")
    services.record_attempts([attempt(now - 60 - i) for i in range(21)])  # 21 > 20
    services.record_attempts([attempt(now - 60, number="1002") for _ in range(20)])  # not more than 20
    services.record_attempts([attempt(now - 60, number="9999") for _ in range(50)])  # no such extension
    services.record_attempts([attempt(now - 60, number="1002", reason=Reason.STALE_NONCE) for _ in range(5)])
    services.record_attempts([attempt(now - 700, number="1002") for _ in range(5)])  # outside 10 minutes
    checked = datetime.fromtimestamp(now, tz=dt_timezone.utc)
    [alert] = services.check_failure_spikes(checked)
    assert (alert.event, alert.target) == ("failure_spike", "1001")
    assert alert.details["failures"] == 21 and alert.details["sources"] == {"192.0.2.7": 21}
    assert "does not match" in alert.text  # the reason, in words
    assert services.check_failure_spikes(checked + timedelta(minutes=5)) == []
    # Still failing an hour later: told again.
    services.record_attempts([attempt(now + 3600 + 60) for _ in range(25)])
    [again] = services.check_failure_spikes(checked + timedelta(minutes=61, seconds=120))
    assert again.target == "1001"


def test_an_extension_that_stops_registering_is_alerted_once():
    now = time.time()
    services.create_extension("1001", "pw", display_name="Front desk")
    services.create_extension("1002", "pw")
    register("1001", 5001, now, expires=600)
    register("1002", 5002, now, expires=7200)
    checked = datetime.fromtimestamp(now, tz=dt_timezone.utc)
    assert services.check_stopped_registering(checked) is None  # the first check takes note
    assert ExtensionPresence.objects.count() == 2
    later = checked + timedelta(minutes=20)
    alert = services.check_stopped_registering(later)
    assert alert.subject == "Extension 1001 stopped registering"
    [entry] = alert.details["extensions"]
    assert entry["extension"] == "1001" and entry["last_contact"]["source"] == "192.0.2.1:5001"
    assert "1001 Front desk: its binding expired" in alert.text
    assert services.check_stopped_registering(later + timedelta(minutes=1)) is None
    # Back again, then gone again: a new episode, a new alert.
    register("1001", 5001, now + 1800, expires=600)
    assert services.check_stopped_registering(checked + timedelta(minutes=31)) is None
    assert services.check_stopped_registering(checked + timedelta(minutes=50)).target == "1001"


def test_an_unregistered_extension_is_reported_without_a_last_contact():
    now = time.time()
    services.create_extension("1001", "pw")
    register("1001", 5001, now)
    assert services.check_stopped_registering() is None
    services.remove_binding(Binding.objects.get())
    alert = services.check_stopped_registering()
    assert alert.details["extensions"][0]["last_contact"] is None
    assert "unregistered by the phone or an admin" in alert.text


# -- alerts: e-mail --------------------------------------------------------------------
def test_a_ban_is_e_mailed_from_the_send_alerts_job(django_capture_on_commit_callbacks):
    services.set_alert_route(AlertEvent.BAN, "ops@example.com, noc@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        bans = services.ban_sources([BanDecision("203.0.113.5", time.time() + 600, 10, "10 failures in 60 s")])
    # Without a broker the SIP worker's thread does not send; the job on the timer does.
    assert mail.outbox == []
    tasks.run_job("send_alerts")
    [message] = mail.outbox
    assert message.subject == "[Regis] Source 203.0.113.5 banned"
    assert message.to == ["ops@example.com", "noc@example.com"]
    assert "10 failures in 60 s" in message.body
    alert = Alert.objects.get()
    assert alert.emailed_to == "ops@example.com, noc@example.com" and alert.email_error == ""
    assert alert.ban_notices.get().ban_id == bans[0].pk
    tasks.run_job("send_alerts")
    tasks.notify_bans.delay([bans[0].pk])
    assert len(mail.outbox) == 1


def test_with_a_broker_a_ban_queues_its_alert_after_commit(monkeypatch, celery_eager,
                                                           django_capture_on_commit_callbacks):
    celery_eager(False)
    queued = []
    monkeypatch.setattr(tasks.notify_bans, "delay", lambda ids: queued.append(ids))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        bans = services.ban_sources([BanDecision("203.0.113.5", time.time() + 600, 10, "x")])
    assert queued == []  # nothing before the commit
    for callback in callbacks:
        callback()
    assert queued == [[bans[0].pk]]


def test_many_bans_make_one_alert():
    services.set_alert_route(AlertEvent.BAN, "ops@example.com")
    services.ban_sources([BanDecision(f"203.0.113.{i}", time.time() + 600, 10, "x") for i in range(1, 4)])
    tasks.run_job("send_alerts")
    assert [message.subject for message in mail.outbox] == ["[Regis] 3 source addresses banned"]


def test_an_e_mail_failure_is_recorded_on_the_alert(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", closed_port()
    services.set_alert_route(AlertEvent.TEST, "ops@example.com")
    services.raise_alert(AlertEvent.TEST, "hello", "world")
    assert tasks.send_pending_alerts() == 1
    alert = Alert.objects.get()
    assert alert.email_error.startswith("ConnectionRefusedError") and alert.dispatched_at is not None
    assert tasks.send_pending_alerts() == 0  # claimed once, not resent


def test_alert_e_mail_through_a_real_smtp_server(settings):
    from aiosmtpd.controller import Controller

    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope)
            return "250 OK"

    port = closed_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
        settings.DEFAULT_FROM_EMAIL = "regis@example.com"
        services.set_alert_route(AlertEvent.TEST, "ops@example.com")
        out = StringIO()
        call_command("alerts", "test", stdout=out)
    finally:
        controller.stop()
    assert "e-mail to ops@example.com" in out.getvalue()
    [envelope] = received
    assert envelope.mail_from == "regis@example.com" and envelope.rcpt_tos == ["ops@example.com"]
    assert b"Subject: [Regis] Test alert" in envelope.content
    assert Alert.objects.get().email_error == ""


def test_routes_and_webhooks_are_validated():
    with pytest.raises(ValidationError) as error:
        services.set_alert_route("ban", "not an address")
    assert "emails" in error.value.message_dict
    with pytest.raises(ValidationError) as error:
        services.create_webhook("http://127.0.0.1/", ["ban", "lunch"])
    assert "events" in error.value.message_dict
    webhook, secret = services.create_webhook("http://127.0.0.1/", "failure_spike, ban")
    assert webhook.events == ["ban", "failure_spike"] and len(secret) > 30
    services.update_webhook(webhook, enabled=False)
    assert services.webhooks_for("ban") == []
    assert services.alert_recipients("ban") == []


def test_routes_and_webhooks_through_the_django_admin(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "", "pw"))
    admin_client = client
    response = admin_client.post("/admin/registrar/alertroute/add/",
                                 {"event": "ban", "emails": "bad address", "enabled": "on"})
    assert response.status_code == 200 and "is not an e-mail address" in response.content.decode()
    response = admin_client.post("/admin/registrar/alertroute/add/",
                                 {"event": "ban", "emails": "ops@example.com;\nnoc@example.com", "enabled": "on"})
    assert response.status_code == 302
    assert AlertRoute.objects.get().emails == "ops@example.com, noc@example.com"
    response = admin_client.post("/admin/registrar/webhook/add/", {
        "name": "noc", "url": "https://hooks.example.com/regis", "secret": "", "events": ["ban", "job_failed"],
        "enabled": "on"}, follow=True)
    webhook = services.webhooks_for("job_failed")[0]
    assert webhook.events == ["ban", "job_failed"] and len(webhook.secret) > 30
    assert webhook.secret in response.content.decode()  # shown once, to configure the receiver
    for page in ("jobrun", "alert", "webhookdelivery", "workerstatus"):
        assert admin_client.get(f"/admin/registrar/{page}/").status_code == 200


# -- alerts: webhooks ------------------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def receiver():
    """A webhook receiver on loopback; ``answers`` scripts its status codes (then 200)."""
    state = {"requests": [], "answers": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state["requests"].append((dict(self.headers), body))
            self.send_response(state["answers"].pop(0) if state["answers"] else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/hooks/regis"
    yield state
    server.shutdown()
    server.server_close()


def test_a_webhook_is_signed_and_retried_after_a_500(receiver):
    webhook, secret = services.create_webhook(receiver["url"], ["ban"], name="noc")
    receiver["answers"] = [500]
    services.ban_sources([BanDecision("203.0.113.5", time.time() + 600, 10, "10 failures")])
    tasks.run_job("send_alerts")
    (first_headers, first), (headers, body) = receiver["requests"]
    assert first == body  # a retry sends the same body
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Regis-Signature"] == expected
    assert alerts.verify(body, secret, headers["X-Regis-Signature"])
    assert not alerts.verify(body, "other secret", headers["X-Regis-Signature"])
    assert headers["Content-Type"] == "application/json" and headers["X-Regis-Event"] == "ban"
    sent = json.loads(body)
    assert sent["event"] == "ban" and sent["details"]["bans"][0]["ip"] == "203.0.113.5"
    assert sent["id"] == Alert.objects.get().pk
    log = list(WebhookDelivery.objects.order_by("attempt").values_list(
        "attempt", "status_code", "succeeded", "will_retry"))
    assert log == [(1, 500, False, True), (2, 200, True, False)]


def test_a_webhook_gives_up_after_the_bounded_retries(receiver):
    webhook, _ = services.create_webhook(receiver["url"], ["test"])
    receiver["answers"] = [503] * 10
    services.raise_alert(AlertEvent.TEST, "t", "t")
    tasks.send_pending_alerts()
    assert len(receiver["requests"]) == alerts.EAGER_WEBHOOK_ATTEMPTS
    assert list(WebhookDelivery.objects.order_by("attempt").values_list("will_retry", flat=True)) == [
        True, True, False]


def test_a_webhook_4xx_is_final_and_a_dead_receiver_is_an_error(receiver):
    services.create_webhook(receiver["url"], ["test"])
    services.create_webhook(f"http://127.0.0.1:{closed_port()}/", ["test"], name="dead")
    receiver["answers"] = [404]
    services.raise_alert(AlertEvent.TEST, "t", "t")
    tasks.send_pending_alerts()
    assert len(receiver["requests"]) == 1
    live = WebhookDelivery.objects.get(webhook__name="")
    assert (live.status_code, live.will_retry) == (404, False)
    dead = list(WebhookDelivery.objects.filter(webhook__name="dead").order_by("attempt"))
    assert len(dead) == alerts.EAGER_WEBHOOK_ATTEMPTS
    assert dead[0].status_code is None and "Connection refused" in dead[0].error


def test_with_a_broker_a_failed_delivery_is_retried_by_celery_with_backoff(receiver, monkeypatch, celery_eager):
    from celery.exceptions import Retry

    celery_eager(False)
    webhook, _ = services.create_webhook(receiver["url"], ["test"])
    alert = services.raise_alert(AlertEvent.TEST, "t", "t")
    retries = []

    def retry(**options):
        retries.append(options)
        return Retry()

    monkeypatch.setattr(tasks.deliver_webhook, "retry", retry)
    receiver["answers"] = [500, 500]
    for attempt_number in (1, 2):
        tasks.deliver_webhook.push_request(retries=attempt_number - 1, is_eager=False)
        try:
            with pytest.raises(Retry):
                tasks.deliver_webhook.run(webhook.pk, alert.pk)
        finally:
            tasks.deliver_webhook.pop_request()
    assert [options["countdown"] for options in retries] == [30.0, 60.0]
    tasks.deliver_webhook.push_request(retries=alerts.WEBHOOK_ATTEMPTS - 1, is_eager=False)
    receiver["answers"] = [500]
    try:
        assert tasks.deliver_webhook.run(webhook.pk, alert.pk) is False  # the last attempt: no more retries
    finally:
        tasks.deliver_webhook.pop_request()
    assert len(retries) == 2
    assert list(WebhookDelivery.objects.order_by("id").values_list("attempt", "will_retry")) == [
        (1, True), (2, True), (alerts.WEBHOOK_ATTEMPTS, False)]


# -- SIP worker status -----------------------------------------------------------------
def worker_report(received=0, hostname="sip-1", pid=4242, counters=None):
    return {"hostname": hostname, "pid": pid, "listeners": ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"],
            "started_at": time.time() - 100, "credentials": 12, "connections": 3,
            "stats": {"received": received, "errors": 1, "batches": 7, "stored": 40},
            "counters": counters or {}}


def test_worker_status_rows_and_requests_per_second():
    first = timezone.now()
    report = worker_report(100)
    services.record_worker_status(report, now=first)
    status = services.record_worker_status({**report, "stats": {"received": 600}}, now=first + timedelta(seconds=5))
    assert status.requests_per_second == 100.0
    assert WorkerStatus.objects.count() == 1
    services.record_worker_status(worker_report(hostname="sip-2"), now=first - timedelta(seconds=60))
    assert [s.hostname for s in services.live_worker_statuses(now=first + timedelta(seconds=6))] == ["sip-1"]
    services.forget_worker_status("sip-1", 4242)
    assert services.live_worker_statuses(now=first + timedelta(seconds=6)) == []


def test_worker_counters_count_responses_and_register_latency():
    counters = WorkerCounters()
    challenge = b"SIP/2.0 401 Unauthorized\r\nVia: x\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    options = b"SIP/2.0 200 OK\r\nCSeq: 7 OPTIONS\r\n\r\n"
    assert response_kind(challenge) == ("REGISTER", "401") and response_kind(b"REGISTER sip:x SIP/2.0") is None
    source = Source("udp", "192.0.2.1", 5060)
    counters.received([SendMessage(challenge, source)], arrived=10.0, now=10.0004)
    counters.received([SendMessage(options, source)], arrived=10.0, now=10.5)  # not a REGISTER
    store = StoreRegistration(9, None, None, 5, Policy())
    counters.received([store], arrived=11.0, now=11.0001)
    counters.answered([9], now=11.03)
    for data in (challenge, challenge, options):
        counters.sent(data)
    report = counters.as_dict()
    assert report["responses"] == [["OPTIONS", "200", 1], ["REGISTER", "401", 2]]
    histogram = report["register_latency"]
    assert sum(histogram["counts"]) == 2
    assert histogram["counts"][0] == 1 and histogram["counts"][LATENCY_BUCKETS.index(0.05)] == 1
    assert histogram["sum"] == pytest.approx(0.0304, abs=1e-6)


# -- /healthz --------------------------------------------------------------------------
@pytest.mark.urls("tests.ops_test_urls")
def test_healthz_answers_ok_with_the_live_sip_workers(client):
    services.record_worker_status(worker_report(hostname="sip-1"))
    services.record_worker_status(worker_report(hostname="old"), now=timezone.now() - timedelta(minutes=5))
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"]["ok"] is True
    assert body["sip"]["status"] == "ok"
    assert [worker["hostname"] for worker in body["sip"]["workers"]] == ["sip-1"]
    assert body["sip"]["workers"][0]["listeners"] == ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
    assert response["Cache-Control"] == "no-store"


@pytest.fixture
def unreachable_database(monkeypatch, tmp_path):
    """/healthz pointed at a database like the default one that cannot be reached: a
    PostgreSQL port nobody listens on, or an SQLite file in a directory that does not
    exist. The connection and its failure are the driver's own; only which connection
    the health module sees is swapped."""
    config = copy.deepcopy(connections.settings["default"])
    if config["ENGINE"].endswith("sqlite3"):
        config["NAME"] = str(tmp_path / "missing" / "regis.sqlite3")
    else:
        config.update(HOST="127.0.0.1", PORT=str(closed_port()))
        config["OPTIONS"] = {**config.get("OPTIONS", {}), "connect_timeout": 3}
    unreachable = load_backend(config["ENGINE"]).DatabaseWrapper(config, "unreachable")
    monkeypatch.setattr(health, "connections", {DEFAULT_DB_ALIAS: unreachable})
    yield unreachable
    unreachable.close()


@pytest.mark.urls("tests.ops_test_urls")
def test_healthz_answers_503_when_the_database_cannot_be_reached(client, unreachable_database):
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["database"] == {"ok": False, "error": "OperationalError"}


def test_healthcheck_command():
    out = StringIO()
    call_command("healthcheck", stdout=out)
    assert json.loads(out.getvalue())["status"] == "ok"
    with pytest.raises(CommandError, match="No runsip process"):
        call_command("healthcheck", "--sip", stdout=StringIO())
    services.record_worker_status({**worker_report(), "hostname": socket.gethostname()})
    call_command("healthcheck", "--sip", stdout=StringIO())


# -- /metrics --------------------------------------------------------------------------
def scrape(client, **headers):
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {family.name: family for family in text_string_to_metric_families(response.content.decode())}


def values(family):
    return {tuple(sorted(sample.labels.items())): sample.value for sample in family.samples}


@pytest.mark.urls("tests.ops_test_urls")
def test_metrics_expose_the_registrar_jobs_and_workers(client):
    now = time.time()
    services.create_extension("1001", "pw")
    services.create_extension("1002", "pw")
    register("1001", 5001, now)
    register("1001", 5002, now)
    register("1002", 5003, now - 7200)  # expired
    services.record_attempts([attempt(now - 60) for _ in range(3)]
                             + [attempt(now - 60, reason=Reason.UNKNOWN_USER, number="x")]
                             + [attempt(now - 2 * DAY)])
    services.ban_sources([BanDecision("203.0.113.5", now + 600, 10, "x"),
                          BanDecision("203.0.113.6", now - 60, 10, "over")])
    tasks.run_job("prune_hourly_stats")
    services.record_job_run("prune_trace", timezone.now(), timezone.now(), "failed", "boom")
    counters = WorkerCounters()
    counters.sent(b"SIP/2.0 200 OK\r\nCSeq: 2 REGISTER\r\n\r\n")
    counters.sent(b"SIP/2.0 401 Unauthorized\r\nCSeq: 1 REGISTER\r\n\r\n")
    counters.observe(0.0004)
    counters.observe(0.2)
    services.record_worker_status(worker_report(received=500, counters=counters.as_dict()))

    families = scrape(client)
    assert values(families["regis_registrations_active"]) == {(): 2}
    assert values(families["regis_extensions_registered"]) == {(): 1}
    assert values(families["regis_auth_failures_last_24h"]) == {
        (("reason", "unknown_user"),): 1, (("reason", "wrong_password"),): 3}
    assert values(families["regis_bans_active"]) == {(): 1}
    assert values(families["regis_job_last_run_ok"]) == {
        (("job", "prune_hourly_stats"),): 1, (("job", "prune_trace"),): 0}
    assert values(families["regis_job_runs_last_24h"]) == {
        (("job", "prune_hourly_stats"), ("outcome", "ok")): 1, (("job", "prune_trace"), ("outcome", "failed")): 1}
    assert set(values(families["regis_job_last_success_timestamp_seconds"])) == {(("job", "prune_hourly_stats"),)}
    worker = (("worker", "sip-1:4242"),)
    assert values(families["regis_sip_workers"]) == {(): 1}
    assert families["regis_sip_messages_received"].type == "counter"
    assert values(families["regis_sip_messages_received"]) == {worker: 500}
    assert values(families["regis_sip_credentials_cached"]) == {worker: 12}
    assert values(families["regis_sip_responses"]) == {
        (("method", "REGISTER"), ("status", "200"), ("worker", "sip-1:4242")): 1,
        (("method", "REGISTER"), ("status", "401"), ("worker", "sip-1:4242")): 1}
    latency = families["regis_sip_register_duration_seconds"]
    assert latency.type == "histogram"
    samples = {(sample.name, sample.labels.get("le")): sample.value for sample in latency.samples}
    assert samples[("regis_sip_register_duration_seconds_bucket", "0.001")] == 1
    assert samples[("regis_sip_register_duration_seconds_bucket", "0.1")] == 1
    assert samples[("regis_sip_register_duration_seconds_bucket", "0.25")] == 2
    assert samples[("regis_sip_register_duration_seconds_bucket", "+Inf")] == 2
    assert samples[("regis_sip_register_duration_seconds_count", None)] == 2
    assert samples[("regis_sip_register_duration_seconds_sum", None)] == pytest.approx(0.2004)


@pytest.mark.urls("tests.ops_test_urls")
def test_metrics_need_the_bearer_token_when_one_is_set(client, settings):
    settings.METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Token s3cret-token").status_code == 401
    assert "regis_registrations_active" in scrape(client, HTTP_AUTHORIZATION="Bearer s3cret-token")


@pytest.mark.urls("tests.ops_test_urls")
def test_metrics_without_a_token_answer_private_networks_only(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR="8.8.8.8").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="2a00:1450:4001::1").status_code == 403
    for address in ("127.0.0.1", "10.1.2.3", "192.168.1.5", "::1", "::ffff:10.0.0.1"):
        assert client.get("/metrics", REMOTE_ADDR=address).status_code == 200, address


# -- logs ------------------------------------------------------------------------------
def test_json_log_lines_carry_the_extra_fields():
    record = logging.getLogger("regis.sip").makeRecord(
        "regis.sip", logging.WARNING, __file__, 1, "rejected %s", ("1001",), None,
        extra={"aor": "sip:1001@regis.local", "reason": "wrong_password", "source": "192.0.2.7:5060"})
    line = json.loads(jsonlog.JsonFormatter().format(record))
    assert line["level"] == "WARNING" and line["logger"] == "regis.sip" and line["event"] == "rejected 1001"
    assert (line["aor"], line["reason"], line["source"]) == ("sip:1001@regis.local", "wrong_password",
                                                             "192.0.2.7:5060")
    assert line["ts"].endswith("+00:00") and "msg" not in line and "args" not in line
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        record = logging.getLogger("x").makeRecord("x", logging.ERROR, __file__, 1, "oops", (), sys.exc_info())
    assert "ValueError: bad" in json.loads(jsonlog.JsonFormatter().format(record))["exc"]
