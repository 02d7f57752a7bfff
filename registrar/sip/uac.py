"""Registering to upstream servers (outbound trunks), sans-IO: one :class:`TrunkClient`
per trunk decides what to send and when, and says in words why a trunk is down.

The model is Kamailio's uacreg (seed 002) without its pains: a REGISTER goes out,
a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate) challenge is answered once with
the stored credentials (MD5, SHA-256 or SHA-512-256, qop=auth), a refresh goes out
before the granted expiry, failures back off exponentially up to a cap (or wait what
Retry-After says), and every outcome becomes a :class:`TrunkReport` with a classified
cause — "realms do not match: server asked for 'asterisk', trunk expects
'pbx.example.com'" is shown to the admin, not only logged.

The adapter owns the clock, the sockets, DNS and client transactions (retransmission
and Timer F come from :mod:`registrar.sip.client`); it calls :meth:`TrunkClient.due`
at :attr:`TrunkClient.wake_at`, and hands back answers, timeouts and transport errors.
"""
import secrets
from dataclasses import dataclass

from registrar.sip import digest
from registrar.sip.client import new_branch
from registrar.sip.errors import SipError
from registrar.sip.uri import parse_uri

TRANSPORTS = ("udp", "tcp", "tls")
# Backoff after a failure: 30 s, 60 s, 120 s, ... up to 30 minutes.
BACKOFF_FIRST = 30.0
BACKOFF_CAP = 1800.0
# Refresh this long before the registration runs out (a tenth of it, 5 s to 5 min).
MIN_REFRESH_MARGIN = 5.0
MAX_REFRESH_MARGIN = 300.0
MAX_EXPIRES = 86400
ANSWERABLE_ALGORITHMS = ("SHA-512-256", "SHA-256", "MD5")


