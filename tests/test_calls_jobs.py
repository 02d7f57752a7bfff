"""The housekeeping job that ends calls whose BYE never came."""
from datetime import timedelta

import pytest
from django.utils import timezone

from registrar import tasks
from registrar.models import Call, JobRun

pytestmark = pytest.mark.django_db


def open_call(call_id, started_at):
    return Call.objects.create(call_id=call_id, caller_tag="t", caller="1001", dialled="1002", callee="1002",
                               kind="internal", state="answered", source_ip="192.0.2.10", source_port=5062,
                               transport="udp", started_at=started_at, answered_at=started_at)


def test_the_job_ends_calls_open_for_half_a_day_and_leaves_the_others():
    old = open_call("old", timezone.now() - timedelta(hours=13))
    recent = open_call("recent", timezone.now() - timedelta(minutes=5))
    tasks.run_recorded("end_stale_calls")
    old.refresh_from_db()
    recent.refresh_from_db()
    assert old.ended_at is not None and old.state == "ended" and "no BYE" in old.reason
    assert recent.ended_at is None
    assert JobRun.objects.get(name="end_stale_calls").result == "1 calls open for over 12 hours ended"
