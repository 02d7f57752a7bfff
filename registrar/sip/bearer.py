"""OAuth 2.0 bearer authentication of SIP requests (RFC 8898), without I/O.

Owns the rules, not the HTTP: parsing ``Authorization: Bearer <token>`` (RFC 6750
b64token), turning an introspection answer (RFC 7662) or a JWT checked against a JWKS
into :class:`Claims`, judging them into a :class:`Verdict` with its reason, the AOR rule
of the seed (a ``username`` with "@" is compared with the whole AOR ``user@domain``,
otherwise with the user part; To for REGISTER, From otherwise; no username: accepted),
the bounded :class:`TokenCache`, and the ``WWW-Authenticate: Bearer`` challenge value.

The clock is passed in (``now``, epoch seconds), never read: PyJWT's own exp/nbf checks
are switched off and done here. The adapter (registrar.oauth_client) does the HTTP calls
in a thread and hands their outcome back as a :class:`Verdict`.
"""
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum

import jwt
from jwt.exceptions import (DecodeError, InvalidAudienceError, InvalidIssuerError, InvalidSignatureError,
                            PyJWKError, PyJWKSetError, PyJWTError)

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_BEARER = re.compile(r"Bearer +([A-Za-z0-9\-._~+/]+=*)\s*", re.IGNORECASE)
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
DEFAULT_METHODS = frozenset({"REGISTER", "SUBSCRIBE", "INVITE"})


class MalformedBearer(ValueError):
    """The Authorization header is not ``Bearer <b64token>``."""


class Failure(str, Enum):
    """Why a bearer token was not accepted; the value is the AuthAttempt reason's wording."""

    TOKEN_INACTIVE = "token inactive"
    TOKEN_EXPIRED = "token expired"
    NOT_YET_VALID = "token not yet valid"
    USERNAME_MISMATCH = "username differs from AOR"
    INSUFFICIENT_SCOPE = "insufficient scope"
    BAD_SIGNATURE = "bad signature"
    WRONG_ISSUER = "wrong issuer"
    WRONG_AUDIENCE = "wrong audience"
    UNKNOWN_KEY = "unknown key id"
    MALFORMED_TOKEN = "malformed token"
    INTROSPECTION_TIMEOUT = "introspection failed: timeout"
    INTROSPECTION_HTTP_STATUS = "introspection failed: HTTP status"
    INTROSPECTION_REFUSED = "introspection failed: refused"
    INTROSPECTION_BAD_JSON = "introspection failed: bad JSON"


# The authorization server could not answer: the phone is told to come back (503), and the
# verdict is never cached.
SERVER_FAILURES = frozenset({Failure.INTROSPECTION_TIMEOUT, Failure.INTROSPECTION_HTTP_STATUS,
                             Failure.INTROSPECTION_REFUSED, Failure.INTROSPECTION_BAD_JSON})


@dataclass(frozen=True)
class Claims:
    active: bool
    username: str | None = None
    sub: str | None = None
    exp: float | None = None
    nbf: float | None = None
    iss: str | None = None
    aud: tuple[str, ...] = ()
    scope: frozenset[str] = frozenset()
    client_id: str | None = None


@dataclass(frozen=True)
class Verdict:
    """The judgement on one token (and, after :func:`authorize`, on one request)."""

    failure: Failure | None
    detail: str = ""
    claims: Claims | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def status(self) -> int:
        """The SIP status to answer: 200 means let the request through."""
        if self.failure is None:
            return 200
        if self.failure in SERVER_FAILURES:
            return 503
        if self.failure is Failure.INSUFFICIENT_SCOPE:
            return 403
        return 401

    @property
    def error(self) -> str | None:
        """The ``error=`` of the Bearer challenge (RFC 6750 §3.1), None when there is none to give."""
        if self.failure is None or self.failure in SERVER_FAILURES:
            return None
        if self.failure is Failure.USERNAME_MISMATCH:
            return "invalid_request"
        if self.failure is Failure.INSUFFICIENT_SCOPE:
            return "insufficient_scope"
        return "invalid_token"

    @property
    def reason(self) -> str:
        if self.failure is None:
            return ""
        return f"{self.failure.value}: {self.detail}" if self.detail else self.failure.value


ACCEPTED = Verdict(None)


