"""The reg event package (RFC 3680 over RFC 6665), without I/O: SUBSCRIBE in, reginfo and NOTIFY out.

This module owns what a reg-event notifier decides from messages and plain values alone:

* :func:`interpret_subscribe` checks a SUBSCRIBE (Event package, Accept, Contact,
  Expires) and reads its dialog (RFC 6665 §4.2.1, RFC 3261 §12.1.1: the route set is the
  Record-Route values in order, the remote target the Contact URI). It raises
  :class:`SipError` with the answer: 489 Bad Event with ``Allow-Events: reg`` for any
  other package, 406 when Accept rules out ``application/reginfo+xml``, 400 without
  Contact.
* :func:`changes` compares an AOR's bindings with those last notified and names what
  happened to each contact (RFC 3680 §5.2.2: registered, refreshed, expired,
  unregistered, deactivated).
* :func:`reginfo` writes the ``application/reginfo+xml`` document (§5.3), full or
  partial; every attribute and text is escaped.
* :func:`notify_request` writes a NOTIFY inside the subscription's dialog.

Decisions the RFCs leave to us:
- A subscription lasts 3761 s when the SUBSCRIBE names no Expires (RFC 3680 §4.1's
  default), at most soft parameter 109 (``subscribe_max_expires``).
- Versions count per subscription from 0 (RFC 3680 §5.3); the first NOTIFY of a
  subscription, every refresh and every reload after a restart carry the full state,
  every change in between a partial one with only the contacts that changed.
- Identifiers of registrations and contacts are hashes of the AOR and contact URI:
  stable across restarts, and they reveal nothing the document does not already say.
- Who may subscribe: the digest-authenticated extension watches its own AOR, or one its
  may-watch list names ("*" for all); anyone else gets 403. And, as the SPA9000 of seed
  001 answers 403 to the SUBSCRIBE of a device whose REGISTER failed, an initial
  SUBSCRIBE is refused with 403 unless the subscribing extension has a live binding
  registered from the same source IP address (refreshes in an existing dialog are not
  held to it). Both refusals are recorded as attempts with their own reason.
- A SUBSCRIBE with Expires: 0 outside a dialog is a fetch (RFC 6665 §4.4.3): 200, one
  NOTIFY with the full state and ``terminated``, nothing stored.
- A contact gone before its expiry is "deactivated" when it lived on a connection
  (an RFC 5626 flow ended) unless the registrar knows it was unregistered, and
  "unregistered" otherwise (the phone or an admin removed it).
"""
import hashlib
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from registrar.sip.errors import SipError
from registrar.sip.message import Request

EVENT_PACKAGE = "reg"
CONTENT_TYPE = "application/reginfo+xml"
NAMESPACE = "urn:ietf:params:xml:ns:reginfo"
DEFAULT_EXPIRES = 3761
_ACCEPTABLE = frozenset({CONTENT_TYPE, "application/*", "*/*"})


@dataclass(frozen=True)
class SubscribeRequest:
    """What a SUBSCRIBE asks for, with its dialog as the notifier will keep it."""

    watched: str
    call_id: str
    remote_tag: str
    local_tag: str
    in_dialog: bool
    event_id: str
    remote_target: str
    route_set: tuple[str, ...]
    remote_uri: str
    local_uri: str
    remote_cseq: int
    expires: int


@dataclass(frozen=True)
class StoreSubscription:
    """Create, refresh or end the subscription, then answer (``RegistrarCore.subscription_stored``)."""

    ticket: int
    subscribe: SubscribeRequest
    subscriber: str
    transport: str
    source_ip: str
    source_port: int
    flow: str
    now: float


@dataclass(frozen=True)
class SubscribeOutcome:
    status: int
    phrase: str
    expires: int = 0
    contact: str = ""
    reason: object = None  # registrar.sip.reasons.Reason when the refusal is recorded
    detail: str = ""

    @property
    def ok(self):
        return 200 <= self.status < 300


