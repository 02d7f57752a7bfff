"""registrar.sip.bearer: RFC 8898 bearer rules without I/O (parsing, claims, verdicts,
the AOR rule, the token cache, JWTs against a JWKS dict, the challenge)."""
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from registrar.sip import bearer
from registrar.sip.bearer import Claims, Failure, TokenCache, Verdict

NOW = 1_800_000_000.0


# -- Authorization header ----------------------------------------------------------------
def test_it_parses_a_bearer_token():
    assert bearer.parse_bearer("Bearer eyJhbGciOiJSUzI1.abc-_~+/def==") == "eyJhbGciOiJSUzI1.abc-_~+/def=="
    assert bearer.parse_bearer("bearer  tok3n ") == "tok3n"


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer a b", "Bearer tok,en", 'Bearer "quoted"',
                                   "Bearer ab=c"])
def test_it_refuses_a_token_outside_rfc6750_syntax(value):
    with pytest.raises(bearer.MalformedBearer):
        bearer.parse_bearer(value)


def test_it_tells_a_bearer_credential_from_digest():
    assert bearer.is_bearer("Bearer abc")
    assert not bearer.is_bearer('Digest username="1001"')
    with pytest.raises(bearer.MalformedBearer, match="not a Bearer"):
        bearer.parse_bearer('Digest username="1001"')


# -- the AOR rule ------------------------------------------------------------------------
@pytest.mark.parametrize("username, matches", [
    (None, True), ("", True),
    ("alice", True), ("bob", False),
    ("alice@example.com", True), ("alice@EXAMPLE.com", True), ("alice@other.com", False), ("bob@example.com", False),
])
def test_it_compares_the_username_with_the_aor(username, matches):
    assert bearer.aor_matches(username, "alice", "example.com") is matches


def test_the_aor_is_to_for_register_and_from_otherwise():
    assert bearer.aor_header("REGISTER") == "To"
    assert bearer.aor_header("INVITE") == bearer.aor_header("SUBSCRIBE") == "From"


# -- verdicts --------------------------------------------------------------------------
def test_an_inactive_or_expired_token_is_invalid_token_401():
    inactive = bearer.introspection_verdict({"active": False}, NOW)
    expired = bearer.introspection_verdict({"active": True, "exp": NOW - 5}, NOW)
    early = bearer.introspection_verdict({"active": True, "nbf": NOW + 60}, NOW)
    assert (inactive.failure, inactive.status, inactive.error) == (Failure.TOKEN_INACTIVE, 401, "invalid_token")
    assert (expired.failure, expired.status, expired.error) == (Failure.TOKEN_EXPIRED, 401, "invalid_token")
    assert early.failure is Failure.NOT_YET_VALID


def test_an_answer_without_boolean_active_is_a_server_failure_503():
    for answer in ([], {"active": "true"}, {"username": "alice"}, "active"):
        verdict = bearer.introspection_verdict(answer, NOW)
        assert verdict.failure is Failure.INTROSPECTION_BAD_JSON
        assert (verdict.status, verdict.error) == (503, None)


def test_an_active_token_carries_its_claims():
    verdict = bearer.introspection_verdict({"active": True, "username": "1001", "scope": "sip read",
                                            "exp": NOW + 60, "client_id": "app", "aud": ["regis", 7]}, NOW)
    assert verdict.ok and verdict.status == 200
    assert verdict.claims == Claims(active=True, username="1001", exp=NOW + 60, scope=frozenset({"sip", "read"}),
                                    client_id="app", aud=("regis",))


def test_authorize_applies_the_request_checks():
    token = bearer.introspection_verdict({"active": True, "username": "1001", "scope": "sip", "exp": NOW + 60},
                                         NOW)
    assert bearer.authorize(token, aor_user="1001", aor_domain="pbx.test", now=NOW).ok
    other = bearer.authorize(token, aor_user="1002", aor_domain="pbx.test", now=NOW)
    assert (other.failure, other.status, other.error) == (Failure.USERNAME_MISMATCH, 401, "invalid_request")
    scope = bearer.authorize(token, aor_user="1001", aor_domain="pbx.test", required_scope="admin", now=NOW)
    assert (scope.failure, scope.status, scope.error) == (Failure.INSUFFICIENT_SCOPE, 403, "insufficient_scope")
    later = bearer.authorize(token, aor_user="1001", aor_domain="pbx.test", now=NOW + 61)
    assert later.failure is Failure.TOKEN_EXPIRED


def test_a_reason_reads_like_the_attempt_log():
    assert Verdict(Failure.INTROSPECTION_HTTP_STATUS, "introspection: HTTP 500").reason == \
        "introspection failed: HTTP status: introspection: HTTP 500"
    assert Verdict(Failure.TOKEN_INACTIVE).reason == "token inactive"


# -- cache -----------------------------------------------------------------------------
def _active(exp=None):
    return Verdict(None, claims=Claims(active=True, username="1001", exp=exp))


def test_the_cache_keeps_an_entry_until_the_cap_or_the_token_expiry():
    cache = TokenCache(max_entries=10, cap=30)
    cache.put("long", _active(exp=NOW + 3600), NOW)
    cache.put("short", _active(exp=NOW + 5), NOW)
    assert cache.get("long", NOW + 29) is not None
    assert cache.get("long", NOW + 30) is None
    assert cache.get("short", NOW + 4) is not None
    assert cache.get("short", NOW + 5) is None


def test_the_cache_evicts_the_least_recently_used():
    cache = TokenCache(max_entries=2, cap=30)
    cache.put("a", _active(), NOW)
    cache.put("b", _active(), NOW)
    cache.get("a", NOW)
    cache.put("c", _active(), NOW)
    assert len(cache) == 2
    assert cache.get("b", NOW) is None
    assert cache.get("a", NOW) is not None and cache.get("c", NOW) is not None