@dataclass(frozen=True)
class OAuthServerConfig:
    """An OAuth server as the SIP side needs it (secrets in clear; from registrar.oauth.oauth_snapshot)."""

    id: int
    name: str
    mode: str  # "introspection" or "jwks"
    introspection_url: str = ""
    client_id: str = ""
    client_secret: str | None = ""
    timeout_seconds: float = 2.0
    verify_tls: bool = True
    jwks_url: str = ""
    issuer: str = ""
    audience: str = ""
    authz_server: str = ""
    required_scope: str = ""
    enabled: bool = True


@dataclass(frozen=True)
class ExtensionAuth:
    """How one extension authenticates: "digest", "bearer" or "either"."""

    number: str
    mode: str = "digest"
    server_id: int | None = None
    methods: frozenset[str] = field(default=DEFAULT_METHODS)

    @property
    def bearer_allowed(self) -> bool:
        return self.mode in ("bearer", "either") and self.server_id is not None

    @property
    def digest_allowed(self) -> bool:
        return self.mode in ("digest", "either")

    def must_authenticate(self, method: str) -> bool:
        return method.upper() in self.methods


def parse_methods(text: str) -> frozenset[str]:
    return frozenset(item.strip().upper() for item in (text or "").split(",") if item.strip())


# -- parsing ---------------------------------------------------------------------------
def is_bearer(value: str) -> bool:
    return value.lstrip()[:7].lower() == "bearer " or value.strip().lower() == "bearer"


