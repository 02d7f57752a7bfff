"""Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760), without I/O.

This module owns everything between a raw ``Authorization`` header value and a
:class:`Verdict`:

* hashing: HA1 (``H(username:realm:password)``), the request digest, and the
  algorithms MD5, SHA-256 and SHA-512-256 (:data:`ALGORITHMS`);
* parsing ``Authorization`` / ``Proxy-Authorization`` values
  (:func:`parse_authorization`);
* stateless nonces and the opaque value (:class:`NonceFactory`) and nonce-count replay
  detection (:class:`NonceCountTracker`);
* building ``WWW-Authenticate`` / ``Proxy-Authenticate`` values
  (:func:`challenge_values`);
* the decision itself (:func:`verify`).

It does not look up users, store HA1s, choose which algorithms to offer, record
attempts or build SIP responses: callers do that and pass the results in. Nothing here
reads the clock or draws random numbers; ``now`` (seconds, float) and any entropy are
passed in. Strings are hashed as UTF-8, the charset SIP mandates.

Decisions, where the RFCs leave room or real phones disagree with them:

* **Lenient parsing, strict meaning.** Real servers accept what phones send, so the
  parser tolerates a missing comma between parameters (RFC 3665 §2.1 itself shows
  ``realm="atlanta.example.com" nonce="..."``), quoted values for token parameters
  (``qop="auth"``, ``algorithm="MD5"``), unquoted values for quoted ones, any
  whitespace (including leftover CR/LF) around ``=`` and ``,``, empty list elements,
  and parameter names in any case. Unknown parameters are ignored. What could change
  the meaning is rejected: a duplicated parameter, a missing required one, a ``qop``
  without ``cnonce`` and an 8-hex-digit ``nc``, an unterminated quoted string.
* **Legacy RFC 2069 responses** (no ``qop``, so no ``cnonce``/``nc``) are accepted for
  MD5 only; old phones that skip ``qop`` all use MD5, and RFC 7616 requires ``qop`` for
  the newer algorithms. Without ``nc`` such a response carries no counter, so it is
  treated as ``nc=1``: each nonce can be used once by a legacy client, and a second use
  is :attr:`Verdict.REPLAYED_NONCE` (the caller re-challenges with a fresh nonce).
* **Not supported** (answered :attr:`Verdict.UNSUPPORTED_ALGORITHM`): ``userhash=true``
  (we would need a reverse index of H(username:realm) per realm and algorithm),
  ``qop=auth-int`` (we only ever offer ``qop="auth"``), the ``-sess`` algorithms, and
  any algorithm not offered in the challenge. RFC 7616's ``username*`` (RFC 8187
  encoding) is not decoded: such credentials are malformed unless ``username`` is
  also present.
* **opaque** is derived from the secret and realm, so every worker sends the same
  value. A non-empty ``opaque`` that differs from ours means the client answers
  someone else's challenge (:attr:`Verdict.FORGED_NONCE`). An absent or empty one is
  accepted: the nonce MAC, not the opaque, is what proves the challenge is ours, and
  several phones send ``opaque=""`` when they did not keep it.
* **nc** must strictly increase per nonce; out-of-order counts (allowed by RFC 7616
  for pipelined HTTP) are replays here, because a SIP UA sends one REGISTER at a time.
  Retransmissions of the same request must be absorbed by the server transaction
  layer before :func:`verify`, or they would be seen as replays.
* **Multiple workers.** Nonces are stateless (any process with the same secret checks
  them), but each process keeps its own :class:`NonceCountTracker`. A replay that
  lands on another worker is not detected there; that is accepted, since replay
  protection of digest is best-effort anyway and TLS is the real defence.
* **The uri parameter** is not compared with the Request-URI here (the caller has the
  request and decides how strict to be); it is covered by the response hash.
* **Uniform failure.** An unknown user, and a known user without an HA1 for the chosen
  algorithm, get :attr:`Verdict.WRONG_PASSWORD` after a full-cost comparison against
  a dummy HA1, so neither the verdict the caller maps to the wire nor the timing tells
  them apart; :attr:`Verification.detail` says which it was, for the admin.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
import struct
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "ALGORITHMS",
    "LEGACY_ALGORITHMS",
    "NONCE_CLOCK_SKEW",
    "DigestCredentials",
    "MalformedCredentials",
    "NonceCountTracker",
    "NonceFactory",
    "NonceStatus",
    "Verdict",
    "Verification",
    "canonical_algorithm",
    "challenge_values",
    "compute_ha1",
    "expected_response",
    "hash_hex",
    "parse_authorization",
    "response_matches",
    "verify",
]

# Canonical names, exactly as written on the wire (RFC 7616 §3.3, RFC 8760 §2).
ALGORITHMS = ("SHA-256", "MD5", "SHA-512-256")

# Algorithms for which a response without qop (RFC 2069 style) is still accepted.
LEGACY_ALGORITHMS = ("MD5",)

# How far in the future a nonce's timestamp may be: another worker's clock may run a
# little ahead of ours. Beyond this, the nonce was not issued by any of us.
NONCE_CLOCK_SKEW = 5.0

_CANONICAL_BY_LOWER = {name.lower(): name for name in ALGORITHMS}


def canonical_algorithm(name: str) -> str | None:
    """The canonical spelling of a supported algorithm name, or None if unsupported."""
    return _CANONICAL_BY_LOWER.get(name.lower())


def _require_algorithm(name: str) -> str:
    canonical = canonical_algorithm(name)
    if canonical is None:
        raise ValueError(f"unsupported digest algorithm {name!r}")
    return canonical


# --------------------------------------------------------------------------- hashing


def _digest(algorithm: str, data: bytes) -> bytes:
    if algorithm == "MD5":
        # MD5 is mandated by the protocol here, not chosen; FIPS builds refuse it
        # unless told so.
        return hashlib.md5(data, usedforsecurity=False).digest()
    if algorithm == "SHA-256":
        return hashlib.sha256(data).digest()
    # SHA-512/256 (FIPS 180-4), which OpenSSL 1.1.1+ — required by Python 3.11 — provides.
    return hashlib.new("sha512_256", data).digest()


def hash_hex(algorithm: str, data: str) -> str:
    """Lowercase hex of H(data) with the named algorithm (name case-insensitive)."""
    return _digest(_require_algorithm(algorithm), data.encode("utf-8")).hex()


def compute_ha1(username: str, realm: str, password: str, algorithm: str) -> str:
    """Lowercase hex of H(username:realm:password), what we store instead of passwords."""
    return hash_hex(algorithm, f"{username}:{realm}:{password}")


# --------------------------------------------------------------------------- parsing


class MalformedCredentials(ValueError):
    """The header value is not usable Digest credentials; the message says why."""


@dataclass(frozen=True)
class DigestCredentials:
    """The parameters of one Digest ``Authorization`` value, unquoted and unescaped."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    # Canonical spelling from ALGORITHMS when recognised, else as the client wrote it.
    algorithm: str = "MD5"
    cnonce: str | None = None
    nc: str | None = None  # 8 hex digits exactly as written; hashed verbatim
    qop: str | None = None
    opaque: str | None = None
    userhash: bool = False


