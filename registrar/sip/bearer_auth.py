"""Bearer authentication of SIP requests inside the core (RFC 8898), mixed into
:class:`~registrar.sip.core.RegistrarCore`.

Owns the decisions only: which extensions take a token, whether the cache already
judged it, parking a request while the adapter asks the authorization server
(:class:`VerifyToken`), replaying it when :meth:`BearerAuthentication.token_verified`
brings the verdict, and the answers — a ``Bearer`` challenge beside the digest ones,
``error="invalid_token"`` / ``"invalid_request"`` / ``"insufficient_scope"``, and 503
with Retry-After when the authorization server cannot answer (never a 200). The token
rules themselves live in :mod:`registrar.sip.bearer`; the HTTP in
``registrar.oauth_client``, run by the adapters off the event loop.
"""
from dataclasses import dataclass

from registrar.sip import bearer
from registrar.sip.errors import SipError
from registrar.sip.reasons import Reason

# Requests waiting for one authorization server answer, in all; beyond it: 503.
MAX_PARKED = 2000
RETRY_AFTER_SERVER_FAILURE = "5"

_FAILURE_REASONS = {
    bearer.Failure.TOKEN_INACTIVE: Reason.TOKEN_INACTIVE,
    bearer.Failure.TOKEN_EXPIRED: Reason.TOKEN_EXPIRED,
    bearer.Failure.USERNAME_MISMATCH: Reason.TOKEN_USER_MISMATCH,
    bearer.Failure.INSUFFICIENT_SCOPE: Reason.TOKEN_SCOPE,
}


def failure_reason(failure: bearer.Failure) -> Reason:
    if failure in bearer.SERVER_FAILURES:
        return Reason.AUTH_SERVER_FAILED
    return _FAILURE_REASONS.get(failure, Reason.TOKEN_INVALID)


@dataclass(frozen=True)
class VerifyToken:
    """Ask the authorization server about a token; answer with ``token_verified``."""

    server: bearer.OAuthServerConfig
    token: str