def parse_bearer(value: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` value, or MalformedBearer."""
    match = _BEARER.fullmatch(value.strip())
    if match is None:
        if not is_bearer(value):
            raise MalformedBearer("not a Bearer credential")
        raise MalformedBearer("the token is not an RFC 6750 b64token")
    return match.group(1)


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _text(value):
    return value if isinstance(value, str) and value else None


def _scopes(data) -> frozenset[str]:
    scope = data.get("scope", data.get("scp"))
    if isinstance(scope, str):
        return frozenset(scope.split())
    if isinstance(scope, list):
        return frozenset(item for item in scope if isinstance(item, str))
    return frozenset()


def claims_from_dict(data: dict, *, active: bool | None = None) -> Claims:
    """Claims from an introspection answer or a decoded JWT payload (``active`` given for JWTs)."""
    aud = data.get("aud")
    if isinstance(aud, str):
        audiences = (aud,)
    elif isinstance(aud, list):
        audiences = tuple(item for item in aud if isinstance(item, str))
    else:
        audiences = ()
    username = _text(data.get("username"))
    if username is None and active is not None:
        # JWTs from Keycloak and other OpenID providers name the user this way.
        username = _text(data.get("preferred_username"))
    return Claims(
        active=data.get("active") is True if active is None else active,
        username=username,
        sub=_text(data.get("sub")), exp=_number(data.get("exp")), nbf=_number(data.get("nbf")),
        iss=_text(data.get("iss")), aud=audiences, scope=_scopes(data), client_id=_text(data.get("client_id")),
    )


def introspection_verdict(answer, now: float) -> Verdict:
    """Judge a parsed RFC 7662 answer (the JSON object of a 200)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("active"), bool):
        return Verdict(Failure.INTROSPECTION_BAD_JSON, 'the answer has no boolean "active"')
    return judge(claims_from_dict(answer), now)


def judge(claims: Claims, now: float) -> Verdict:
    """The request-independent checks: active, exp, nbf."""
    if not claims.active:
        return Verdict(Failure.TOKEN_INACTIVE, claims=claims)
    if claims.exp is not None and claims.exp <= now:
        return Verdict(Failure.TOKEN_EXPIRED, f"expired {now - claims.exp:.0f} s ago", claims)
    if claims.nbf is not None and claims.nbf > now:
        return Verdict(Failure.NOT_YET_VALID, f"valid in {claims.nbf - now:.0f} s", claims)
    return Verdict(None, claims=claims)


def aor_header(method: str) -> str:
    """Where the AOR compared with the token's username comes from (the seed's rule)."""
    return "To" if method.upper() == "REGISTER" else "From"


def aor_matches(username: str | None, aor_user: str, aor_domain: str) -> bool:
    """The seed's rule: with "@" the whole AOR, otherwise only its user part; no username: any."""
    if not username:
        return True
    if "@" in username:
        user, _, domain = username.rpartition("@")
        return user == aor_user and domain.lower() == aor_domain.lower()
    return username == aor_user


def authorize(verdict: Verdict, *, aor_user: str, aor_domain: str, required_scope: str = "",
              now: float) -> Verdict:
    """Apply one request's checks to a token's verdict (perhaps from the cache): still
    unexpired now, the required scope, the username against the AOR (To for REGISTER,
    From otherwise — the caller picks)."""
    if not verdict.ok or verdict.claims is None:
        return verdict
    verdict = judge(verdict.claims, now)
    if not verdict.ok:
        return verdict
    claims = verdict.claims
    if required_scope and required_scope not in claims.scope:
        return Verdict(Failure.INSUFFICIENT_SCOPE, f"scope {required_scope!r} needed", claims)
    if not aor_matches(claims.username, aor_user, aor_domain):
        return Verdict(Failure.USERNAME_MISMATCH, f"token for {claims.username!r}, AOR {aor_user}@{aor_domain}",
                       claims)
    return verdict


# -- JWTs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class JwtResult:
    verdict: Verdict
    unknown_kid: bool = False  # the adapter fetches the JWKS again, once, and retries


def verify_jwt(token: str, jwks: dict, *, issuer: str = "", audience: str = "", now: float) -> JwtResult:
    """Check a JWT's signature against a JWKS dict, then iss, aud, exp and nbf."""
    try:
        header = jwt.get_unverified_header(token)
    except DecodeError as error:
        return JwtResult(Verdict(Failure.MALFORMED_TOKEN, str(error)))
    algorithm = header.get("alg")
    if algorithm not in ASYMMETRIC_ALGORITHMS:
        return JwtResult(Verdict(Failure.MALFORMED_TOKEN, f"algorithm {algorithm!r} is not accepted"))
    try:
        keys = jwt.PyJWKSet.from_dict(jwks).keys if jwks else []
    except (PyJWKSetError, PyJWKError):
        keys = []
    kid = header.get("kid")
    if kid is not None:
        candidates = [key for key in keys if key.key_id == kid]
    else:
        candidates = keys if len(keys) == 1 else []
    if not candidates:
        return JwtResult(Verdict(Failure.UNKNOWN_KEY, f"kid {kid!r} is not in the JWKS"), unknown_kid=True)
    try:
        payload = jwt.decode(
            token, key=candidates[0], algorithms=[algorithm], issuer=issuer or None, audience=audience or None,
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": bool(audience),
                     "verify_iss": bool(issuer)})
    except InvalidSignatureError:
        return JwtResult(Verdict(Failure.BAD_SIGNATURE))
    except InvalidIssuerError:
        return JwtResult(Verdict(Failure.WRONG_ISSUER, f"expected {issuer!r}"))
    except InvalidAudienceError:
        return JwtResult(Verdict(Failure.WRONG_AUDIENCE, f"expected {audience!r}"))
    except PyJWTError as error:
        return JwtResult(Verdict(Failure.MALFORMED_TOKEN, str(error)))
    return JwtResult(judge(claims_from_dict(payload, active=True), now))


# -- cache -----------------------------------------------------------------------------
class TokenCache:
    """Token verdicts, least recently used evicted beyond ``max_entries``. An entry lives until
    the token expires or ``cap`` seconds pass, whichever is first (the cap bounds how long a
    revoked token is still honoured). Server failures are never stored."""

    def __init__(self, max_entries: int = 10_000, cap: float = 30.0):
        self.max_entries = max_entries
        self.cap = cap
        self._entries: OrderedDict = OrderedDict()

    def __len__(self):
        return len(self._entries)

    def get(self, key, now: float) -> Verdict | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        verdict, valid_until = entry
        if valid_until <= now:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return verdict

    def put(self, key, verdict: Verdict, now: float) -> None:
        if verdict.failure in SERVER_FAILURES:
            return
        valid_until = now + self.cap
        if verdict.claims is not None and verdict.claims.exp is not None:
            valid_until = min(valid_until, verdict.claims.exp)
        if valid_until <= now:
            return
        self._entries[key] = (verdict, valid_until)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


# -- challenge -------------------------------------------------------------------------
def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge_value(realm: str, authz_server: str, error: str | None = None, scope: str | None = None) -> str:
    """``WWW-Authenticate`` value of a Bearer challenge (RFC 8898 §3)."""
    parts = [f"realm={_quoted(realm)}"]
    if scope:
        parts.append(f"scope={_quoted(scope)}")
    parts.append(f"authz_server={_quoted(authz_server)}")
    if error:
        parts.append(f"error={_quoted(error)}")
    return "Bearer " + ", ".join(parts)