_REQUIRED_PARAMS = ("username", "realm", "nonce", "uri", "response")
_WHITESPACE = re.compile(r"[ \t\r\n]*")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
# A quoted-string with backslash escapes (RFC 3261 §25.1 quoted-pair).
_QUOTED_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
# Unquoted values: RFC tokens, loosened so that e.g. an unquoted uri still parses.
_BARE_VALUE = re.compile(r'[^ \t\r\n,"]+')
_NC = re.compile(r"[0-9A-Fa-f]{8}")


def _snippet(text: str, limit: int = 40) -> str:
    """A short repr of client-supplied text, safe to put in messages and logs."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parse_authorization(value: str) -> DigestCredentials:
    """Parse an ``Authorization`` / ``Proxy-Authorization`` header value.

    Raises MalformedCredentials when it is not Digest or cannot be understood.
    """
    pos = _WHITESPACE.match(value).end()
    scheme = _TOKEN.match(value, pos)
    if scheme is None:
        raise MalformedCredentials("no authentication scheme")
    if scheme.group().lower() != "digest":
        raise MalformedCredentials(f"scheme is {_snippet(scheme.group())}, not Digest")
    rest = value[scheme.end() :]
    if rest and rest[0] not in " \t\r\n":
        raise MalformedCredentials("no whitespace after the Digest scheme")
    return _credentials_from_params(_parse_params(rest))


def _parse_params(text: str) -> dict[str, str]:
    """Comma-separated ``name=value`` pairs; names lowercased, values unescaped."""
    params: dict[str, str] = {}
    pos = 0
    while True:
        # Skip separators: whitespace and commas, including empty list elements. A
        # missing comma between two parameters is tolerated (see module docstring).
        while True:
            pos = _WHITESPACE.match(text, pos).end()
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            break
        if pos >= len(text):
            return params

        name_match = _TOKEN.match(text, pos)
        if name_match is None:
            raise MalformedCredentials(f"expected a parameter name at {_snippet(text[pos:])}")
        name = name_match.group()
        pos = _WHITESPACE.match(text, name_match.end()).end()
        if pos >= len(text) or text[pos] != "=":
            raise MalformedCredentials(f"parameter {_snippet(name)} has no value")
        pos = _WHITESPACE.match(text, pos + 1).end()

        if pos < len(text) and text[pos] == '"':
            quoted = _QUOTED_STRING.match(text, pos)
            if quoted is None:
                raise MalformedCredentials(f"unterminated quoted string in {_snippet(name)}")
            param_value = _QUOTED_PAIR.sub(r"\1", quoted.group(1))
            pos = quoted.end()
        else:
            bare = _BARE_VALUE.match(text, pos)
            if bare is None:
                raise MalformedCredentials(f"parameter {_snippet(name)} has an empty value")
            param_value = bare.group()
            pos = bare.end()

        key = name.lower()
        if key in params:
            raise MalformedCredentials(f"duplicated parameter {_snippet(name)}")
        params[key] = param_value


def _credentials_from_params(params: dict[str, str]) -> DigestCredentials:
    missing = [name for name in _REQUIRED_PARAMS if name not in params]
    if "username" in missing and "username*" in params:
        raise MalformedCredentials("username* (RFC 8187 encoding) is not supported")
    if missing:
        raise MalformedCredentials(f"missing {', '.join(missing)}")

    written_algorithm = params.get("algorithm")
    if written_algorithm is None:
        algorithm = "MD5"  # RFC 7616 §3.3: absent means MD5
    else:
        algorithm = canonical_algorithm(written_algorithm) or written_algorithm

    qop = params.get("qop")
    cnonce = params.get("cnonce")
    nc = params.get("nc")
    if qop is not None:
        if not qop:
            raise MalformedCredentials("qop is empty")
        if cnonce is None:
            raise MalformedCredentials("qop present without cnonce")
        if nc is None:
            raise MalformedCredentials("qop present without nc")
    if nc is not None and not _NC.fullmatch(nc):
        raise MalformedCredentials(f"nc must be 8 hex digits, got {_snippet(nc)}")

    userhash_text = params.get("userhash", "false").lower()
    if userhash_text not in ("true", "false"):
        raise MalformedCredentials(f"userhash must be true or false, got {_snippet(userhash_text)}")

    return DigestCredentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"],
        algorithm=algorithm,
        cnonce=cnonce,
        nc=nc,
        qop=qop,
        opaque=params.get("opaque"),
        userhash=userhash_text == "true",
    )


# --------------------------------------------------------------------------- nonces


class NonceStatus(enum.Enum):
    VALID = "valid"
    STALE = "stale"  # genuine, but older than the lifetime
    FORGED = "forged"  # not issued by anyone holding our secret for this realm


_TIMESTAMP = struct.Struct(">Q")  # microseconds since the epoch
_MASK64 = (1 << 64) - 1
_MAC_BYTES = 16
_MAX_ENTROPY_BYTES = 32
_MAX_NONCE_CHARS = 4 * ((_TIMESTAMP.size + _MAX_ENTROPY_BYTES + _MAC_BYTES + 2) // 3)
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class NonceFactory:
    """Stateless nonces that any worker process with the same secret can check.

    A nonce is base64url(timestamp || HMAC-SHA256(secret, timestamp || realm)[:16]).
    The timestamp is 8 bytes of microseconds. ``issue`` also accepts optional
    caller-supplied ``entropy`` bytes, placed between timestamp and MAC, so that two
    nonces issued in the same microsecond differ. Without it such nonces are equal and
    two clients share one nc sequence: the second to answer with nc=1 is reported as
    a replay and has to be challenged again. Pass a few random bytes. The MAC
    input is prefixed with a label and the realm's length so it can never collide
    with the opaque derivation or another realm's nonces.
    """

    def __init__(self, secret: bytes, realm: str, lifetime: float):
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        if lifetime <= 0:
            raise ValueError("the nonce lifetime must be positive")
        self._secret = bytes(secret)
        self.realm = realm
        self.lifetime = float(lifetime)
        realm_bytes = realm.encode("utf-8")
        self._mac_prefix = b"regis-nonce\x00" + len(realm_bytes).to_bytes(4, "big") + realm_bytes
        opaque_mac = hmac.new(self._secret, b"regis-opaque\x00" + realm_bytes, hashlib.sha256)
        self._opaque = opaque_mac.digest()[:16].hex()

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, self._mac_prefix + body, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self, now: float, *, entropy: bytes = b"") -> str:
        if len(entropy) > _MAX_ENTROPY_BYTES:
            raise ValueError(f"entropy is limited to {_MAX_ENTROPY_BYTES} bytes")
        stamp = round(now * 1_000_000)
        if not 0 <= stamp <= _MASK64:
            raise ValueError(f"cannot timestamp a nonce at {now!r}")
        body = _TIMESTAMP.pack(stamp) + entropy
        return _b64url(body + self._mac(body))

    def check(self, nonce: str, now: float) -> NonceStatus:
        if len(nonce) > _MAX_NONCE_CHARS or not _BASE64URL.fullmatch(nonce):
            return NonceStatus.FORGED
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return NonceStatus.FORGED
        # Base64 can spell the same bytes more than one way (unused trailing bits);
        # only our own spelling is genuine, so a flipped character is never accepted.
        if _b64url(raw) != nonce or len(raw) < _TIMESTAMP.size + _MAC_BYTES:
            return NonceStatus.FORGED
        body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(body)):
            return NonceStatus.FORGED
        (stamp,) = _TIMESTAMP.unpack_from(body)
        age = now - stamp / 1_000_000
        if age < -NONCE_CLOCK_SKEW:
            return NonceStatus.FORGED  # we never issue from the future
        if age > self.lifetime:
            return NonceStatus.STALE
        return NonceStatus.VALID

    def opaque(self) -> str:
        """A stable value derived from secret and realm (hex), the same in every worker."""
        return self._opaque


class NonceCountTracker:
    """Replay detection: the highest nc seen per nonce; a nc not above it is a replay.

    Bounded memory: an entry is forgotten once its nonce must be stale (lifetime plus
    :data:`NONCE_CLOCK_SKEW` after it was first seen), and beyond ``max_entries`` the
    oldest entry is evicted. An evicted nonce could be replayed until it goes stale,
    so size the cap above the number of nonces answered per lifetime; since
    :func:`verify` only records correct responses, only authenticated clients can
    fill it. Each worker process keeps its own tracker (see the module docstring).
    """

    def __init__(self, lifetime: float, max_entries: int = 200_000):
        if lifetime <= 0:
            raise ValueError("the nonce lifetime must be positive")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._retention = float(lifetime) + NONCE_CLOCK_SKEW
        self._max_entries = max_entries
        # nonce -> (first seen, highest nc); insertion order is first-seen order.
        self._entries: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def accept(self, nonce: str, nc: int, now: float) -> bool:
        """True if nc is fresh for this nonce (and remember it), False if a replay."""
        self._forget_expired(now)
        entry = self._entries.get(nonce)
        if entry is None:
            if nc < 1:
                return False  # counts start at 00000001
            self._entries[nonce] = (now, nc)
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
            return True
        first_seen, highest = entry
        if nc <= highest:
            return False
        self._entries[nonce] = (first_seen, nc)  # keeps its place in the order
        return True

    def _forget_expired(self, now: float) -> None:
        while self._entries:
            first_seen, _ = next(iter(self._entries.values()))
            if now - first_seen <= self._retention:
                return
            self._entries.popitem(last=False)


# --------------------------------------------------------------------------- challenge


def _quote(value: str) -> str:
    if any(ch in value for ch in "\r\n\x00"):
        raise ValueError(f"{_snippet(value)} cannot go in a header")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge_values(
    realm: str, nonce: str, opaque: str, algorithms: Sequence[str], stale: bool = False
) -> list[str]:
    """One ``WWW-Authenticate`` value per algorithm, in the given (preference) order.

    RFC 8760 §2.4: a UA picks the first challenge whose algorithm it supports, so the
    caller lists the strongest first. Repeated algorithms are listed once.
    """
    if not algorithms:
        raise ValueError("at least one algorithm must be offered")
    common = f"Digest realm={_quote(realm)}, nonce={_quote(nonce)}, opaque={_quote(opaque)}"
    suffix = ', qop="auth"' + (", stale=true" if stale else "")
    values: list[str] = []
    seen: set[str] = set()
    for name in algorithms:
        algorithm = _require_algorithm(name)
        if algorithm not in seen:
            seen.add(algorithm)
            values.append(f"{common}, algorithm={algorithm}{suffix}")
    return values


# --------------------------------------------------------------------------- response


def expected_response(ha1: str, method: str, credentials: DigestCredentials) -> str:
    """The request digest the client should have sent (RFC 7616 §3.4.1).

    With qop=auth: H(HA1:nonce:nc:cnonce:qop:H(method:uri)); without qop, the RFC 2069
    form H(HA1:nonce:H(method:uri)). Raises ValueError for anything else.
    """
    algorithm = _require_algorithm(credentials.algorithm)
    ha1 = ha1.lower()
    ha2 = hash_hex(algorithm, f"{method}:{credentials.uri}")
    if credentials.qop is None:
        return hash_hex(algorithm, f"{ha1}:{credentials.nonce}:{ha2}")
    if credentials.qop.lower() != "auth":
        raise ValueError(f"qop {_snippet(credentials.qop)} is not supported")
    if credentials.nc is None or credentials.cnonce is None:
        raise ValueError("qop=auth needs nc and cnonce")
    return hash_hex(
        algorithm,
        f"{ha1}:{credentials.nonce}:{credentials.nc}:{credentials.cnonce}:{credentials.qop}:{ha2}",
    )


def response_matches(ha1: str, method: str, credentials: DigestCredentials) -> bool:
    """Constant-time comparison of the client's response with the expected one."""
    expected = expected_response(ha1, method, credentials).encode("ascii")
    # Encoded because compare_digest refuses non-ASCII str, and the response is
    # attacker-controlled. Uppercase hex from sloppy clients is tolerated.
    given = credentials.response.lower().encode("utf-8")
    return hmac.compare_digest(expected, given)