class BearerAuthentication:
    """State and steps of bearer authentication; needs the core's answer helpers."""

    def _init_bearer(self):
        self._oauth_servers: dict = {}
        self._extension_auth: dict = {}
        self._tokens = bearer.TokenCache()
        self._parked: dict[tuple, list] = {}
        self._parked_count = 0
        self._fresh_verdicts: dict = {}

    def set_oauth(self, servers: dict, extension_auth: dict, cache_seconds: float | None = None) -> None:
        """OAuth servers by id and the extensions that take tokens (registrar.oauth.oauth_snapshot)."""
        if servers != self._oauth_servers:
            self._tokens.clear()
        self._oauth_servers = dict(servers)
        self._extension_auth = dict(extension_auth)
        if cache_seconds is not None:
            self._tokens.cap = cache_seconds

    # -- the decision ------------------------------------------------------------------
    def _bearer_setup(self, request):
        """(extension auth, its OAuth server) when the requesting extension may use a token."""
        try:
            user = (request.to if request.method == "REGISTER" else request.from_).uri.user_unescaped or ""
        except SipError:
            return None, None
        auth = self._extension_auth.get(user)
        if auth is None or not auth.bearer_allowed:
            return None, None
        server = self._oauth_servers.get(auth.server_id)
        if server is None or not server.enabled:
            return None, None
        return auth, server

    def _bearer_authenticate(self, key, request, source, now, value, auth, server, proxy=False):
        """Like ``_authenticate``: (credentials, username, None) or (None, username, actions)."""
        aor = (request.to if request.method == "REGISTER" else request.from_).uri
        aor_user, aor_domain = aor.user_unescaped or "", aor.host
        try:
            token = bearer.parse_bearer(value)
        except bearer.MalformedBearer as error:
            return None, "", self._bearer_refusal(key, request, source, now, server, auth, 401,
                                                  Reason.TOKEN_INVALID, "invalid_request", str(error), aor_user,
                                                  proxy)
        cache_key = (server.id, token)
        verdict = self._fresh_verdicts.get(cache_key) or self._tokens.get(cache_key, now)
        if verdict is None:
            return None, aor_user, self._park(cache_key, key, request, source, server, token, now)
        verdict = bearer.authorize(verdict, aor_user=aor_user, aor_domain=aor_domain,
                                   required_scope=server.required_scope, now=now)
        if not verdict.ok:
            reason = failure_reason(verdict.failure)
            return None, aor_user, self._bearer_refusal(key, request, source, now, server, auth, verdict.status,
                                                        reason, verdict.error, verdict.reason, aor_user, proxy)
        extension = self._credentials(aor_user)
        if extension is None or not extension.enabled:
            reason = Reason.UNKNOWN_USER if extension is None else Reason.DISABLED_EXTENSION
            return None, aor_user, self._reject(key, request, source, now, 403, "Forbidden", reason, aor_user,
                                                f"a valid token for {aor_user!r}, but the extension "
                                                f"{'does not exist' if extension is None else 'is disabled'}")
        return extension, aor_user, None

    def _park(self, cache_key, key, request, source, server, token, now):
        if self._parked_count >= MAX_PARKED:
            attempt = self._attempt(request, source, now, "rejected", Reason.AUTH_SERVER_FAILED, 503, "",
                                    "too many requests waiting for the authorization server")
            return [*self._recorded(attempt), *self._finish(key, request, source, now, 503, "Service Unavailable",
                                                            (("Retry-After", RETRY_AFTER_SERVER_FAILURE),))]
        waiting = self._parked.setdefault(cache_key, [])
        waiting.append((key, request, source))
        self._parked_count += 1
        # One question per token, however many requests carry it meanwhile.
        return [VerifyToken(server, token)] if len(waiting) == 1 else []

    def token_verified(self, server_id: int, token: str, verdict: bearer.Verdict, now: float) -> list:
        """The adapter's answer to :class:`VerifyToken`: the parked requests go on."""
        cache_key = (server_id, token)
        waiting = self._parked.pop(cache_key, [])
        self._parked_count -= len(waiting)
        actions = []
        if verdict.failure in bearer.SERVER_FAILURES:
            # A parked INVITE goes back through the proxy, whose INVITE transaction carries the 503.
            invites = [item for item in waiting if item[1].method == "INVITE"]
            waiting = [item for item in waiting if item[1].method != "INVITE"]
            if invites:
                self._fresh_verdicts[cache_key] = verdict
                try:
                    for key, request, source in invites:
                        actions += self.receive_untraced(request, source, now)
                finally:
                    del self._fresh_verdicts[cache_key]
            for key, request, source in waiting:
                attempt = self._attempt(request, source, now, "rejected", Reason.AUTH_SERVER_FAILED, 503, "",
                                        verdict.reason)
                actions += [*self._recorded(attempt),
                            *self._finish(key, request, source, now, 503, "Service Unavailable",
                                          (("Retry-After", RETRY_AFTER_SERVER_FAILURE),))]
            return actions
        self._tokens.put(cache_key, verdict, now)
        # Replayed with this verdict even when the cache would not keep it (an expired token).
        self._fresh_verdicts[cache_key] = verdict
        try:
            for key, request, source in waiting:
                self._transactions.abandon(key)
                actions += self.receive_untraced(request, source, now)
        finally:
            del self._fresh_verdicts[cache_key]
        return actions

    # -- answers -----------------------------------------------------------------------
    def _bearer_challenge_values(self, server, error=None, proxy=False):
        header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        return [(header, bearer.challenge_value(self.realm, server.authz_server or "", error))]

    def _bearer_refusal(self, key, request, source, now, server, auth, status, reason, error, detail, username,
                        proxy=False):
        if status == 401 and proxy:
            status = 407  # a proxy's challenge (a call): the same verdict, the proxy's status
        attempt = self._attempt(request, source, now, "rejected" if status not in (401, 407) else "challenged",
                                reason, status, username, detail)
        headers = self._bearer_challenge_values(server, error, proxy)
        if status in (401, 407):
            if auth.digest_allowed:
                headers += self._digest_challenge_values(now, header="Proxy-Authenticate" if proxy
                                                         else "WWW-Authenticate")
            phrase = "Proxy Authentication Required" if proxy else "Unauthorized"
            return [*self._recorded(attempt), *self._finish(key, request, source, now, status, phrase, headers)]
        if status == 503:
            headers = [("Retry-After", RETRY_AFTER_SERVER_FAILURE)]
            return [*self._recorded(attempt), *self._finish(key, request, source, now, 503, "Service Unavailable",
                                                            headers)]
        return [*self._recorded(attempt), *self._finish(key, request, source, now, status, "Forbidden", headers)]
