"""registrar.calls: routing an INVITE (extensions, dial plan, emergency numbers), the call
records and their progress, the emergency alerts, the dial rules and the CSV export."""
import csv
import io
import json
import os
import socket
import tempfile
import time
from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from django.core.exceptions import ValidationError

from registrar import calls, services, trunks
from registrar.choices import AlertEvent
from registrar.models import Alert, Call, DialRule, Extension
from registrar.sip.core import Origin, StoreRegistration
from registrar.sip.policy import Policy
from registrar.sip.proxy import CallProgress
from registrar.sip.registrar import ContactRequest, RegisterRequest

pytestmark = pytest.mark.django_db

T0 = 1_900_000_000.0  # a fixed moment for start_call's ``at``
_serial = iter(range(1, 1_000_000))


# -- set-up ----------------------------------------------------------------------------
def extension(number, display_name="", permission=None, enabled=True):
    ext, _ = services.create_extension(number, "pw", display_name=display_name, enabled=enabled)
    if permission:
        Extension.objects.filter(pk=ext.pk).update(call_permission=permission)
    return ext


def register(number, port, *, ip="192.0.2.20", q=None):
    """A live binding through the registrar's own write path."""
    contact = ContactRequest(f"sip:{number}@{ip}:{port}", "", q, "", None, 3600)
    request = RegisterRequest(number, f"reg-{number}-{port}", 1, False, (contact,))
    [outcome] = services.store_registrations(
        [StoreRegistration(1, request, Origin(ip, port, "udp", "Phone/1", ""), 5, Policy())], time.time())
    assert outcome.status == 200
    return contact.uri


def trunk(name="carrier", **fields):
    return trunks.create_trunk(name=name, registrar_uri=f"sip:{name}.example.com", aor_user="4420",
                               password="s3cret", **fields)


def rule(pattern, through, **fields):
    return calls.create_dial_rule(pattern=pattern, trunk=through, **fields)


def set_param(name, value):
    services.set_soft_parameter(name, value, actor="test")


def start(dialled, caller="1001", **fields):
    values = dict(call_id=f"call-{next(_serial)}@phone", caller_tag="tag-a", caller=caller, dialled=dialled,
                  source_ip="192.0.2.10", source_port=5062, transport="udp", worker="host:1", at=T0)
    values.update(fields)
    return calls.start_call(**values)


def progress(call, state, at=T0 + 1, **fields):
    return CallProgress(call_id=call.call_id, tags=fields.pop("tags", (call.caller_tag,)), state=state, at=at,
                        **fields)


@pytest.fixture
def live_feed(settings):
    """The live events, as the web process's relay receives them (a Unix datagram socket)."""
    path = os.path.join(tempfile.mkdtemp(dir="/tmp"), "live.sock")
    settings.LIVE_RELAY_SOCKET = path
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.setblocking(False)

    def received():
        events = []
        while True:
            try:
                events.extend(json.loads(receiver.recv(65536)))
            except BlockingIOError:
                return events

    yield received
    receiver.close()


@pytest.fixture
def caller():
    return extension("1001", "Reception")


# -- calls between extensions -------------------------------------------------------------
def test_an_extension_number_rings_its_live_bindings(caller):
    extension("1002", "Office")
    low = register("1002", 5070, q=0.5)
    high = register("1002", 5071, q=0.9)
    planned = start("1002")
    assert planned.kind == "internal" and planned.callee == "1002" and planned.refusal is None
    assert [binding.contact_uri for binding in planned.bindings] == [high, low]
    assert planned.caller_name == "Reception" and planned.trunk is None and planned.alert_pk is None
    call = Call.objects.get(pk=planned.call_pk)
    assert (call.caller, call.caller_name, call.dialled, call.callee, call.kind, call.state, call.worker) == (
        "1001", "Reception", "1002", "1002", "internal", "setup", "host:1")
    assert (call.source_ip, call.source_port, call.transport) == ("192.0.2.10", 5062, "udp")
    assert call.started_at == datetime.fromtimestamp(T0, tz=dt_timezone.utc) and call.ended_at is None


