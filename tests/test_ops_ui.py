"""Operations in the web UI and the API: the operations page (jobs with their last run and
flags, SIP workers, alerts, webhook deliveries), run-now and the test alert, alert routing
(e-mail routes and webhooks) with its forms, and /api/v1/ jobs, job-runs, workers,
alert-routes, webhooks and webhook-deliveries.

Named users as in test_webui.py: ``admin_client``/``as_admin`` (admin group),
``viewer_client``/``as_viewer`` (viewer group), ``nobody_client`` (no role). Job runs,
worker reports, alerts and deliveries are recorded through the services, the way the
jobs, runsip and the alert tasks record them. Tasks run in-process, as in the embedded
default.
"""
import re
from datetime import timedelta

import pytest
from celery import schedules
from django.core import mail
from django.test import Client
from django.utils import timezone
from django.utils.html import escape
from rest_framework.test import APIClient

from registrar import alerts, services, tasks
from registrar.models import Alert, AlertEvent, AlertRoute, JobRun, Webhook, WebhookDelivery

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_login_hashes")]

PAGES = ["/operations/", "/operations/routing/"]
HOOK_URL = "https://hooks.example.com/regis"
API_LISTS = ["/api/v1/jobs/", "/api/v1/job-runs/", "/api/v1/workers/", "/api/v1/alert-routes/",
             "/api/v1/webhooks/", "/api/v1/webhook-deliveries/"]


# -- fixtures and helpers ---------------------------------------------------------------
@pytest.fixture(autouse=True)
def in_process_tasks(celery_eager, monkeypatch, settings):
    """Tasks run here, as in the embedded default, even when REDIS_URL is set; mail stays
    in memory and no webhook leaves the machine."""
    celery_eager(True)
    monkeypatch.setattr(alerts, "post", lambda url, body, headers: alerts.PostResult(200, "", 0.01))
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def route():
    return services.set_alert_route(AlertEvent.BAN, "ops@example.com")


@pytest.fixture
def webhook():
    return services.create_webhook(HOOK_URL, ["ban", "test"], name="noc", secret="hush-hush-0123456789")[0]


def html(response) -> str:
    return response.content.decode()