@dataclass(frozen=True)
class Dialog:
    """A stored subscription as the notifier needs it. Times are seconds since the epoch."""

    id: int
    watched_id: int
    watched: str
    subscriber: str
    call_id: str
    remote_tag: str
    local_tag: str
    event_id: str
    remote_target: str
    route_set: tuple[str, ...]
    remote_uri: str
    local_uri: str
    remote_cseq: int
    local_cseq: int
    version: int
    transport: str
    source_ip: str
    source_port: int
    flow: str
    expires_at: float

    @property
    def aor(self) -> str:
        return self.local_uri


@dataclass(frozen=True)
class ContactState:
    """One binding as the reg event shows it."""

    uri: str
    q: float | None
    call_id: str
    cseq: int
    expires_at: float
    first_registered: float
    last_refreshed: float
    flow: str = ""


@dataclass(frozen=True)
class ContactChange:
    contact: ContactState
    state: str  # "active" or "terminated"
    event: str


@dataclass(frozen=True)
class Notification:
    """One NOTIFY to send: the dialog (local CSeq and version already advanced), the
    Subscription-State value, and the body."""

    dialog: Dialog
    subscription_state: str
    body: bytes
    terminal: bool = False


# -- SUBSCRIBE -------------------------------------------------------------------------
def parse_event(value: str | None) -> tuple[str, str]:
    """(package, id) of an Event header value; ("", "") when there is none."""
    if not value:
        return "", ""
    package, *params = (part.strip() for part in value.split(";"))
    event_id = ""
    for param in params:
        name, _, param_value = param.partition("=")
        if name.strip().lower() == "id":
            event_id = param_value.strip().strip('"')
    return package, event_id


def interpret_subscribe(request: Request, max_expires: int, local_tag: str) -> SubscribeRequest:
    """What the SUBSCRIBE asks for; raises SipError with the answer when it cannot be served."""
    package, event_id = parse_event(request.headers.get("Event"))
    # RFC 6665 §8.2.1: event packages are compared as case-sensitive tokens.
    if package != EVENT_PACKAGE:
        raise SipError(489, "Bad Event", (("Allow-Events", EVENT_PACKAGE),))
    accept = [value.split(";")[0].strip().lower() for value in request.headers.get_all("Accept")]
    if accept and not _ACCEPTABLE & set(accept):
        raise SipError(406, "Not Acceptable", (("Accept", CONTENT_TYPE),))
    to_tag = request.to.tag
    contacts = request.contacts
    if not contacts and to_tag is None:
        raise SipError(400, "Missing Contact header")
    watched = request.uri.user_unescaped or request.to.uri.user_unescaped
    if not watched:
        raise SipError(404, "Not Found")
    from_tag = request.from_.tag
    if not from_tag:
        raise SipError(400, "Missing From tag")
    requested = request.expires
    expires = DEFAULT_EXPIRES if requested is None else requested
    return SubscribeRequest(
        watched=watched, call_id=request.call_id, remote_tag=from_tag, local_tag=to_tag or local_tag,
        in_dialog=to_tag is not None, event_id=event_id,
        remote_target=str(contacts[0].uri) if contacts else "",
        route_set=tuple(request.headers.get_all("Record-Route")),
        remote_uri=str(request.from_.uri), local_uri=str(request.to.uri),
        remote_cseq=request.cseq[0], expires=min(expires, max_expires),
    )


# -- what changed ------------------------------------------------------------------------
def changes(before: dict, after: dict, now: float, unregistered=frozenset()) -> list[ContactChange]:
    """What happened to each contact between two readings of one AOR's live bindings
    ({contact URI: ContactState}). ``unregistered``: contact URIs known to have been
    removed by a REGISTER (they are not "deactivated" even if they had a flow)."""
    found = []
    for uri, contact in after.items():
        previous = before.get(uri)
        if previous is None:
            found.append(ContactChange(contact, "active", "registered"))
        elif (contact.last_refreshed, contact.expires_at, contact.call_id, contact.cseq) != (
                previous.last_refreshed, previous.expires_at, previous.call_id, previous.cseq):
            found.append(ContactChange(contact, "active", "refreshed"))
    for uri, contact in before.items():
        if uri in after:
            continue
        if contact.expires_at <= now:
            event = "expired"
        elif contact.flow and uri not in unregistered:
            event = "deactivated"
        else:
            event = "unregistered"
        found.append(ContactChange(contact, "terminated", event))
    return found


