"""The use cases of the registrar: the only code that writes its tables.

The SIP worker, the REST API, web views, management commands and Celery tasks all
call these functions, so every rule about a write (hashing passwords, validating soft
parameters, the registrar rules applied inside one transaction) exists once.
"""
import os
import secrets
import string
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone as dt_timezone
from typing import NamedTuple

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Count, Max
from django.utils import timezone

from registrar import events, live, softparams
from registrar.choices import AuthMode, QualifyStatus
from registrar.models import (AuthAttempt, Ban, Binding, Extension, HourlyStat, SoftParameter, SoftParameterChange,
                              TracedMessage)
from registrar.sip import digest
from registrar.sip.core import Credentials
from registrar.sip.reasons import Reason
from registrar.sip.registrar import BindingState, RegisterOutcome, apply_register

PASSWORD_ALPHABET = string.ascii_letters + string.digits
GENERATED_PASSWORD_LENGTH = 16


def _from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=dt_timezone.utc)


# -- extensions ------------------------------------------------------------------------
def generate_password() -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(GENERATED_PASSWORD_LENGTH))


def _set_ha1(extension: Extension, password: str) -> None:
    if not password:
        raise ValidationError({"password": "A password cannot be empty."})
    realm = settings.SIP_REALM
    extension.realm = realm
    extension.ha1_md5 = digest.compute_ha1(extension.number, realm, password, "MD5")
    extension.ha1_sha256 = digest.compute_ha1(extension.number, realm, password, "SHA-256")
    extension.ha1_sha512_256 = digest.compute_ha1(extension.number, realm, password, "SHA-512-256")


def create_extension(number: str, password: str | None = None, display_name: str = "",
                     max_contacts: int = 5, enabled: bool = True) -> tuple[Extension, str | None]:
    """Create an extension; with no password one is generated and returned (shown once)."""
    generated = None
    if password is None:
        password = generated = generate_password()
    extension = Extension(number=number, display_name=display_name, max_contacts=max_contacts, enabled=enabled)
    _set_ha1(extension, password)
    extension.full_clean()
    extension.save()
    return extension, generated


def set_password(extension: Extension, password: str | None = None) -> str | None:
    """Store a new password as HA1 hashes; with none, generate one and return it."""
    generated = None
    if password is None:
        password = generated = generate_password()
    _set_ha1(extension, password)
    extension.save()
    return generated


EXTENSION_FIELDS = ("display_name", "enabled", "max_contacts", "may_watch", "auth_mode", "oauth_server",
                    "bearer_methods", "call_permission")


def update_extension(extension: Extension, **fields) -> Extension:
    """The one write path of an extension's settings (its password: :func:`set_password`)."""
    from registrar.oauth import clean_methods  # registrar.oauth builds on this module

    for name in EXTENSION_FIELDS:
        if name in fields:
            setattr(extension, name, fields[name])
    if "bearer_methods" in fields:
        extension.bearer_methods = clean_methods(extension.bearer_methods)
    if extension.auth_mode != AuthMode.DIGEST and extension.oauth_server_id is None:
        raise ValidationError({"oauth_server": "Bearer authentication needs an OAuth server."})
    extension.full_clean()
    extension.save()
    return extension


def delete_extension(extension: Extension) -> None:
    extension.delete()


def credentials_snapshot() -> dict[str, Credentials]:
    """Every extension's credentials, for the SIP worker's in-memory cache."""
    realm = settings.SIP_REALM
    snapshot = {}
    for number, enabled, ext_realm, md5, sha256, sha512, max_contacts, may_watch in Extension.objects.values_list(
            "number", "enabled", "realm", "ha1_md5", "ha1_sha256", "ha1_sha512_256", "max_contacts", "may_watch"):
        # HA1 hashes are bound to the realm they were made in; after a realm change the
        # extension needs a new password, and until then no password can match.
        ha1 = {"MD5": md5, "SHA-256": sha256, "SHA-512-256": sha512} if ext_realm == realm else {}
        watchable = frozenset(item.strip() for item in may_watch.split(",") if item.strip())
        snapshot[number] = Credentials(number, enabled, ha1, max_contacts, watchable)
    return snapshot


def extensions_version() -> tuple:
    """A cheap fingerprint that changes whenever an extension is created, changed or deleted."""
    row = Extension.objects.aggregate(count=Count("id"), last=Max("updated_at"))
    return row["count"], row["last"]


# -- bindings --------------------------------------------------------------------------
_STATE_COLUMNS = ("id", "extension_id", "contact_uri", "contact_params", "q", "instance_id", "reg_id", "call_id",
                  "cseq", "expires_at", "last_refreshed")


def _stored_states(extension_ids):
    """{extension id: {contact URI: (row id, BindingState)}} for the given extensions."""
    stored = defaultdict(dict)
    for (row_id, extension_id, uri, params, q, instance_id, reg_id, call_id, cseq, expires_at,
         last_refreshed) in Binding.objects.filter(extension_id__in=extension_ids).values_list(*_STATE_COLUMNS):
        stored[extension_id][uri] = (row_id, BindingState(uri, params, q, instance_id, reg_id, call_id, cseq,
                                                          expires_at.timestamp(), last_refreshed.timestamp()))
    return stored


