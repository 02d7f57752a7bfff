"""The HTTP side of SIP bearer authentication: token introspection (RFC 7662) and JWKS
fetching, with the standard library's urllib.

Every call here blocks (up to the server's timeout): runsip calls it from a thread
(an executor), never on its event loop. Failures of the authorization server come back
as :class:`~registrar.sip.bearer.Verdict`s with a server-failure reason (timeout,
HTTP status, refused, bad JSON), which the core answers with 503 — never a 200.
"""
import asyncio
import base64
import json
import logging
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from registrar.sip.bearer import Failure, OAuthServerConfig, Verdict, introspection_verdict, verify_jwt

log = logging.getLogger("regis.oauth")

MAX_BODY = 1 << 20
# An unknown key id makes us fetch the JWKS again, but not more often than this: tokens
# with made-up kids must not turn into a flood of requests to the authorization server.
JWKS_MIN_REFRESH_SECONDS = 10.0


class ServerFailure(Exception):
    def __init__(self, verdict: Verdict):
        super().__init__(verdict.reason)
        self.verdict = verdict


def _tls_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _is_timeout(error) -> bool:
    return isinstance(error, (TimeoutError, socket.timeout)) or "timed out" in str(error)


def _call(request: urllib.request.Request, server: OAuthServerConfig, what: str):
    """The JSON answer of ``request``, or ServerFailure."""
    try:
        with urllib.request.urlopen(request, timeout=server.timeout_seconds,
                                    context=_tls_context(server.verify_tls)) as response:
            body = response.read(MAX_BODY + 1)
    except urllib.error.HTTPError as error:
        raise ServerFailure(Verdict(Failure.INTROSPECTION_HTTP_STATUS, f"{what}: HTTP {error.code}")) from None
    except urllib.error.URLError as error:
        reason = error.reason
        if _is_timeout(reason):
            raise ServerFailure(Verdict(Failure.INTROSPECTION_TIMEOUT,
                                        f"{what}: no answer in {server.timeout_seconds:g} s")) from None
        raise ServerFailure(Verdict(Failure.INTROSPECTION_REFUSED, f"{what}: {reason}")) from None
    except (TimeoutError, socket.timeout):
        raise ServerFailure(Verdict(Failure.INTROSPECTION_TIMEOUT,
                                    f"{what}: no answer in {server.timeout_seconds:g} s")) from None
    except (OSError, ValueError) as error:  # connection reset, bad URL, TLS failure
        raise ServerFailure(Verdict(Failure.INTROSPECTION_REFUSED, f"{what}: {error}")) from None
    if len(body) > MAX_BODY:
        raise ServerFailure(Verdict(Failure.INTROSPECTION_BAD_JSON, f"{what}: answer larger than 1 MiB"))
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ServerFailure(Verdict(Failure.INTROSPECTION_BAD_JSON, f"{what}: the answer is not JSON")) from None


def introspect(server: OAuthServerConfig, token: str, now: float | None = None) -> Verdict:
    """POST ``token=...`` to the introspection endpoint with HTTP Basic client credentials (RFC 7662 §2)."""
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if server.client_id:
        # RFC 6749 §2.3.1: both are form-urlencoded before being joined.
        pair = f"{urllib.parse.quote_plus(server.client_id)}:{urllib.parse.quote_plus(server.client_secret or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    body = urllib.parse.urlencode({"token": token, "token_type_hint": "access_token"}).encode()
    request = urllib.request.Request(server.introspection_url, data=body, headers=headers, method="POST")
    try:
        answer = _call(request, server, "introspection")
    except ServerFailure as failure:
        return failure.verdict
    return introspection_verdict(answer, time.time() if now is None else now)


def fetch_jwks(server: OAuthServerConfig) -> dict:
    """The server's JSON Web Key Set, or ServerFailure."""
    request = urllib.request.Request(server.jwks_url, headers={"Accept": "application/json"})
    jwks = _call(request, server, "JWKS")
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ServerFailure(Verdict(Failure.INTROSPECTION_BAD_JSON, 'JWKS: no "keys" list'))
    return jwks


class JwksCache:
    """Each server's JWKS, fetched on first use and again when a token names a key id it
    does not hold (key rotation), at most every JWKS_MIN_REFRESH_SECONDS. Thread-safe."""

    def __init__(self, fetch=fetch_jwks, min_refresh: float = JWKS_MIN_REFRESH_SECONDS, clock=time.monotonic):
        self._fetch = fetch
        self._min_refresh = min_refresh
        self._clock = clock
        self._lock = threading.Lock()
        self._sets: dict = {}  # server id -> (jwks_url, jwks, fetched at)
        self.fetches = 0

    def _get(self, server: OAuthServerConfig, *, refresh: bool) -> tuple[dict, bool]:
        """(jwks, fetched just now)."""
        with self._lock:
            held = self._sets.get(server.id)
            if held is not None and held[0] == server.jwks_url:
                if not refresh or self._clock() - held[2] < self._min_refresh:
                    return held[1], False
            try:
                jwks = self._fetch(server)
            except ServerFailure:
                if held is not None and held[0] == server.jwks_url:
                    # Remember the try, keep the keys: a failing refresh must not turn
                    # every unknown key id into another fetch.
                    self._sets[server.id] = (held[0], held[1], self._clock())
                raise
            self.fetches += 1
            self._sets[server.id] = (server.jwks_url, jwks, self._clock())
            return jwks, True

    def verify(self, server: OAuthServerConfig, token: str, now: float | None = None) -> Verdict:
        now = time.time() if now is None else now
        try:
            jwks, fresh = self._get(server, refresh=False)
            result = verify_jwt(token, jwks, issuer=server.issuer, audience=server.audience, now=now)
            if result.unknown_kid and not fresh:
                jwks, fresh = self._get(server, refresh=True)
                if fresh:
                    result = verify_jwt(token, jwks, issuer=server.issuer, audience=server.audience, now=now)
        except ServerFailure as failure:
            return failure.verdict
        return result.verdict


def verify_token(server: OAuthServerConfig, token: str, jwks_cache: JwksCache, now: float | None = None) -> Verdict:
    """The token-level verdict by the server's mode (blocking: call it from a thread)."""
    if server.mode == "jwks":
        return jwks_cache.verify(server, token, now)
    return introspect(server, token, now)


class TokenVerifier:
    """What an event-loop adapter (runsip, the websocket door) uses to answer the core's
    :class:`~registrar.sip.bearer_auth.VerifyToken`: the blocking HTTP runs in a small
    pool of its own threads — never on the loop, never in the database thread."""

    def __init__(self, max_threads: int = 8):
        self._executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="regis-oauth")
        self.jwks = JwksCache()

    async def verdict(self, server: OAuthServerConfig, token: str) -> Verdict:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, verify_token, server, token, self.jwks)
        except Exception as error:  # an adapter must always get a verdict back to the core
            log.exception("verifying a bearer token with %s failed", server.name)
            return Verdict(Failure.INTROSPECTION_REFUSED, f"unexpected error: {error}")

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
