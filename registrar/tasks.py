"""Celery tasks: thin adapters over the services, safe to run twice."""
from celery import shared_task

from registrar import services


@shared_task
def purge_expired_bindings():
    return services.purge_expired_bindings()


@shared_task
def prune_trace():
    return services.prune_trace()


# -- housekeeping jobs, each run recorded ----------------------------------------------
# A job is a named function in JOBS; run_job(name) is the one Celery task that runs any
# of them and records the run (JobRun), so every job is recorded the same way whether
# Celery beat, the embedded timer (run_due_jobs) or `manage.py jobs run` started it.
# CELERY_BEAT_SCHEDULE names them: {"task": "registrar.tasks.run_job", "args": (name,)}.
import logging  # noqa: E402
import time  # noqa: E402
from datetime import timedelta  # noqa: E402

from django.conf import settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from registrar import alerts  # noqa: E402
from registrar.models import AlertEvent, JobOutcome  # noqa: E402

log = logging.getLogger("regis.jobs")

JOBS = {}


def job(name):
    def register(function):
        JOBS[name] = function
        return function
    return register


def run_recorded(name: str):
    """Run job ``name`` and record the run, ok or failed (the failure is re-raised)."""
    try:
        function = JOBS[name]
    except KeyError:
        raise ValueError(f"There is no job {name!r}; jobs: {', '.join(sorted(JOBS))}") from None
    started_at, started = timezone.now(), time.monotonic()
    try:
        result = function()
    except Exception as error:
        finished_at = started_at + timedelta(seconds=time.monotonic() - started)
        log.exception("job %s failed", name)
        try:
            services.record_job_run(name, started_at, finished_at, JobOutcome.FAILED,
                                    f"{type(error).__name__}: {error}")
            _alert_job_failure(name, error, finished_at)
        except Exception:
            log.exception("recording the failure of job %s failed too", name)
        raise
    services.record_job_run(name, started_at, started_at + timedelta(seconds=time.monotonic() - started),
                            JobOutcome.OK, result)
    return result


@shared_task(name="registrar.tasks.run_job")
def run_job(name):
    return run_recorded(name)


def _alert_job_failure(name, error, at):
    services.raise_alert(AlertEvent.JOB_FAILED, f"Job {name} failed",
                         f"The housekeeping job {name} failed at {at:%Y-%m-%d %H:%M:%S %Z}:\n\n"
                         f"{type(error).__name__}: {error}\n\nThe process log has the traceback.",
                         target=name, details={"job": name, "error": f"{type(error).__name__}: {error}"},
                         dedupe_key=f"job_failed:{name}:{int(at.timestamp() // 3600)}",
                         repeat_after=services.ALERT_REPEAT_AFTER, now=at)
    send_pending_alerts()


def run_due_jobs(due: dict) -> list[str]:
    """The embedded default's Celery beat (``manage.py serve`` calls it on its timer):
    start every CELERY_BEAT_SCHEDULE entry whose interval has passed. ``due`` holds the
    next start of each entry between calls; the first call starts them all."""
    now = time.monotonic()
    started = []
    for key, entry in settings.CELERY_BEAT_SCHEDULE.items():
        interval = entry["schedule"]
        interval = interval.total_seconds() if isinstance(interval, timedelta) else interval
        if not isinstance(interval, (int, float)) or now < due.get(key, 0):
            continue  # crontab schedules are beat's alone
        due[key] = now + interval
        run_job.app.tasks[entry["task"]].apply_async(args=entry.get("args", ()), kwargs=entry.get("kwargs", {}))
        started.append(key)
    return started


# -- alerts ----------------------------------------------------------------------------
def queue_ban_alerts(ban_ids) -> None:
    """After bans commit (services.ban_sources, in the SIP worker's database thread).

    With a broker, a task announces them at once. Without one (tasks would run right
    here, and SMTP or a slow webhook would hold up the SIP worker's commits) the
    send_alerts job on the embedded timer announces them within its 30 s interval.
    """
    if run_job.app.conf.task_always_eager:
        return
    try:
        notify_bans.delay(list(ban_ids))
    except Exception:
        log.warning("queueing the alert for bans %s failed; the send_alerts job will send it", ban_ids,
                    exc_info=True)


@shared_task(name="registrar.tasks.notify_bans")
def notify_bans(ban_ids=()):
    """Announce new bans. The ids are a hint: the job finds every ban not announced yet."""
    return run_recorded("send_alerts")


@shared_task(bind=True, name="registrar.tasks.deliver_webhook")
def deliver_webhook(self, webhook_id, alert_id):
    if self.request.is_eager or self.app.conf.task_always_eager:
        return alerts.deliver_in_process(webhook_id, alert_id)
    attempt = self.request.retries + 1
    result = alerts.deliver(webhook_id, alert_id, attempt, last=attempt >= alerts.WEBHOOK_ATTEMPTS)
    if result is not None and not result.ok and result.retryable and attempt < alerts.WEBHOOK_ATTEMPTS:
        raise self.retry(countdown=alerts.backoff(attempt, alerts.WEBHOOK_BACKOFF),
                         max_retries=alerts.WEBHOOK_ATTEMPTS - 1)
    return bool(result and result.ok)


def send_pending_alerts() -> int:
    """Send every alert not sent yet (each claimed by one process only)."""
    claimed = services.claim_pending_alerts()
    for alert in claimed:
        alerts.send(alert, queue_webhook=deliver_webhook.delay)
    return len(claimed)


# -- the jobs --------------------------------------------------------------------------
@job("purge_expired_bindings")
def _purge_expired_bindings():
    return f"{services.purge_expired_bindings()} expired bindings deleted"


@job("prune_trace")
def _prune_trace():
    return f"{services.prune_trace()} traced messages deleted"


@job("prune_auth_attempts")
def _prune_auth_attempts():
    return f"{services.prune_auth_attempts()} auth attempts deleted"


@job("prune_parameter_audit")
def _prune_parameter_audit():
    return f"{services.prune_parameter_audit()} soft-parameter audit entries deleted"


@job("prune_hourly_stats")
def _prune_hourly_stats():
    return f"{services.prune_hourly_stats()} hourly roll-ups deleted"


@job("prune_operations_history")
def _prune_operations_history():
    deleted = services.prune_operations_history()
    return ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in deleted.items()) + " deleted"


@job("check_failure_spikes")
def _check_failure_spikes():
    raised = services.check_failure_spikes()
    sent = send_pending_alerts()
    return f"{len(raised)} failure spikes alerted; {sent} alerts sent"


@job("check_stopped_registering")
def _check_stopped_registering():
    alert = services.check_stopped_registering()
    sent = send_pending_alerts()
    stopped = len(alert.details["extensions"]) if alert else 0
    return f"{stopped} extensions stopped registering; {sent} alerts sent"


@job("end_stale_calls")
def _end_stale_calls():
    # A call whose BYE never passed through us (a phone that lost power) would stay "active".
    from registrar import calls
    return f"{calls.end_stale_calls()} calls open for over 12 hours ended"


@job("send_alerts")
def _send_alerts():
    alert = services.alert_new_bans()
    sent = send_pending_alerts()
    banned = len(alert.details["bans"]) if alert else 0
    return f"{banned} new bans announced; {sent} alerts sent"