def store_registrations(requests, now: float) -> list[RegisterOutcome]:
    """Apply many REGISTERs in one transaction (group commit); one outcome per request, in order.

    ``requests`` are :class:`registrar.sip.core.StoreRegistration` actions. Requests for
    the same extension are applied in order, each seeing the previous one's result.
    When this returns, every binding in a 200 outcome is committed.

    The writes are one DELETE and one INSERT ... ON CONFLICT DO UPDATE per batch: the
    ORM's bulk_update builds a CASE per row and field and costs more than the commit.
    """
    users = {item.register.user for item in requests}
    with transaction.atomic():
        extensions_query = Extension.objects.filter(number__in=users)
        if connection.features.has_select_for_update:
            # Serialises REGISTERs for one AOR across worker processes.
            extensions_query = extensions_query.select_for_update().order_by("pk")
        extension_ids = dict(extensions_query.values_list("number", "id"))
        stored = _stored_states(extension_ids.values())
        current = {ext_id: {uri: state for uri, (_, state) in rows.items()} for ext_id, rows in stored.items()}
        upserts, outcomes = {}, []
        for item in requests:
            extension_id = extension_ids.get(item.register.user)
            if extension_id is None:
                outcomes.append(RegisterOutcome(404, "Not Found", reason=Reason.UNKNOWN_USER))
                continue
            states = current.setdefault(extension_id, {})
            outcome = apply_register(list(states.values()), item.register, now, item.policy, item.max_contacts)
            outcomes.append(outcome)
            if not outcome.ok:
                continue
            for uri in outcome.removals:
                states.pop(uri, None)
                upserts.pop((extension_id, uri), None)
            for state in outcome.upserts:
                states[state.contact_uri] = state
                upserts[(extension_id, state.contact_uri)] = (state, item.origin)
        removed_ids = [row_id for ext_id, rows in stored.items() for uri, (row_id, _) in rows.items()
                       if uri not in current.get(ext_id, {})]
        if removed_ids:
            Binding.objects.filter(pk__in=removed_ids).delete()
        if upserts:
            _upsert_bindings(upserts, _from_epoch(now))
        _count_in_hour(now, registrations=sum(1 for outcome in outcomes if outcome.ok))
    return outcomes


_HOUR_SQL = (
    f"INSERT INTO {HourlyStat._meta.db_table} (hour, registrations, failures) VALUES (%s, %s, %s) "
    f"ON CONFLICT (hour) DO UPDATE SET registrations = {HourlyStat._meta.db_table}.registrations "
    f"+ EXCLUDED.registrations, failures = {HourlyStat._meta.db_table}.failures + EXCLUDED.failures"
)


