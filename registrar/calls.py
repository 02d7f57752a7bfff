"""Calls: the write path of the dial plan (DialRule), the call records (Call) and the
emergency-call alerts, shared by runsip, the REST API, the web UI and the CLI.

runsip asks :func:`start_call` once per authenticated INVITE (in its database thread):
the answer says where the call goes — an extension's live bindings, a trunk (through
the dial plan or the emergency route), or a refusal in words — and the call's row is
already stored. What happens next comes back in batches of
:class:`~registrar.sip.proxy.CallProgress` through :func:`record_call_progress`.

Routing, in this order (:func:`decide_route`, also behind the UI's :func:`route_preview`):

1. an emergency number (soft parameter 330) always goes through, whatever the caller may
   dial, to soft parameter 331's destination — an extension, ``trunk:NAME`` (the number
   sent as dialled, even when the trunk is disabled), or when empty the dial plan and
   then an extension of that number — and raises an emergency Alert, refused or not;
2. an extension number: a call between extensions;
3. the first enabled dial rule, by position, whose pattern matches the whole number.

A refused call is stored already ended, with the SIP status and the reason in words.
Worker names are "HOST:PID" (:func:`worker_name`), so a restarted runsip can end the
calls a dead process left open (:func:`end_orphaned_calls`).

CSV export (:func:`calls_csv_rows`) guards against formula injection: a cell starting
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'`` —
except a ``+`` followed only by digits (an E.164 number such as +33612345678), which a
spreadsheet reads as a number and which is kept as is.
"""
import hashlib
import ipaddress
import logging
import os
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone as dt_timezone

from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Count, Max
from django.utils import timezone

from registrar import live, services, softparams
from registrar.choices import AlertEvent, CallKind, CallPermission, CallState
from registrar.events import alert_changed, call_changed
from registrar.models import Alert, Binding, Call, DialRule, Extension, SoftParameter, Trunk
from registrar.services import CallBinding  # noqa: F401  (re-exported for runsip)
from registrar.sip.errors import SipError
from registrar.sip.uac import TrunkConfig

log = logging.getLogger("regis.calls")


@dataclass(frozen=True)
class PlannedCall:
    """Where an authenticated INVITE goes, decided in one database round trip."""

    call_pk: int | None  # the Call row stored for it (None only when nothing could be stored)
    kind: str  # a CallKind value: internal, outbound, emergency
    callee: str  # the extension called, or the number sent to the trunk (after strip/prefix)
    caller_name: str = ""  # the calling extension's display name
    bindings: list = field(default_factory=list)  # CallBinding rows of the called extension, higher q first
    trunk: TrunkConfig | None = None  # the trunk to send it through (password decrypted)
    # (status, reason phrase, why in words) when the call must not go on; the row is then already ended.
    refusal: tuple | None = None
    alert_pk: int | None = None  # the emergency Alert raised for it
    alert_text: str = ""  # the MESSAGE body: "Emergency call from 1001 (Reception) at 192.0.2.10 to 112"
    alert_bindings: list = field(default_factory=list)  # CallBinding rows of soft parameter 332's extensions


@dataclass(frozen=True)
class Route:
    """The routing decision alone (nothing stored): what :func:`start_call` stores and
    :func:`route_preview` shows."""

    kind: str
    callee: str = ""
    bindings: list = field(default_factory=list)
    trunk: Trunk | None = None  # the trunk row, also when refused (the call record names it)
    trunk_config: TrunkConfig | None = None  # only when the call may go out through it
    rule: DialRule | None = None
    refusal: tuple | None = None
    caller_name: str | None = None  # the calling extension's display name, when it was read


@dataclass(frozen=True)
class EmergencySettings:
    numbers: tuple
    route: str
    alert_extensions: tuple


# RFC 3261 §21 phrases, for the reason of a call that ended on a final status without one.
STATUS_PHRASES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone", 413: "Request Entity Too Large",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete",
    485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Server Time-out", 600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}
ORPHANED_REASON = "runsip restarted: the call's state was lost"
STALE_AFTER_HOURS = 12


def _from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=dt_timezone.utc)


def _clip(value, length: int) -> str:
    return str(value if value is not None else "")[:length]


def _ip(value) -> str:
    try:
        return str(ipaddress.ip_address(str(value).strip("[]")))
    except ValueError:
        return "0.0.0.0"  # the column must hold an address; the call is still recorded