def text(markup: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", "", markup).split())


def row(page: str, attribute: str, value: str) -> str:
    """The text of the table row with ``attribute="value"``."""
    match = re.search(rf'<tr [^>]*{attribute}="{re.escape(value)}"[^>]*>(.*?)</tr>', page, re.S)
    assert match, f"no row {attribute}={value}"
    return text(match.group(1))


def row_tag(page: str, attribute: str, value: str) -> str:
    return re.search(rf'<tr [^>]*{attribute}="{re.escape(value)}"[^>]*>', page).group(0)


def ran(name, *, ago, outcome="ok", result="done", took=0.5):
    started = timezone.now() - ago
    return services.record_job_run(name, started, started + timedelta(seconds=took), outcome, result)


def snapshot():
    return [list(model.objects.order_by("pk").values())
            for model in (AlertRoute, Webhook, JobRun, Alert, WebhookDelivery)]


def report(now, hostname="sip-1", pid=4242, received=900):
    """What runsip reports, from a process started two hours before ``now``."""
    return {"hostname": hostname, "pid": pid, "listeners": ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"],
            "started_at": now - timedelta(hours=2), "credentials": 12, "connections": 3,
            "stats": {"received": received, "errors": 1, "batches": 7, "stored": 40}}


def delivery(webhook, *, status_code=200, error="", attempt=1, subject="Source 192.0.2.9 banned"):
    alert = services.raise_alert(AlertEvent.BAN, subject, "text")
    return services.record_webhook_delivery(webhook.pk, alert.pk, attempt, status_code=status_code, error=error,
                                            succeeded=status_code == 200, duration=0.02)


# -- roles ----------------------------------------------------------------------------
FORM_PAGES = ["/operations/routes/new/", "/operations/webhooks/new/"]


def object_pages(route, webhook):
    return [f"/operations/routes/{route.pk}/edit/", f"/operations/routes/{route.pk}/delete/",
            f"/operations/webhooks/{webhook.pk}/edit/", f"/operations/webhooks/{webhook.pk}/secret/",
            f"/operations/webhooks/{webhook.pk}/delete/"]


@pytest.mark.parametrize("url", PAGES + FORM_PAGES)
def test_the_pages_need_a_login_and_a_role(nobody_client, url):
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/?next=")
    assert nobody_client.get(url).status_code == 403


@pytest.mark.parametrize("url", PAGES)
def test_a_viewer_sees_the_pages(viewer_client, route, webhook, url):
    page = html(viewer_client.get(url))
    assert '<a href="/operations/" aria-current="page">Operations</a>' in page


def test_the_nav_links_the_operations_page(viewer_client):
    assert '<a href="/operations/">Operations</a>' in html(viewer_client.get("/"))


def test_a_viewer_sees_no_write_buttons(viewer_client, route, webhook):
    pages = html(viewer_client.get("/operations/")) + html(viewer_client.get("/operations/routing/"))
    assert "Run now" not in pages and "/operations/test-alert/" not in pages
    assert "/operations/routes/new/" not in pages and "/operations/webhooks/new/" not in pages
    assert "/edit/" not in pages and "/delete/" not in pages and "/secret/" not in pages


def test_a_viewer_cannot_open_the_forms(viewer_client, route, webhook):
    for url in FORM_PAGES + object_pages(route, webhook):
        assert viewer_client.get(url).status_code == 403, url


def test_a_viewer_cannot_write_and_changes_nothing(viewer_client, route, webhook):
    before = snapshot()
    posts = {
        "/operations/jobs/prune_hourly_stats/run/": {},
        "/operations/test-alert/": {},
        "/operations/routes/new/": {"event": "test", "emails": "x@example.com", "enabled": "on"},
        f"/operations/routes/{route.pk}/edit/": {"event": "ban", "emails": "x@example.com"},
        f"/operations/routes/{route.pk}/delete/": {},
        "/operations/webhooks/new/": {"url": HOOK_URL, "events": ["ban"], "enabled": "on"},
        f"/operations/webhooks/{webhook.pk}/edit/": {"url": "https://evil.example.com/", "events": ["ban"]},
        f"/operations/webhooks/{webhook.pk}/secret/": {"secret": "mine"},
        f"/operations/webhooks/{webhook.pk}/delete/": {},
    }
    for url, data in posts.items():
        assert viewer_client.post(url, data).status_code == 403, url
    assert snapshot() == before


def test_an_admin_sees_the_write_buttons(admin_client, route, webhook):
    operations = html(admin_client.get("/operations/"))
    assert 'action="/operations/jobs/prune_hourly_stats/run/"' in operations
    assert 'action="/operations/test-alert/"' in operations
    routing = html(admin_client.get("/operations/routing/"))
    for url in FORM_PAGES + object_pages(route, webhook):
        assert f'href="{url}"' in routing, url


# -- jobs -------------------------------------------------------------------------------
def test_every_job_is_listed_with_its_last_run_and_last_success(viewer_client):
    ran("prune_trace", ago=timedelta(minutes=4), result="3 traced messages deleted", took=0.25)
    ran("prune_trace", ago=timedelta(minutes=2), outcome="failed", result="OperationalError: database is locked")
    page = html(viewer_client.get("/operations/"))
    assert set(re.findall(r'data-job="([^"]+)"', page)) == set(tasks.JOBS)
    never = row(page, "data-job", "prune_hourly_stats")
    assert "never ran" in never and "1 day" in never
    trace = row(page, "data-job", "prune_trace")
    assert "5 min" in trace and "Failed" in trace and "OperationalError: database is locked" in trace
    last_success = JobRun.objects.filter(name="prune_trace", outcome="ok").get().finished_at
    assert f"{timezone.localtime(last_success):%Y-%m-%d %H:%M:%S}" in trace


def test_a_job_whose_last_run_failed_is_flagged(viewer_client):
    ran("prune_trace", ago=timedelta(minutes=1), outcome="failed", result="RuntimeError: disk on fire")
    ran("prune_hourly_stats", ago=timedelta(minutes=1))
    page = html(viewer_client.get("/operations/"))
    assert 'class="attention"' in row_tag(page, "data-job", "prune_trace")
    assert 'class="attention"' not in row_tag(page, "data-job", "prune_hourly_stats")
    notices = text(re.search(r'<div class="notices"[^>]*>(.*?)</div>', page, re.S).group(1))
    assert notices == "1 job needs attention prune_trace: its last run failed"


def test_a_job_not_run_for_three_intervals_is_overdue(viewer_client):
    # send_alerts runs every 30 s, prune_trace every 5 minutes.
    ran("send_alerts", ago=timedelta(seconds=95))
    ran("prune_trace", ago=timedelta(minutes=14))
    page = html(viewer_client.get("/operations/"))
    assert "overdue" in row(page, "data-job", "send_alerts")
    assert 'class="attention"' in row_tag(page, "data-job", "send_alerts")
    assert "overdue" not in row(page, "data-job", "prune_trace")
    assert "1 job needs attention" in text(page) and "send_alerts: no run for 1" in text(page)


def test_overdue_is_three_intervals_from_the_schedule(settings):
    settings.CELERY_BEAT_SCHEDULE = {
        "a": {"task": "registrar.tasks.run_job", "args": ("prune_trace",), "schedule": 60.0},
        "b": {"task": "registrar.tasks.run_job", "args": ("prune_hourly_stats",), "schedule": timedelta(hours=1)},
        "c": {"task": "registrar.tasks.run_job", "args": ("send_alerts",),
              "schedule": schedules.schedule(run_every=timedelta(seconds=30))},
        "d": {"task": "registrar.tasks.run_job", "args": ("prune_parameter_audit",), "schedule": schedules.crontab()},
        "e": {"task": "registrar.tasks.prune_trace", "schedule": 1.0},
    }
    assert services.job_intervals() == {"prune_trace": 60.0, "prune_hourly_stats": 3600.0, "send_alerts": 30.0}
    run = ran("prune_trace", ago=timedelta(0))
    ran("prune_auth_attempts", ago=timedelta(days=30))  # not scheduled: never overdue

    def status(name, after):
        return next(job for job in services.job_statuses(now=run.started_at + after) if job.name == name)

    assert not status("prune_trace", timedelta(seconds=180)).overdue
    assert status("prune_trace", timedelta(seconds=181)).overdue
    assert not status("prune_auth_attempts", timedelta(0)).overdue
    assert not status("prune_hourly_stats", timedelta(days=9)).overdue  # never ran: nothing to be late after


def test_run_now_runs_the_job_and_records_it(admin_client):
    response = admin_client.post("/operations/jobs/prune_hourly_stats/run/", follow=True)
    assert response.redirect_chain == [("/operations/", 302)]
    run = JobRun.objects.get(name="prune_hourly_stats")
    assert (run.outcome, run.result) == ("ok", "0 hourly roll-ups deleted")
    assert "Job prune_hourly_stats ran in" in html(response) and "0 hourly roll-ups deleted" in html(response)
    assert "Succeeded" not in row(html(response), "data-job", "prune_hourly_stats")
    assert "OK" in row(html(response), "data-job", "prune_hourly_stats")


def test_run_now_shows_a_failure_without_failing_itself(admin_client, monkeypatch):
    def broken():
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(tasks.JOBS, "prune_auth_attempts", broken)
    response = admin_client.post("/operations/jobs/prune_auth_attempts/run/", follow=True)
    assert response.status_code == 200
    assert "Job prune_auth_attempts failed: RuntimeError: disk on fire" in text(html(response))
    assert JobRun.objects.get(name="prune_auth_attempts").outcome == "failed"
    assert 'class="attention"' in row_tag(html(response), "data-job", "prune_auth_attempts")


def test_run_now_of_an_unknown_job_is_not_found(admin_client):
    assert admin_client.post("/operations/jobs/nope/run/").status_code == 404
    assert admin_client.get("/operations/jobs/prune_trace/run/").status_code == 405
    assert not JobRun.objects.exists()


def test_with_a_broker_run_now_queues_the_job(admin_client, monkeypatch, celery_eager):
    queued = []
    celery_eager(False)
    monkeypatch.setattr(tasks.run_job, "delay", lambda name: queued.append(name))
    response = admin_client.post("/operations/jobs/prune_trace/run/", follow=True)
    assert queued == ["prune_trace"] and not JobRun.objects.exists()
    assert "Job prune_trace queued" in html(response)


# -- the test alert ---------------------------------------------------------------------
def test_a_test_alert_goes_to_the_test_route_and_its_webhooks(admin_client, webhook):
    services.set_alert_route(AlertEvent.TEST, "ops@example.com, noc@example.com")
    response = admin_client.post("/operations/test-alert/", follow=True)
    assert response.redirect_chain == [("/operations/", 302)]
    alert = Alert.objects.get()
    assert (alert.event, alert.emailed_to) == ("test", "ops@example.com, noc@example.com")
    assert [message.to for message in mail.outbox] == [["ops@example.com", "noc@example.com"]]
    assert "alice" in mail.outbox[0].body
    assert WebhookDelivery.objects.get().succeeded
    said = text(html(response))
    assert (f"Test alert #{alert.pk} sent: e-mailed to ops@example.com, noc@example.com; delivered to noc."
            in said)
    assert "Test alert" in row(html(response), "data-alert", str(alert.pk))
    assert JobRun.objects.get().name == "send_alerts"


def test_a_test_alert_without_a_route_says_so(admin_client):
    said = text(html(admin_client.post("/operations/test-alert/", follow=True)))
    assert "not e-mailed (the test event has no enabled route); no webhook subscribes to it" in said
    assert not mail.outbox


# -- workers, alerts, deliveries --------------------------------------------------------
def test_the_sip_workers_seen_in_the_last_hour_are_listed(viewer_client):
    now = timezone.now()
    services.record_worker_status(report(now), now=now - timedelta(seconds=5))
    services.record_worker_status(report(now, received=1400), now=now)
    services.record_worker_status(report(now, hostname="sip-2", pid=7), now=now - timedelta(minutes=10))
    services.record_worker_status(report(now, hostname="sip-3", pid=8), now=now - timedelta(hours=2))
    page = html(viewer_client.get("/operations/"))
    assert re.findall(r'data-worker="([^"]+)"', page) == ["sip-1:4242", "sip-2:7"]
    live = row(page, "data-worker", "sip-1:4242")
    assert live.startswith("sip-1 4242 udp:0.0.0.0:5060, tcp:0.0.0.0:5060 2 hours 12 3 100.0 1400 1")
    assert "silent" not in live and 'class="attention"' not in row_tag(page, "data-worker", "sip-1:4242")
    assert "silent" in row(page, "data-worker", "sip-2:7")


def test_no_sip_worker_is_said_plainly(viewer_client):
    assert "No runsip process reported in the last hour" in html(viewer_client.get("/operations/"))


def test_recent_alerts_and_the_delivery_log_are_listed(viewer_client, webhook):
    other = services.create_webhook("https://other.example.com/", ["ban"], name="other")[0]
    ok = delivery(webhook, subject="Source 192.0.2.9 banned")
    failed = delivery(other, status_code=None, error="URLError: connection refused", attempt=2)
    page = html(viewer_client.get("/operations/"))
    assert "Source 192.0.2.9 banned" in row(page, "data-alert", str(ok.alert_id))
    good = row(page, "data-delivery", str(ok.pk))
    assert "noc ban #" in good and " 1 200 " in f" {good} "
    bad = row(page, "data-delivery", str(failed.pk))
    assert "other ban" in bad and " 2 error URLError: connection refused" in bad
    assert 'class="attention"' in row_tag(page, "data-delivery", str(failed.pk))
    filtered = html(viewer_client.get(f"/operations/?webhook={other.pk}"))
    assert re.findall(r'data-delivery="(\d+)"', filtered) == [str(failed.pk)]
    assert viewer_client.get("/operations/?webhook=999").status_code == 404


def test_an_e_mail_failure_shows_on_the_alert(viewer_client, settings):
    services.set_alert_route(AlertEvent.TEST, "ops@example.com")
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # discard: nothing listens
    alert = services.send_test_alert("victor", via="test")
    assert alert.email_error
    assert "failed to ops@example.com" in row(html(viewer_client.get("/operations/")), "data-alert", str(alert.pk))


# -- alert routes through the forms ------------------------------------------------------
def test_the_routing_page_shows_where_each_event_goes(viewer_client, route, webhook):
    services.create_webhook("https://off.example.com/", ["ban"], name="off", enabled=False)
    page = html(viewer_client.get("/operations/routing/"))
    assert set(re.findall(r'<tr data-event="([^"]+)"', page)) == set(AlertEvent.values)
    assert row(page, "data-event", "ban") == "A source address was banned ban ops@example.com noc, off disabled"
    assert row(page, "data-event", "test") == "Test alert test nobody noc"
    assert row(page, "data-event", "job_failed").endswith("nobody none")


def test_an_admin_creates_a_route(admin_client):
    response = admin_client.post("/operations/routes/new/", {
        "event": "job_failed", "emails": "ops@example.com\nnoc@example.com", "enabled": "on"}, follow=True)
    assert response.redirect_chain == [("/operations/routing/", 302)]
    route = AlertRoute.objects.get()
    assert (route.event, route.emails, route.enabled) == ("job_failed", "ops@example.com, noc@example.com", True)
    assert "ops@example.com, noc@example.com" in row(html(response), "data-route", "job_failed")


def test_the_event_of_a_new_route_can_be_chosen_from_the_events_table(admin_client):
    page = html(admin_client.get("/operations/routes/new/?event=stopped_registering"))
    assert '<option value="stopped_registering" selected>' in page


@pytest.mark.parametrize("data, field, message", [
    ({"event": "ban", "emails": "ops@example.com, not an address"}, "emails",
     "'not an address' is not an e-mail address."),
    ({"event": "ban", "emails": " , "}, "emails", "Give at least one e-mail address."),
    ({"event": "lunch", "emails": "ops@example.com"}, "event",
     "Select a valid choice. lunch is not one of the available choices."),
    ({"event": "test", "emails": "ops@example.com"}, "event", "The event 'test' has a route already; edit that one."),
])
def test_a_bad_route_is_refused_on_its_field_and_changes_nothing(admin_client, data, field, message):
    services.set_alert_route(AlertEvent.TEST, "qa@example.com")
    before = snapshot()
    response = admin_client.post("/operations/routes/new/", {**data, "enabled": "on"})
    assert response.status_code == 200
    assert response.context["form"].errors == {field: [message]}
    assert escape(message) in html(response)
    assert snapshot() == before


def test_an_admin_edits_a_route_and_bad_input_changes_nothing(admin_client, route):
    url = f"/operations/routes/{route.pk}/edit/"
    assert "ops@example.com" in html(admin_client.get(url))
    before = snapshot()
    response = admin_client.post(url, {"event": "ban", "emails": "ops@@example.com"})
    assert response.context["form"].errors == {"emails": ["'ops@@example.com' is not an e-mail address."]}
    assert snapshot() == before
    services.set_alert_route(AlertEvent.TEST, "qa@example.com")
    response = admin_client.post(url, {"event": "test", "emails": "ops@example.com"})
    assert response.context["form"].errors == {"event": ["The event 'test' has a route already; edit that one."]}
    response = admin_client.post(url, {"event": "failure_spike", "emails": "sec@example.com"})
    assert response.status_code == 302
    route.refresh_from_db()
    assert (route.event, route.emails, route.enabled) == ("failure_spike", "sec@example.com", False)


def test_an_admin_deletes_a_route(admin_client, route):
    url = f"/operations/routes/{route.pk}/delete/"
    assert "ops@example.com" in html(admin_client.get(url))
    assert admin_client.post(url)["Location"] == "/operations/routing/"
    assert not AlertRoute.objects.exists()
    assert admin_client.post(url).status_code == 404


# -- webhooks through the forms ------------------------------------------------------------
def test_an_admin_creates_a_webhook_and_its_generated_secret_is_shown_once(admin_client, as_admin):
    response = admin_client.post("/operations/webhooks/new/", {
        "name": "noc", "url": HOOK_URL, "events": ["job_failed", "ban"], "enabled": "on", "secret": ""},
        follow=True)
    webhook = Webhook.objects.get()
    assert (webhook.name, webhook.url, webhook.events, webhook.enabled) == ("noc", HOOK_URL, ["ban", "job_failed"],
                                                                           True)
    assert len(webhook.secret) > 30
    page = html(response)
    assert f'<code id="webhook-secret">{webhook.secret}</code>' in page
    assert "no-store" in response["Cache-Control"]
    assert_secret_never_shown(admin_client, as_admin, webhook)


def test_a_typed_secret_is_kept_and_never_shown(admin_client, as_admin):
    response = admin_client.post("/operations/webhooks/new/", {
        "url": HOOK_URL, "events": ["ban"], "enabled": "on", "secret": "typed-secret-0123456789"}, follow=True)
    webhook = Webhook.objects.get()
    assert webhook.secret == "typed-secret-0123456789"
    assert 'id="webhook-secret"' not in html(response)
    assert "typed-secret-0123456789" not in html(response)
    assert_secret_never_shown(admin_client, as_admin, webhook)


@pytest.mark.parametrize("data, field, message", [
    ({"url": "not a url", "events": ["ban"]}, "url", "Enter a valid URL."),
    ({"url": "hooks.example.com/regis", "events": ["ban"]}, "url", "Enter a valid URL."),
    ({"url": HOOK_URL, "events": ["ban", "lunch"]}, "events",
     "Select a valid choice. lunch is not one of the available choices."),
    ({"url": HOOK_URL, "events": []}, "events", "This field cannot be blank."),
    ({"url": HOOK_URL, "events": ["ban"], "name": "n" * 101}, "name",
     "Ensure this value has at most 100 characters (it has 101)."),
])
def test_a_bad_webhook_is_refused_on_its_field_and_changes_nothing(admin_client, webhook, data, field, message):
    before = snapshot()
    response = admin_client.post("/operations/webhooks/new/", {**data, "enabled": "on", "secret": "s3cret-typed"})
    assert response.status_code == 200
    assert response.context["form"].errors == {field: [message]}
    assert escape(message) in html(response)
    assert "s3cret-typed" not in html(response)  # a typed secret is not sent back either
    response = admin_client.post(f"/operations/webhooks/{webhook.pk}/edit/", {**data, "enabled": "on"})
    assert response.context["form"].errors == {field: [message]}
    assert "<h1>Edit webhook noc</h1>" in html(response)
    assert snapshot() == before


def test_an_admin_edits_a_webhook_and_keeps_its_secret(admin_client, webhook):
    url = f"/operations/webhooks/{webhook.pk}/edit/"
    page = html(admin_client.get(url))
    assert f'value="{HOOK_URL}"' in page
    assert re.findall(r'name="events" value="(\w+)"[^>]* checked', page) == ["ban", "test"]
    response = admin_client.post(url, {"name": "pager", "url": "https://pager.example.com/in",
                                       "events": ["failure_spike"]})
    assert response["Location"] == "/operations/routing/"
    webhook.refresh_from_db()
    assert (webhook.name, webhook.url, webhook.events, webhook.enabled) == (
        "pager", "https://pager.example.com/in", ["failure_spike"], False)
    assert webhook.secret == "hush-hush-0123456789"


def test_an_admin_replaces_a_secret(admin_client, as_admin, webhook):
    url = f"/operations/webhooks/{webhook.pk}/secret/"
    response = admin_client.post(url, {"secret": "new-typed-secret-42"}, follow=True)
    webhook.refresh_from_db()
    assert webhook.secret == "new-typed-secret-42"
    assert "new-typed-secret-42" not in html(response) and "New secret set for webhook noc." in html(response)
    response = admin_client.post(url, {"secret": ""}, follow=True)
    webhook.refresh_from_db()
    assert webhook.secret != "new-typed-secret-42" and len(webhook.secret) > 30
    assert f'<code id="webhook-secret">{webhook.secret}</code>' in html(response)
    assert_secret_never_shown(admin_client, as_admin, webhook)
    response = admin_client.post(url, {"secret": "x" * 129})
    assert response.context["form"].errors == {"secret": ["Ensure this value has at most 128 characters (it has "
                                                          "129)."]}


def test_an_admin_deletes_a_webhook_with_its_log(admin_client, webhook):
    delivery(webhook)
    url = f"/operations/webhooks/{webhook.pk}/delete/"
    assert HOOK_URL in html(admin_client.get(url))
    assert admin_client.post(url)["Location"] == "/operations/routing/"
    assert not Webhook.objects.exists() and not WebhookDelivery.objects.exists()


# -- the secret never shows again ----------------------------------------------------------
def assert_secret_never_shown(admin_client, api, webhook):
    """No page and no API response after the one that showed it holds the secret."""
    delivery(webhook)
    pages = PAGES + [f"/operations/?webhook={webhook.pk}", f"/operations/webhooks/{webhook.pk}/edit/",
                     f"/operations/webhooks/{webhook.pk}/secret/", f"/operations/webhooks/{webhook.pk}/delete/"]
    for url in pages:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert webhook.secret not in html(response), url
    for url in ["/api/v1/webhooks/", f"/api/v1/webhooks/{webhook.pk}/", "/api/v1/webhook-deliveries/",
                "/api/v1/jobs/", "/api/v1/alert-routes/"]:
        for accept in ("application/json", "text/html"):
            response = api.get(url, HTTP_ACCEPT=accept)
            assert response.status_code == 200, url
            assert webhook.secret not in response.content.decode(), (url, accept)
    response = api.patch(f"/api/v1/webhooks/{webhook.pk}/", {"enabled": True}, format="json")
    assert response.status_code == 200 and webhook.secret not in response.content.decode()


# -- API: roles ----------------------------------------------------------------------------
@pytest.mark.parametrize("url", API_LISTS)
def test_the_api_lists_need_a_role(make_user, url):
    assert APIClient().get(url).status_code == 401
    nobody = APIClient()
    nobody.force_authenticate(make_user("nobody"))
    assert nobody.get(url).status_code == 403


@pytest.mark.parametrize("url", API_LISTS)
def test_viewers_read_the_api(as_viewer, route, webhook, url):
    response = as_viewer.get(url)
    assert response.status_code == 200 and "results" in response.json()


def test_viewers_cannot_write_through_the_api(as_viewer, route, webhook):
    before = snapshot()
    for response in [
        as_viewer.post("/api/v1/jobs/prune_trace/run/"),
        as_viewer.post("/api/v1/alert-routes/", {"event": "test", "emails": ["a@example.com"]}, format="json"),
        as_viewer.patch(f"/api/v1/alert-routes/{route.pk}/", {"enabled": False}, format="json"),
        as_viewer.delete(f"/api/v1/alert-routes/{route.pk}/"),
        as_viewer.post("/api/v1/webhooks/", {"url": HOOK_URL, "events": ["ban"]}, format="json"),
        as_viewer.patch(f"/api/v1/webhooks/{webhook.pk}/", {"enabled": False}, format="json"),
        as_viewer.post(f"/api/v1/webhooks/{webhook.pk}/set-secret/", {"generate": True}, format="json"),
        as_viewer.delete(f"/api/v1/webhooks/{webhook.pk}/"),
    ]:
        assert response.status_code == 403, response.request
    assert snapshot() == before


# -- API: jobs, runs, workers ------------------------------------------------------------
def test_the_jobs_endpoint_lists_every_job_with_its_flags(as_viewer):
    ran("send_alerts", ago=timedelta(minutes=5))
    ran("prune_trace", ago=timedelta(seconds=10), outcome="failed", result="boom")
    body = as_viewer.get("/api/v1/jobs/").json()
    assert body["count"] == len(tasks.JOBS)
    jobs = {job["name"]: job for job in body["results"]}
    assert set(jobs) == set(tasks.JOBS)
    assert jobs["send_alerts"]["overdue"] and not jobs["send_alerts"]["failed"]
    assert jobs["send_alerts"]["interval"] == 30.0 and jobs["send_alerts"]["last_success"]
    assert jobs["prune_trace"]["failed"] and not jobs["prune_trace"]["overdue"]
    assert jobs["prune_trace"]["last_run"]["result"] == "boom" and jobs["prune_trace"]["last_success"] is None
    assert jobs["prune_hourly_stats"]["last_run"] is None and jobs["prune_hourly_stats"]["runnable"]
    assert jobs["prune_trace"]["url"].endswith("/api/v1/jobs/prune_trace/")
    assert as_viewer.get(jobs["prune_trace"]["url"]).json() == jobs["prune_trace"]
    assert as_viewer.get("/api/v1/jobs/nope/").status_code == 404


def test_an_admin_runs_a_job_through_the_api(as_admin, monkeypatch, celery_eager):
    response = as_admin.post("/api/v1/jobs/prune_hourly_stats/run/")
    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["queued"]) == ("prune_hourly_stats", False)
    assert body["run"]["id"] == JobRun.objects.get().pk and body["run"]["outcome"] == "ok"
    assert as_admin.post("/api/v1/jobs/nope/run/").status_code == 404
    celery_eager(False)
    monkeypatch.setattr(tasks.run_job, "delay", lambda name: None)
    response = as_admin.post("/api/v1/jobs/prune_trace/run/")
    assert response.status_code == 202 and response.json() == {"name": "prune_trace", "queued": True, "run": None}