@pytest.mark.parametrize("setup, refusal", [
    (lambda: extension("1002"), (480, "Temporarily Unavailable", "1002 has no registered phone")),
    (lambda: (extension("1002", enabled=False), register("1002", 5070)),
     (480, "Temporarily Unavailable", "extension 1002 is disabled")),
])
def test_an_extension_without_a_reachable_phone_is_refused_in_words(caller, setup, refusal):
    setup()
    planned = start("1002")
    assert planned.kind == "internal" and planned.refusal == refusal and planned.bindings == []
    call = Call.objects.get(pk=planned.call_pk)
    assert (call.state, call.status, call.reason) == ("ended", refusal[0], refusal[2])
    assert call.ended_at == call.started_at


def test_an_extension_barred_to_emergency_numbers_cannot_call_another():
    extension("1001", permission="emergency")
    extension("1002")
    register("1002", 5070)
    planned = start("1002")
    assert planned.refusal == (403, "Forbidden", "1001 may call emergency numbers only")
    assert planned.bindings == []


def test_an_internal_only_extension_may_call_extensions_but_not_out():
    extension("1001", permission="internal")
    extension("1002")
    register("1002", 5070)
    rule(r"0\d+", trunk())
    assert start("1002").refusal is None
    refused = start("0612345678")
    assert refused.kind == "outbound" and refused.trunk is None
    assert refused.refusal == (403, "Forbidden", "1001 may not call outside numbers")
    assert Call.objects.get(pk=refused.call_pk).trunk_name == "carrier"


def test_a_caller_that_is_no_extension_is_still_recorded_and_refused():
    extension("1002")
    register("1002", 5070)
    planned = start("1002", caller="ghost", source_ip="not an address", source_port="x", transport="UDP",
                    caller_tag="t" * 300)
    assert planned.refusal[0] == 403 and "'ghost' is not an extension" in planned.refusal[2]
    call = Call.objects.get(pk=planned.call_pk)
    assert (call.caller, call.source_ip, call.source_port, call.transport, len(call.caller_tag)) == (
        "ghost", "0.0.0.0", 0, "udp", 128)


# -- the dial plan -------------------------------------------------------------------------
def test_a_matching_rule_strips_prefixes_and_sends_through_its_trunk(caller):
    carrier = trunk()
    rule(r"0\d{9}", carrier, strip=1, prefix="+33")
    planned = start("0612345678")
    assert planned.kind == "outbound" and planned.callee == "+33612345678" and planned.refusal is None
    assert planned.trunk.name == "carrier" and planned.trunk.password == "s3cret"
    assert planned.bindings == []
    call = Call.objects.get(pk=planned.call_pk)
    assert (call.callee, call.trunk_id, call.trunk_name, call.state) == ("+33612345678", carrier.pk, "carrier",
                                                                           "setup")


def test_only_a_dialable_number_goes_out_and_digits_of_other_scripts_are_not_digits(caller):
    rule(r"0\d+", trunk())
    for dialled in ("0\u0666\u0661", "0612 345", "06%40x", "0612>"):
        assert start(dialled, call_id=f"c-{dialled}").refusal[0] == 404
    assert start("0612", call_id="ok").refusal is None


def test_rules_are_tried_by_position_the_whole_number_must_match_and_disabled_ones_are_skipped(caller):
    first, second, third = trunk("first"), trunk("second"), trunk("third")
    rule(r"\d+", third, position=30)
    rule(r"06\d+", second, position=20)
    rule(r"0\d+", first, position=10, enabled=False)
    rule(r"06", first, position=5)  # matches only the start of 0612: not a match
    assert start("0612").trunk.name == "second"
    assert start("0712").trunk.name == "third"
    assert start("06").trunk.name == "first"


def test_rules_with_one_position_keep_their_creation_order(caller):
    rule(r"\d+", trunk("older"), position=10)
    rule(r"\d+", trunk("newer"), position=10)
    assert start("555").trunk.name == "older"