def _port(value) -> int:
    try:
        return min(max(int(value), 0), 65535)
    except (TypeError, ValueError):
        return 0


def status_words(status: int | None) -> str:
    if status is None:
        return "ended"
    return f"{status} {STATUS_PHRASES.get(status, '')}".strip()


def worker_name(hostname: str, pid: int) -> str:
    """What runsip passes as ``worker`` to :func:`start_call`."""
    return f"{hostname}:{pid}"


# -- routing: one pure-read decision -------------------------------------------------------
def emergency_settings() -> EmergencySettings:
    names = ("emergency_numbers", "emergency_route", "emergency_alert_extensions")
    values = dict(SoftParameter.objects.filter(name__in=names).values_list("name", "value"))

    def get(name):
        return values.get(name, softparams.BY_NAME[name].default)

    return EmergencySettings(tuple(str(number) for number in get("emergency_numbers") or ()),
                             str(get("emergency_route") or "").strip(),
                             tuple(str(number) for number in get("emergency_alert_extensions") or ()))


# What a trunk can be sent: a number, not whatever a phone put in its Request-URI.
DIALABLE = re.compile(r"[0-9*#+]{1,64}", re.ASCII)


def _matching_rule(dialled: str):
    """The first enabled dial rule whose pattern matches all of ``dialled``, and the number it sends."""
    if not DIALABLE.fullmatch(dialled):
        return None, ""
    for rule in DialRule.objects.filter(enabled=True).select_related("trunk").order_by("position", "id"):
        try:
            # ASCII: \d must not match the digits of other scripts (a phone could send "0٦١").
            matched = re.fullmatch(rule.pattern, dialled, re.ASCII)
        except re.error:
            continue  # stored around the validation: such a rule can never match
        if matched:
            return rule, rule.prefix + dialled[rule.strip:]
    return None, ""


def _through_trunk(kind: str, callee: str, trunk: Trunk, *, rule=None, dialled: str = "",
                   emergency: bool = False) -> Route:
    from registrar.trunks import trunk_config  # registrar.trunks is a sibling service module

    def refused(status, phrase, why):
        return Route(kind, callee, trunk=trunk, rule=rule, refusal=(status, phrase, why))

    if not trunk.enabled and not emergency:
        return refused(503, "Service Unavailable", f"trunk '{trunk.name}' is disabled")
    if not callee:
        return refused(484, "Address Incomplete", f"dial rule {rule.pattern if rule else ''} leaves nothing of "
                                                  f"{dialled} to send")
    try:
        config = trunk_config(trunk)
    except SipError as error:
        return refused(503, "Service Unavailable", f"trunk '{trunk.name}' has an unusable address: {error.reason}")
    if config.password is None:
        return refused(503, "Service Unavailable", f"trunk '{trunk.name}' password cannot be read (SECRET_KEY "
                                                   f"changed?): set the trunk's password again")
    return Route(kind, callee, trunk=trunk, trunk_config=config, rule=rule)


def _to_extension(kind: str, number: str, unavailable: str) -> Route:
    bindings = services.call_bindings(number)
    if not bindings:
        return Route(kind, number, refusal=(480, "Temporarily Unavailable", unavailable))
    return Route(kind, number, bindings=bindings)


def _emergency_route(dialled: str, emergency: EmergencySettings) -> Route:
    kind = CallKind.EMERGENCY
    destination = emergency.route
    if destination.startswith("trunk:"):
        name = destination[len("trunk:"):].strip()
        trunk = Trunk.objects.filter(name=name).first()
        if trunk is None:
            return Route(kind, dialled, refusal=(503, "Service Unavailable",
                                                 f"emergency route trunk '{name}' (soft parameter 331) does not exist"))
        return _through_trunk(kind, dialled, trunk, dialled=dialled, emergency=True)
    if destination:
        if not Extension.objects.filter(number=destination).exists():
            return Route(kind, destination, refusal=(
                503, "Service Unavailable",
                f"emergency route {destination!r} (soft parameter 331) is neither an extension nor trunk:NAME"))
        return _to_extension(kind, destination, f"emergency destination {destination} has no registered phone")
    rule, callee = _matching_rule(dialled)
    if rule is not None:
        return _through_trunk(kind, callee, rule.trunk, rule=rule, dialled=dialled, emergency=True)
    if Extension.objects.filter(number=dialled).exists():
        return _to_extension(kind, dialled, f"emergency destination {dialled} has no registered phone")
    return Route(kind, "", refusal=(404, "Not Found", f"no route for emergency number {dialled}: "
                                                      f"set soft parameter 331 or a dial rule"))


