"""The registrar rules of RFC 3261 §10.3, as pure functions.

:func:`interpret_register` turns a parsed REGISTER into a :class:`RegisterRequest`
(what it asks for, with every expiry resolved); :func:`apply_register` takes the
bindings currently stored for the address of record and decides what changes.  The
services layer calls :func:`apply_register` inside the database transaction that
persists the outcome, so several worker processes stay correct with one database.

Decisions the RFC leaves to us:
- The registrar serves one domain; the Request-URI and the To host are not checked
  against it (phones commonly put the server's IP address there, as in seed 000).
- Max contacts per AOR: when a REGISTER would exceed the extension's limit, the
  contacts refreshed longest ago are replaced (a rebooted phone with a new Contact
  must not be locked out); a single REGISTER that by itself asks for more contacts
  than the limit is refused with 403 "Too Many Contacts".
- A REGISTER whose CSeq is not newer than the one stored for the same Call-ID and
  contact is refused with 400 "Invalid CSeq Number", as Kamailio does.

Extensions a phone asks for with Supported (the answer's headers are built by the core):
- outbound (RFC 5626 §6): a Contact with +sip.instance and reg-id is one flow; a new
  flow for the same pair replaces the old. reg-id without +sip.instance is ignored; two
  Contacts with reg-id in one REGISTER get 400; behind an edge proxy whose Path lacks
  the "ob" parameter, 439 First Hop Lacks Outbound Support. The 200 carries
  Require: outbound and Flow-Timer.
- path (RFC 3327): Path is stored with the binding always, and echoed in the 200 only
  to a phone that said Supported: path (the lenient reading Kamailio and OpenSIPS take).
- gruu (RFC 5627 §5.3): each Contact with +sip.instance gets pub-gruu and temp-gruu.
"""
import base64
import hashlib
from dataclasses import dataclass

from registrar.sip.errors import SipError
from registrar.sip.message import Request
from registrar.sip.policy import Policy
from registrar.sip.reasons import Reason

MAX_EXPIRES_VALUE = 2**32 - 1


@dataclass(frozen=True)
class BindingState:
    """One stored binding, as the rules need it. Times are seconds since the epoch."""

    contact_uri: str
    contact_params: str
    q: float | None
    instance_id: str
    reg_id: int | None
    call_id: str
    cseq: int
    expires_at: float
    last_refreshed: float


@dataclass(frozen=True)
class ContactRequest:
    uri: str
    params: str
    q: float | None
    instance_id: str
    reg_id: int | None
    expires: int


@dataclass(frozen=True)
class RegisterRequest:
    user: str
    call_id: str
    cseq: int
    star: bool
    contacts: tuple[ContactRequest, ...]
    # What the phone asked for with Supported, as far as this REGISTER can use it.
    outbound: bool = False
    gruu: bool = False
    path: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegisterOutcome:
    status: int
    phrase: str
    headers: tuple[tuple[str, str], ...] = ()
    reason: Reason | None = None
    upserts: tuple[BindingState, ...] = ()
    removals: tuple[str, ...] = ()
    bindings: tuple[BindingState, ...] = ()
    detail: str = ""

    @property
    def ok(self):
        return self.status == 200


_PARAMS_KEPT_APART = frozenset({"expires", "q", "+sip.instance", "reg-id"})


def _param_text(params):
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)


def _parse_q(value):
    try:
        q = float(value)
    except ValueError:
        raise SipError(400, "Invalid q Value in Contact") from None
    if not 0.0 <= q <= 1.0:
        raise SipError(400, "Invalid q Value in Contact")
    return q


def _parse_delta(value, what):
    if not value or not value.isdigit():
        raise SipError(400, f"Invalid {what}")
    return min(int(value), MAX_EXPIRES_VALUE)


def interpret_register(request: Request, policy: Policy) -> RegisterRequest:
    """What the REGISTER asks for. Raises SipError (400) for what §10.3 forbids."""
    user = request.to.uri.user_unescaped
    if not user:
        raise SipError(400, "To Header Has No User Part")
    header_expires = request.expires
    cseq, _ = request.cseq
    if request.contact_star:
        if request.contacts:
            raise SipError(400, "Contact: * Must Be the Only Contact")
        if header_expires != 0:
            raise SipError(400, "Contact: * Requires Expires: 0")
        return RegisterRequest(user, request.call_id, cseq, True, ())
    supported = {tag.lower() for tag in request.headers.get_all("Supported")}
    contacts = []
    for contact in request.contacts:
        expires_param = contact.param("expires")
        if expires_param is not None:
            expires = _parse_delta(expires_param, "expires Parameter in Contact")
        elif header_expires is not None:
            expires = header_expires
        else:
            expires = policy.default_expires
        q_text = contact.param("q")
        instance_id = contact.param("+sip.instance") or ""
        # RFC 5626 §6: without an instance a reg-id means nothing.
        reg_id_text = contact.param("reg-id") if instance_id else None
        contacts.append(
            ContactRequest(
                uri=str(contact.uri),
                params=_param_text(p for p in contact.params if p[0] not in _PARAMS_KEPT_APART),
                q=_parse_q(q_text) if q_text is not None else None,
                instance_id=instance_id,
                reg_id=_parse_delta(reg_id_text, "reg-id") if reg_id_text is not None else None,
                expires=expires,
            )
        )
    flows = [contact for contact in contacts if contact.reg_id is not None]
    if len(flows) > 1:
        raise SipError(400, "More Than One Contact With reg-id")
    paths = tuple(request.headers.get_all("Path"))
    outbound = bool(flows) and "outbound" in supported
    if outbound and paths and not _has_ob(paths[0]):
        raise SipError(439, "First Hop Lacks Outbound Support")
    return RegisterRequest(user, request.call_id, cseq, False, tuple(contacts), outbound=outbound,
                           gruu="gruu" in supported, path=paths if "path" in supported else ())