def test_nothing_to_match_is_not_found(caller):
    rule(r"0\d+", trunk())
    planned = start("612")
    assert planned.refusal == (404, "Not Found", "no extension or dial rule matches 612")
    assert Call.objects.get(pk=planned.call_pk).reason == "no extension or dial rule matches 612"


def test_an_extension_wins_over_a_rule_that_matches_its_number(caller):
    extension("1002")
    register("1002", 5070)
    rule(r"\d+", trunk())
    assert start("1002").kind == "internal"


def test_a_disabled_trunk_refuses_outside_calls(caller):
    rule(r"\d+", trunk(enabled=False))
    planned = start("0612")
    assert planned.refusal == (503, "Service Unavailable", "trunk 'carrier' is disabled")
    assert planned.trunk is None


def test_a_trunk_password_that_cannot_be_read_refuses_outside_calls(caller, settings):
    rule(r"\d+", trunk())
    settings.TRUNK_SECRET_KEY = "another key than the one it was stored under"
    status, phrase, why = start("0612").refusal
    assert (status, phrase) == (503, "Service Unavailable")
    assert why.startswith("trunk 'carrier' password cannot be read")


# -- emergency numbers ---------------------------------------------------------------------
@pytest.fixture
def watchers():
    """Soft parameter 332: two extensions told of every emergency call, one with two phones."""
    extension("2000", "Security")
    extension("2001")
    guard = [register("2000", 5080), register("2000", 5081)]
    register("2001", 5082)
    extension("2002")  # listed, but nothing registered
    set_param("emergency_alert_extensions", ["2000", "2002", "2001"])
    return guard


def assert_alerted(planned, caller_text="1001 (Reception)"):
    text = f"Emergency call from {caller_text} at 192.0.2.10 to 112"
    assert planned.alert_text == text
    alert = Alert.objects.get(pk=planned.alert_pk)
    assert (alert.event, alert.target, alert.subject, alert.text) == (AlertEvent.EMERGENCY_CALL, "1001", text, text)
    assert alert.details["call"] == planned.call_pk and alert.details["dialled"] == "112"
    assert alert.details["source"] == "192.0.2.10:5062" and alert.details["caller"] == "1001"
    assert alert.details["call_id"] == Call.objects.get(pk=planned.call_pk).call_id
    return alert


def test_an_emergency_call_goes_to_the_route_extension_and_alerts(watchers, caller):
    extension("1000", "Guard post")
    post = register("1000", 5090)
    set_param("emergency_route", "1000")
    planned = start("112")
    assert planned.kind == "emergency" and planned.callee == "1000" and planned.refusal is None
    assert [binding.contact_uri for binding in planned.bindings] == [post]
    assert_alerted(planned)
    assert [binding.contact_uri for binding in planned.alert_bindings] == watchers + ["sip:2001@192.0.2.20:5082"]


def test_an_emergency_route_extension_with_no_phone_is_refused_but_still_alerts(watchers, caller):
    extension("1000")
    set_param("emergency_route", "1000")
    planned = start("112")
    assert planned.refusal == (480, "Temporarily Unavailable", "emergency destination 1000 has no registered phone")
    assert_alerted(planned)
    assert len(planned.alert_bindings) == 3
    assert Call.objects.get(pk=planned.call_pk).state == "ended"


def test_an_emergency_call_goes_out_as_dialled_through_the_route_trunk_even_disabled(caller):
    trunk("rescue", enabled=False)
    rule(r"\d+", trunk("carrier"), prefix="0044")  # the emergency route comes first
    set_param("emergency_route", "trunk:rescue")
    planned = start("112")
    assert (planned.kind, planned.callee, planned.trunk.name, planned.refusal) == ("emergency", "112", "rescue", None)
    assert planned.trunk.enabled is False
    assert_alerted(planned)
    assert planned.alert_bindings == []


def test_an_emergency_call_goes_through_the_dial_plan_when_no_route_is_set(caller):
    rule(r"1\d\d", trunk(enabled=False), prefix="9")
    planned = start("112")
    assert (planned.kind, planned.callee, planned.trunk.name, planned.refusal) == ("emergency", "9112", "carrier",
                                                                                   None)
    assert_alerted(planned)


