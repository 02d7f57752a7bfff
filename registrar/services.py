"""The use cases of the registrar: the only code that writes its tables.

The SIP worker, the REST API, web views, management commands and Celery tasks all
call these functions, so every rule about a write (hashing passwords, validating soft
parameters, the registrar rules applied inside one transaction) exists once.
"""
import secrets
import string
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Count, Max
from django.utils import timezone

from registrar import events, live, softparams
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


def update_extension(extension: Extension, **fields) -> Extension:
    for name in ("display_name", "enabled", "max_contacts"):
        if name in fields:
            setattr(extension, name, fields[name])
    extension.full_clean()
    extension.save()
    return extension


def delete_extension(extension: Extension) -> None:
    extension.delete()


def credentials_snapshot() -> dict[str, Credentials]:
    """Every extension's credentials, for the SIP worker's in-memory cache."""
    realm = settings.SIP_REALM
    snapshot = {}
    for number, enabled, ext_realm, md5, sha256, sha512, max_contacts in Extension.objects.values_list(
            "number", "enabled", "realm", "ha1_md5", "ha1_sha256", "ha1_sha512_256", "max_contacts"):
        # HA1 hashes are bound to the realm they were made in; after a realm change the
        # extension needs a new password, and until then no password can match.
        ha1 = {"MD5": md5, "SHA-256": sha256, "SHA-512-256": sha512} if ext_realm == realm else {}
        snapshot[number] = Credentials(number, enabled, ha1, max_contacts)
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
                   "first_registered")
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
         origin.source_ip, origin.source_port, origin.transport, origin.user_agent, origin.path, registered)
        for (ext_id, _), (state, origin) in upserts.items()
    ]
    with connection.cursor() as cursor:
        cursor.executemany(_UPSERT_SQL, rows)


def remove_binding(binding: Binding) -> None:
    """Force-unregister one binding (the phone re-registers at its next refresh)."""
    removed = events.binding_removed(binding)
    binding.delete()
    transaction.on_commit(lambda: live.publish([removed]))


def purge_expired_bindings(now: datetime | None = None) -> int:
    """Delete bindings past expiry (they already stopped counting at their expiry moment)."""
    deleted, _ = Binding.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted


def live_bindings():
    return Binding.objects.filter(expires_at__gt=timezone.now())


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