def _caller_refusal(caller: str, caller_extension) -> tuple | None:
    if caller_extension is None:
        return 403, "Forbidden", f"caller {caller!r} is not an extension"
    if not caller_extension.enabled:
        return 403, "Forbidden", f"the calling extension {caller} is disabled"
    return None


def decide_route(dialled: str, caller: str | None = None, *, emergency: EmergencySettings | None = None) -> Route:
    """Where a call from ``caller`` to ``dialled`` goes, reading only. With no ``caller``
    (the UI's preview) what the caller may dial is not checked."""
    caller_extension = Extension.objects.filter(number=caller).first() if caller is not None else None
    route = _decide_route(dialled, caller, caller_extension, emergency or emergency_settings())
    return replace(route, caller_name=caller_extension.display_name if caller_extension is not None else "")


def _decide_route(dialled: str, caller, caller_extension, emergency: EmergencySettings) -> Route:
    if dialled in emergency.numbers:
        return _emergency_route(dialled, emergency)
    permission = caller_extension.call_permission if caller_extension is not None else CallPermission.ALL

    def refused_caller():
        return _caller_refusal(caller, caller_extension) if caller is not None else None

    callee = Extension.objects.filter(number=dialled).first() if dialled else None
    if callee is not None:
        refusal = refused_caller()
        if refusal is None and permission == CallPermission.EMERGENCY:
            refusal = 403, "Forbidden", f"{caller} may call emergency numbers only"
        if refusal is None and not callee.enabled:
            refusal = 480, "Temporarily Unavailable", f"extension {dialled} is disabled"
        if refusal is not None:
            return Route(CallKind.INTERNAL, dialled, refusal=refusal)
        return _to_extension(CallKind.INTERNAL, dialled, f"{dialled} has no registered phone")

    rule, number = _matching_rule(dialled)
    if rule is None:
        return Route(CallKind.OUTBOUND, "", refusal=(404, "Not Found", f"no extension or dial rule matches {dialled}"))
    refusal = refused_caller()
    if refusal is None and permission in (CallPermission.INTERNAL, CallPermission.EMERGENCY):
        refusal = 403, "Forbidden", f"{caller} may not call outside numbers"
    if refusal is not None:
        return Route(CallKind.OUTBOUND, number, trunk=rule.trunk, rule=rule, refusal=refusal)
    return _through_trunk(CallKind.OUTBOUND, number, rule.trunk, rule=rule, dialled=dialled)


def route_preview(dialled: str, *, caller: str | None = None) -> dict:
    """What :func:`start_call` would do with ``dialled`` (the UI's "try a number" box);
    stores nothing and raises no alert."""
    dialled = _clip(dialled, 128)
    route = decide_route(dialled, caller)
    refusal = None
    if route.refusal is not None:
        status, phrase, why = route.refusal
        refusal = {"status": status, "phrase": phrase, "reason": why}
    rule = route.rule
    return {
        "dialled": dialled, "kind": route.kind, "callee": route.callee,
        "trunk": route.trunk.name if route.trunk is not None else "",
        "rule": {"id": rule.pk, "name": rule.name, "pattern": rule.pattern} if rule is not None else None,
        "bindings": len(route.bindings), "refusal": refusal,
    }


# -- a call starts -----------------------------------------------------------------------
def _alert_bindings(numbers) -> tuple[list[CallBinding], list[dict]]:
    bindings, recipients = [], []
    for number in dict.fromkeys(numbers):
        for binding in services.call_bindings(number):
            bindings.append(binding)
            recipients.append({"extension": number, "contact": binding.contact_uri})
    return bindings, recipients


def emergency_alert_text(caller: str, caller_name: str, source_ip: str, dialled: str) -> str:
    who = f"{caller} ({caller_name})" if caller_name else caller
    return f"Emergency call from {who} at {source_ip} to {dialled}"