def test_the_cache_never_keeps_a_server_failure():
    cache = TokenCache(cap=30)
    cache.put("t", Verdict(Failure.INTROSPECTION_TIMEOUT), NOW)
    cache.put("u", Verdict(Failure.TOKEN_INACTIVE), NOW)
    assert cache.get("t", NOW) is None
    assert cache.get("u", NOW).failure is Failure.TOKEN_INACTIVE


# -- extension settings ----------------------------------------------------------------
def test_an_extension_names_the_methods_that_authenticate():
    auth = bearer.ExtensionAuth("1001", "either", 3, bearer.parse_methods(" register, INVITE ,"))
    assert auth.bearer_allowed and auth.digest_allowed
    assert auth.must_authenticate("REGISTER") and auth.must_authenticate("invite")
    assert not auth.must_authenticate("SUBSCRIBE")
    assert not bearer.ExtensionAuth("1002", "bearer", None).bearer_allowed
    assert not bearer.ExtensionAuth("1003", "bearer", 3).digest_allowed


# -- challenge -------------------------------------------------------------------------
def test_the_challenge_follows_rfc8898():
    assert bearer.challenge_value("pbx.test", "https://as.test/o/token/") == \
        'Bearer realm="pbx.test", authz_server="https://as.test/o/token/"'
    assert bearer.challenge_value("pbx.test", "https://as", error="invalid_token", scope="sip") == \
        'Bearer realm="pbx.test", scope="sip", authz_server="https://as", error="invalid_token"'
    assert bearer.challenge_value('a"b', "x") == 'Bearer realm="a\\"b", authz_server="x"'


# -- JWTs ------------------------------------------------------------------------------
def _jwk(algorithm, public_key, kid):
    jwk = algorithm.to_jwk(public_key, as_dict=True)
    return {**jwk, "kid": kid}


@pytest.fixture(scope="module")
def keys():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = {"keys": [_jwk(RSAAlgorithm, rsa_key.public_key(), "rsa1"),
                     _jwk(ECAlgorithm, ec_key.public_key(), "ec1"),
                     _jwk(OKPAlgorithm, ed_key.public_key(), "ed1")]}
    return {"rsa": rsa_key, "ec": ec_key, "ed": ed_key, "other": other, "jwks": jwks}


def _token(key, kid, algorithm="RS256", **claims):
    payload = {"iss": "https://as.test", "aud": "regis", "exp": NOW + 300, "username": "1001", **claims}
    return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


def _verify(token, jwks, **kwargs):
    return bearer.verify_jwt(token, jwks, issuer=kwargs.get("issuer", "https://as.test"),
                             audience=kwargs.get("audience", "regis"), now=kwargs.get("now", NOW))


@pytest.mark.parametrize("kind, kid, algorithm", [("rsa", "rsa1", "RS256"), ("ec", "ec1", "ES256"),
                                                  ("ed", "ed1", "EdDSA")])
def test_a_valid_jwt_is_accepted(keys, kind, kid, algorithm):
    result = _verify(_token(keys[kind], kid, algorithm, scope="sip"), keys["jwks"])
    assert result.verdict.ok and not result.unknown_kid
    assert result.verdict.claims.username == "1001"
    assert result.verdict.claims.scope == frozenset({"sip"})


def test_an_expired_or_early_jwt_is_refused(keys):
    expired = _verify(_token(keys["rsa"], "rsa1", exp=NOW - 1), keys["jwks"]).verdict
    early = _verify(_token(keys["rsa"], "rsa1", nbf=NOW + 100), keys["jwks"]).verdict
    assert (expired.failure, expired.error) == (Failure.TOKEN_EXPIRED, "invalid_token")
    assert early.failure is Failure.NOT_YET_VALID


def test_a_jwt_for_another_audience_or_issuer_is_refused(keys):
    assert _verify(_token(keys["rsa"], "rsa1", aud="someone-else"), keys["jwks"]).verdict.failure \
        is Failure.WRONG_AUDIENCE
    assert _verify(_token(keys["rsa"], "rsa1", iss="https://evil.test"), keys["jwks"]).verdict.failure \
        is Failure.WRONG_ISSUER
    # No expectation configured: any issuer and audience.
    assert _verify(_token(keys["rsa"], "rsa1", aud="x", iss="y"), keys["jwks"], issuer="", audience="").verdict.ok


def test_a_jwt_signed_by_another_key_is_refused(keys):
    result = _verify(_token(keys["other"], "rsa1"), keys["jwks"])
    assert result.verdict.failure is Failure.BAD_SIGNATURE and not result.unknown_kid
    assert result.verdict.status == 401


def test_an_unknown_kid_asks_for_a_refetch(keys):
    result = _verify(_token(keys["other"], "rsa2"), keys["jwks"])
    assert result.verdict.failure is Failure.UNKNOWN_KEY and result.unknown_kid


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c"])
def test_garbage_is_a_malformed_token(keys, token):
    assert _verify(token, keys["jwks"]).verdict.failure is Failure.MALFORMED_TOKEN


def test_symmetric_and_unsigned_jwts_are_refused(keys):
    hs = jwt.encode({"username": "1001"}, "secret-that-is-long-enough-for-hs256!", algorithm="HS256",
                    headers={"kid": "rsa1"})
    unsigned = jwt.encode({"username": "1001"}, None, algorithm="none", headers={"kid": "rsa1"})
    for token in (hs, unsigned):
        result = _verify(token, keys["jwks"])
        assert result.verdict.failure is Failure.MALFORMED_TOKEN