def test_job_runs_are_filtered_by_name_and_outcome(as_viewer):
    ok = ran("prune_trace", ago=timedelta(minutes=3))
    failed = ran("prune_trace", ago=timedelta(minutes=2), outcome="failed", result="boom")
    other = ran("send_alerts", ago=timedelta(minutes=1))

    def ids(query):
        response = as_viewer.get(f"/api/v1/job-runs/{query}")
        assert response.status_code == 200, response.json()
        return [run["id"] for run in response.json()["results"]]

    assert ids("") == [other.pk, failed.pk, ok.pk]
    assert ids("?name=prune_trace") == [failed.pk, ok.pk]
    assert ids("?outcome=failed") == [failed.pk]
    assert ids("?name=send_alerts&outcome=failed") == []
    response = as_viewer.get("/api/v1/job-runs/?outcome=meh")
    assert response.status_code == 400 and list(response.json()) == ["outcome"]
    assert as_viewer.get(f"/api/v1/job-runs/{failed.pk}/").json()["result"] == "boom"


def test_the_workers_endpoint(as_viewer):
    now = timezone.now()
    services.record_worker_status(report(now), now=now)
    services.record_worker_status(report(now, hostname="sip-2", pid=7), now=now - timedelta(minutes=10))
    body = as_viewer.get("/api/v1/workers/").json()
    workers = {f"{w['hostname']}:{w['pid']}": w for w in body["results"]}
    assert workers["sip-1:4242"]["alive"] and not workers["sip-2:7"]["alive"]
    assert workers["sip-1:4242"]["listeners"] == ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
    assert workers["sip-1:4242"]["credentials"] == 12 and 7190 < workers["sip-1:4242"]["uptime"] < 7300
    assert "counters" not in workers["sip-1:4242"]
    assert [w["hostname"] for w in as_viewer.get("/api/v1/workers/?hostname=sip-2").json()["results"]] == ["sip-2"]
    assert as_viewer.post("/api/v1/workers/", {}).status_code in (403, 405)