def start_call(*, call_id, caller_tag, caller, dialled, source_ip, source_port, transport, worker="",
               at: float | None = None) -> PlannedCall:
    """Decide where an authenticated INVITE goes and store its Call row (and, for an
    emergency number, its Alert), in one transaction. Never raises on bad input: the
    call is recorded as given (clipped to the columns)."""
    row = dict(call_id=_clip(call_id, 255), caller_tag=_clip(caller_tag, 128), caller=_clip(caller, 64),
               dialled=_clip(dialled, 128), source_ip=_ip(source_ip), source_port=_port(source_port),
               transport=_clip(transport, 8).lower(), worker=_clip(worker, 128),
               started_at=_from_epoch(at) if at is not None else timezone.now())
    try:
        with transaction.atomic():
            return _start_call(row)
    except DatabaseError:
        log.exception("storing call %s from %s failed; routing it unrecorded", row["call_id"], row["caller"])
    # Nothing could be stored; the call (above all an emergency one) still goes where it should.
    emergency = emergency_settings()
    route = decide_route(row["dialled"], row["caller"], emergency=emergency)
    caller_name = Extension.objects.filter(number=row["caller"]).values_list("display_name", flat=True).first() or ""
    planned = PlannedCall(None, route.kind, route.callee, caller_name, list(route.bindings),
                          route.trunk_config, route.refusal)
    if route.kind != CallKind.EMERGENCY:
        return planned
    bindings, _ = _alert_bindings(emergency.alert_extensions)
    text = emergency_alert_text(row["caller"], caller_name, row["source_ip"], row["dialled"])
    return replace(planned, alert_text=text, alert_bindings=bindings)


def _start_call(row: dict) -> PlannedCall:
    emergency = emergency_settings()
    route = decide_route(row["dialled"], row["caller"], emergency=emergency)
    caller_name = route.caller_name or ""
    refused = route.refusal is not None
    defaults = dict(
        caller=row["caller"], caller_name=caller_name[:128], dialled=row["dialled"], callee=route.callee[:128],
        kind=route.kind, trunk=route.trunk, trunk_name=route.trunk.name if route.trunk is not None else "",
        source_ip=row["source_ip"], source_port=row["source_port"], transport=row["transport"],
        started_at=row["started_at"], worker=row["worker"], answered_at=None,
        state=CallState.ENDED if refused else CallState.SETUP,
        ended_at=row["started_at"] if refused else None,
        status=route.refusal[0] if refused else None,
        reason=route.refusal[2][:255] if refused else "",
    )
    try:
        with transaction.atomic():
            call = Call.objects.create(call_id=row["call_id"], caller_tag=row["caller_tag"], **defaults)
    except IntegrityError:  # the same INVITE started again (a retransmission after a restart)
        call, _ = Call.objects.update_or_create(call_id=row["call_id"], caller_tag=row["caller_tag"],
                                                defaults=defaults)
    published = [call_changed(call, "ended" if refused else "started")]
    planned = dict(call_pk=call.pk, kind=route.kind, callee=route.callee, caller_name=caller_name,
                   bindings=list(route.bindings), trunk=route.trunk_config, refusal=route.refusal)
    if route.kind == CallKind.EMERGENCY:
        alert, text, bindings = _raise_emergency_alert(call, route, emergency)
        planned.update(alert_pk=alert.pk, alert_text=text, alert_bindings=bindings)
        published.append(alert_changed(alert, "raised"))
    transaction.on_commit(lambda: live.publish(published))
    return PlannedCall(**planned)


def _route_in_words(route: Route) -> str:
    if route.refusal is not None:
        return f"refused: {route.refusal[2]}"
    if route.trunk is not None:
        return f"out through trunk '{route.trunk.name}' as {route.callee}"
    return f"to extension {route.callee}"


def _raise_emergency_alert(call: Call, route: Route, emergency: EmergencySettings):
    text = emergency_alert_text(call.caller, call.caller_name, call.source_ip, call.dialled)
    bindings, recipients = _alert_bindings(emergency.alert_extensions)
    # One alert per call, however often the same INVITE is started (a restart, a repeat).
    key = "emergency_call:" + hashlib.sha256(f"{call.call_id}\n{call.caller_tag}".encode()).hexdigest()
    details = {"call": call.pk, "call_id": call.call_id, "caller": call.caller, "caller_name": call.caller_name,
               "dialled": call.dialled, "source": f"{call.source_ip}:{call.source_port}",
               "transport": call.transport, "route": _route_in_words(route), "recipients": recipients,
               "messages": []}
    alert = services.raise_alert(AlertEvent.EMERGENCY_CALL, text, text, target=call.caller, details=details,
                                 dedupe_key=key, now=call.started_at)
    if alert is None:
        alert = Alert.objects.get(dedupe_key=key)
    return alert, text, bindings


