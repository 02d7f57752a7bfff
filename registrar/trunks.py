"""Outbound trunks: the one write path for Trunk, TrunkStatus and TrunkAttempt.

Web views, the REST API and the ``trunk`` command create and change trunks here;
runsip reads :func:`trunk_snapshot` (passwords decrypted, in its database thread) and
writes what happened with :func:`record_trunk_reports`. Live events go out after commit.
"""
from datetime import datetime, timezone as dt_timezone

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Max
from django.utils import timezone

from registrar import crypto, live
from registrar.choices import TrunkCause, TrunkState
from registrar.models import Trunk, TrunkAttempt, TrunkStatus
from registrar.sip.errors import SipError
from registrar.sip.uac import TrunkConfig, TrunkReport, Target, target_from_uri

HISTORY_PER_TRUNK = 50
EDITABLE_FIELDS = ("name", "registrar_uri", "aor_user", "aor_domain", "auth_username", "expected_realm", "expires",
                   "outbound_proxy", "contact_user", "enabled", "register")


def _from_epoch(seconds):
    return datetime.fromtimestamp(seconds, tz=dt_timezone.utc) if seconds else None


def parse_target(text: str, field: str) -> Target:
    """A registrar or proxy URI, or ValidationError naming ``field``."""
    try:
        return target_from_uri(text)
    except SipError as error:
        raise ValidationError({field: f"{text!r} is not a usable SIP URI: {error.reason}"}) from None


def _validate(trunk: Trunk) -> None:
    trunk.full_clean(exclude=["password_encrypted"])
    parse_target(trunk.registrar_uri, "registrar_uri")
    if trunk.outbound_proxy:
        parse_target(trunk.outbound_proxy, "outbound_proxy")


def _resting_state(trunk: Trunk) -> str:
    """The state of a trunk runsip has not reported on since it last changed."""
    if not trunk.enabled:
        return TrunkState.DISABLED
    return TrunkState.REGISTERING if trunk.register else TrunkState.CALLS_ONLY


def create_trunk(*, name: str, registrar_uri: str, aor_user: str, password: str, **fields) -> Trunk:
    if not password:
        raise ValidationError({"password": "A trunk needs the password the upstream server expects."})
    trunk = Trunk(name=name, registrar_uri=registrar_uri, aor_user=aor_user, **fields)
    _validate(trunk)
    trunk.password_encrypted = crypto.encrypt(password)
    with transaction.atomic():
        trunk.save()
        TrunkStatus.objects.create(trunk=trunk, state=_resting_state(trunk))
        transaction.on_commit(lambda: live.publish([trunk_event(trunk)]))
    return trunk


def update_trunk(trunk: Trunk, *, password: str | None = None, **fields) -> Trunk:
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValidationError({name: "This field cannot be changed." for name in unknown})
    for name, value in fields.items():
        setattr(trunk, name, value)
    _validate(trunk)
    if password:
        trunk.password_encrypted = crypto.encrypt(password)
    with transaction.atomic():
        trunk.save()
        if not trunk.enabled or not trunk.register:
            TrunkStatus.objects.filter(trunk=trunk).update(state=_resting_state(trunk), next_attempt_at=None,
                                                           updated_at=timezone.now())
        transaction.on_commit(lambda: live.publish([trunk_event(trunk)]))
    return trunk


def delete_trunk(trunk: Trunk) -> None:
    """runsip notices the trunk is gone and unregisters it upstream."""
    name = trunk.name
    trunk.delete()
    transaction.on_commit(lambda: live.publish([{"type": "trunk", "action": "deleted", "name": name}]))


def request_register_now(trunk: Trunk) -> None:
    """Ask runsip to register this trunk again at once (it polls the trunks' version)."""
    if not trunk.enabled:
        raise ValidationError({"enabled": f"Trunk {trunk.name} is disabled: enable it to register it."})
    if not trunk.register:
        raise ValidationError({"register": f"Trunk {trunk.name} carries calls only: it keeps no registration."})
    Trunk.objects.filter(pk=trunk.pk).update(register_now_at=timezone.now())
    trunk.refresh_from_db(fields=["register_now_at"])


