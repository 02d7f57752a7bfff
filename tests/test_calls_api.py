"""/api/v1/dial-rules/ (CRUD and the route preview), /api/v1/calls/ (live calls, call records with
filters, CSV), /api/v1/alerts/ (acknowledging emergency-call alerts) and an extension's call_permission.

Calls are stored the way runsip stores them: ``calls.start_call`` for each authenticated INVITE,
then ``calls.record_call_progress`` with the proxy's ``CallProgress`` events.
"""
import csv
import io
import itertools
import time
from datetime import datetime, timezone as dt_timezone

import pytest

from registrar import calls, services, trunks
from registrar.models import Alert, Call, DialRule, Extension
from registrar.sip.proxy import CallProgress
from tests.test_api import register

pytestmark = pytest.mark.django_db

_call_ids = itertools.count(1)


# -- set-up ----------------------------------------------------------------------------
@pytest.fixture
def trunk():
    return trunks.create_trunk(name="carrier", registrar_uri="sip:pbx.example.com", aor_user="4420",
                               password="Upstream-pw-1", expected_realm="pbx.example.com")


@pytest.fixture
def extensions():
    """1001 and 1002, each with a registered phone (so calls between them ring)."""
    services.create_extension("1001", "pw", display_name="Reception")
    services.create_extension("1002", "pw", display_name="Desk")
    register("1001", 5001)
    register("1002", 5002)


def place_call(caller, dialled, *, at=None, source_ip="192.0.2.10"):
    """An authenticated INVITE, as runsip hands it over; returns (PlannedCall, Call-ID, caller tag)."""
    number = next(_call_ids)
    call_id, tag = f"call-{number}@192.0.2.10", f"tag-{number}"
    planned = calls.start_call(call_id=call_id, caller_tag=tag, caller=caller, dialled=dialled,
                               source_ip=source_ip, source_port=5062, transport="udp", at=at or time.time())
    return planned, call_id, tag


def progress(call_id, tag, state, at, **fields):
    calls.record_call_progress([CallProgress(call_id=call_id, tags=(tag,), state=state, at=at, **fields)])


def finished_call(caller, dialled, *, started, talk=None, status=None, reason=""):
    """A call that started at ``started`` (epoch), was answered at once and lasted ``talk`` seconds, or
    ended unanswered with ``status``."""
    planned, call_id, tag = place_call(caller, dialled, at=started)
    if talk is not None:
        progress(call_id, tag, "answered", started + 1, status=200)
        progress(call_id, tag, "ended", started + 1 + talk, bye_from_tag=tag)
    else:
        progress(call_id, tag, "ended", started + 2, status=status, reason=reason)
    return Call.objects.get(pk=planned.call_pk)


def column(response, name):
    assert response.status_code == 200, response.content
    return [row[name] for row in response.json()["results"]]