def test_an_emergency_number_that_is_an_extension_rings_it_when_nothing_else_routes_it(caller):
    extension("112", "Operator")
    phone = register("112", 5095)
    planned = start("112")
    assert (planned.kind, planned.callee, planned.refusal) == ("emergency", "112", None)
    assert [binding.contact_uri for binding in planned.bindings] == [phone]
    assert_alerted(planned)


def test_an_emergency_number_with_no_route_at_all_is_not_found_and_still_alerts(caller):
    planned = start("112")
    assert planned.refusal == (404, "Not Found",
                               "no route for emergency number 112: set soft parameter 331 or a dial rule")
    alert = assert_alerted(planned)
    assert "refused" in alert.details["route"]


def test_emergency_numbers_go_through_whatever_the_caller_may_dial():
    extension("1001", "Reception", permission="emergency")
    extension("1000")
    register("1000", 5090)
    set_param("emergency_route", "1000")
    planned = start("112")
    assert planned.refusal is None and planned.callee == "1000"
    extension("1003", permission="internal")
    set_param("emergency_numbers", ["112", "15"])
    assert start("15", caller="1003").refusal is None


def test_the_caller_without_a_display_name_is_named_by_number_alone():
    extension("1001")
    planned = start("112")
    assert_alerted(planned, caller_text="1001")


def test_starting_one_emergency_call_twice_raises_one_alert(caller):
    first = start("112", call_id="same@phone")
    again = start("112", call_id="same@phone")
    assert again.call_pk == first.call_pk and again.alert_pk == first.alert_pk
    assert Alert.objects.filter(event=AlertEvent.EMERGENCY_CALL).count() == 1