# -- API: alert routes -------------------------------------------------------------------
def test_alert_routes_through_the_api(as_admin):
    response = as_admin.post("/api/v1/alert-routes/", {"event": "ban", "emails": ["ops@example.com",
                                                                                   "noc@example.com"]},
                             format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["event"], body["emails"], body["enabled"]) == ("ban", ["ops@example.com", "noc@example.com"], True)
    route = AlertRoute.objects.get()
    assert route.emails == "ops@example.com, noc@example.com"
    response = as_admin.patch(body["url"], {"emails": ["sec@example.com"], "enabled": False}, format="json")
    assert response.status_code == 200 and response.json()["emails"] == ["sec@example.com"]
    assert services.alert_recipients("ban") == []
    assert as_admin.get("/api/v1/alert-routes/?event=ban").json()["count"] == 1
    assert as_admin.delete(body["url"]).status_code == 204
    assert not AlertRoute.objects.exists()


@pytest.mark.parametrize("data, field", [
    ({"event": "ban", "emails": ["ops@example.com", "nope"]}, "emails"),
    ({"event": "ban", "emails": []}, "emails"),
    ({"event": "ban", "emails": "ops@example.com"}, "emails"),
    ({"event": "lunch", "emails": ["ops@example.com"]}, "event"),
    ({"event": "test", "emails": ["ops@example.com"]}, "event"),
    ({"event": "ban", "emails": ["ops@example.com"], "recipients": ["x@example.com"]}, "recipients"),
])
def test_a_bad_route_is_a_400_naming_the_field(as_admin, data, field):
    services.set_alert_route(AlertEvent.TEST, "qa@example.com")
    before = snapshot()
    response = as_admin.post("/api/v1/alert-routes/", data, format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert snapshot() == before


def test_a_route_edit_through_the_api_is_validated(as_admin, route):
    services.set_alert_route(AlertEvent.TEST, "qa@example.com")
    before = snapshot()
    response = as_admin.patch(f"/api/v1/alert-routes/{route.pk}/", {"event": "test"}, format="json")
    assert response.status_code == 400 and "has a route already" in response.json()["event"][0]
    response = as_admin.patch(f"/api/v1/alert-routes/{route.pk}/", {"emails": ["a@b@c"]}, format="json")
    assert response.status_code == 400 and response.json() == {"emails": ["'a@b@c' is not an e-mail address."]}
    assert snapshot() == before


# -- API: webhooks -----------------------------------------------------------------------
def test_webhooks_through_the_api_with_a_write_only_secret(as_admin, as_viewer):
    response = as_admin.post("/api/v1/webhooks/", {"name": "noc", "url": HOOK_URL, "events": ["ban", "test"]},
                             format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    webhook = Webhook.objects.get()
    assert body["generated_secret"] == webhook.secret and len(webhook.secret) > 30
    assert "secret" not in body
    for client in (as_admin, as_viewer):
        shown = client.get(f"/api/v1/webhooks/{webhook.pk}/").json()
        assert set(shown) == {"id", "name", "url", "events", "enabled", "created_at", "updated_at"}
    response = as_admin.patch(f"/api/v1/webhooks/{webhook.pk}/", {"events": ["job_failed"], "enabled": False},
                              format="json")
    assert response.status_code == 200 and webhook.secret not in response.content.decode()
    webhook.refresh_from_db()
    assert (webhook.events, webhook.enabled, webhook.secret) == (["job_failed"], False, body["generated_secret"])
    assert as_admin.get("/api/v1/webhooks/?enabled=false").json()["count"] == 1
    assert as_admin.delete(f"/api/v1/webhooks/{webhook.pk}/").status_code == 204
    assert not Webhook.objects.exists()


def test_a_webhook_with_a_given_secret_returns_none(as_admin):
    response = as_admin.post("/api/v1/webhooks/", {"url": HOOK_URL, "events": ["ban"], "secret": "given-secret"},
                             format="json")
    assert response.status_code == 201 and response.json()["generated_secret"] is None
    assert "given-secret" not in response.content.decode()
    assert Webhook.objects.get().secret == "given-secret"


@pytest.mark.parametrize("data, field", [
    ({"url": "not a url", "events": ["ban"]}, "url"),
    ({"url": HOOK_URL, "events": ["ban", "lunch"]}, "events"),
    ({"url": HOOK_URL, "events": []}, "events"),
    ({"url": HOOK_URL}, "events"),
    ({"url": HOOK_URL, "events": ["ban"], "secret": "x" * 129}, "secret"),
    ({"url": HOOK_URL, "events": ["ban"], "enabled": "sometimes"}, "enabled"),
])
def test_a_bad_webhook_is_a_400_naming_the_field(as_admin, webhook, data, field):
    before = snapshot()
    response = as_admin.post("/api/v1/webhooks/", data, format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field]
    if field in data and field != "secret":
        response = as_admin.patch(f"/api/v1/webhooks/{webhook.pk}/", data, format="json")
        assert response.status_code == 400 and list(response.json()) == [field]
    assert snapshot() == before


def test_a_secret_changes_only_through_set_secret(as_admin, webhook):
    before = snapshot()
    response = as_admin.patch(f"/api/v1/webhooks/{webhook.pk}/", {"secret": "other"}, format="json")
    assert response.status_code == 400 and response.json() == {
        "secret": ["A secret is changed with the set-secret action."]}
    url = f"/api/v1/webhooks/{webhook.pk}/set-secret/"
    for data in ({}, {"secret": "a", "generate": True}):
        response = as_admin.post(url, data, format="json")
        assert response.status_code == 400 and list(response.json()) == ["secret"]
    assert snapshot() == before
    response = as_admin.post(url, {"secret": "typed-one"}, format="json")
    assert response.json() == {"id": webhook.pk, "generated_secret": None}
    webhook.refresh_from_db()
    assert webhook.secret == "typed-one"
    response = as_admin.post(url, {"generate": True}, format="json")
    webhook.refresh_from_db()
    assert response.json() == {"id": webhook.pk, "generated_secret": webhook.secret}
    assert len(webhook.secret) > 30


def test_deliveries_are_filtered_by_webhook(as_viewer, webhook):
    other = services.create_webhook("https://other.example.com/", ["ban"])[0]
    first = delivery(webhook)
    second = delivery(other, status_code=503)
    body = as_viewer.get("/api/v1/webhook-deliveries/").json()
    assert [d["id"] for d in body["results"]] == [second.pk, first.pk]
    assert body["results"][0] | {"created_at": None, "duration": None} == {
        "id": second.pk, "created_at": None, "webhook": other.pk, "alert": second.alert_id, "event": "ban",
        "subject": "Source 192.0.2.9 banned", "attempt": 1, "status_code": 503, "error": "", "succeeded": False,
        "will_retry": False, "duration": None}
    filtered = as_viewer.get(f"/api/v1/webhook-deliveries/?webhook={webhook.pk}").json()
    assert [d["id"] for d in filtered["results"]] == [first.pk]
    assert [d["id"] for d in as_viewer.get("/api/v1/webhook-deliveries/?succeeded=false").json()["results"]] == [
        second.pk]
    response = as_viewer.get("/api/v1/webhook-deliveries/?webhook=999")
    assert response.status_code == 400 and list(response.json()) == ["webhook"]


def test_the_django_admin_never_shows_a_webhook_secret_and_keeps_it_on_save(client, django_user_model):
    from registrar.models import Webhook

    client.force_login(django_user_model.objects.create_superuser("root", "", "pw"))
    webhook, _ = services.create_webhook("https://hooks.example/x", ["ban"], name="ops", secret="very-secret-key")
    page = client.get(f"/admin/registrar/webhook/{webhook.pk}/change/").content.decode()
    assert "very-secret-key" not in page
    response = client.post(f"/admin/registrar/webhook/{webhook.pk}/change/", {
        "name": "ops", "url": "https://hooks.example/y", "secret": "", "events": ["ban"], "enabled": "on"})
    assert response.status_code == 302
    webhook = Webhook.objects.get(pk=webhook.pk)
    assert webhook.url == "https://hooks.example/y" and webhook.secret == "very-secret-key"
