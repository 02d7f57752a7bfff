"""OAuth bearer authentication of REGISTER in the core (RFC 8898), without sockets.

The authorization server's answers are handed to the core as the adapters would
(``token_verified``); tests/test_bearer_e2e.py asks a real one.
"""
import pytest

from registrar.sip import bearer
from registrar.sip.bearer_auth import VerifyToken
from registrar.sip.reasons import Reason
from tests.test_core import NOW, PHONE, REALM, Harness, answer, register

SERVER = bearer.OAuthServerConfig(id=1, name="keycloak", mode="introspection",
                                  introspection_url="https://auth.example/introspect",
                                  authz_server="https://auth.example/realms/sip")
TOKEN = "eyJhbGciOiJSUzI1NiJ9.payload.signature"


def harness(mode="bearer", required_scope="", methods=bearer.DEFAULT_METHODS):
    h = Harness()
    server = SERVER if not required_scope else bearer.OAuthServerConfig(**{**SERVER.__dict__,
                                                                          "required_scope": required_scope})
    h.core.set_oauth({1: server}, {"1001": bearer.ExtensionAuth("1001", mode, 1, frozenset(methods))})
    return h


def feed(h, text, now=NOW):
    """(responses, VerifyToken actions) for one message, running stores like runsip."""
    actions = h.core.receive(text.encode(), PHONE, now)
    return drain(h, actions, now)


def drain(h, actions, now=NOW):
    questions = [action for action in actions if isinstance(action, VerifyToken)]
    others = [action for action in actions if not isinstance(action, VerifyToken)]
    return [response for response, _ in h.run(others, now)], questions


def verdict(active=True, username="1001", exp=NOW + 3600, scope=""):
    return bearer.judge(bearer.Claims(active=active, username=username, exp=exp,
                                      scope=frozenset(scope.split())), NOW)


def bearer_register(**kwargs):
    return register(authorization=f"Bearer {TOKEN}", **kwargs)


def answered(h, text, result):
    """Send, expect one question for the token, answer it; the responses after the answer."""
    responses, questions = feed(h, text)
    assert responses == [] and [q.token for q in questions] == [TOKEN]
    return drain(h, h.core.token_verified(1, TOKEN, result, NOW))[0]


def test_bearer_only_extension_is_challenged_with_bearer_and_authz_server():
    (response,), _ = feed(harness("bearer"), register())
    assert response.status == 401
    assert response.headers.get_all("WWW-Authenticate") == [
        f'Bearer realm="{REALM}", authz_server="https://auth.example/realms/sip"']


def test_either_mode_offers_digest_first_then_bearer():
    (response,), _ = feed(harness("either"), register())
    challenges = response.headers.get_all("WWW-Authenticate")
    assert challenges[0].startswith("Digest ") and challenges[-1].startswith("Bearer ")


def test_active_token_registers_and_the_next_request_is_answered_from_the_cache():
    h = harness()
    (response,) = answered(h, bearer_register(), verdict())
    assert response.status == 200
    assert [b.contact_uri for b in h.store["1001"]] == ["sip:1001@192.0.2.10:5062"]
    responses, questions = feed(h, bearer_register(cseq=2))
    assert questions == [] and [r.status for r in responses] == [200]


def test_token_for_another_user_gets_invalid_request():
    h = harness()
    (response,) = answered(h, bearer_register(), verdict(username="1002"))
    assert response.status == 401
    assert 'error="invalid_request"' in response.headers.get("WWW-Authenticate")
    assert h.attempts[-1].reason is Reason.TOKEN_USER_MISMATCH
    assert "1002" in h.attempts[-1].detail


def test_username_with_domain_is_compared_with_the_whole_aor():
    h = harness()
    assert answered(h, bearer_register(), verdict(username=f"1001@{REALM}"))[0].status == 200
    h = harness()
    assert answered(h, bearer_register(), verdict(username="1001@elsewhere.example"))[0].status == 401