# -- the document --------------------------------------------------------------------------
def _short_id(*parts: str) -> str:
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=6).hexdigest()


def registration_id(aor: str) -> str:
    return "r" + _short_id(aor)


def contact_id(aor: str, uri: str) -> str:
    return "c" + _short_id(aor, uri)


def full_state(contacts) -> list[ContactChange]:
    return [ContactChange(contact, "active", "registered") for contact in contacts]


def reginfo(aor: str, version: int, contacts, now: float, *, full: bool, remaining: int | None = None) -> bytes:
    """The reginfo document of one AOR (RFC 3680 §5.3).

    ``contacts`` are :class:`ContactChange` items: all live contacts for a full state,
    the ones that changed for a partial one. ``remaining`` is how many contacts the AOR
    still has after a partial change (it decides the registration's state)."""
    active = sum(1 for change in contacts if change.state == "active")
    if full:
        state = "active" if active else "init"
    else:
        state = "active" if (remaining if remaining is not None else active) else "terminated"
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<reginfo xmlns="{NAMESPACE}" version="{int(version)}" state="{"full" if full else "partial"}">',
             f"  <registration aor={quoteattr(aor)} id={quoteattr(registration_id(aor))} state=\"{state}\">"]
    for change in contacts:
        contact = change.contact
        attributes = [("id", contact_id(aor, contact.uri)), ("state", change.state), ("event", change.event),
                      ("duration-registered", str(max(0, int(now - contact.first_registered))))]
        if change.state == "active":
            attributes.append(("expires", str(max(0, int(contact.expires_at - now + 0.5)))))
        if contact.q is not None:
            attributes.append(("q", f"{contact.q:g}"))
        if contact.call_id:
            attributes += [("callid", contact.call_id), ("cseq", str(contact.cseq))]
        text = " ".join(f"{name}={quoteattr(value)}" for name, value in attributes)
        lines += [f"    <contact {text}>", f"      <uri>{escape(contact.uri)}</uri>", "    </contact>"]
    lines += ["  </registration>", "</reginfo>", ""]
    return "\n".join(lines).encode("utf-8")


# -- NOTIFY --------------------------------------------------------------------------------
def subscription_state(dialog: Dialog, now: float, terminated_reason: str | None = None) -> str:
    if terminated_reason is not None:
        return f"terminated;reason={terminated_reason}"
    return f"active;expires={max(0, int(dialog.expires_at - now + 0.5))}"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def local_contact(transport: str, host: str, port: int) -> str:
    return f"<sip:{_bracketed(host)}:{port};transport={transport}>"


def notify_request(notification: Notification, *, branch: str, local_host: str, local_port: int,
                   user_agent: str) -> bytes:
    """A NOTIFY in the subscription's dialog (RFC 6665 §4.2.2, RFC 3261 §12.2.1.1):
    Request-URI the remote target, Route the route set (loose routing), From our AOR with
    our tag, To the subscriber with its tag, our CSeq."""
    dialog = notification.dialog
    transport = dialog.transport.upper()
    event = EVENT_PACKAGE + (f";id={dialog.event_id}" if dialog.event_id else "")
    lines = [f"NOTIFY {dialog.remote_target} SIP/2.0",
             f"Via: SIP/2.0/{transport} {_bracketed(local_host)}:{local_port};branch={branch};rport",
             "Max-Forwards: 70"]
    lines += [f"Route: {route}" for route in dialog.route_set]
    lines += [f"From: <{dialog.local_uri}>;tag={dialog.local_tag}",
              f"To: <{dialog.remote_uri}>;tag={dialog.remote_tag}",
              f"Call-ID: {dialog.call_id}",
              f"CSeq: {dialog.local_cseq} NOTIFY",
              f"Contact: {local_contact(dialog.transport, local_host, local_port)}",
              f"Event: {event}",
              f"Subscription-State: {notification.subscription_state}",
              f"Content-Type: {CONTENT_TYPE}",
              f"User-Agent: {user_agent}",
              f"Content-Length: {len(notification.body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + notification.body