# -- dial rules --------------------------------------------------------------------------
def test_the_admin_creates_a_rule_naming_the_trunk_by_name_or_by_id(as_admin, trunk):
    response = as_admin.post("/api/v1/dial-rules/", {"name": "national", "pattern": r"0\d{6,15}", "strip": 1,
                                                     "prefix": "+31", "trunk": "carrier"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["trunk"], body["trunk_id"], body["strip"], body["prefix"], body["enabled"]) == \
        ("carrier", trunk.pk, 1, "+31", True)
    response = as_admin.post("/api/v1/dial-rules/", {"pattern": r"\+\d+", "trunk": trunk.pk, "position": 50},
                             format="json")
    assert response.status_code == 201, response.json()
    assert [rule.pattern for rule in DialRule.objects.all()] == [r"\+\d+", r"0\d{6,15}"]
    listed = as_admin.get("/api/v1/dial-rules/")
    assert column(listed, "pattern") == [r"\+\d+", r"0\d{6,15}"]


@pytest.mark.parametrize("payload, field", [
    ({"pattern": "0(\\d+"}, "pattern"),
    ({"strip": 40}, "strip"),
    ({"prefix": "+31x"}, "prefix"),
    ({"trunk": "nowhere"}, "trunk"),
    ({"trunk": 9999}, "trunk"),
    ({"trunk": None}, "trunk"),
    ({"patern": "0\\d+"}, "patern"),
])
def test_a_bad_rule_is_refused_naming_the_field(as_admin, trunk, payload, field):
    response = as_admin.post("/api/v1/dial-rules/", {"pattern": r"0\d+", "trunk": "carrier", **payload},
                             format="json")
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not DialRule.objects.exists()


def test_a_rule_is_updated_and_deleted(as_admin, trunk):
    other = trunks.create_trunk(name="backup", registrar_uri="sip:backup.example.com", aor_user="1",
                                password="pw", expected_realm="backup.example.com")
    rule = calls.create_dial_rule(pattern=r"0\d+", trunk=trunk)
    response = as_admin.patch(f"/api/v1/dial-rules/{rule.pk}/", {"trunk": "backup", "enabled": False},
                              format="json")
    assert response.status_code == 200, response.json()
    rule.refresh_from_db()
    assert (rule.trunk_id, rule.enabled) == (other.pk, False)
    response = as_admin.patch(f"/api/v1/dial-rules/{rule.pk}/", {"pattern": "("}, format="json")
    assert response.status_code == 400 and "pattern" in response.json()
    rule.refresh_from_db()
    assert rule.pattern == r"0\d+"
    assert as_admin.delete(f"/api/v1/dial-rules/{rule.pk}/").status_code == 204
    assert not DialRule.objects.exists()


def test_viewers_read_the_dial_plan_and_may_try_numbers_but_not_change_it(as_viewer, trunk):
    calls.create_dial_rule(pattern=r"0\d+", trunk=trunk)
    assert column(as_viewer.get("/api/v1/dial-rules/"), "trunk") == ["carrier"]
    response = as_viewer.post("/api/v1/dial-rules/", {"pattern": r"9\d+", "trunk": "carrier"}, format="json")
    assert response.status_code == 403
    assert as_viewer.post("/api/v1/dial-rules/preview/", {"number": "0612345678"},
                          format="json").status_code == 200


def test_the_preview_says_where_a_number_goes(as_admin, trunk, extensions):
    calls.create_dial_rule(name="national", pattern=r"0\d{6,15}", strip=1, prefix="+31", trunk=trunk)
    outbound = as_admin.post("/api/v1/dial-rules/preview/", {"number": "0612345678"}, format="json").json()
    assert outbound["kind"] == "outbound" and outbound["callee"] == "+31612345678"
    assert outbound["trunk"] == "carrier" and outbound["rule"]["name"] == "national"
    assert outbound["refusal"] is None

    internal = as_admin.post("/api/v1/dial-rules/preview/", {"number": "1002"}, format="json").json()
    assert (internal["kind"], internal["callee"], internal["trunk"]) == ("internal", "1002", "")

    nowhere = as_admin.post("/api/v1/dial-rules/preview/", {"number": "777"}, format="json").json()
    assert nowhere["refusal"]["status"] == 404 and "777" in nowhere["refusal"]["reason"]

    Extension.objects.filter(number="1001").update(call_permission="internal")
    barred = as_admin.post("/api/v1/dial-rules/preview/", {"number": "0612345678", "caller": "1001"},
                           format="json").json()
    assert barred["refusal"]["status"] == 403
    assert not Call.objects.exists() and not Alert.objects.exists()


def test_the_preview_needs_a_number(as_admin):
    response = as_admin.post("/api/v1/dial-rules/preview/", {}, format="json")
    assert response.status_code == 400 and "number" in response.json()


# -- calls ---------------------------------------------------------------------------------
def test_live_calls_are_listed_with_their_duration(as_viewer, extensions):
    now = time.time()
    planned, call_id, tag = place_call("1001", "1002", at=now - 30)
    progress(call_id, tag, "answered", now - 20, status=200)
    finished_call("1002", "1001", started=now - 300, talk=60)

    live = as_viewer.get("/api/v1/calls/?active=1").json()["results"]
    assert [(row["caller"], row["callee"], row["state"], row["active"]) for row in live] == \
        [("1001", "1002", "answered", True)]
    assert live[0]["caller_name"] == "Reception" and live[0]["kind"] == "internal"
    assert 19 <= live[0]["duration_seconds"] < 120

    records = as_viewer.get("/api/v1/calls/").json()["results"]
    assert [(row["caller"], row["active"]) for row in records] == [("1002", False)]
    assert records[0]["duration_seconds"] == pytest.approx(60, abs=0.01)
    assert records[0]["reason"] and records[0]["status"] == 200
    detail = as_viewer.get(f"/api/v1/calls/{planned.call_pk}/").json()
    assert detail["call_id"] == call_id and detail["answered_at"] and detail["ended_at"] is None


def test_call_records_are_filtered(as_viewer, extensions, trunk):
    calls.create_dial_rule(pattern=r"0\d+", trunk=trunk)
    day = datetime(2026, 3, 2, 9, 0, tzinfo=dt_timezone.utc).timestamp()
    finished_call("1001", "1002", started=day, talk=10)
    finished_call("1001", "0612345678", started=day + 3600, status=486, reason="Busy Here")
    finished_call("1002", "1001", started=day + 86400, status=487, reason="cancelled by the caller")

    def dialled(query):
        return column(as_viewer.get(f"/api/v1/calls/?{query}"), "dialled")

    assert dialled("caller=1001") == ["0612345678", "1002"]
    assert dialled("dialled=0612") == ["0612345678"]
    assert dialled("kind=outbound") == ["0612345678"]
    assert dialled("status=486") == ["0612345678"]
    assert dialled("answered=true") == ["1002"]
    assert dialled("answered=false") == ["1001", "0612345678"]
    assert dialled("since=2026-03-02T09:30:00Z&until=2026-03-03T00:00:00Z") == ["0612345678"]
    row = as_viewer.get("/api/v1/calls/?kind=outbound").json()["results"][0]
    assert row["trunk"] == "carrier" and row["duration_seconds"] is None


@pytest.mark.parametrize("query, field", [("kind=video", "kind"), ("since=yesterday", "since"),
                                          ("status=busy", "status"), ("answered=maybe", "answered")])
def test_a_bad_filter_is_a_400_naming_it(as_viewer, query, field):
    response = as_viewer.get(f"/api/v1/calls/?{query}")
    assert response.status_code == 400 and field in response.json(), response.content


def test_call_records_are_paginated(as_viewer, extensions):
    start = time.time() - 10000
    for n in range(51):
        finished_call("1001", "1002", started=start + n, status=480, reason="Temporarily Unavailable")
    first = as_viewer.get("/api/v1/calls/").json()
    assert (first["count"], len(first["results"])) == (51, 50)
    assert len(as_viewer.get(first["next"]).json()["results"]) == 1


def test_calls_are_read_only(as_admin, extensions):
    call = finished_call("1001", "1002", started=time.time() - 100, talk=5)
    assert as_admin.delete(f"/api/v1/calls/{call.pk}/").status_code == 405
    assert as_admin.post("/api/v1/calls/", {"caller": "1001"}, format="json").status_code == 405


def read_csv(response):
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_call_records_download_as_csv_with_the_same_filters(as_viewer, extensions):
    now = time.time()
    finished_call("1001", "1002", started=now - 500, talk=42)
    finished_call("1002", "=HYPERLINK(1)", started=now - 400, status=404, reason="Not Found")
    for url in ("/api/v1/calls/export.csv?caller=1001", "/api/v1/calls/?caller=1001&format=csv"):
        rows = read_csv(as_viewer.get(url))
        header, body = rows[0], rows[1:]
        assert "duration_seconds" in header and len(body) == 1
        record = dict(zip(header, body[0]))
        assert (record["caller"], record["dialled"], record["duration_seconds"]) == ("1001", "1002", "42.0")
    every = read_csv(as_viewer.get("/api/v1/calls/export.csv"))
    assert len(every) == 3
    # The dialled number came from a phone: a spreadsheet must not run it as a formula.
    assert not any(cell.startswith("=") for row in every for cell in row)
    bad = as_viewer.get("/api/v1/calls/export.csv?kind=video")
    assert bad.status_code == 400 and "kind" in bad.json()


# -- alerts ----------------------------------------------------------------------------------
def test_an_emergency_alert_is_listed_until_acknowledged(as_admin, extensions):
    place_call("1001", "112")
    alert = Alert.objects.get(event="emergency_call")
    waiting = as_admin.get("/api/v1/alerts/?unacknowledged=1").json()["results"]
    assert [(row["id"], row["acknowledged"]) for row in waiting] == [(alert.pk, False)]
    assert "1001" in waiting[0]["subject"] and "112" in waiting[0]["text"]

    response = as_admin.post(f"/api/v1/alerts/{alert.pk}/acknowledge/")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["acknowledged"] is True and body["acknowledged_by"] == "ada" and body["acknowledged_at"]
    assert as_admin.get("/api/v1/alerts/?unacknowledged=1").json()["results"] == []
    everything = as_admin.get("/api/v1/alerts/").json()["results"]
    assert [(row["id"], row["acknowledged_by"]) for row in everything] == [(alert.pk, "ada")]
    # A second acknowledgement changes nothing: the first one counts.
    first_at = body["acknowledged_at"]
    assert as_admin.post(f"/api/v1/alerts/{alert.pk}/acknowledge/").json()["acknowledged_at"] == first_at


def test_viewers_see_alerts_but_cannot_acknowledge_them(as_viewer, extensions):
    place_call("1001", "112")
    alert = Alert.objects.get()
    assert column(as_viewer.get("/api/v1/alerts/"), "id") == [alert.pk]
    assert as_viewer.post(f"/api/v1/alerts/{alert.pk}/acknowledge/").status_code == 403
    alert.refresh_from_db()
    assert alert.acknowledged_at is None
    assert as_viewer.post("/api/v1/alerts/9999/acknowledge/").status_code == 403


def test_acknowledging_a_missing_alert_is_a_404(as_admin):
    assert as_admin.post("/api/v1/alerts/9999/acknowledge/").status_code == 404


# -- an extension's call permission --------------------------------------------------------
def test_an_extension_has_a_call_permission(as_admin):
    response = as_admin.post("/api/v1/extensions/", {"number": "1001", "password": "pw",
                                                     "call_permission": "internal"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["call_permission"] == "internal"
    assert Extension.objects.get(number="1001").call_permission == "internal"
    response = as_admin.patch("/api/v1/extensions/1001/", {"call_permission": "emergency"}, format="json")
    assert response.status_code == 200 and response.json()["call_permission"] == "emergency"
    assert Extension.objects.get(number="1001").call_permission == "emergency"
    response = as_admin.patch("/api/v1/extensions/1001/", {"call_permission": "everything"}, format="json")
    assert response.status_code == 400 and list(response.json()) == ["call_permission"]
    assert as_admin.get("/api/v1/extensions/1001/").json()["call_permission"] == "emergency"


def test_the_default_call_permission_is_all(as_admin):
    services.create_extension("1001", "pw")
    assert as_admin.get("/api/v1/extensions/1001/").json()["call_permission"] == "all"


def test_a_call_from_a_barred_extension_is_recorded_refused(as_viewer, extensions, trunk):
    calls.create_dial_rule(pattern=r"0\d+", trunk=trunk)
    Extension.objects.filter(number="1001").update(call_permission="internal")
    place_call("1001", "0612345678", at=time.time() - 5)
    row = as_viewer.get("/api/v1/calls/?caller=1001").json()["results"][0]
    assert row["status"] == 403 and row["state"] == "ended" and row["duration_seconds"] is None
