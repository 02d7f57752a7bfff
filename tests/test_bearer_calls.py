"""Callers that prove themselves with an OAuth bearer token (RFC 8898) on INVITE, in the
core without sockets: the proxy's 407 offers Bearer, a token in Proxy-Authorization
(RFC 8898 §2.3) or in Authorization (JsSIP's authorization_jwt) lets the call through
once the authorization server vouches for it, and each refusal is recorded with its reason.
"""
import pytest

from registrar.sip import bearer
from registrar.sip.bearer_auth import VerifyToken
from registrar.sip.reasons import Reason
from tests.test_bearer_sip import SERVER, TOKEN, verdict
from tests.test_proxy import CALLER, NOW, REALM, Harness, forked, invite


def harness(mode="bearer"):
    h = Harness()
    h.core.set_oauth({1: SERVER}, {"1001": bearer.ExtensionAuth("1001", mode, 1, frozenset(bearer.DEFAULT_METHODS))})
    return h


def call(h, text, now=NOW):
    """(messages sent, questions for the authorization server) for one INVITE."""
    actions = h.core.receive(text.replace("\r\n", "\n").replace("\n", "\r\n").encode(), CALLER, now)
    questions = [action for action in actions if isinstance(action, VerifyToken)]
    sent = h.run([action for action in actions if not isinstance(action, VerifyToken)], now)
    return sent, questions


def vouched(h, result):
    return h.run(h.core.token_verified(1, TOKEN, result, NOW), NOW)


def with_header(name):
    return invite().replace("Contact:", f"{name}: Bearer {TOKEN}\nContact:")


def test_a_bearer_only_caller_is_challenged_with_bearer_in_proxy_authenticate():
    sent, _ = call(harness(), invite())
    [(challenge, _)] = sent
    assert challenge.status == 407
    values = challenge.headers.get_all("Proxy-Authenticate")
    assert [value.split()[0] for value in values] == ["Bearer"]
    assert 'authz_server="https://auth.example/realms/sip"' in values[0]


def test_either_mode_offers_digest_then_bearer():
    sent, _ = call(harness("either"), invite())
    assert [value.split()[0] for value in sent[0][0].headers.get_all("Proxy-Authenticate")][-1] == "Bearer"
    assert "Digest" in sent[0][0].headers.get("Proxy-Authenticate")


@pytest.mark.parametrize("header", ["Proxy-Authorization", "Authorization"])
def test_a_vouched_token_lets_the_call_through_to_the_callee(header):
    h = harness()
    sent, questions = call(h, with_header(header))
    assert sent == [] and [q.token for q in questions] == [TOKEN]
    after = vouched(h, verdict())
    assert [m.status for m, _ in after if hasattr(m, "status")] == [100]
    assert h.lookups == ["1002"] and len(forked(after)) == 2
    for forwarded in forked(after).values():  # the token is ours to check, nobody else's to replay
        assert "Authorization" not in forwarded.headers and "Proxy-Authorization" not in forwarded.headers


def test_a_retransmission_while_the_server_is_asked_is_absorbed_and_the_call_starts_once():
    h = harness()
    call(h, with_header("Proxy-Authorization"))
    assert call(h, with_header("Proxy-Authorization")) == ([], [])
    after = vouched(h, verdict())
    assert [m.status for m, _ in after if hasattr(m, "status")] == [100]
    assert h.lookups == ["1002"]


def test_a_token_for_another_user_is_invalid_request_and_recorded():
    h = harness()
    call(h, with_header("Proxy-Authorization"))
    after = vouched(h, verdict(username="1002"))
    [(refusal, _)] = after
    assert refusal.status == 407 and 'error="invalid_request"' in refusal.headers.get("Proxy-Authenticate")
    [attempt] = h.attempts
    assert attempt.reason is Reason.TOKEN_USER_MISMATCH and attempt.method == "INVITE" and attempt.status == 407
    assert h.lookups == []


def test_an_inactive_token_is_invalid_token():
    h = harness()
    call(h, with_header("Authorization"))
    [(refusal, _)] = vouched(h, verdict(active=False))
    assert refusal.status == 407 and 'error="invalid_token"' in refusal.headers.get("Proxy-Authenticate")
    assert h.attempts[0].reason is Reason.TOKEN_INACTIVE


def test_the_authorization_server_failing_is_503_never_a_call():
    h = harness()
    call(h, with_header("Proxy-Authorization"))
    failed = bearer.Verdict(bearer.Failure.INTROSPECTION_TIMEOUT, "introspection failed: timeout")
    [(refusal, _)] = vouched(h, failed)
    assert refusal.status == 503 and refusal.headers.get("Retry-After")
    assert h.attempts[0].reason is Reason.AUTH_SERVER_FAILED and h.lookups == []


def test_a_password_from_a_bearer_only_caller_is_refused():
    h = harness()
    sent, _ = call(h, invite(proxy_auth=f'Digest username="1001", realm="{REALM}", nonce="x", uri="sip:1002@{REALM}", '
                                        'response="0"'))
    assert [m.status for m, _ in sent] == [407]
    assert h.attempts[0].reason is Reason.DIGEST_NOT_ALLOWED


def test_the_503_of_a_failed_authorization_server_is_retransmitted_until_acknowledged():
    h = harness()
    call(h, with_header("Proxy-Authorization"))
    failed = bearer.Verdict(bearer.Failure.INTROSPECTION_REFUSED, "introspection failed: refused")
    [(refusal, _)] = vouched(h, failed)
    assert refusal.status == 503
    again = h.tick(NOW + 0.6)  # Timer G: the INVITE transaction resends its final answer
    assert [m.status for m, _ in again] == [503]


def test_a_cancel_while_the_token_is_checked_ends_the_call_and_it_never_rings():
    h = harness()
    call(h, with_header("Proxy-Authorization"))
    cancel = invite().replace("INVITE sip:", "CANCEL sip:", 1).replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
    cancel = cancel.replace("Content-Type: application/sdp\nContent-Length: 5\n\nv=0\n", "Content-Length: 0\n\n")
    sent, _ = call(h, cancel)
    assert sorted(m.status for m, _ in sent) == [200, 487]
    vouched(h, verdict())
    assert h.lookups == []
