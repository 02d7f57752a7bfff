"""Sending alerts: e-mail through Django's mail settings, webhooks as signed JSON POSTs.

Alerts are raised and stored by :mod:`registrar.services` (bans, failure spikes,
extensions that stopped registering, failed jobs); Celery tasks in
:mod:`registrar.tasks` claim them and call :func:`send`. This module does the I/O and
the retry arithmetic; every attempt is recorded through the services.

Webhook contract: ``POST`` of the JSON body from :func:`payload` with
``Content-Type: application/json``, ``X-Regis-Event: <event>`` and
``X-Regis-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes, keyed with the
webhook's secret>`` (check it with :func:`verify`). A 2xx answer is success. A
network error, a timeout, a 5xx or a 429 is retried with exponential back-off: through
Celery's retry with a broker (30 s, 1, 2, 4, 8 minutes), and in the embedded default
(tasks run in-process) a bounded in-process retry (1 s, 2 s). Any other answer —
a 3xx (redirects are not followed) or a 4xx — is final. Every retry sends the same
body, so a receiver can drop a repeat by its ``id``.
"""
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import EmailMessage, get_connection

from registrar import services
from registrar.models import Alert, Webhook

log = logging.getLogger("regis.alerts")

SIGNATURE_HEADER = "X-Regis-Signature"
EVENT_HEADER = "X-Regis-Event"
WEBHOOK_TIMEOUT = 10.0
WEBHOOK_ATTEMPTS = 6
WEBHOOK_BACKOFF = 30.0
EAGER_WEBHOOK_ATTEMPTS = 3
EAGER_WEBHOOK_BACKOFF = 1.0
EMAIL_TIMEOUT = 10.0
SUBJECT_PREFIX = "[Regis] "


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, signature: str) -> bool:
    """What a receiver does with the X-Regis-Signature header."""
    return hmac.compare_digest(sign(body, secret), signature or "")


def payload(alert: Alert) -> dict:
    return {
        "id": alert.pk, "event": alert.event, "subject": alert.subject, "text": alert.text,
        "target": alert.target, "details": alert.details, "created_at": alert.created_at.isoformat(),
        "sip_domain": settings.SIP_DOMAIN,
    }


def body_for(alert: Alert) -> bytes:
    return json.dumps(payload(alert), separators=(",", ":"), sort_keys=True).encode()


def backoff(attempt: int, base: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...)."""
    return base * 2 ** (attempt - 1)


@dataclass(frozen=True)
class PostResult:
    status: int | None
    error: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status >= 500 or self.status == 429


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a 3xx becomes an HTTPError: a webhook URL must answer itself


_opener = urllib.request.build_opener(_NoRedirects)


def post(url: str, body: bytes, headers: dict, timeout: float = WEBHOOK_TIMEOUT) -> PostResult:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    started = time.monotonic()
    try:
        with _opener.open(request, timeout=timeout) as response:
            response.read(65536)
            return PostResult(response.status, "", time.monotonic() - started)
    except urllib.error.HTTPError as error:
        return PostResult(error.code, "", time.monotonic() - started)
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return PostResult(None, f"{type(error).__name__}: {reason}", time.monotonic() - started)


def deliver(webhook_id: int, alert_id: int, attempt: int, *, last: bool) -> PostResult | None:
    """One attempt; recorded. None when the webhook was deleted or disabled meanwhile."""
    webhook = Webhook.objects.filter(pk=webhook_id, enabled=True).first()
    alert = Alert.objects.filter(pk=alert_id).first()
    if webhook is None or alert is None:
        return None
    body = body_for(alert)
    result = post(webhook.url, body, {
        "Content-Type": "application/json", "User-Agent": "Regis", EVENT_HEADER: alert.event,
        SIGNATURE_HEADER: sign(body, webhook.secret),
    })
    will_retry = not result.ok and result.retryable and not last
    services.record_webhook_delivery(webhook.pk, alert.pk, attempt, status_code=result.status, error=result.error,
                                     succeeded=result.ok, will_retry=will_retry, duration=result.duration)
    if not result.ok:
        log.warning("webhook %s attempt %d for alert %d: %s", webhook.url, attempt, alert.pk,
                    result.status or result.error)
    return result


def deliver_in_process(webhook_id: int, alert_id: int) -> bool:
    """The embedded default's bounded retry: EAGER_WEBHOOK_ATTEMPTS attempts, sleeping
    in between (this runs on the housekeeping timer, never in the SIP worker)."""
    for attempt in range(1, EAGER_WEBHOOK_ATTEMPTS + 1):
        result = deliver(webhook_id, alert_id, attempt, last=attempt == EAGER_WEBHOOK_ATTEMPTS)
        if result is None or result.ok:
            return bool(result)
        if not result.retryable:
            return False
        if attempt < EAGER_WEBHOOK_ATTEMPTS:
            time.sleep(backoff(attempt, EAGER_WEBHOOK_BACKOFF))
    return False


def send_email(alert: Alert, recipients) -> str:
    """Send the alert by e-mail; the error text, or "" when the server took it."""
    message = EmailMessage(SUBJECT_PREFIX + alert.subject,
                           f"{alert.text}\n\n-- \nRegis ({settings.SIP_DOMAIN}), {alert.get_event_display().lower()}, "
                           f"{alert.created_at:%Y-%m-%d %H:%M:%S %Z}, alert #{alert.pk}\n",
                           to=list(recipients), connection=get_connection(timeout=EMAIL_TIMEOUT))
    try:
        message.send()
    except Exception as error:  # SMTP, DNS and socket errors alike: recorded, not raised
        log.warning("e-mail for alert %d to %s failed: %r", alert.pk, ", ".join(recipients), error)
        return f"{type(error).__name__}: {error}"
    return ""


def send(alert: Alert, queue_webhook) -> None:
    """E-mail to the event's route, and ``queue_webhook(webhook_id, alert_id)`` for each
    subscribed webhook (a Celery task, so each retries on its own)."""
    recipients = services.alert_recipients(alert.event)
    if recipients:
        services.record_alert_email(alert, recipients, send_email(alert, recipients))
    for webhook in services.webhooks_for(alert.event):
        queue_webhook(webhook.pk, alert.pk)