# --------------------------------------------------------------------------- verify


class Verdict(enum.Enum):
    OK = "ok"
    STALE_NONCE = "stale_nonce"
    FORGED_NONCE = "forged_nonce"
    REPLAYED_NONCE = "replayed_nonce"
    WRONG_PASSWORD = "wrong_password"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    REALM_MISMATCH = "realm_mismatch"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class Verification:
    verdict: Verdict
    detail: str  # for the admin and logs, never for the wire


# Compared against when there is no real HA1, so that the work done is the same.
_DUMMY_HA1 = {algorithm: hash_hex(algorithm, "regis:no such user:") for algorithm in ALGORITHMS}


def _find_ha1(ha1_by_algorithm: Mapping[str, str] | None, algorithm: str) -> str | None:
    if ha1_by_algorithm is None:
        return None
    for name, ha1 in ha1_by_algorithm.items():
        if canonical_algorithm(name) == algorithm:
            return ha1
    return None


def verify(
    credentials: DigestCredentials,
    *,
    method: str,
    ha1_by_algorithm: Mapping[str, str] | None,
    realm: str,
    offered_algorithms: Sequence[str],
    nonces: NonceFactory,
    nc_tracker: NonceCountTracker,
    now: float,
) -> Verification:
    """Decide on parsed credentials. ``ha1_by_algorithm`` None means an unknown user.

    Checks run in this order, each only if the previous passed: realm, algorithm
    (offered, not userhash), qop, nonce genuineness and opaque, response, nonce age,
    nc replay. The response is checked before the age because ``stale=true`` tells
    the client its password was right (RFC 7616 §3.3), and before the replay check so
    that a wrong guess cannot burn a nonce count.
    """
    if credentials.realm != realm:
        # Realms are quoted strings: compared exactly (RFC 3261 §22.1).
        return Verification(
            Verdict.REALM_MISMATCH,
            f"credentials are for realm {_snippet(credentials.realm)}, ours is {_snippet(realm)}",
        )

    algorithm = canonical_algorithm(credentials.algorithm)
    offered = {canonical_algorithm(name) for name in offered_algorithms}
    if algorithm is None or algorithm not in offered:
        return Verification(
            Verdict.UNSUPPORTED_ALGORITHM,
            f"algorithm {_snippet(credentials.algorithm)} was not offered",
        )
    if credentials.userhash:
        return Verification(Verdict.UNSUPPORTED_ALGORITHM, "userhash=true is not supported")

    if credentials.qop is None:
        if algorithm not in LEGACY_ALGORITHMS:
            return Verification(
                Verdict.UNSUPPORTED_ALGORITHM,
                f"responses without qop (RFC 2069) are only accepted with MD5, not {algorithm}",
            )
        nc = 1  # a legacy response carries no counter: one use per nonce
    elif credentials.qop.lower() == "auth-int":
        return Verification(Verdict.UNSUPPORTED_ALGORITHM, "qop=auth-int is not supported")
    elif credentials.qop.lower() != "auth":
        return Verification(Verdict.MALFORMED, f"unknown qop {_snippet(credentials.qop)}")
    elif credentials.cnonce is None or credentials.nc is None or not _NC.fullmatch(credentials.nc):
        return Verification(Verdict.MALFORMED, "qop=auth needs cnonce and an 8-hex-digit nc")
    else:
        nc = int(credentials.nc, 16)

    nonce_status = nonces.check(credentials.nonce, now)
    if nonce_status is NonceStatus.FORGED:
        return Verification(
            Verdict.FORGED_NONCE, f"nonce {_snippet(credentials.nonce)} was not issued by us"
        )
    if credentials.opaque and credentials.opaque != nonces.opaque():
        return Verification(
            Verdict.FORGED_NONCE, f"opaque {_snippet(credentials.opaque)} is not ours"
        )

    ha1 = _find_ha1(ha1_by_algorithm, algorithm)
    # Always one full-cost comparison, real or dummy, so timing does not reveal
    # whether the user exists.
    matches = response_matches(ha1 or _DUMMY_HA1[algorithm], method, credentials)
    if ha1_by_algorithm is None:
        return Verification(Verdict.WRONG_PASSWORD, "unknown user")
    if ha1 is None:
        return Verification(Verdict.WRONG_PASSWORD, f"no {algorithm} HA1 stored for this user")
    if not matches:
        return Verification(Verdict.WRONG_PASSWORD, f"{algorithm} response does not match")

    if nonce_status is NonceStatus.STALE:
        return Verification(Verdict.STALE_NONCE, "correct response to an expired nonce")
    if not nc_tracker.accept(credentials.nonce, nc, now):
        return Verification(
            Verdict.REPLAYED_NONCE,
            f"nonce count {credentials.nc or '(none, RFC 2069)'} already used with this nonce",
        )
    return Verification(Verdict.OK, f"{algorithm} response verified")