# -- what happens next -------------------------------------------------------------------
def _apply_progress(call: Call, event) -> str | None:
    """Move ``call`` on by one CallProgress; the live action, or None when nothing changed."""
    at = _from_epoch(event.at)
    if event.state == "ringing":
        if call.state != CallState.SETUP:
            return None
        call.state = CallState.RINGING
        return "changed"
    if event.state == "answered":
        if call.answered_at is not None:
            return None
        call.answered_at = max(at, call.started_at)
        call.state = CallState.ANSWERED
        call.status = event.status or 200
        return "changed"
    if event.state == "ended":
        call.ended_at = max(at, call.answered_at or call.started_at)
        call.state = CallState.ENDED
        if event.bye_from_tag is not None:
            call.reason = "hung up by the caller" if event.bye_from_tag == call.caller_tag else "hung up by the callee"
            call.status = call.status or 200
        else:
            if event.status is not None:
                call.status = event.status
            call.reason = (event.reason or status_words(call.status))[:255]
        return "ended"
    return None


def record_call_progress(events) -> list:
    """Store a batch of :class:`~registrar.sip.proxy.CallProgress` in one transaction.
    A call never moves backwards (an ended call stays ended; ringing only from setup;
    the first answer counts); events of unknown calls are ignored. Returns the live
    events, already scheduled to go out after commit."""
    events = list(events)
    if not events:
        return []
    published, changed = [], {}
    with transaction.atomic():
        call_ids = {_clip(event.call_id, 255) for event in events}
        calls = {(call.call_id, call.caller_tag): call
                 for call in Call.objects.select_for_update().filter(call_id__in=call_ids)}
        for event in events:
            call_id = _clip(event.call_id, 255)
            call = next((calls[call_id, _clip(tag, 128)] for tag in event.tags
                         if (call_id, _clip(tag, 128)) in calls), None)
            if call is None or call.state == CallState.ENDED:
                continue
            action = _apply_progress(call, event)
            if action is not None:
                changed[call.pk] = call
                published.append(call_changed(call, action))
        if changed:
            # One statement for the batch: ringing, answers and hang-ups arrive by the dozen under load.
            Call.objects.bulk_update(list(changed.values()), ["state", "answered_at", "ended_at", "status", "reason"])
        if published:
            transaction.on_commit(lambda: live.publish(published))
    return published


def _end_calls(queryset, reason: str, now: datetime) -> int:
    with transaction.atomic():
        calls = list(queryset.filter(ended_at__isnull=True).select_for_update())
        for call in calls:
            call.state = CallState.ENDED
            call.ended_at = max(now, call.answered_at or call.started_at)
            call.reason = reason
        Call.objects.bulk_update(calls, ["state", "ended_at", "reason"])
        published = [call_changed(call, "ended") for call in calls]
        if published:
            transaction.on_commit(lambda: live.publish(published))
    return len(calls)


def end_orphaned_calls(worker: str, alive=None) -> int:
    """At runsip's start: end the open calls of ``worker`` (its own name — a restart often
    gets the same PID) and of any other process of this host that no longer runs."""
    alive = alive or (lambda pid: pid != os.getpid() and services._process_alive(pid))
    host, colon, _ = worker.rpartition(":")
    dead = {worker} if worker else set()
    if colon:
        prefix = f"{host}:"
        open_workers = (Call.objects.filter(ended_at__isnull=True, worker__startswith=prefix)
                        .values_list("worker", flat=True).distinct())
        for name in open_workers:
            pid = name[len(prefix):]
            if not pid.isdigit() or not alive(int(pid)):
                dead.add(name)
    if not dead:
        return 0
    return _end_calls(Call.objects.filter(worker__in=dead), ORPHANED_REASON, timezone.now())


def end_stale_calls(now: datetime | None = None, max_hours: int = STALE_AFTER_HOURS) -> int:
    """Housekeeping: calls open for longer than ``max_hours`` missed their BYE (a phone
    lost power, a packet lost for good) and are ended."""
    now = now or timezone.now()
    stale = Call.objects.filter(started_at__lt=now - timedelta(hours=max_hours))
    return _end_calls(stale, f"no BYE seen within {max_hours} hours", now)


