"""The registrar's protocol engine: datagrams or framed stream messages in, actions out.

:class:`RegistrarCore` owns the decision for every request: parse, transaction
matching, policy, digest authentication, registrar rules, and the exact bytes of
every answer. It never waits: where the database must be consulted it hands back a
:class:`StoreRegistration` action and continues when the adapter reports the outcome
with :meth:`RegistrarCore.registration_stored`. Credentials come from a lookup the
adapter keeps in memory.

Uniform on the wire, explicit for the admin: an unknown user, a disabled extension
and a wrong password all get the same fresh 401 challenge, after the same amount of
hashing; the :class:`RecordAttempt` action carries the real reason.
"""
import hashlib
import itertools
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Callable, Mapping

from registrar.sip import bearer, client, digest, proxy, regevent
from registrar.sip.bearer_auth import BearerAuthentication
from registrar.sip.errors import SipError
from registrar.sip.message import Request, check_request, parse_message
from registrar.sip.policy import Policy
from registrar.sip.protection import BanDecision, Guard
from registrar.sip.reasons import Reason
from registrar.sip.registrar import (
    RegisterOutcome,
    RegisterRequest,
    contact_header_values,
    interpret_register,
)
from registrar.sip.transactions import ServerTransactions, transaction_key

ALLOWED_METHODS = "REGISTER, OPTIONS, SUBSCRIBE"
ACCEPTED_BODIES = "application/sdp"
SUPPORTED_OPTIONS = frozenset({"path", "outbound", "gruu"})
SUPPORTED = ", ".join(sorted(SUPPORTED_OPTIONS))
SERVER_NAME = "Regis"
RELIABLE_TRANSPORTS = frozenset({"tcp", "tls", "ws", "wss"})


@dataclass(frozen=True)
class Source:
    """Where a message came from; answers go back through the same transport."""

    transport: str
    ip: str
    port: int
    connection: object = None
    # The connection's name (RFC 5626 flow token) on TCP, TLS and websockets; "" on UDP.
    flow: str = ""

    @property
    def reliable(self):
        return self.transport in RELIABLE_TRANSPORTS


@dataclass(frozen=True)
class Credentials:
    number: str
    enabled: bool
    ha1: Mapping[str, str]
    max_contacts: int
    # Other AORs this extension may watch with a reg-event subscription ("*" = all).
    may_watch: frozenset = frozenset()


@dataclass(frozen=True)
class Attempt:
    at: float
    source: Source
    method: str
    aor: str
    extension_number: str
    auth_username: str
    user_agent: str
    outcome: str
    reason: Reason
    status: int
    detail: str = ""


@dataclass(frozen=True)
class Origin:
    """Facts about the registering device that the database stores with each binding."""

    source_ip: str
    source_port: int
    transport: str
    user_agent: str
    path: str
    # Set when the bindings must end with the connection: always on websockets (nobody can
    # connect back to a browser), and for outbound registrations (reg-id) on any stream.
    flow: str = ""


@dataclass(frozen=True)
class SendMessage:
    data: bytes
    destination: Source


@dataclass(frozen=True)
class StoreRegistration:
    ticket: int
    register: RegisterRequest
    origin: Origin
    max_contacts: int
    policy: Policy


@dataclass(frozen=True)
class RecordAttempt:
    attempt: Attempt


@dataclass(frozen=True)
class BanSource:
    ban: BanDecision


@dataclass(frozen=True)
class TraceMessage:
    """A message to keep in the SIP trace; ``peer`` is the phone's side."""

    at: float
    direction: str
    peer: Source
    extension_number: str
    data: bytes


@dataclass
class _Pending:
    request: Request
    source: Source
    key: tuple
    auth_username: str
    started: float = field(default=0.0)
    register: RegisterRequest | None = None


