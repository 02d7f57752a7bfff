"""The use cases of the registrar: the only code that writes its tables.

The SIP worker, the REST API, web views, management commands and Celery tasks all
call these functions, so every rule about a write (hashing passwords, validating soft
parameters, the registrar rules applied inside one transaction) exists once.
"""
import secrets
import string
from collections import defaultdict
from datetime import datetime, timezone as dt_timezone

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Count, Max
from django.utils import timezone

from registrar import softparams
from registrar.models import AuthAttempt, Binding, Extension, SoftParameter
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
def _state_of(binding: Binding) -> BindingState:
    return BindingState(
        contact_uri=binding.contact_uri, contact_params=binding.contact_params, q=binding.q,
        instance_id=binding.instance_id, reg_id=binding.reg_id, call_id=binding.call_id, cseq=binding.cseq,
        expires_at=binding.expires_at.timestamp(), last_refreshed=binding.last_refreshed.timestamp(),
    )


def store_registrations(requests, now: float) -> list[RegisterOutcome]:
    """Apply many REGISTERs in one transaction (group commit); one outcome per request, in order.

    ``requests`` are :class:`registrar.sip.core.StoreRegistration` actions. Requests for
    the same extension are applied in order, each seeing the previous one's result.
    When this returns, every binding in a 200 outcome is committed.
    """
    users = {item.register.user for item in requests}
    with transaction.atomic():
        extensions_query = Extension.objects.filter(number__in=users)
        if connection.features.has_select_for_update:
            # Serialises REGISTERs for one AOR across worker processes.
            extensions_query = extensions_query.select_for_update().order_by("pk")
        extensions = {ext.number: ext for ext in extensions_query}
        rows = defaultdict(dict)
        for binding in Binding.objects.filter(extension__in=list(extensions.values())):
            rows[binding.extension_id][binding.contact_uri] = binding
        changed, removed, outcomes = {}, set(), []
        for item in requests:
            extension = extensions.get(item.register.user)
            if extension is None:
                outcomes.append(RegisterOutcome(404, "Not Found", reason=Reason.UNKNOWN_USER))
                continue
            current_rows = rows[extension.pk]
            outcome = apply_register([_state_of(b) for b in current_rows.values()], item.register, now,
                                     item.policy, item.max_contacts)
            outcomes.append(outcome)
            if not outcome.ok:
                continue
            for contact_uri in outcome.removals:
                row = current_rows.pop(contact_uri, None)
                if row is not None and row.pk is not None:
                    removed.add(row.pk)
                changed.pop((extension.pk, contact_uri), None)
            for state in outcome.upserts:
                row = current_rows.get(state.contact_uri)
                if row is None:
                    row = Binding(extension=extension, contact_uri=state.contact_uri,
                                  first_registered=_from_epoch(now))
                    current_rows[state.contact_uri] = row
                origin = item.origin
                row.contact_params = state.contact_params
                row.q = state.q
                row.instance_id = state.instance_id
                row.reg_id = state.reg_id
                row.call_id = state.call_id
                row.cseq = state.cseq
                row.expires_at = _from_epoch(state.expires_at)
                row.last_refreshed = _from_epoch(state.last_refreshed)
                row.source_ip = origin.source_ip
                row.source_port = origin.source_port
                row.transport = origin.transport
                row.user_agent = origin.user_agent
                row.path = origin.path
                changed[(extension.pk, state.contact_uri)] = row
        if removed:
            Binding.objects.filter(pk__in=removed).delete()
        new_rows = [row for row in changed.values() if row.pk is None]
        old_rows = [row for row in changed.values() if row.pk is not None]
        if new_rows:
            Binding.objects.bulk_create(new_rows)
        if old_rows:
            Binding.objects.bulk_update(old_rows, _BINDING_UPDATE_FIELDS)
    return outcomes


_BINDING_UPDATE_FIELDS = ["contact_params", "q", "instance_id", "reg_id", "call_id", "cseq", "expires_at",
                          "last_refreshed", "source_ip", "source_port", "transport", "user_agent", "path"]


def remove_binding(binding: Binding) -> None:
    binding.delete()


def purge_expired_bindings(now: datetime | None = None) -> int:
    deleted, _ = Binding.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted


def live_bindings():
    return Binding.objects.filter(expires_at__gt=timezone.now())


# -- authentication attempts -----------------------------------------------------------
def record_attempts(attempts) -> None:
    """Store :class:`registrar.sip.core.Attempt` records, many per statement."""
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


def set_soft_parameter(key, value) -> SoftParameter:
    """Validate and store a soft parameter; ValidationError names the field on bad input."""
    try:
        spec = softparams.spec_for(key)
    except KeyError:
        raise ValidationError({"number": f"There is no soft parameter {key!r}."}) from None
    try:
        typed = softparams.coerce(spec, value)
    except ValueError as error:
        raise ValidationError({"value": str(error)}) from None
    ensure_soft_parameters()
    parameter = SoftParameter.objects.get(number=spec.number)
    parameter.value = typed
    parameter.save()
    return parameter


def soft_parameter_values() -> dict:
    return dict(SoftParameter.objects.values_list("name", "value"))


def soft_parameters_version():
    return SoftParameter.objects.aggregate(last=Max("updated_at"))["last"]


def current_policy():
    return softparams.policy_from_values(soft_parameter_values())