def _has_ob(path_value: str) -> bool:
    uri = path_value.strip()
    if "<" in uri:
        uri = uri[uri.index("<") + 1:uri.rindex(">")] if ">" in uri else uri
    return any(param.split("=", 1)[0].strip().lower() == "ob" for param in uri.split(";")[1:])


def _refuse(status, phrase, reason, headers=(), detail=""):
    return RegisterOutcome(status, phrase, headers, reason, detail=detail)


def apply_register(current, register: RegisterRequest, now: float, policy: Policy, max_contacts: int) -> RegisterOutcome:
    """Decide a REGISTER against the stored bindings ``current`` of its AOR."""
    live = {b.contact_uri: b for b in current if b.expires_at > now}
    removals = [b.contact_uri for b in current if b.expires_at <= now]

    if register.star:
        for binding in live.values():
            if binding.call_id == register.call_id and register.cseq <= binding.cseq:
                return _refuse(400, "Invalid CSeq Number", Reason.OUT_OF_ORDER,
                               detail=f"CSeq {register.cseq} is not newer than the stored {binding.cseq}")
        return RegisterOutcome(200, "OK", removals=tuple(removals + list(live)), bindings=())

    for contact in register.contacts:
        if 0 < contact.expires < policy.min_expires:
            return _refuse(423, "Interval Too Brief", Reason.INTERVAL_TOO_BRIEF,
                           (("Min-Expires", str(policy.min_expires)),),
                           f"asked for {contact.expires} s; the minimum (soft parameter 100) is {policy.min_expires} s")
    if len(register.contacts) > max_contacts:
        return _refuse(403, "Too Many Contacts", Reason.TOO_MANY_CONTACTS,
                       detail=f"one REGISTER with {len(register.contacts)} contacts; the extension allows "
                              f"{max_contacts}")

    upserts = {}
    for contact in register.contacts:
        existing = live.get(contact.uri)
        if existing is None and contact.instance_id and contact.reg_id is not None:
            # RFC 5626 §6: a new flow for the same instance and reg-id replaces the old one.
            existing_flow = next((b for b in live.values() if b.instance_id == contact.instance_id
                                  and b.reg_id == contact.reg_id), None)
            if existing_flow is not None:
                del live[existing_flow.contact_uri]
                removals.append(existing_flow.contact_uri)
        if existing is not None and existing.call_id == register.call_id and register.cseq <= existing.cseq:
            return _refuse(400, "Invalid CSeq Number", Reason.OUT_OF_ORDER,
                           detail=f"CSeq {register.cseq} is not newer than the stored {existing.cseq}")
        if contact.expires == 0:
            if existing is not None:
                del live[contact.uri]
                removals.append(contact.uri)
            upserts.pop(contact.uri, None)
            continue
        expires = min(contact.expires, policy.max_expires)
        state = BindingState(
            contact_uri=contact.uri,
            contact_params=contact.params,
            q=contact.q,
            instance_id=contact.instance_id,
            reg_id=contact.reg_id,
            call_id=register.call_id,
            cseq=register.cseq,
            expires_at=now + expires,
            last_refreshed=now,
        )
        live[contact.uri] = state
        upserts[contact.uri] = state

    overflow = len(live) - max_contacts
    if overflow > 0:
        for victim in sorted((b for b in live.values() if b.contact_uri not in upserts),
                             key=lambda b: b.last_refreshed)[:overflow]:
            del live[victim.contact_uri]
            removals.append(victim.contact_uri)

    return RegisterOutcome(200, "OK", upserts=tuple(upserts.values()), removals=tuple(removals),
                           bindings=tuple(sorted(live.values(), key=lambda b: (-(b.q or 0), b.contact_uri))))


def instance_urn(instance_id: str) -> str:
    """'"<urn:uuid:...>"' as phones send +sip.instance → 'urn:uuid:...'."""
    return instance_id.strip().strip('"').strip().lstrip("<").rstrip(">")


def gruus(aor: str, binding: BindingState, key: bytes) -> tuple[str, str]:
    """(pub-gruu, temp-gruu) of an instance's binding (RFC 5627 §3.2, §5.3).

    The public GRUU is the AOR with gr=<instance>. The temporary one must not reveal the
    AOR and must change when the phone registers with a new Call-ID; a keyed hash of
    (AOR, instance, Call-ID) does both without storing anything."""
    user, _, domain = aor.partition(":")[2].rpartition("@")
    urn = instance_urn(binding.instance_id)
    digest = hashlib.blake2b(f"{aor}\x00{urn}\x00{binding.call_id}".encode(), key=key[:32], digest_size=15).digest()
    token = base64.b32encode(digest).decode().lower()
    return f"{aor};gr={urn}", f"sip:tgruu.{token}@{domain};gr"


def contact_header_values(bindings, now: float, *, aor: str = "", gruu_key: bytes | None = None) -> list[str]:
    """The Contact values of a 200 OK: every current binding with its remaining expiry,
    and GRUUs for instances when ``gruu_key`` is given."""
    values = []
    for binding in bindings:
        remaining = max(0, int(binding.expires_at - now + 0.5))
        params = binding.contact_params
        if binding.q is not None:
            params += f";q={binding.q:g}"
        if binding.instance_id:
            params += f";+sip.instance={binding.instance_id}"
        if binding.reg_id is not None:
            params += f";reg-id={binding.reg_id}"
        if gruu_key is not None and binding.instance_id:
            public, temporary = gruus(aor, binding, gruu_key)
            params += f';pub-gruu="{public}";temp-gruu="{temporary}"'
        values.append(f"<{binding.contact_uri}>{params};expires={remaining}")
    return values