def test_live_events_announce_the_call_and_the_alert_after_commit(caller, live_feed,
                                                                  django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        planned = start("112")
        assert live_feed() == []  # nothing before the commit
    for callback in callbacks:
        callback()
    call_event, alert_event = live_feed()
    assert call_event["type"] == "call" and call_event["action"] == "ended" and call_event["id"] == planned.call_pk
    assert {key: call_event[key] for key in ("caller", "caller_name", "dialled", "kind", "state", "status")} == {
        "caller": "1001", "caller_name": "Reception", "dialled": "112", "kind": "emergency", "state": "ended",
        "status": 404}
    assert call_event["started_at"] == T0 and call_event["ended_at"] == T0 and call_event["answered_at"] is None
    assert alert_event["type"] == "alert" and alert_event["action"] == "raised"
    assert (alert_event["id"], alert_event["event"], alert_event["acknowledged"]) == (planned.alert_pk,
                                                                                      "emergency_call", False)
    assert alert_event["text"] == planned.alert_text


# -- progress of a call ----------------------------------------------------------------------
@pytest.fixture
def ringing_call(caller):
    extension("1002")
    register("1002", 5070)
    return Call.objects.get(pk=start("1002").call_pk)


def test_a_call_rings_is_answered_and_the_caller_hangs_up(ringing_call, live_feed,
                                                          django_capture_on_commit_callbacks):
    call = ringing_call
    with django_capture_on_commit_callbacks(execute=True):
        published = calls.record_call_progress([progress(call, "ringing", T0 + 1),
                                                progress(call, "answered", T0 + 3, status=200)])
    assert [(event["action"], event["state"]) for event in published] == [("changed", "ringing"),
                                                                           ("changed", "answered")]
    assert live_feed() == published
    call.refresh_from_db()
    assert call.state == "answered" and call.answered_at.timestamp() == T0 + 3 and call.status == 200
    calls.record_call_progress([progress(call, "ended", T0 + 63, tags=(call.caller_tag, "tag-b"),
                                         bye_from_tag=call.caller_tag)])
    call.refresh_from_db()
    assert (call.state, call.status, call.reason, call.duration) == ("ended", 200, "hung up by the caller", 60.0)


def test_the_callee_hanging_up_is_told_apart(ringing_call):
    call = ringing_call
    calls.record_call_progress([progress(call, "answered", T0 + 2, status=200),
                                progress(call, "ended", T0 + 5, tags=("tag-b", call.caller_tag),
                                         bye_from_tag="tag-b")])
    call.refresh_from_db()
    assert (call.state, call.status, call.reason) == ("ended", 200, "hung up by the callee")


@pytest.mark.parametrize("fields, reason", [
    ({"status": 486}, "486 Busy Here"),
    ({"status": 487, "reason": "cancelled by the caller"}, "cancelled by the caller"),
    ({"status": 699}, "699"),
])
def test_a_call_that_fails_keeps_its_status_and_the_reason_in_words(ringing_call, fields, reason):
    calls.record_call_progress([progress(ringing_call, "ended", T0 + 4, **fields)])
    ringing_call.refresh_from_db()
    assert (ringing_call.state, ringing_call.status, ringing_call.reason) == ("ended", fields["status"], reason)
    assert ringing_call.answered_at is None and ringing_call.duration is None


def test_a_call_never_moves_backwards(ringing_call):
    call = ringing_call
    calls.record_call_progress([progress(call, "answered", T0 + 2, status=200),
                                progress(call, "ringing", T0 + 3),  # a late 180
                                progress(call, "answered", T0 + 4, status=200)])  # a retransmitted 200
    call.refresh_from_db()
    assert call.state == "answered" and call.answered_at.timestamp() == T0 + 2
    calls.record_call_progress([progress(call, "ended", T0 + 10, bye_from_tag="tag-b")])
    late = calls.record_call_progress([progress(call, "answered", T0 + 11), progress(call, "ringing", T0 + 12),
                                       progress(call, "ended", T0 + 13, status=500)])
    assert late == []
    call.refresh_from_db()
    assert (call.state, call.ended_at.timestamp(), call.status, call.reason) == (
        "ended", T0 + 10, 200, "hung up by the callee")


def test_progress_of_unknown_calls_is_ignored(ringing_call):
    other = CallProgress(call_id=ringing_call.call_id, tags=("someone-else",), state="ended", at=T0 + 1, status=486)
    unknown = CallProgress(call_id="never@seen", tags=("x",), state="answered", at=T0 + 1)
    assert calls.record_call_progress([other, unknown]) == []
    ringing_call.refresh_from_db()
    assert ringing_call.state == "setup"


# -- calls left open -----------------------------------------------------------------------
def test_a_restarted_worker_ends_its_own_calls_and_those_of_dead_processes(caller):
    open_calls = {worker: start("112", worker=worker).call_pk
                  for worker in ("host:100", "host:200", "host:300", "other:100", "host:bad")}
    Call.objects.filter(pk__in=open_calls.values()).update(state="setup", ended_at=None, status=None, reason="")
    ended = calls.end_orphaned_calls("host:100", alive=lambda pid: pid == 200)
    assert ended == 3
    states = dict(Call.objects.values_list("worker", "state"))
    assert states == {"host:100": "ended", "host:200": "setup", "host:300": "ended", "other:100": "setup",
                      "host:bad": "ended"}
    assert Call.objects.get(worker="host:300").reason == "runsip restarted: the call's state was lost"


def test_the_default_liveness_check_sees_this_process_alive_and_a_gone_one_dead(caller):
    mine = calls.worker_name("host", os.getpid())
    start("112", worker="host:999999999")
    parent = start("112", worker=f"host:{os.getppid()}").call_pk
    Call.objects.update(state="setup", ended_at=None, status=None, reason="")
    assert calls.end_orphaned_calls(mine) == 1
    assert Call.objects.get(pk=parent).ended_at is None


def test_calls_open_for_more_than_twelve_hours_are_ended(ringing_call):
    fresh = Call.objects.get(pk=start("1002", at=T0 + 11 * 3600).call_pk)
    now = datetime.fromtimestamp(T0 + 12 * 3600 + 1, tz=dt_timezone.utc)
    assert calls.end_stale_calls(now=now) == 1
    ringing_call.refresh_from_db()
    fresh.refresh_from_db()
    assert (ringing_call.state, ringing_call.ended_at, ringing_call.reason) == (
        "ended", now, "no BYE seen within 12 hours")
    assert fresh.state == "setup"


# -- alerts ----------------------------------------------------------------------------------
def test_acknowledging_an_emergency_alert_once(caller, live_feed, django_capture_on_commit_callbacks):
    alert = Alert.objects.get(pk=start("112").alert_pk)
    assert list(calls.unacknowledged_emergency_alerts()) == [alert]
    live_feed()
    with django_capture_on_commit_callbacks(execute=True):
        calls.acknowledge_alert(alert, by="alice")
        calls.acknowledge_alert(alert, by="bob")
    alert.refresh_from_db()
    assert alert.acknowledged_by == "alice" and alert.acknowledged_at is not None
    assert list(calls.unacknowledged_emergency_alerts()) == []
    [event] = live_feed()
    assert (event["type"], event["action"], event["acknowledged"], event["acknowledged_by"]) == (
        "alert", "acknowledged", True, "alice")


def test_each_alert_message_delivery_is_recorded(watchers, caller):
    planned = start("112")
    first, second = planned.alert_bindings[:2]
    calls.record_alert_delivery(planned.alert_pk, extension="2000", contact=first.contact_uri, status=200)
    calls.record_alert_delivery(planned.alert_pk, extension="", contact=second.contact_uri, status=None,
                                detail="no answer")
    messages = Alert.objects.get(pk=planned.alert_pk).details["messages"]
    assert [(m["extension"], m["contact"], m["status"], m["detail"]) for m in messages] == [
        ("2000", first.contact_uri, 200, ""), ("2000", second.contact_uri, None, "no answer")]
    assert all(message["at"] for message in messages)
    assert calls.record_alert_delivery(999999, extension="2000", contact="sip:x", status=200) is None


# -- dial rules ------------------------------------------------------------------------------
def test_a_dial_rule_that_is_not_valid_names_the_field():
    carrier = trunk()
    with pytest.raises(ValidationError) as raised:
        calls.create_dial_rule(pattern="0(\\d+", trunk=carrier)
    assert "pattern" in raised.value.message_dict
    with pytest.raises(ValidationError) as raised:
        calls.create_dial_rule(pattern=r"\d+", trunk=carrier, prefix="00x")
    assert "prefix" in raised.value.message_dict
    with pytest.raises(ValidationError) as raised:
        calls.create_dial_rule(pattern=r"\d+")
    assert "trunk" in raised.value.message_dict
    with pytest.raises(ValidationError) as raised:
        calls.create_dial_rule(pattern=r"\d+", trunk=carrier, colour="red")
    assert "colour" in raised.value.message_dict
    assert DialRule.objects.count() == 0


def test_dial_rules_are_created_changed_and_deleted_and_the_version_follows():
    carrier, other = trunk(), trunk("other")
    empty = calls.dial_rules_version()
    created = calls.create_dial_rule(pattern=r"0\d+", trunk=carrier.pk, name="national")
    assert created.trunk == carrier and calls.dial_rules_version() != empty
    before = calls.dial_rules_version()
    calls.update_dial_rule(created, trunk=other, strip=1)
    assert (DialRule.objects.get().trunk, DialRule.objects.get().strip) == (other, 1)
    assert calls.dial_rules_version() != before
    with pytest.raises(ValidationError) as raised:
        calls.update_dial_rule(created, strip=99)
    assert "strip" in raised.value.message_dict
    calls.delete_dial_rule(created)
    assert DialRule.objects.count() == 0


def test_the_route_preview_tells_what_a_call_would_do_and_stores_nothing(caller):
    rule(r"0\d{9}", trunk(), strip=1, prefix="+33", name="national")
    extension("1002")
    preview = calls.route_preview("0612345678")
    assert (preview["kind"], preview["callee"], preview["trunk"], preview["refusal"]) == (
        "outbound", "+33612345678", "carrier", None)
    assert preview["rule"]["name"] == "national"
    assert calls.route_preview("1002")["refusal"] == {"status": 480, "phrase": "Temporarily Unavailable",
                                                       "reason": "1002 has no registered phone"}
    assert calls.route_preview("112")["refusal"]["status"] == 404
    Extension.objects.filter(number="1001").update(call_permission="internal")
    assert calls.route_preview("0612345678", caller="1001")["refusal"]["status"] == 403
    assert Call.objects.count() == 0 and Alert.objects.count() == 0


# -- queries and CSV --------------------------------------------------------------------------
def test_active_calls_and_call_records_filter(ringing_call):
    refused = start("0999", at=T0 + 5)
    assert [call.pk for call in calls.active_calls()] == [ringing_call.pk]
    calls.record_call_progress([progress(ringing_call, "answered", T0 + 2, status=200),
                                progress(ringing_call, "ended", T0 + 9, bye_from_tag="tag-a")])
    assert list(calls.active_calls()) == []
    records = calls.call_records
    assert [call.pk for call in records()] == [refused.call_pk, ringing_call.pk]
    assert [call.pk for call in records(answered=True)] == [ringing_call.pk]
    assert [call.pk for call in records(answered=False)] == [refused.call_pk]
    assert [call.pk for call in records(status=404)] == [refused.call_pk]
    assert [call.pk for call in records(kind="internal", caller="1001", dialled="100")] == [ringing_call.pk]
    since = datetime.fromtimestamp(T0 + 1, tz=dt_timezone.utc)
    assert [call.pk for call in records(since=since)] == [refused.call_pk]
    assert [call.pk for call in records(until=since)] == [ringing_call.pk]
    assert list(records(caller="1002")) == []


def test_the_csv_export_has_its_header_and_cannot_smuggle_formulas():
    extension("1001", "=HYPERLINK(\"http://evil\")")
    carrier = trunk()
    rule(r"\+\d+", carrier)
    rule(r"-.*|@.*", trunk("off", enabled=False))  # refused at once: ended, in the records
    planned = start("+33612345678")
    calls.record_call_progress([CallProgress(Call.objects.get(pk=planned.call_pk).call_id, ("tag-a",), "answered",
                                             T0 + 2, status=200),
                                CallProgress(Call.objects.get(pk=planned.call_pk).call_id, ("tag-a",), "ended",
                                             T0 + 32.5, reason="+evil", bye_from_tag=None, status=200)])
    start("-1+1", at=T0 - 10)
    start("@SUM(A1)", at=T0 - 20)
    buffer = io.StringIO()
    csv.writer(buffer).writerows(calls.calls_csv_rows(calls.call_records()))
    header, outbound, minus, at_sign = list(csv.reader(io.StringIO(buffer.getvalue())))
    assert header == ["started_at", "caller", "caller_name", "dialled", "callee", "kind", "trunk", "answered_at",
                      "ended_at", "duration_seconds", "status", "reason"]
    assert outbound[0] == datetime.fromtimestamp(T0, tz=dt_timezone.utc).isoformat()
    assert outbound[2] == "'=HYPERLINK(\"http://evil\")"
    assert outbound[3:7] == ["+33612345678", "+33612345678", "outbound", "carrier"]
    assert outbound[9:] == ["30.5", "200", "'+evil"]
    assert minus[3] == "'-1+1" and at_sign[3] == "'@SUM(A1)"
    assert minus[7] == "" and minus[9] == ""


def test_emergency_bindings_skip_a_listed_number_that_is_no_extension(caller):
    set_param("emergency_alert_extensions", ["9999"])
    assert start("112").alert_bindings == []


def test_a_stale_call_is_ended_at_the_given_moment_only_once(ringing_call):
    later = datetime.fromtimestamp(T0, tz=dt_timezone.utc) + timedelta(hours=13)
    assert calls.end_stale_calls(now=later) == 1
    assert calls.end_stale_calls(now=later + timedelta(hours=1)) == 0