@pytest.mark.parametrize("result, reason", [
    (verdict(active=False), Reason.TOKEN_INACTIVE),
    (verdict(exp=NOW - 5), Reason.TOKEN_EXPIRED),
    (bearer.Verdict(bearer.Failure.BAD_SIGNATURE), Reason.TOKEN_INVALID),
    (bearer.Verdict(bearer.Failure.WRONG_AUDIENCE, "expected 'sip'"), Reason.TOKEN_INVALID),
])
def test_refused_tokens_get_invalid_token_and_a_recorded_reason(result, reason):
    h = harness()
    (response,) = answered(h, bearer_register(), result)
    assert response.status == 401
    assert 'error="invalid_token"' in response.headers.get("WWW-Authenticate")
    assert h.attempts[-1].reason is reason


def test_insufficient_scope_is_403():
    h = harness(required_scope="sip")
    (response,) = answered(h, bearer_register(), verdict(scope="openid"))
    assert response.status == 403
    assert 'error="insufficient_scope"' in response.headers.get("WWW-Authenticate")


@pytest.mark.parametrize("failure", sorted(bearer.SERVER_FAILURES))
def test_authorization_server_failure_is_503_never_200_and_not_cached(failure):
    h = harness()
    (response,) = answered(h, bearer_register(), bearer.Verdict(failure, "connection refused"))
    assert (response.status, response.headers.get("Retry-After")) == (503, "5")
    assert h.attempts[-1].reason is Reason.AUTH_SERVER_FAILED
    assert failure.value in h.attempts[-1].detail
    assert "1001" not in h.store
    _, questions = feed(h, bearer_register(cseq=2))
    assert len(questions) == 1  # asked again: a failure is not remembered


def test_requests_waiting_for_one_token_share_one_question_and_retransmissions_are_absorbed():
    h = harness()
    first = bearer_register(call_id="a")
    responses, questions = feed(h, first)
    assert len(questions) == 1
    assert feed(h, first) == ([], [])  # the retransmission
    assert feed(h, bearer_register(call_id="b")) == ([], [])  # another request, same token
    responses, _ = drain(h, h.core.token_verified(1, TOKEN, verdict(), NOW))
    assert [r.status for r in responses] == [200, 200]


def test_token_sent_for_a_digest_extension_is_challenged_with_digest():
    h = harness("digest")
    (response,), questions = feed(h, bearer_register())
    assert questions == [] and response.status == 401
    assert all(value.startswith("Digest ") for value in response.headers.get_all("WWW-Authenticate"))
    assert h.attempts[-1].reason is Reason.BEARER_NOT_ALLOWED


def test_password_sent_for_a_bearer_only_extension_is_refused():
    h = harness("bearer")
    (response,), _ = feed(h, register(authorization='Digest username="1001", realm="x", nonce="n", uri="sip:x", '
                                                    'response="00"'))
    assert response.status == 401 and response.headers.get("WWW-Authenticate").startswith("Bearer ")
    assert h.attempts[-1].reason is Reason.DIGEST_NOT_ALLOWED


def test_malformed_bearer_is_invalid_request():
    h = harness()
    (response,), _ = feed(h, register(authorization="Bearer not a token"))
    assert response.status == 401 and 'error="invalid_request"' in response.headers.get("WWW-Authenticate")


def test_a_method_not_listed_goes_the_digest_way_never_unproven():
    # The seed's "register/setup-invite": here the admin lists SUBSCRIBE and INVITE only.
    h = harness("either", methods={"SUBSCRIBE", "INVITE"})
    (response,), questions = feed(h, register())
    assert questions == [] and response.status == 401
    assert all(value.startswith("Digest ") for value in response.headers.get_all("WWW-Authenticate"))
    (digest_ok,) = [r for r, _ in h.run(h.core.receive(register(
        authorization=answer(response.headers.get_all("WWW-Authenticate")[-1], "1001", "secret"),
        cseq=2).encode(), PHONE, NOW), NOW)]
    assert digest_ok.status == 200


def test_a_bearer_only_extension_cannot_use_its_password_for_another_aor():
    h = harness("bearer")
    h.core.set_oauth({1: SERVER}, {"1001": bearer.ExtensionAuth("1001", "bearer", 1)})
    (challenge,), _ = feed(h, register(user="1003"))  # 1003 is no bearer extension: a digest challenge
    credentials = answer(challenge.headers.get_all("WWW-Authenticate")[-1], "1001", "secret")
    (refused,), _ = feed(h, register(user="1003", authorization=credentials, cseq=2))
    assert refused.status == 403
    assert h.attempts[-1].reason is Reason.DIGEST_NOT_ALLOWED