def trunks_version() -> tuple:
    row = Trunk.objects.aggregate(count=Count("id"), changed=Max("updated_at"), asked=Max("register_now_at"))
    return row["count"], row["changed"], row["asked"]


def trunk_snapshot(trunks=None) -> dict[int, TrunkConfig]:
    """Every trunk (or those given) as runsip needs it, passwords decrypted (None when unreadable)."""
    snapshot = {}
    for trunk in Trunk.objects.all() if trunks is None else trunks:
        try:
            password = crypto.decrypt(trunk.password_encrypted)
        except crypto.UnreadableSecret:
            password = None
        target = target_from_uri(trunk.registrar_uri)
        proxy = target_from_uri(trunk.outbound_proxy) if trunk.outbound_proxy else None
        snapshot[trunk.pk] = TrunkConfig(
            id=trunk.pk, name=trunk.name, registrar=target, proxy=proxy, aor_user=trunk.aor_user,
            aor_domain=trunk.aor_domain or target.host, auth_username=trunk.auth_username or trunk.aor_user,
            password=password, expected_realm=trunk.expected_realm, expires=trunk.expires,
            contact_user=trunk.contact_user or trunk.aor_user, enabled=trunk.enabled,
            register_now_at=trunk.register_now_at.timestamp() if trunk.register_now_at else 0.0,
            register=trunk.register,
        )
    return snapshot


def trunk_config(trunk: Trunk) -> TrunkConfig:
    """One trunk as runsip needs it (a call through it), password decrypted (None when unreadable)."""
    return trunk_snapshot([trunk])[trunk.pk]


def record_trunk_reports(reports) -> list:
    """Store :class:`~registrar.sip.uac.TrunkReport`s from runsip: the status row of each
    trunk, and a history row for each finished exchange. Returns the live events sent."""
    published = []
    with transaction.atomic():
        existing = set(Trunk.objects.filter(pk__in={r.trunk_id for r in reports}).values_list("pk", flat=True))
        touched = set()
        for report in reports:
            if report.trunk_id not in existing:
                continue  # deleted meanwhile
            TrunkStatus.objects.update_or_create(trunk_id=report.trunk_id, defaults=dict(
                state=report.state, registered_until=_from_epoch(report.registered_until),
                last_status=report.status, last_phrase=report.phrase[:128], cause=report.cause,
                detail=report.detail[:255], next_attempt_at=_from_epoch(report.next_attempt_at),
                updated_at=_from_epoch(report.at)))
            if report.finished_exchange:
                TrunkAttempt.objects.create(trunk_id=report.trunk_id, at=_from_epoch(report.at), status=report.status,
                                            phrase=report.phrase[:128], cause=report.cause, detail=report.detail[:255],
                                            expires=report.granted)
                touched.add(report.trunk_id)
            published.append(_report_event(report))
        for trunk_id in touched:
            old = TrunkAttempt.objects.filter(trunk_id=trunk_id).order_by("-at", "-id")[HISTORY_PER_TRUNK:]
            TrunkAttempt.objects.filter(pk__in=list(old.values_list("pk", flat=True))).delete()
        if published:
            transaction.on_commit(lambda: live.publish(published))
    return published


def cause_label(cause: str) -> str:
    return TrunkCause(cause).label if cause in TrunkCause.values else cause


def _report_event(report: TrunkReport) -> dict:
    return {"type": "trunk", "action": "status", "id": report.trunk_id, "state": report.state,
            "registered_until": report.registered_until or None, "status": report.status, "phrase": report.phrase,
            "cause": report.cause, "cause_label": cause_label(report.cause) if report.cause else "",
            "detail": report.detail, "next_attempt_at": report.next_attempt_at or None, "at": report.at}


def trunk_event(trunk: Trunk) -> dict:
    status = TrunkStatus.objects.filter(trunk_id=trunk.pk).first()  # fresh: the instance may hold an old one
    return {"type": "trunk", "action": "changed", "id": trunk.pk, "name": trunk.name, "enabled": trunk.enabled,
            "state": status.state if status else _resting_state(trunk)}