class RegistrarCore(BearerAuthentication):
    def __init__(self, *, realm: str, secret: bytes, credentials: Callable[[str], Credentials | None],
                 policy: Policy = Policy(), own_addresses=(), client_t1: float = client.T1):
        self.realm = realm
        self.guard = Guard(own_addresses=own_addresses)
        self._secret = secret
        self._credentials = credentials
        self._tag_key = hashlib.sha256(b"to-tag" + secret).digest()
        self._gruu_key = hashlib.sha256(b"temp-gruu" + secret).digest()
        self._transactions = ServerTransactions()
        # Timer F is 64*T1 (RFC 3261 §17.1.2.2), so a smaller T1 (tests) also gives up sooner.
        self._clients = client.ClientTransactions(t1=client_t1, timer_f=64 * client_t1)
        self.proxy = proxy.Proxy(self, secret=secret, t1=client_t1)
        self._pending: dict[int, _Pending] = {}
        self._tickets = itertools.count(1)
        self._nonce_counter = itertools.count(1)
        self._init_bearer()
        self.set_policy(policy)

    # -- configuration ---------------------------------------------------------------
    def set_policy(self, policy: Policy) -> None:
        self.policy = policy
        self._denied_user_agents = tuple(pattern.lower() for pattern in policy.denied_user_agents)
        self.guard.configure(rate=policy.rate_limit, burst=policy.rate_burst, window=policy.ban_window,
                             per_source=policy.ban_per_source, per_extension=policy.ban_per_extension,
                             duration=policy.ban_duration, allowed_networks=policy.allowed_networks)
        self._nonces = digest.NonceFactory(self._secret, self.realm, policy.nonce_lifetime)
        self._opaque = self._nonces.opaque()
        if not hasattr(self, "_nc_tracker") or self._nc_tracker_lifetime != policy.nonce_lifetime:
            self._nc_tracker = digest.NonceCountTracker(policy.nonce_lifetime)
            self._nc_tracker_lifetime = policy.nonce_lifetime

    @property
    def pending_count(self):
        return len(self._pending)

    # -- input -----------------------------------------------------------------------
    def set_bans(self, bans: dict) -> None:
        """The bans in force, {ip: until}, as the database holds them."""
        self.guard.set_bans(bans)

    def receive(self, data: bytes, source: Source, now: float) -> list:
        # Cheapest checks first, before a byte is parsed.
        if self.guard.is_banned(source.ip, now) or not self.guard.admit(source.ip, now):
            return []
        try:
            message = parse_message(data)
        except SipError as error:
            return self._answer_unparsable(error, source)
        if not isinstance(message, Request):
            if self.proxy.owns(message):
                try:
                    return self.proxy.response(message, source, now)
                except SipError:
                    return []
            try:
                answered = self._clients.response(message, now)
            except SipError:
                return []  # an answer with a Via we cannot read is no answer of ours
            return [answered] if answered is not None else []
        return self.receive_request(message, source, now, raw=data)

    def receive_request(self, request: Request, source: Source, now: float, raw: bytes | None = None) -> list:
        actions = self.receive_untraced(request, source, now)
        if self._traced(request, source):
            user = _to_user(request)
            actions.insert(0, TraceMessage(now, "in", source, user, raw or request.to_bytes()))
            actions.extend(TraceMessage(now, "out", a.destination, user, a.data)
                           for a in list(actions) if isinstance(a, SendMessage))
        return actions

    def _traced(self, request, source) -> bool:
        policy = self.policy
        if not (policy.trace_sources or policy.trace_extensions):
            return False
        return source.ip in policy.trace_sources or _to_user(request) in policy.trace_extensions

    def receive_untraced(self, request: Request, source: Source, now: float) -> list:
        if request.method == "ACK":
            return self.proxy.ack(request, source, now)
        user_agent = (request.headers.get("User-Agent") or "").lower()
        if user_agent and any(pattern in user_agent for pattern in self._denied_user_agents):
            if request.method != "REGISTER":
                return []  # scanners get no answer that would confirm anything
        try:
            # Require is for the UAS at the far end of a call, not for the proxy in between.
            relayed = request.method == "INVITE" or (request.method not in ("REGISTER", "OPTIONS", "SUBSCRIBE")
                                                     and self.proxy.routes_through_us(request))
            check_request(request, SUPPORTED_OPTIONS | frozenset(request.headers.get_all("Require"))
                          if relayed else SUPPORTED_OPTIONS)
            key = transaction_key(request)
        except SipError as error:
            return self._reply_error(request, source, error)
        if request.method == "INVITE":
            try:
                return self.proxy.invite(request, source, now)
            except SipError as error:
                return self._reply_error(request, source, error)
        is_new, cached, destination = self._transactions.begin(key)
        if not is_new:
            return [SendMessage(cached, destination)] if cached is not None else []
        try:
            if request.method == "CANCEL":
                return self.proxy.cancel(request, source, key, now)
            if (request.method not in ("REGISTER", "OPTIONS", "SUBSCRIBE")
                    and self.proxy.routes_through_us(request)):
                return self.proxy.in_dialog(request, source, key, now)
            if request.method == "REGISTER":
                return self._register(request, source, key, now)
            if request.method == "OPTIONS":
                return self._options(request, source, key, now)
            if request.method == "SUBSCRIBE":
                return self._subscribe(request, source, key, now)
            return self._finish(key, request, source, now, 405, "Method Not Allowed",
                                (("Allow", ALLOWED_METHODS),))
        except SipError as error:
            return self._finish(key, request, source, now, error.status or 400, error.reason, error.headers)

    # -- REGISTER --------------------------------------------------------------------
    def _register(self, request: Request, source: Source, key, now: float) -> list:
        policy = self.policy
        user_agent = request.user_agent or ""
        if _ua_matches(user_agent, self._denied_user_agents):
            return self._reject(key, request, source, now, 403, "Forbidden", Reason.UA_POLICY, "",
                                f"User-Agent {user_agent!r} is on the deny list of scanners")
        if policy.ua_inspection and not _ua_matches(user_agent, policy.accepted_user_agents):
            return self._reject(key, request, source, now, 403, "Forbidden", Reason.UA_POLICY, "",
                                f"User-Agent {user_agent!r} matches no accepted pattern")
        register = interpret_register(request, policy)
        extension, auth_username, refusal = self._authenticate(key, request, source, now)
        if refusal is not None:
            return refusal
        if auth_username != register.user:
            return self._reject(key, request, source, now, 403, "Forbidden", Reason.AUTH_USER_MISMATCH,
                                auth_username, f"authenticated as {auth_username!r}, registering {register.user!r}")
        ticket = next(self._tickets)
        self._pending[ticket] = _Pending(request, source, key, auth_username, now, register)
        tied_to_flow = source.flow and (source.transport in ("ws", "wss")
                                        or any(contact.reg_id is not None for contact in register.contacts))
        origin = Origin(source.ip, source.port, source.transport, user_agent[:255],
                        ", ".join(request.headers.get_all("Path")), source.flow if tied_to_flow else "")
        return [StoreRegistration(ticket, register, origin, extension.max_contacts, policy)]

    # -- authentication (every method that needs it) -------------------------------------
    def _authenticate(self, key, request: Request, source: Source, now: float, proxy: bool = False):
        """Digest authentication of any request: (credentials, username, None) when it passes,
        (None, username, actions) when the answer is a challenge or a refusal, recorded.
        Extensions set to take OAuth tokens go through :mod:`registrar.sip.bearer_auth`.
        ``proxy``: as a proxy (a call), with 407 Proxy-Authenticate / Proxy-Authorization."""
        values = request.headers.get_all("Proxy-Authorization" if proxy else "Authorization")
        bearer_value = next((value for value in values if bearer.is_bearer(value)), None)
        if proxy and bearer_value is None:
            # RFC 8898 §2.3 answers a proxy in Proxy-Authorization; JsSIP's authorization_jwt
            # puts the token in Authorization on every request. Either proves the caller.
            bearer_value = next((value for value in request.headers.get_all("Authorization")
                                 if bearer.is_bearer(value)), None)
        auth, server = self._bearer_setup(request) if self._extension_auth else (None, None)
        if auth is not None and not auth.must_authenticate(request.method):
            # The methods the admin listed (the seed's "register/setup-invite") take the
            # token; any other goes the digest way — never through unproven.
            auth = server = None
        status, phrase = (407, "Proxy Authentication Required") if proxy else (401, "Unauthorized")
        if auth is not None:
            if bearer_value is not None:
                return self._bearer_authenticate(key, request, source, now, bearer_value, auth, server, proxy)
            if not auth.digest_allowed:
                challenge = self._finish(key, request, source, now, status, phrase,
                                         self._bearer_challenge_values(server, proxy=proxy))
                if not values:
                    return None, "", challenge
                attempt = self._attempt(request, source, now, "challenged", Reason.DIGEST_NOT_ALLOWED, status, "",
                                        "the extension takes OAuth bearer tokens only")
                return None, "", [*self._recorded(attempt), *challenge]
        elif bearer_value is not None and not any(value[:7].lower() == "digest " for value in values):
            attempt = self._attempt(request, source, now, "challenged", Reason.BEARER_NOT_ALLOWED, status, "",
                                    "the extension is not set to take OAuth bearer tokens")
            return None, "", [*self._recorded(attempt), *self._challenge(key, request, source, now, proxy=proxy)]
        return self._authenticate_digest(key, request, source, now, server if auth is not None else None, proxy=proxy)

    def _authenticate_digest(self, key, request, source, now, bearer_server, proxy=False):
        status = 407 if proxy else 401
        authorization = self._pick_authorization(request, "Proxy-Authorization" if proxy else "Authorization")
        if authorization is None:
            return None, "", self._challenge(key, request, source, now, bearer_server=bearer_server, proxy=proxy)
        try:
            credentials = digest.parse_authorization(authorization)
        except digest.MalformedCredentials as error:
            return None, "", self._reject(key, request, source, now, 400, "Malformed Authorization Header",
                                          Reason.MALFORMED_CREDENTIALS, "", str(error)[:200])
        extension = self._credentials(credentials.username)
        usable = extension is not None and extension.enabled
        verification = digest.verify(
            credentials, method=request.method, ha1_by_algorithm=extension.ha1 if usable else None,
            realm=self.realm, offered_algorithms=self.policy.digest_algorithms, nonces=self._nonces,
            nc_tracker=self._nc_tracker, now=now,
        )
        verdict = verification.verdict
        if verdict is digest.Verdict.OK:
            own_auth = self._extension_auth.get(credentials.username)
            if own_auth is not None and not own_auth.digest_allowed and own_auth.must_authenticate(request.method):
                # A bearer-only extension's password proves nothing, whichever AOR it is used for.
                return None, credentials.username, self._reject(
                    key, request, source, now, 403, "Forbidden", Reason.DIGEST_NOT_ALLOWED, credentials.username,
                    f"extension {credentials.username!r} takes OAuth bearer tokens only")
            return extension, credentials.username, None
        reason = _VERDICT_REASONS[verdict]
        if reason is Reason.WRONG_PASSWORD and extension is None:
            reason = Reason.UNKNOWN_USER
        elif reason is Reason.WRONG_PASSWORD and not extension.enabled:
            reason = Reason.DISABLED_EXTENSION
        challenge = self._challenge(key, request, source, now, stale=verdict is digest.Verdict.STALE_NONCE,
                                    bearer_server=bearer_server, proxy=proxy)
        detail = {Reason.UNKNOWN_USER: f"no extension {credentials.username!r}",
                  Reason.DISABLED_EXTENSION: f"extension {credentials.username!r} is disabled"}.get(
            reason, verification.detail)
        if credentials.uri != request.uri.raw:
            detail += f"; digest uri {credentials.uri!r} differs from the Request-URI {request.uri.raw!r}"
        attempt = self._attempt(request, source, now, "challenged", reason, status, credentials.username, detail)
        return None, credentials.username, [*self._recorded(attempt), *challenge]

    # -- OPTIONS ---------------------------------------------------------------------
    def _options(self, request: Request, source: Source, key, now: float) -> list:
        if self.policy.options_require_auth:
            _, _, refusal = self._authenticate(key, request, source, now)
            if refusal is not None:
                return refusal
        return self._finish(key, request, source, now, 200, "OK",
                            (("Allow", ALLOWED_METHODS), ("Accept", ACCEPTED_BODIES), ("Supported", SUPPORTED)))

    # -- requests we send (qualify pings, NOTIFYs) -------------------------------------
    def send_request(self, *, data: bytes, destination: Source, branch: str, method: str, context,
                     now: float) -> list:
        """Send a request of ours in a client transaction; its answer or timeout comes back
        as an :class:`~registrar.sip.client.Answered` / :class:`~registrar.sip.client.TimedOut`
        action, carrying ``context``."""
        first = self._clients.start(branch=branch, method=method, data=data, destination=destination,
                                    context=context, now=now, reliable=destination.reliable)
        return [SendMessage(first.data, first.destination)]

    def tick(self, now: float) -> list:
        """Client-transaction timers: retransmissions and give-ups that are due (the proxy's too)."""
        return [SendMessage(item.data, item.destination) if isinstance(item, client.Resend) else item
                for item in self._clients.tick(now)] + self.proxy.tick(now)

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self._clients.next_deadline(), self.proxy.next_deadline()) if d is not None]
        return min(deadlines) if deadlines else None

    # -- calls: the stateful proxy (registrar.sip.proxy) -----------------------------------
    def callee_found(self, ticket: int, targets, now: float) -> list:
        """The callee's live bindings (:class:`~registrar.sip.proxy.CallTarget`) for a
        :class:`~registrar.sip.proxy.LookupCallee`."""
        return self.proxy.callee_found(ticket, targets, now)

    def callee_lookup_failed(self, ticket: int, now: float) -> list:
        return self.proxy.callee_lookup_failed(ticket, now)

    def contact_found(self, ticket: int, target, now: float) -> list:
        """The binding for a :class:`~registrar.sip.proxy.LookupContact` (a CallTarget or None)."""
        return self.proxy.contact_found(ticket, target, now)

    @staticmethod
    def _send_action(data: bytes, destination) -> SendMessage:
        return SendMessage(data, destination)

    def connection_lost(self, connection) -> list:
        """A stream closed: requests we sent on it will get no answer."""
        return self._clients.fail_destination(Source("tcp", "", 0, connection))

    def registration_stored(self, ticket: int, outcome: RegisterOutcome, now: float) -> list:
        pending = self._pending.get(ticket)
        actions = self._registration_answer(ticket, outcome, now)
        if pending is not None and self._traced(pending.request, pending.source):
            user = _to_user(pending.request)
            actions.extend(TraceMessage(now, "out", a.destination, user, a.data)
                           for a in list(actions) if isinstance(a, SendMessage))
        return actions

    def _registration_answer(self, ticket: int, outcome: RegisterOutcome, now: float) -> list:
        pending = self._pending.pop(ticket, None)
        if pending is None:
            return []
        request, source = pending.request, pending.source
        if outcome.ok:
            return self._finish(pending.key, request, source, now, 200, "OK",
                                self._register_ok_headers(request, pending.register, outcome, now))
        actions = self._finish(pending.key, request, source, now, outcome.status, outcome.phrase, outcome.headers)
        if outcome.reason is not None:
            attempt = self._attempt(request, source, now, "rejected", outcome.reason, outcome.status,
                                    pending.auth_username, outcome.detail)
            actions[:0] = self._recorded(attempt)
        return actions

    def _register_ok_headers(self, request, register, outcome, now):
        gruu_key = self._gruu_key if register is not None and register.gruu else None
        headers = [("Contact", value) for value in
                   contact_header_values(outcome.bindings, now, aor=request.to.uri.address_of_record(),
                                         gruu_key=gruu_key)]
        if register is not None:
            headers.extend(("Path", value) for value in register.path)
            if register.outbound:
                headers.append(("Require", "outbound"))
                headers.append(("Flow-Timer", str(self.policy.flow_timer)))
        headers.append(("Date", formatdate(now, usegmt=True)))
        return headers

    def registration_failed(self, ticket: int, now: float) -> list:
        """The database could not store the binding: tell the phone to retry shortly."""
        pending = self._pending.pop(ticket, None)
        if pending is None:
            return []
        return self._finish(pending.key, pending.request, pending.source, now, 500, "Server Internal Error",
                            (("Retry-After", "5"),))

    def expire(self, now: float) -> None:
        self._transactions.expire(now)

    # -- answers ---------------------------------------------------------------------
    def _pick_authorization(self, request, header="Authorization"):
        values = [value for value in request.headers.get_all(header) if not bearer.is_bearer(value)]
        if not values:
            return None
        for value in values:
            if f'realm="{self.realm}"' in value:
                return value
        return values[0]

    def _digest_challenge_values(self, now, stale=False, header="WWW-Authenticate"):
        # Two challenges in the same microsecond must still differ, or the second
        # phone's nc=1 would look like a replay of the first's.
        nonce = self._nonces.issue(now, entropy=next(self._nonce_counter).to_bytes(8, "big"))
        return [(header, value) for value in
                digest.challenge_values(self.realm, nonce, self._opaque, self.policy.digest_algorithms, stale)]

    def _challenge(self, key, request, source, now, stale=False, bearer_server=None, proxy=False):
        if proxy:
            headers = self._digest_challenge_values(now, stale, "Proxy-Authenticate")
            if bearer_server is not None:
                headers += self._bearer_challenge_values(bearer_server, proxy=True)
            return self._finish(key, request, source, now, 407, "Proxy Authentication Required", headers)
        headers = self._digest_challenge_values(now, stale)
        if bearer_server is not None:
            # Digest first: clients that take the first challenge (SIPp) keep working.
            headers += self._bearer_challenge_values(bearer_server)
        return self._finish(key, request, source, now, 401, "Unauthorized", headers)

    def _reject(self, key, request, source, now, status, phrase, reason, auth_username, detail=""):
        attempt = self._attempt(request, source, now, "rejected", reason, status, auth_username, detail)
        return [*self._recorded(attempt), *self._finish(key, request, source, now, status, phrase)]

    def _recorded(self, attempt: Attempt) -> list:
        """Record an attempt, and ban its source when it tips a brute-force threshold."""
        actions = [RecordAttempt(attempt)]
        ban = self.guard.note_failure(attempt.source.ip, attempt.extension_number, attempt.reason, attempt.at)
        if ban is not None:
            actions.append(BanSource(ban))
        return actions

    def _attempt(self, request, source, now, outcome, reason, status, auth_username, detail=""):
        # A caller is the From of its INVITE; a registering or subscribing phone its To.
        to_uri = request.from_.uri if request.method == "INVITE" else request.to.uri
        return Attempt(
            at=now, source=source, method=request.method, aor=to_uri.address_of_record()[:255],
            extension_number=(to_uri.user_unescaped or "")[:64], auth_username=auth_username[:255],
            user_agent=(request.user_agent or "")[:255], outcome=outcome, reason=reason, status=status,
            detail=detail[:255],
        )

    def _finish(self, key, request, source, now, status, phrase, headers=()):
        data, destination = self._response_bytes(request, source, status, phrase, headers)
        self._transactions.complete(key, data, destination, now, source.reliable)
        return [SendMessage(data, destination)]

    def _reply_error(self, request, source, error: SipError):
        if error.drop:
            return []
        try:
            data, destination = self._response_bytes(request, source, error.status, error.reason, error.headers)
        except SipError:
            return []
        return [SendMessage(data, destination)]

    def _answer_unparsable(self, error: SipError, source: Source):
        request = getattr(error, "request", None)
        if error.drop or request is None:
            return []
        return self._reply_error(request, source, error)

    def _to_tag(self, request):
        material = f"{request.call_id}\x00{request.from_.tag or ''}".encode()
        return hashlib.blake2b(material, key=self._tag_key[:32], digest_size=8).hexdigest()

    def _response_bytes(self, request, source, status, phrase, headers):
        top_via = request.top_via
        has_rport = top_via.has_param("rport")
        via_params = list(top_via.params)
        if has_rport or top_via.host != source.ip:
            # RFC 3261 §18.2.1; with rport, RFC 3581 §4 wants received even when equal.
            via_params = [p for p in via_params if p[0] != "received"] + [("received", source.ip)]
        destination = source
        if has_rport:
            via_params = [(n, str(source.port) if n == "rport" else v) for n, v in via_params]
        elif not source.reliable:
            # RFC 3261 §18.2.2: without rport, the port in sent-by (default 5060).
            destination = Source(source.transport, source.ip, top_via.port or 5060, source.connection)
        param_text = "".join(f";{n}" if v is None else f";{n}={v}" for n, v in via_params)
        lines = [f"SIP/2.0 {status} {phrase}",
                 f"Via: {top_via.protocol}/{top_via.transport} {top_via.sent_by}{param_text}"]
        lines.extend(f"Via: {via}" for via in request.headers.get_all("Via")[1:])
        lines.append(f"From: {request.headers.get('From')}")
        to_value = request.headers.get("To")
        if request.to.tag is None:
            to_value = f"{to_value};tag={self._to_tag(request)}"
        lines.append(f"To: {to_value}")
        lines.append(f"Call-ID: {request.call_id}")
        lines.append(f"CSeq: {request.headers.get('CSeq')}")
        lines.extend(f"{name}: {value}" for name, value in headers)
        lines.append(f"Server: {SERVER_NAME}")
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode(), destination

    # -- SUBSCRIBE: the reg event package (registrar.sip.regevent) -------------------------
    def _subscribe(self, request: Request, source: Source, key, now: float) -> list:
        """Checks, digest authentication and the watch permission here; whether the dialog
        exists and the subscriber is registered are the database's to say
        (:class:`~registrar.sip.regevent.StoreSubscription`, then :meth:`subscription_stored`)."""
        subscribe = regevent.interpret_subscribe(request, self.policy.subscribe_max_expires, self._to_tag(request))
        credentials, username, refusal = self._authenticate(key, request, source, now)
        if refusal is not None:
            return refusal
        watched = subscribe.watched
        if watched != username and not ({watched, "*"} & credentials.may_watch):
            return self._reject(key, request, source, now, 403, "Forbidden", Reason.WATCH_NOT_ALLOWED, username,
                                f"{username} may not watch {watched}: its may-watch list does not name it")
        if self._credentials(watched) is None:
            return self._finish(key, request, source, now, 404, "Not Found")
        ticket = next(self._tickets)
        self._pending[ticket] = _Pending(request, source, key, username, now)
        return [regevent.StoreSubscription(ticket, subscribe, username, source.transport, source.ip, source.port,
                                           source.flow, now)]

    def subscription_stored(self, ticket: int, outcome: regevent.SubscribeOutcome, now: float) -> list:
        pending = self._pending.pop(ticket, None)
        if pending is None:
            return []
        request, source = pending.request, pending.source
        if outcome.ok and not outcome.contact:
            # RFC 3261 §12.1.1: a dialog-creating 2xx needs our Contact; without one
            # (the connection went meanwhile) the subscriber must try again.
            actions = self._finish(pending.key, request, source, now, 500, "Server Internal Error",
                                   (("Retry-After", "5"),))
        elif outcome.ok:
            headers = [("Expires", str(outcome.expires)), ("Allow-Events", regevent.EVENT_PACKAGE),
                       ("Contact", outcome.contact)]
            actions = self._finish(pending.key, request, source, now, outcome.status, outcome.phrase, headers)
        else:
            actions = self._finish(pending.key, request, source, now, outcome.status, outcome.phrase)
            if outcome.reason is not None:
                attempt = self._attempt(request, source, now, "rejected", outcome.reason, outcome.status,
                                        pending.auth_username, outcome.detail)
                actions[:0] = self._recorded(attempt)
        if self._traced(request, source):
            user = _to_user(request)
            actions.extend(TraceMessage(now, "out", a.destination, user, a.data)
                           for a in list(actions) if isinstance(a, SendMessage))
        return actions

    def subscription_failed(self, ticket: int, now: float) -> list:
        """The database could not store the subscription: the subscriber retries shortly."""
        pending = self._pending.pop(ticket, None)
        if pending is None:
            return []
        return self._finish(pending.key, pending.request, pending.source, now, 500, "Server Internal Error",
                            (("Retry-After", "5"),))


_VERDICT_REASONS = {
    digest.Verdict.STALE_NONCE: Reason.STALE_NONCE,
    digest.Verdict.FORGED_NONCE: Reason.FORGED_NONCE,
    digest.Verdict.REPLAYED_NONCE: Reason.REPLAYED_NONCE,
    digest.Verdict.WRONG_PASSWORD: Reason.WRONG_PASSWORD,
    digest.Verdict.UNSUPPORTED_ALGORITHM: Reason.UNSUPPORTED_ALGORITHM,
    digest.Verdict.REALM_MISMATCH: Reason.REALM_MISMATCH,
    digest.Verdict.MALFORMED: Reason.MALFORMED_CREDENTIALS,
}


def _to_user(request) -> str:
    try:
        return request.to.uri.user_unescaped or ""
    except SipError:
        return ""


def _ua_matches(user_agent: str, patterns) -> bool:
    lowered = user_agent.lower()
    return any(pattern.lower() in lowered for pattern in patterns)