@dataclass(frozen=True)
class Target:
    """Where a request goes: a registrar or outbound proxy, from its URI."""

    scheme: str
    host: str
    port: int | None
    transport: str

    @property
    def effective_port(self) -> int:
        return self.port or (5061 if self.transport == "tls" else 5060)

    def uri(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{self.scheme}:{host}" + (f":{self.port}" if self.port else "")
        if self.transport != ("tls" if self.scheme == "sips" else "udp"):
            text += f";transport={self.transport}"
        return text


def target_from_uri(text: str) -> Target:
    """Raises SipError when ``text`` is no sip:/sips: URI or names an unknown transport."""
    uri = parse_uri(text.strip())
    if uri.scheme not in ("sip", "sips"):
        raise SipError(416, "Not a sip: or sips: URI")
    transport = (uri.transport or ("tls" if uri.scheme == "sips" else "udp")).lower()
    if transport not in TRANSPORTS:
        raise SipError(400, f"Transport {transport} is not supported for trunks")
    return Target(uri.scheme, uri.host.strip("[]"), uri.port, transport)


@dataclass(frozen=True)
class TrunkConfig:
    id: int
    name: str
    registrar: Target
    proxy: Target | None
    aor_user: str
    aor_domain: str
    auth_username: str
    password: str | None
    expected_realm: str
    expires: int
    contact_user: str
    enabled: bool
    register_now_at: float = 0.0
    register: bool = True  # False: the trunk carries calls only, runsip keeps no registration

    @property
    def registers(self) -> bool:
        return self.enabled and self.register

    @property
    def destination(self) -> Target:
        return self.proxy or self.registrar

    def same_registration(self, other: "TrunkConfig") -> bool:
        """Whether ``other`` can continue this one's registration (only the schedule changed)."""
        return (self.registrar, self.proxy, self.aor_user, self.aor_domain, self.contact_user) == (
            other.registrar, other.proxy, other.aor_user, other.aor_domain, other.contact_user)


@dataclass(frozen=True)
class SendRegister:
    trunk_id: int
    data: bytes
    branch: str
    destination: Target


@dataclass(frozen=True)
class TrunkReport:
    """A trunk's state after something happened; ``finished_exchange`` when a REGISTER
    exchange ended (it goes to the history)."""

    trunk_id: int
    state: str
    at: float
    registered_until: float = 0.0
    status: int | None = None
    phrase: str = ""
    cause: str = ""
    detail: str = ""
    next_attempt_at: float = 0.0
    finished_exchange: bool = False
    granted: int | None = None


@dataclass(frozen=True)
class Challenge:
    scheme_header: str  # WWW-Authenticate or Proxy-Authenticate
    realm: str
    nonce: str
    opaque: str | None
    algorithm: str
    qop_auth: bool
    stale: bool


def parse_challenges(response) -> tuple[list[Challenge], list[str]]:
    """The Digest challenges of a 401/407 we can answer, best first, and the algorithms
    of those we cannot (for the admin's explanation)."""
    header = "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
    usable, unusable = [], []
    for value in response.headers.get_all(header):
        scheme, _, rest = value.strip().partition(" ")
        if scheme.lower() != "digest":
            unusable.append(scheme)
            continue
        try:
            params = digest._parse_params(" " + rest)
        except digest.MalformedCredentials:
            unusable.append("malformed Digest")
            continue
        algorithm = digest.canonical_algorithm(params.get("algorithm", "MD5"))
        qops = [item.strip().lower() for item in params.get("qop", "").split(",") if item.strip()]
        if algorithm is None or (qops and "auth" not in qops) or "nonce" not in params or "realm" not in params:
            unusable.append(params.get("algorithm", "MD5") + (f" qop={params['qop']}" if qops else ""))
            continue
        usable.append(Challenge(header, params["realm"], params["nonce"], params.get("opaque"), algorithm,
                                bool(qops), params.get("stale", "").lower() == "true"))
    usable.sort(key=lambda c: ANSWERABLE_ALGORITHMS.index(c.algorithm))
    return usable, unusable


def answer_challenge(challenge: Challenge, *, username: str, password: str, method: str, uri: str, nc: int,
                     cnonce: str) -> str:
    """The Authorization / Proxy-Authorization value answering ``challenge`` (RFC 7616 §3.4)."""
    ha1 = digest.compute_ha1(username, challenge.realm, password, challenge.algorithm)
    credentials = digest.DigestCredentials(
        username=username, realm=challenge.realm, nonce=challenge.nonce, uri=uri, response="",
        algorithm=challenge.algorithm, cnonce=cnonce if challenge.qop_auth else None,
        nc=f"{nc:08x}" if challenge.qop_auth else None, qop="auth" if challenge.qop_auth else None,
        opaque=challenge.opaque)
    response = digest.expected_response(ha1, method, credentials)
    quote = digest._quote
    parts = [f"Digest username={quote(username)}", f"realm={quote(challenge.realm)}",
             f"nonce={quote(challenge.nonce)}", f"uri={quote(uri)}", f"response={quote(response)}",
             f"algorithm={challenge.algorithm}"]
    if challenge.qop_auth:
        parts += [f"cnonce={quote(cnonce)}", f"nc={nc:08x}", "qop=auth"]
    if challenge.opaque is not None:
        parts.append(f"opaque={quote(challenge.opaque)}")
    return ", ".join(parts)


class TrunkClient:
    """One trunk's registration. ``local`` is (host, port) for our Via and Contact on the
    trunk's transport, chosen by the adapter."""

    def __init__(self, config: TrunkConfig, *, local: tuple[str, int], now: float,
                 backoff_first: float = BACKOFF_FIRST, backoff_cap: float = BACKOFF_CAP):
        self.config = config
        self.local = local
        self.call_id = f"{secrets.token_hex(12)}@regis"
        self.tag = secrets.token_hex(6)
        self.cseq = 0
        self.state = "registering" if config.enabled else "disabled"
        self.wake_at = now if config.enabled else None
        self.registered_until = 0.0
        self.failures = 0
        self.backoff_first, self.backoff_cap = backoff_first, backoff_cap
        self.inflight: str | None = None  # branch of the REGISTER awaiting its answer
        # The challenges answered in this exchange, by the header that answers them: a
        # proxy's 407 and the registrar's 401 may both come, and each answer is sent
        # again with every later request of the exchange (RFC 3261 §22.3).
        self._challenges: dict[str, Challenge] = {}
        # Which of them the REGISTER in flight answers: the same one challenging again
        # means the credentials are wrong (Regis, like many servers, challenges a wrong
        # answer afresh, with a new nonce).
        self._answered: set[str] = set()
        self._nonce_counts: dict[str, int] = {}
        self._expires = config.expires
        self._unregistering = False
        self._stopped_state = "disabled"  # what stop() reports once done
        self.finished = False  # unregistered for good: the adapter may forget this client

    # -- inputs --------------------------------------------------------------------
    def due(self, now: float) -> list:
        """The adapter's timer fired (or it polls): send what is due."""
        if self.inflight is not None or self.wake_at is None or now < self.wake_at:
            return []
        self._challenges.clear()
        return [self._register(now, self._expires)]

    def register_now(self, now: float) -> list:
        if not self.config.enabled or self._unregistering:
            return []
        self.failures = 0
        self._expires = self.config.expires
        self.wake_at = now
        return self.due(now)

    def stop(self, now: float, state: str = "disabled") -> list:
        """Disabled or deleted: unregister if registered, then stay quiet."""
        self.wake_at = None
        # "calls_only": an enabled trunk that stopped registering still carries calls.
        self._stopped_state = state
        if self.state == "registered" and self.registered_until > now:
            self._unregistering = True
            self.inflight = None
            self._challenges.clear()
            return [self._register(now, 0)]
        self.finished = True
        return [self._report(now, self._stopped_state)]

    def answered(self, branch: str, response, now: float) -> list:
        if branch != self.inflight:
            return []
        self.inflight = None
        status = response.status
        if status in (401, 407):
            return self._challenged(response, now)
        if status == 200:
            return self._registered(response, now)
        if status == 423:
            minimum = _int(response.headers.get("Min-Expires"))
            if minimum and self._expires < minimum <= MAX_EXPIRES:
                self._expires = minimum
                return [self._register(now, minimum)]
            detail = (f"the server wants at least {minimum} s (Min-Expires), more than the {MAX_EXPIRES} s we allow"
                      if minimum else "the server answered 423 without a usable Min-Expires")
            return self._fail(now, "interval_too_brief", response, detail)
        retry_after = _int((response.headers.get("Retry-After") or "").split(";")[0].split("(")[0])
        if status == 403:
            return self._fail(now, "forbidden", response, "the server refused this account (403)", retry_after)
        if status >= 500:
            return self._fail(now, "server_error", response, f"the server failed: {status} {response.reason}",
                              retry_after)
        return self._fail(now, "rejected", response, f"the server refused the REGISTER: {status} {response.reason}",
                          retry_after)

    def timed_out(self, branch: str, now: float) -> list:
        if branch != self.inflight:
            return []
        self.inflight = None
        where = self.config.destination
        return self._fail(now, "timeout", None,
                          f"no answer from {where.host}:{where.effective_port} over {where.transport.upper()} "
                          "within 32 s")

    def transport_failed(self, branch: str, detail: str, now: float) -> list:
        if branch != self.inflight:
            return []
        self.inflight = None
        return self._fail(now, "transport", None, detail)

    # -- decisions -------------------------------------------------------------------
    def _challenged(self, response, now):
        config = self.config
        challenges, unusable = parse_challenges(response)
        if not challenges:
            offered = ", ".join(unusable) or "no Digest challenge"
            return self._fail(now, "unsupported_challenge", response,
                              f"the server asked for {offered}; Regis answers Digest MD5, SHA-256 or SHA-512-256")
        if config.expected_realm:
            matching = [c for c in challenges if c.realm == config.expected_realm]
            if not matching:
                return self._fail(now, "realm_mismatch", response,
                                  f"realms do not match: server asked for '{challenges[0].realm}', trunk expects "
                                  f"'{config.expected_realm}'")
            challenges = matching
        challenge = challenges[0]
        header = "Proxy-Authorization" if response.status == 407 else "Authorization"
        if header in self._answered and not challenge.stale:
            return self._fail(now, "bad_credentials", response,
                              f"the server rejected the password of '{config.auth_username}' for realm "
                              f"'{challenge.realm}' ({response.status} again after our answer)")
        if config.password is None:
            return self._fail(now, "unreadable_password", response,
                              "the stored password cannot be decrypted: was SECRET_KEY changed? Set it again")
        self._challenges[header] = challenge
        return [self._register(now, 0 if self._unregistering else self._expires)]

    def _registered(self, response, now):
        self.failures = 0
        if self._unregistering:
            self.finished = True
            self.registered_until = 0.0
            return [self._report(now, self._stopped_state, response, finished=True, detail="unregistered")]
        granted = self._granted(response)
        self.registered_until = now + granted
        margin = min(MAX_REFRESH_MARGIN, max(MIN_REFRESH_MARGIN, granted / 10))
        self.wake_at = now + max(1.0, granted - margin)
        self.state = "registered"
        return [self._report(now, "registered", response, finished=True, granted=granted,
                             detail=f"registered for {granted} s")]

    def _granted(self, response) -> int:
        """Seconds granted: our Contact's expires, else the Expires header, else what we asked."""
        host, port = self.local
        try:
            for contact in response.contacts:
                uri = contact.uri
                if uri.user == self.config.contact_user and uri.host.strip("[]") == host.lower() \
                        and (uri.port or 5060) == port:
                    expires = _int(contact.param("expires"))
                    if expires is not None:
                        return expires
        except SipError:
            pass  # an unreadable Contact: the Expires header is the fallback
        header = _int(response.headers.get("Expires"))
        return header if header is not None else self._expires

    def _fail(self, now, cause, response, detail, retry_after=None):
        self.failures += 1
        if self._unregistering:
            self.finished = True
            return [self._report(now, self._stopped_state, response, cause=cause, detail=detail, finished=True)]
        delay = retry_after if retry_after else min(self.backoff_cap,
                                                    self.backoff_first * 2 ** (self.failures - 1))
        self.wake_at = now + delay
        self._expires = self.config.expires
        self.state = "failed" if self.registered_until <= now else self.state
        state = "failed" if self.registered_until <= now else "registered"
        return [self._report(now, state, response, cause=cause, detail=detail, finished=True)]

    # -- output ----------------------------------------------------------------------
    def _authorizations(self) -> list[str]:
        config = self.config
        lines = []
        for header, challenge in self._challenges.items():
            # RFC 7616 §3.4: nc counts the requests sent with this nonce, from 1.
            count = self._nonce_counts[challenge.nonce] = self._nonce_counts.get(challenge.nonce, 0) + 1
            if len(self._nonce_counts) > 16:
                self._nonce_counts = {challenge.nonce: count}
            lines.append(f"{header}: " + answer_challenge(
                challenge, username=config.auth_username, password=config.password, method="REGISTER",
                uri=config.registrar.uri(), nc=count, cnonce=secrets.token_hex(8)))
        return lines

    def _register(self, now, expires) -> SendRegister:
        config = self.config
        self.cseq += 1
        branch = new_branch()
        self.inflight = branch
        self._answered = set(self._challenges)
        transport = config.destination.transport
        host, port = self.local
        host_text = f"[{host}]" if ":" in host else host
        aor = f"sip:{config.aor_user}@{config.aor_domain}"
        # RFC 3261 §8.1.1.8: a sips: Request-URI wants a SIPS Contact (RFC 5630: no transport param).
        contact_scheme = "sips" if config.registrar.scheme == "sips" else "sip"
        contact_params = "" if transport == "udp" or contact_scheme == "sips" else f";transport={transport}"
        lines = [
            f"REGISTER {config.registrar.uri()} SIP/2.0",
            f"Via: SIP/2.0/{transport.upper()} {host_text}:{port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <{aor}>;tag={self.tag}",
            f"To: <{aor}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: <{contact_scheme}:{config.contact_user}@{host_text}:{port}{contact_params}>",
            f"Expires: {expires}",
        ]
        if config.proxy is not None:
            lines.append(f"Route: <{config.proxy.uri()};lr>")
        lines += self._authorizations()
        lines += ["User-Agent: Regis", "Content-Length: 0"]
        if self.state != "registered" and not self._unregistering:
            self.state = "registering"
        return SendRegister(config.id, ("\r\n".join(lines) + "\r\n\r\n").encode(), branch, config.destination)

    def _report(self, now, state, response=None, *, cause="", detail="", finished=False, granted=None):
        return TrunkReport(
            trunk_id=self.config.id, state=state, at=now, registered_until=self.registered_until,
            status=response.status if response is not None else None,
            phrase=response.reason if response is not None else "", cause=cause, detail=detail,
            next_attempt_at=self.wake_at or 0.0, finished_exchange=finished, granted=granted)


def _int(text):
    text = (text or "").strip()
    return int(text) if text.isdigit() else None