def _count_in_hour(at: float, registrations: int = 0, failures: int = 0) -> None:
    if not (registrations or failures):
        return
    hour = connection.ops.adapt_datetimefield_value(_from_epoch(at // 3600 * 3600))
    with connection.cursor() as cursor:
        cursor.execute(_HOUR_SQL, [hour, registrations, failures])


_UPSERT_COLUMNS = ("extension_id", "contact_uri", "contact_params", "q", "instance_id", "reg_id", "call_id", "cseq",
                   "expires_at", "last_refreshed", "source_ip", "source_port", "transport", "user_agent", "path",
                   "flow", "first_registered")
_UPSERT_SQL = (
    f"INSERT INTO {Binding._meta.db_table} ({', '.join(_UPSERT_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(_UPSERT_COLUMNS))}) "
    "ON CONFLICT (extension_id, contact_uri) DO UPDATE SET "
    + ", ".join(f"{column} = EXCLUDED.{column}" for column in _UPSERT_COLUMNS[2:-1])
)


def _upsert_bindings(upserts, first_registered) -> None:
    """One INSERT ... ON CONFLICT DO UPDATE for the batch (SQLite and PostgreSQL alike).

    Raw SQL because this is the hot path: the ORM's bulk_create prepares every field of
    every row in Python and costs several times the statement itself. first_registered
    is written only when the row is new.
    """
    adapt = connection.ops.adapt_datetimefield_value
    registered = adapt(first_registered)
    rows = [
        (ext_id, state.contact_uri, state.contact_params, state.q, state.instance_id, state.reg_id, state.call_id,
         state.cseq, adapt(_from_epoch(state.expires_at)), adapt(_from_epoch(state.last_refreshed)),
         origin.source_ip, origin.source_port, origin.transport, origin.user_agent, origin.path, origin.flow,
         registered)
        for (ext_id, _), (state, origin) in upserts.items()
    ]
    with connection.cursor() as cursor:
        cursor.executemany(_UPSERT_SQL, rows)


def remove_binding(binding: Binding) -> None:
    """Force-unregister one binding (the phone re-registers at its next refresh)."""
    removed = events.binding_removed(binding)
    binding.delete()
    transaction.on_commit(lambda: live.publish([removed]))


def end_flows(flows) -> list:
    """Connections closed: the bindings that lived on them end now (RFC 5626 flow failure).

    Returns the live events describing the removals, already scheduled to go out after
    commit, so a caller on an event loop can also use them."""
    flows = [flow for flow in flows if flow]
    if not flows:
        return []
    with transaction.atomic():
        ended = list(Binding.objects.filter(flow__in=flows).select_related("extension"))
        removed = [events.binding_removed(binding) for binding in ended]
        Binding.objects.filter(pk__in=[binding.pk for binding in ended]).delete()
        if removed:
            transaction.on_commit(lambda: live.publish(removed))
    return removed


def end_orphaned_flows(hostname: str, alive=None) -> int:
    """Bindings on connections of processes of this host that no longer run (a crash or
    restart closed their connections without telling us). Flows are named
    "HOST:PID:..." by :func:`flow_name`."""
    # This process's flows from before are dead too: a restart in a container often
    # gets the same PID, and this runs before the process has a connection of its own.
    alive = alive or (lambda pid: pid != os.getpid() and _process_alive(pid))
    prefix = f"{hostname}:"
    dead = set()
    for flow in Binding.objects.filter(flow__startswith=prefix).values_list("flow", flat=True).distinct():
        pid = flow[len(prefix):].split(":", 1)[0]
        if not pid.isdigit() or not alive(int(pid)):
            dead.add(flow)
    return len(end_flows(dead))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def flow_name(hostname: str, pid: int, transport: str, serial) -> str:
    return f"{hostname}:{pid}:{transport}:{serial}"


def purge_expired_bindings(now: datetime | None = None) -> int:
    """Delete bindings past expiry (they already stopped counting at their expiry moment)."""
    deleted, _ = Binding.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted


def live_bindings():
    return Binding.objects.filter(expires_at__gt=timezone.now())


# -- qualify: OPTIONS pings runsip sends to registered contacts --------------------------
class QualifyTarget(NamedTuple):
    """A live binding to ping, reached at the address its REGISTER came from."""

    binding_id: int
    extension: str
    contact_uri: str
    source_ip: str
    source_port: int
    transport: str


class QualifyResult(NamedTuple):
    """One ping's outcome; ``rtt_ms`` is None when it went unanswered. The source is the one
    pinged: a binding that has since moved (the phone re-registered from elsewhere) ignores it."""

    binding_id: int
    source_ip: str
    source_port: int
    transport: str
    at: float
    rtt_ms: float | None = None


# A round-trip time is published again only when it moves by this many milliseconds and by
# this share of the last one published; jitter alone would otherwise flood the dashboard.
RTT_NOTABLE_MS = 20.0
RTT_NOTABLE_SHARE = 0.5


def qualify_targets(transports=("udp", "tcp", "tls")) -> list[QualifyTarget]:
    """The live bindings runsip can ping itself. Websocket bindings are not among them: the
    web process holds those connections, and the connection's life is their liveness."""
    rows = (live_bindings().filter(transport__in=transports).order_by("pk")
            .values_list("pk", "extension__number", "contact_uri", "source_ip", "source_port", "transport"))
    return [QualifyTarget(*row) for row in rows]


# -- calls: where the callee's phones are (the proxy reads, never writes) ----------------
class CallBinding(NamedTuple):
    """A live binding of a callee, reached at the address its REGISTER came from."""

    contact_uri: str
    q: float | None
    source_ip: str
    source_port: int
    transport: str
    path: str = ""  # Path values (RFC 3327), comma separated: requests to it go through them
    extension: str = ""


_CALL_BINDING_FIELDS = ("contact_uri", "q", "source_ip", "source_port", "transport", "path", "extension__number")


def call_bindings(number: str) -> list[CallBinding]:
    """The live bindings of extension ``number``, higher q first (RFC 3261 §16.6 forking)."""
    rows = (live_bindings().filter(extension__number=number, extension__enabled=True)
            .order_by("-q", "pk").values_list(*_CALL_BINDING_FIELDS))
    return [CallBinding(*row) for row in rows]


def contact_binding(contact_uri: str) -> CallBinding | None:
    """The live binding registered with exactly this Contact URI (an in-dialog request names it)."""
    row = (live_bindings().filter(contact_uri=contact_uri, extension__enabled=True).order_by("-last_refreshed")
           .values_list(*_CALL_BINDING_FIELDS).first())
    return CallBinding(*row) if row is not None else None


def _rtt_moved_notably(before, after) -> bool:
    if before is None or after is None:
        return before != after
    return abs(after - before) >= max(RTT_NOTABLE_MS, RTT_NOTABLE_SHARE * before)


def record_qualify_results(results, max_misses: int | None = None) -> list:
    """Store ping outcomes, many per transaction. An answer (any final response, even 404
    or 405: something answered at that address) makes the contact reachable with its RTT;
    ``max_misses`` unanswered pings in a row (soft parameter 107 when None) make it
    unreachable. Returns the live events for status changes and notable RTT moves, already
    scheduled to go out after commit."""
    if not results:
        return []
    if max_misses is None:
        max_misses = current_policy().qualify_max_misses
    with transaction.atomic():
        bindings = Binding.objects.select_related("extension").in_bulk({result.binding_id for result in results})
        before = {}
        for result in sorted(results, key=lambda item: item.at):
            binding = bindings.get(result.binding_id)
            if binding is None or (binding.source_ip, binding.source_port, binding.transport) != (
                    result.source_ip, result.source_port, result.transport):
                continue
            before.setdefault(binding.pk, (binding.qualify_status, binding.rtt_ms))
            binding.qualified_at = _from_epoch(result.at)
            if result.rtt_ms is not None:
                binding.qualify_status = QualifyStatus.REACHABLE
                binding.rtt_ms = round(result.rtt_ms, 1)
                binding.qualify_misses = 0
            else:
                binding.qualify_misses = min(binding.qualify_misses + 1, 32767)
                if binding.qualify_misses >= max_misses:
                    binding.qualify_status = QualifyStatus.UNREACHABLE
                    binding.rtt_ms = None
        touched = [bindings[pk] for pk in before]
        Binding.objects.bulk_update(touched, ["qualify_status", "rtt_ms", "qualified_at", "qualify_misses"])
        published = [
            events.contact_qualified(binding.pk, binding.extension.number, binding.contact_uri, binding.source_ip,
                                     binding.source_port, binding.transport, binding.qualify_status, binding.rtt_ms,
                                     binding.qualified_at.timestamp())
            for binding in touched
            if before[binding.pk][0] != binding.qualify_status
            or _rtt_moved_notably(before[binding.pk][1], binding.rtt_ms)]
        if published:
            transaction.on_commit(lambda: live.publish(published))
    return published


# -- authentication attempts -----------------------------------------------------------
def record_attempts(attempts) -> None:
    """Store :class:`registrar.sip.core.Attempt` records, many per statement."""
    with transaction.atomic():
        _insert_attempts(attempts)
        for hour, count in Counter(int(a.at // 3600) for a in attempts).items():
            _count_in_hour(hour * 3600, failures=count)


def _insert_attempts(attempts) -> None:
    AuthAttempt.objects.bulk_create([
        AuthAttempt(
            created_at=_from_epoch(a.at), source_ip=a.source.ip, source_port=a.source.port,
            transport=a.source.transport, method=a.method, aor=a.aor, extension_number=a.extension_number,
            auth_username=a.auth_username, user_agent=a.user_agent, outcome=a.outcome, reason=str(a.reason),
            status=a.status, detail=a.detail,
        )
        for a in attempts
    ])


# -- soft parameters -------------------------------------------------------------------
def ensure_soft_parameters() -> None:
    """Create the catalogue's parameters that are missing, with their defaults."""
    existing = set(SoftParameter.objects.values_list("number", flat=True))
    SoftParameter.objects.bulk_create([
        SoftParameter(number=spec.number, name=spec.name, kind=spec.kind, value=spec.default,
                      default=spec.default, minimum=spec.minimum, maximum=spec.maximum,
                      description=spec.description)
        for spec in softparams.CATALOGUE if spec.number not in existing
    ])


def set_soft_parameter(key, value, *, user=None, actor: str = "", via: str = "cli") -> SoftParameter:
    """Validate, store and audit a soft parameter; ValidationError names the field on bad input.

    ``user`` is the Django user who made the change (web, API, admin); ``actor`` names
    who it was when there is no user (the shell account for the CLI).
    """
    try:
        spec = softparams.spec_for(key)
    except KeyError:
        raise ValidationError({"number": f"There is no soft parameter {key!r}."}) from None
    try:
        typed = softparams.coerce(spec, value)
    except ValueError as error:
        raise ValidationError({"value": str(error)}) from None
    ensure_soft_parameters()
    with transaction.atomic():
        parameter = SoftParameter.objects.select_for_update().get(number=spec.number)
        old_value = parameter.value
        if old_value == typed:
            return parameter
        parameter.value = typed
        parameter.save()
        SoftParameterChange.objects.create(
            parameter=parameter, changed_by=user, actor=(user.get_username() if user else actor) or "unknown",
            via=via, old_value=old_value, new_value=typed,
        )
        transaction.on_commit(lambda: live.publish([events.soft_parameter_changed(parameter, user or actor)]))
    return parameter


def soft_parameter_values() -> dict:
    return dict(SoftParameter.objects.values_list("name", "value"))


def soft_parameters_version():
    return SoftParameter.objects.aggregate(last=Max("updated_at"))["last"]


def current_policy():
    return softparams.policy_from_values(soft_parameter_values())


# -- API tokens ------------------------------------------------------------------------
def issue_api_token(user) -> str:
    """A new API token for ``user``, replacing any previous one; the key is shown once."""
    from rest_framework.authtoken.models import Token

    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        return Token.objects.create(user=user).key


def revoke_api_token(user) -> bool:
    from rest_framework.authtoken.models import Token

    deleted, _ = Token.objects.filter(user=user).delete()
    return bool(deleted)


# -- bans ------------------------------------------------------------------------------
def ban_sources(decisions) -> list[Ban]:
    """Store the SIP worker's :class:`registrar.sip.protection.BanDecision` records."""
    bans = Ban.objects.bulk_create([
        Ban(ip=d.ip, expires_at=_from_epoch(d.until), failures=d.failures, detail=d.detail[:255])
        for d in decisions
    ])
    transaction.on_commit(lambda: live.publish([events.ban_changed(ban, "banned") for ban in bans]))
    transaction.on_commit(lambda: _queue_ban_alerts([ban.pk for ban in bans]))
    return bans


def lift_ban(ban: Ban, *, by: str = "") -> Ban:
    """Unban now; the SIP worker forgets the address's failures and serves it again."""
    if ban.lifted_at is None:
        ban.lifted_at = timezone.now()
        ban.lifted_by = by[:150]
        ban.save()
        transaction.on_commit(lambda: live.publish([events.ban_changed(ban, "lifted")]))
    return ban


def active_bans() -> dict:
    """{ip: until (epoch seconds)} of the bans in force, for the SIP worker."""
    bans = {}
    for ip, expires_at in Ban.objects.filter(lifted_at__isnull=True, expires_at__gt=timezone.now()).values_list(
            "ip", "expires_at"):
        bans[ip] = max(bans.get(ip, 0), expires_at.timestamp())
    return bans


def bans_version():
    row = Ban.objects.aggregate(count=Count("id"), last=Max("updated_at"))
    return row["count"], row["last"]


# -- SIP trace -------------------------------------------------------------------------
def record_trace(messages) -> None:
    """Store :class:`registrar.sip.core.TraceMessage` records."""
    rows = []
    for message in messages:
        text = message.data.decode("utf-8", "replace")
        start_line = text.split("\r\n", 1)[0][:255]
        call_id = next((line.split(":", 1)[1].strip() for line in text.split("\r\n")
                        if line.lower().startswith(("call-id:", "i:"))), "")
        rows.append(TracedMessage(
            captured_at=_from_epoch(message.at), direction=message.direction, transport=message.peer.transport,
            peer_ip=message.peer.ip, peer_port=message.peer.port, extension_number=message.extension_number[:64],
            summary=start_line, call_id=call_id[:255], data=text,
        ))
    TracedMessage.objects.bulk_create(rows)


def prune_trace(now: datetime | None = None) -> int:
    """Keep the trace within its bounds (soft parameters 312 and 313)."""
    values = soft_parameter_values()
    max_messages = values.get("trace_max_messages", softparams.BY_NAME["trace_max_messages"].default)
    max_age = values.get("trace_max_age_hours", softparams.BY_NAME["trace_max_age_hours"].default)
    cutoff = (now or timezone.now()) - timedelta(hours=max_age)
    deleted, _ = TracedMessage.objects.filter(captured_at__lt=cutoff).delete()
    newest_kept = TracedMessage.objects.order_by("-captured_at", "-id").values_list("id", flat=True)[
        max_messages:max_messages + 1]
    if newest_kept:
        more, _ = TracedMessage.objects.filter(id__lte=newest_kept[0]).delete()
        deleted += more
    return deleted


# -- operations: housekeeping, alerts, process health ----------------------------------
# Housekeeping jobs (registrar.tasks.JOBS) call the prune and check functions below; each
# is idempotent and safe to run twice, even at once in two processes. Alerts are stored
# here and sent by registrar.alerts (e-mail, webhooks) from a task, never from the SIP
# worker's database thread.
from django.core.validators import validate_email  # noqa: E402
from django.db import IntegrityError  # noqa: E402

from registrar.models import (Alert, AlertEvent, AlertRoute, BanNotice, ExtensionPresence, JobOutcome,  # noqa: E402
                              JobRun, Webhook, WebhookDelivery, WorkerStatus)
from registrar.sip.reasons import EXPLANATIONS  # noqa: E402

# Retention and the alert threshold are soft parameters when the catalogue has them
# (320-323); until then, and when unset, these defaults hold.
OPERATIONS_DEFAULTS = {
    "attempts_retention_days": 30,
    "audit_retention_days": 365,
    "stats_retention_days": 90,
    "alert_failure_threshold": 20,
}
JOB_HISTORY = timedelta(days=3)
DELIVERY_HISTORY = timedelta(days=30)
ALERT_HISTORY = timedelta(days=90)
FORGET_WORKER_AFTER = timedelta(days=1)
FAILURE_SPIKE_WINDOW = timedelta(minutes=10)
ALERT_REPEAT_AFTER = timedelta(hours=1)
# Bans older than this that no alert announced (alerting was down) are not announced late.
BAN_ALERT_LOOKBACK = timedelta(hours=24)
BANS_PER_ALERT = 100
PENDING_ALERT_LOOKBACK = timedelta(hours=24)
LIVE_WORKER_WITHIN = timedelta(seconds=15)
# Deletes go in batches of this many rows, each its own short transaction, so that a
# large prune never holds the database (SQLite's single writer) away from the SIP worker.
DELETE_BATCH = 5000


def operations_value(name: str):
    value = soft_parameter_values().get(name)
    return OPERATIONS_DEFAULTS[name] if value is None else value


def _delete_in_batches(queryset) -> int:
    model = queryset.model
    deleted = 0
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:DELETE_BATCH])
        if not ids:
            return deleted
        _, per_model = model.objects.filter(pk__in=ids).delete()
        deleted += per_model.get(model._meta.label, 0)


def prune_auth_attempts(now: datetime | None = None) -> int:
    """Delete failed attempts older than ``attempts_retention_days``."""
    cutoff = (now or timezone.now()) - timedelta(days=operations_value("attempts_retention_days"))
    return _delete_in_batches(AuthAttempt.objects.filter(created_at__lt=cutoff))


def prune_parameter_audit(now: datetime | None = None) -> int:
    """Delete soft-parameter audit entries older than ``audit_retention_days``, except each
    parameter's latest change: who set the value in force stays answerable."""
    cutoff = (now or timezone.now()) - timedelta(days=operations_value("audit_retention_days"))
    latest = SoftParameterChange.objects.values("parameter").annotate(last=Max("id")).values_list("last", flat=True)
    return _delete_in_batches(SoftParameterChange.objects.filter(changed_at__lt=cutoff).exclude(id__in=list(latest)))


def prune_hourly_stats(now: datetime | None = None) -> int:
    """Delete hourly roll-ups older than ``stats_retention_days``."""
    cutoff = (now or timezone.now()) - timedelta(days=operations_value("stats_retention_days"))
    return _delete_in_batches(HourlyStat.objects.filter(hour__lt=cutoff))


def prune_operations_history(now: datetime | None = None) -> dict:
    """Keep the operations tables small: job runs (but each job's last), webhook
    deliveries, alerts, and the status rows of runsip processes long gone."""
    now = now or timezone.now()
    last_runs = JobRun.objects.values("name").annotate(last=Max("id")).values_list("last", flat=True)
    return {
        "job_runs": _delete_in_batches(JobRun.objects.filter(started_at__lt=now - JOB_HISTORY)
                                       .exclude(id__in=list(last_runs))),
        "webhook_deliveries": _delete_in_batches(
            WebhookDelivery.objects.filter(created_at__lt=now - DELIVERY_HISTORY)),
        "alerts": _delete_in_batches(Alert.objects.filter(created_at__lt=now - ALERT_HISTORY)),
        "worker_statuses": _delete_in_batches(WorkerStatus.objects.filter(last_seen__lt=now - FORGET_WORKER_AFTER)),
    }


# -- job runs --------------------------------------------------------------------------
def record_job_run(name: str, started_at: datetime, finished_at: datetime, outcome: str, result: str = "") -> JobRun:
    return JobRun.objects.create(
        name=name, started_at=started_at, finished_at=finished_at,
        duration=max((finished_at - started_at).total_seconds(), 0.0), outcome=JobOutcome(outcome),
        result=str(result)[:10000],
    )


def last_job_runs() -> list[JobRun]:
    """The latest recorded run of every job, by name."""
    latest = JobRun.objects.values("name").annotate(last=Max("id")).values_list("last", flat=True)
    return list(JobRun.objects.filter(id__in=list(latest)).order_by("name"))


def last_successful_runs() -> dict:
    """{job name: finished_at of its latest successful run}."""
    return dict(JobRun.objects.filter(outcome=JobOutcome.OK).values("name").annotate(last=Max("finished_at"))
                .values_list("name", "last"))


# -- alert routing ---------------------------------------------------------------------
def _clean_events(events) -> list[str]:
    if isinstance(events, str):
        events = events.replace(",", " ").split()
    known = set(AlertEvent.values)
    unknown = [event for event in events if event not in known]
    if unknown:
        raise ValidationError({"events": f"Unknown event(s) {', '.join(map(str, unknown))}; "
                                         f"known: {', '.join(AlertEvent.values)}."})
    return sorted(set(events), key=AlertEvent.values.index)


def clean_emails(emails) -> str:
    """The addresses as stored (comma separated); ValidationError names the bad one."""
    route = AlertRoute(emails=", ".join(emails) if isinstance(emails, (list, tuple)) else str(emails))
    addresses = route.recipients()
    if not addresses:
        raise ValidationError({"emails": "Give at least one e-mail address."})
    for address in addresses:
        try:
            validate_email(address)
        except ValidationError:
            raise ValidationError({"emails": f"{address!r} is not an e-mail address."}) from None
    return ", ".join(addresses)


def set_alert_route(event: str, emails, enabled: bool = True) -> AlertRoute:
    """Send the e-mail of ``event`` alerts to ``emails`` (a list, or text separated by commas)."""
    (event,) = _clean_events([event])
    route, _ = AlertRoute.objects.update_or_create(
        event=event, defaults={"emails": clean_emails(emails), "enabled": enabled})
    return route


def delete_alert_route(route: AlertRoute) -> None:
    route.delete()


def alert_recipients(event: str) -> list[str]:
    route = AlertRoute.objects.filter(event=event, enabled=True).first()
    return route.recipients() if route else []


def create_webhook(url: str, events, *, name: str = "", secret: str | None = None,
                   enabled: bool = True) -> tuple[Webhook, str]:
    """A webhook for ``events``; with no secret one is generated. Returns the secret to
    show once to whoever configures the receiver."""
    webhook = Webhook(name=name, url=url, secret=secret or secrets.token_urlsafe(32), events=_clean_events(events),
                      enabled=enabled)
    webhook.full_clean()
    webhook.save()
    return webhook, webhook.secret


def update_webhook(webhook: Webhook, **fields) -> Webhook:
    for name in ("name", "url", "secret", "enabled"):
        if name in fields:
            setattr(webhook, name, fields[name])
    if "events" in fields:
        webhook.events = _clean_events(fields["events"])
    if not webhook.secret:
        webhook.secret = secrets.token_urlsafe(32)
    webhook.full_clean()
    webhook.save()
    return webhook


def delete_webhook(webhook: Webhook) -> None:
    webhook.delete()


def webhooks_for(event: str) -> list[Webhook]:
    return [webhook for webhook in Webhook.objects.filter(enabled=True) if event in webhook.events]


# -- alerts ----------------------------------------------------------------------------
def raise_alert(event: str, subject: str, text: str, *, target: str = "", details: dict | None = None,
                dedupe_key: str | None = None, repeat_after: timedelta | None = None,
                now: datetime | None = None) -> Alert | None:
    """Store an alert to send; None when it repeats one: same event and target within
    ``repeat_after``, or the same ``dedupe_key`` (which settles two processes raising
    it at once)."""
    now = now or timezone.now()
    if repeat_after is not None and Alert.objects.filter(event=event, target=target,
                                                         created_at__gt=now - repeat_after).exists():
        return None
    try:
        with transaction.atomic():
            return Alert.objects.create(event=AlertEvent(event), target=target[:255], dedupe_key=dedupe_key,
                                        subject=subject[:255], text=text, details=details or {}, created_at=now)
    except IntegrityError:
        return None


def _queue_ban_alerts(ban_ids) -> None:
    """After a ban commits (in the SIP worker): the alert goes out from a Celery task."""
    from registrar import tasks  # tasks are adapters over this module

    tasks.queue_ban_alerts(ban_ids)


def alert_new_bans(now: datetime | None = None) -> Alert | None:
    """One alert for every ban no alert has announced yet (at most BANS_PER_ALERT; the
    rest at the next call). Two processes at once announce each ban once: the second
    one's BanNotice rows collide and its transaction rolls back."""
    now = now or timezone.now()
    try:
        with transaction.atomic():
            bans = list(Ban.objects.filter(created_at__gte=now - BAN_ALERT_LOOKBACK, created_at__lte=now,
                                           notice__isnull=True).order_by("created_at", "id")[:BANS_PER_ALERT])
            if not bans:
                return None
            lines = [f"{ban.ip} banned until {ban.expires_at:%Y-%m-%d %H:%M:%S %Z} after {ban.failures} failed "
                     f"attempts: {ban.detail}" for ban in bans]
            if len(bans) == 1:
                subject = f"Source {bans[0].ip} banned"
            else:
                subject = f"{len(bans)} source addresses banned"
            alert = Alert.objects.create(
                event=AlertEvent.BAN, target=bans[0].ip if len(bans) == 1 else "", subject=subject,
                text="Regis banned these source addresses (their requests are dropped until the ban ends or an "
                     "admin lifts it):\n\n" + "\n".join(lines),
                details={"bans": [{"id": ban.pk, "ip": ban.ip, "until": ban.expires_at.isoformat(),
                                   "failures": ban.failures, "detail": ban.detail} for ban in bans]},
                created_at=now)
            BanNotice.objects.bulk_create([BanNotice(ban=ban, alert=alert) for ban in bans])
            return alert
    except IntegrityError:
        return None


def _failure_attempts(number, since, now):
    # A stale nonce is routine (the phone's challenge expired): not a failure.
    return (AuthAttempt.objects.filter(extension_number=number, created_at__gt=since, created_at__lte=now)
            .exclude(reason=Reason.STALE_NONCE))


def check_failure_spikes(now: datetime | None = None) -> list[Alert]:
    """Alert when an extension had more than ``alert_failure_threshold`` failed attempts
    in the last 10 minutes; once per extension per hour. Numbers that are no
    extension (scanners guessing) are the ban list's business, not this alert's."""
    now = now or timezone.now()
    threshold = operations_value("alert_failure_threshold")
    if threshold <= 0:
        return []
    since = now - FAILURE_SPIKE_WINDOW
    spikes = (AuthAttempt.objects.filter(created_at__gt=since, created_at__lte=now,
                                         extension_number__in=Extension.objects.values("number"))
              .exclude(reason=Reason.STALE_NONCE).values("extension_number").annotate(failures=Count("id"))
              .filter(failures__gt=threshold).order_by("extension_number"))
    raised = []
    for row in spikes:
        number, failures = row["extension_number"], row["failures"]
        attempts = _failure_attempts(number, since, now)
        reasons = Counter(attempts.values_list("reason", flat=True)).most_common()
        sources = Counter(attempts.values_list("source_ip", flat=True)).most_common(5)
        text = (f"Extension {number} had {failures} failed attempts in the last "
                f"{int(FAILURE_SPIKE_WINDOW.total_seconds() // 60)} minutes (alert threshold {threshold}).\n\n"
                "Reasons:\n" + "\n".join(f"  {count} × {EXPLANATIONS[Reason(reason)]}" for reason, count in reasons)
                + "\n\nSources:\n" + "\n".join(f"  {count} × {ip}" for ip, count in sources))
        alert = raise_alert(
            AlertEvent.FAILURE_SPIKE, f"{failures} failed attempts for extension {number} in 10 minutes", text,
            target=number, now=now, repeat_after=ALERT_REPEAT_AFTER,
            dedupe_key=f"failure_spike:{number}:{int(now.timestamp() // 3600)}",
            details={"extension": number, "failures": failures, "threshold": threshold,
                     "window_seconds": int(FAILURE_SPIKE_WINDOW.total_seconds()),
                     "reasons": dict(reasons), "sources": dict(sources)})
        if alert is not None:
            raised.append(alert)
    return raised


def check_stopped_registering(now: datetime | None = None) -> Alert | None:
    """Alert for the extensions that had a live binding at the previous check and have
    none now (one alert per check, listing them). The first check only takes note."""
    now = now or timezone.now()
    live = Binding.objects.filter(expires_at__gt=now)
    with transaction.atomic():
        # Locking the rows to delete: a concurrent check skips them, so each is told once.
        gone = list(ExtensionPresence.objects.select_for_update().exclude(extension_id__in=live.values("extension_id"))
                    .values_list("extension_id", "registered_since"))
        gone_ids = [extension_id for extension_id, _ in gone]
        ExtensionPresence.objects.filter(extension_id__in=gone_ids).delete()
        known = ExtensionPresence.objects.values("extension_id")
        arrived = set(live.exclude(extension_id__in=known).values_list("extension_id", flat=True))
        ExtensionPresence.objects.bulk_create(
            [ExtensionPresence(extension_id=extension_id, registered_since=now) for extension_id in arrived],
            ignore_conflicts=True)
        if not gone:
            return None
        since = dict(gone)
        last_bindings = {}
        for binding in Binding.objects.filter(extension_id__in=gone_ids).order_by("expires_at"):
            last_bindings[binding.extension_id] = binding
        entries, lines = [], []
        for extension in Extension.objects.filter(id__in=gone_ids).order_by("number"):
            binding = last_bindings.get(extension.pk)
            entry = {"extension": extension.number, "name": extension.display_name,
                     "registered_since": since[extension.pk].isoformat(), "last_contact": None}
            if binding is not None:
                entry["last_contact"] = {
                    "contact": binding.contact_uri, "source": f"{binding.source_ip}:{binding.source_port}",
                    "transport": binding.transport, "user_agent": binding.user_agent,
                    "expired_at": binding.expires_at.isoformat()}
                how = (f"its binding expired at {binding.expires_at:%Y-%m-%d %H:%M:%S %Z} (last from "
                       f"{binding.source_ip}:{binding.source_port} {binding.transport.upper()}, "
                       f"{binding.user_agent or 'no User-Agent'})")
            else:
                how = "its bindings were removed (unregistered by the phone or an admin)"
            entries.append(entry)
            lines.append(f"{extension}: {how}")
        if not entries:
            return None  # deleted extensions take their presence with them
        subject = (f"Extension {entries[0]['extension']} stopped registering" if len(entries) == 1
                   else f"{len(entries)} extensions stopped registering")
        return raise_alert(AlertEvent.STOPPED_REGISTERING, subject,
                           "These extensions had a registered device at the previous check and have none now:\n\n"
                           + "\n".join(lines),
                           target=entries[0]["extension"] if len(entries) == 1 else "",
                           details={"extensions": entries}, now=now)


def claim_pending_alerts(now: datetime | None = None, limit: int = 100) -> list[Alert]:
    """Alerts not sent yet, each claimed by exactly one process (the one whose UPDATE
    finds it still unclaimed)."""
    now = now or timezone.now()
    claimed = []
    candidates = Alert.objects.filter(dispatched_at__isnull=True, created_at__gte=now - PENDING_ALERT_LOOKBACK)
    for alert in candidates.order_by("id")[:limit]:
        if Alert.objects.filter(pk=alert.pk, dispatched_at__isnull=True).update(dispatched_at=now):
            alert.dispatched_at = now
            claimed.append(alert)
    return claimed


def record_alert_email(alert: Alert, recipients, error: str = "") -> None:
    Alert.objects.filter(pk=alert.pk).update(emailed_to=", ".join(recipients), email_error=error[:2000])


def record_webhook_delivery(webhook_id: int, alert_id: int, attempt: int, *, status_code: int | None = None,
                            error: str = "", succeeded: bool = False, will_retry: bool = False,
                            duration: float = 0.0) -> WebhookDelivery:
    return WebhookDelivery.objects.create(
        webhook_id=webhook_id, alert_id=alert_id, attempt=attempt, status_code=status_code, error=error[:500],
        succeeded=succeeded, will_retry=will_retry, duration=duration)


def recent_alerts(limit: int = 50) -> list[Alert]:
    return list(Alert.objects.all()[:limit])


def recent_webhook_deliveries(limit: int = 50, webhook: Webhook | None = None) -> list[WebhookDelivery]:
    deliveries = WebhookDelivery.objects.select_related("webhook", "alert")
    if webhook is not None:
        deliveries = deliveries.filter(webhook=webhook)
    return list(deliveries[:limit])


# -- SIP worker status -----------------------------------------------------------------
def record_worker_status(report: dict, now: datetime | None = None) -> WorkerStatus:
    """Store what one runsip process reports about itself (it calls this every few
    seconds from its database thread). ``report``: hostname, pid, listeners,
    started_at (epoch seconds), stats ({received, errors, batches, stored}),
    credentials, connections, counters (registrar.metrics.WorkerCounters.as_dict())."""
    now = now or timezone.now()
    started_at = report["started_at"]
    if not isinstance(started_at, datetime):
        started_at = _from_epoch(started_at)
    stats = report.get("stats", {})
    received = int(stats.get("received", 0))
    previous = WorkerStatus.objects.filter(hostname=report["hostname"], pid=report["pid"]).first()
    if previous is not None and previous.started_at == started_at and now > previous.last_seen:
        rate = max(received - previous.received, 0) / (now - previous.last_seen).total_seconds()
    else:
        rate = received / max((now - started_at).total_seconds(), 1.0)
    status, _ = WorkerStatus.objects.update_or_create(
        hostname=report["hostname"][:255], pid=report["pid"],
        defaults={
            "listeners": [str(listener) for listener in report.get("listeners", [])],
            "started_at": started_at, "last_seen": now,
            "credentials": int(report.get("credentials", 0)), "connections": int(report.get("connections", 0)),
            "received": received, "errors": int(stats.get("errors", 0)), "batches": int(stats.get("batches", 0)),
            "stored": int(stats.get("stored", 0)), "requests_per_second": round(rate, 3),
            "counters": report.get("counters") or {},
        })
    return status


def forget_worker_status(hostname: str, pid: int) -> None:
    """A runsip process that stops cleanly removes its row."""
    WorkerStatus.objects.filter(hostname=hostname, pid=pid).delete()


def live_worker_statuses(within: timedelta = LIVE_WORKER_WITHIN, now: datetime | None = None) -> list[WorkerStatus]:
    """The runsip processes that reported within ``within``."""
    now = now or timezone.now()
    return list(WorkerStatus.objects.filter(last_seen__gte=now - within))


# -- operations as the web UI and the API manage them ----------------------------------
from dataclasses import dataclass  # noqa: E402

# A scheduled job whose last run started longer ago than this many of its intervals is
# overdue: its scheduler (Celery beat, or the embedded timer of `manage.py serve`) is
# not running it.
OVERDUE_INTERVALS = 3


@dataclass(frozen=True)
class JobStatus:
    """A housekeeping job as the operations page and /api/v1/jobs/ show it."""

    name: str
    runnable: bool  # still in registrar.tasks.JOBS (a removed job keeps its history)
    interval: float | None  # seconds between scheduled runs; None: not on a fixed interval
    last_run: JobRun | None
    last_success: datetime | None
    failed: bool  # its last run failed
    overdue: bool

    @property
    def healthy(self) -> bool:
        return not (self.failed or self.overdue)


def job_intervals() -> dict[str, float]:
    """{job name: seconds between its runs} from CELERY_BEAT_SCHEDULE. A crontab entry
    has no fixed interval and is left out."""
    intervals = {}
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        if entry.get("task") != "registrar.tasks.run_job" or not entry.get("args"):
            continue
        schedule = getattr(entry["schedule"], "run_every", entry["schedule"])  # celery.schedules.schedule
        seconds = schedule.total_seconds() if isinstance(schedule, timedelta) else schedule
        if isinstance(seconds, (int, float)) and seconds > 0:
            name = entry["args"][0]
            intervals[name] = min(seconds, intervals.get(name, seconds))
    return intervals


def job_statuses(now: datetime | None = None) -> list[JobStatus]:
    """Every job, by name: those that exist and those with a recorded run."""
    from registrar.tasks import JOBS  # tasks are adapters over this module

    now = now or timezone.now()
    runs = {run.name: run for run in last_job_runs()}
    successes = last_successful_runs()
    intervals = job_intervals()
    statuses = []
    for name in sorted(set(JOBS) | set(runs)):
        run, interval = runs.get(name), intervals.get(name)
        overdue = (run is not None and interval is not None
                   and now - run.started_at > timedelta(seconds=OVERDUE_INTERVALS * interval))
        statuses.append(JobStatus(name=name, runnable=name in JOBS, interval=interval, last_run=run,
                                  last_success=successes.get(name),
                                  failed=run is not None and run.outcome == JobOutcome.FAILED, overdue=overdue))
    return statuses


def run_job_now(name: str) -> JobRun | None:
    """Start job ``name`` now, through Celery as its schedule would. In the embedded
    default (tasks run in-process) it has run when this returns, and its recorded run is
    returned, failed or not; with a broker it is queued for a worker, and None returned."""
    from registrar import tasks

    if name not in tasks.JOBS:
        raise ValidationError({"name": f"There is no job {name!r}; jobs: {', '.join(sorted(tasks.JOBS))}."})
    before = JobRun.objects.filter(name=name).aggregate(last=Max("id"))["last"] or 0
    tasks.run_job.delay(name)  # in-process, a failure is recorded and kept in the result, not raised
    if not tasks.run_job.app.conf.task_always_eager:
        return None
    return JobRun.objects.filter(name=name, id__gt=before).order_by("id").first()


def send_test_alert(actor: str, via: str) -> Alert:
    """Raise a test alert and start the send_alerts job, which sends it to the test
    event's e-mail route and webhooks. In the embedded default it has gone out when this
    returns (the alert tells to whom); with a broker a worker sends it."""
    alert = raise_alert(AlertEvent.TEST, "Test alert",
                        f"A test alert sent by {actor or 'someone'} through the {via}. If you read this, alerts "
                        "of this route reach you.", details={"test": True, "by": actor, "via": via})
    run_job_now("send_alerts")
    alert.refresh_from_db()
    return alert


def _route_event(event) -> str:
    if event not in AlertEvent.values:
        raise ValidationError({"event": f"Unknown event {event!r}; known: {', '.join(AlertEvent.values)}."})
    return str(event)


def create_alert_route(event: str, emails, enabled: bool = True) -> AlertRoute:
    """A route for an event that has none (set_alert_route replaces one instead)."""
    event = _route_event(event)
    if AlertRoute.objects.filter(event=event).exists():
        raise ValidationError({"event": f"The event {event!r} has a route already; edit that one."})
    route = AlertRoute(event=event, emails=clean_emails(emails), enabled=enabled)
    route.full_clean()
    route.save()
    return route


def update_alert_route(route: AlertRoute, **fields) -> AlertRoute:
    """Change a route's event, addresses or enabled; the event stays one route's."""
    if "event" in fields:
        event = _route_event(fields["event"])
        if AlertRoute.objects.filter(event=event).exclude(pk=route.pk).exists():
            raise ValidationError({"event": f"The event {event!r} has a route already; edit that one."})
        route.event = event
    if "emails" in fields:
        route.emails = clean_emails(fields["emails"])
    if "enabled" in fields:
        route.enabled = fields["enabled"]
    route.full_clean()
    route.save()
    return route


def set_webhook_secret(webhook: Webhook, secret: str | None = None) -> str | None:
    """Replace a webhook's signing secret; with none, generate one and return it (shown once)."""
    update_webhook(webhook, secret=secret or "")  # an empty secret is generated
    return None if secret else webhook.secret