# -- emergency alerts ----------------------------------------------------------------------
def acknowledge_alert(alert: Alert, *, by: str) -> Alert:
    """Someone has seen it: it leaves the dashboard's banner. Only the first one counts."""
    with transaction.atomic():
        locked = Alert.objects.select_for_update().get(pk=alert.pk)
        if locked.acknowledged_at is None:
            locked.acknowledged_at = timezone.now()
            locked.acknowledged_by = _clip(by, 150)
            locked.save(update_fields=["acknowledged_at", "acknowledged_by"])
            event = alert_changed(locked, "acknowledged")
            transaction.on_commit(lambda: live.publish([event]))
    return locked


def unacknowledged_emergency_alerts():
    return Alert.objects.filter(event=AlertEvent.EMERGENCY_CALL, acknowledged_at__isnull=True).order_by(
        "-created_at", "-id")


def record_alert_delivery(alert_pk: int, *, extension: str, contact: str, status: int | None,
                          detail: str = "") -> Alert | None:
    """How one emergency MESSAGE went (``status`` None: no answer), appended to the
    alert's details["messages"]. With no ``extension`` it is found from the contact's binding."""
    with transaction.atomic():
        alert = Alert.objects.select_for_update().filter(pk=alert_pk).first()
        if alert is None:
            return None
        if not extension:
            extension = (Binding.objects.filter(contact_uri=contact).values_list("extension__number", flat=True)
                         .first() or "")
        details = dict(alert.details or {})
        details["messages"] = list(details.get("messages") or []) + [{
            "extension": extension, "contact": contact, "status": status, "detail": detail,
            "at": timezone.now().isoformat()}]
        alert.details = details
        alert.save(update_fields=["details"])
    return alert


# -- the dial plan -------------------------------------------------------------------------
DIAL_RULE_FIELDS = ("name", "position", "pattern", "strip", "prefix", "trunk", "enabled")


def _save_dial_rule(rule: DialRule, fields: dict) -> DialRule:
    unknown = set(fields) - set(DIAL_RULE_FIELDS)
    if unknown:
        raise ValidationError({name: "This field does not exist on a dial rule." for name in sorted(unknown)})
    for name, value in fields.items():
        if name == "trunk" and not isinstance(value, Trunk):
            rule.trunk_id = value  # a primary key, as a form or the API gives it
        else:
            setattr(rule, name, value)
    rule.full_clean()
    rule.save()
    return rule


def create_dial_rule(**fields) -> DialRule:
    return _save_dial_rule(DialRule(), fields)


def update_dial_rule(rule: DialRule, **fields) -> DialRule:
    return _save_dial_rule(rule, fields)


def delete_dial_rule(rule: DialRule) -> None:
    rule.delete()


def dial_rules_version() -> tuple:
    row = DialRule.objects.aggregate(count=Count("id"), changed=Max("updated_at"))
    return row["count"], row["changed"]


# -- queries for the API and the UI ----------------------------------------------------------
def active_calls():
    return Call.objects.filter(ended_at__isnull=True).order_by("-started_at", "-id")


def call_records(*, caller=None, dialled=None, kind=None, status=None, since=None, until=None, answered=None):
    """Ended calls (the CDRs), newest first. ``dialled`` matches part of the number."""
    calls = Call.objects.filter(ended_at__isnull=False)
    if caller:
        calls = calls.filter(caller=caller)
    if dialled:
        calls = calls.filter(dialled__contains=dialled)
    if kind:
        calls = calls.filter(kind=kind)
    if status is not None and status != "":
        calls = calls.filter(status=status)
    if since is not None:
        calls = calls.filter(started_at__gte=since)
    if until is not None:
        calls = calls.filter(started_at__lt=until)
    if answered is not None:
        calls = calls.filter(answered_at__isnull=not answered)
    return calls.order_by("-started_at", "-id")


CSV_HEADER = ["started_at", "caller", "caller_name", "dialled", "callee", "kind", "trunk", "answered_at", "ended_at",
              "duration_seconds", "status", "reason"]
_E164 = re.compile(r"\+\d+")


def csv_safe(value) -> str:
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _E164.fullmatch(text):
        return "'" + text
    return text


def calls_csv_rows(queryset):
    """The header, then one list of cells per call, ready for csv.writer."""
    yield list(CSV_HEADER)
    for call in queryset.iterator():
        duration = call.duration
        yield [csv_safe(cell) for cell in (
            call.started_at.isoformat(), call.caller, call.caller_name, call.dialled, call.callee, call.kind,
            call.trunk_name, call.answered_at.isoformat() if call.answered_at else "",
            call.ended_at.isoformat() if call.ended_at else "",
            f"{duration:.1f}" if duration is not None else "", call.status, call.reason)]
