"""The trunk registration client (registrar/sip/uac.py) against a real registrar core.

Both sides are sans-IO, so the whole exchange runs in memory: our TrunkClient's
REGISTER goes into a RegistrarCore (the same engine runsip runs, with its own
credentials), the core's answer goes back to the client. Hand-written answers cover
what Regis as an upstream never says (407, 423 with a huge Min-Expires, 503 with
Retry-After, an unknown digest algorithm).
"""
import pytest

from registrar.sip.core import Source
from registrar.sip.message import parse_message
from registrar.sip.uac import SendRegister, Target, TrunkClient, TrunkConfig, TrunkReport, target_from_uri
from tests.test_core import REALM, Harness

NOW = 1_800_000_000.0
LOCAL = ("127.0.0.1", 5080)
TRUNK_SOURCE = Source("udp", "127.0.0.1", 5080)


def config(**overrides):
    values = dict(id=7, name="carrier", registrar=Target("sip", REALM, None, "udp"), proxy=None, aor_user="1001",
                  aor_domain=REALM, auth_username="1001", password="secret", expected_realm="", expires=600,
                  contact_user="1001", enabled=True)
    values.update(overrides)
    return TrunkConfig(**values)


def exchange(client, harness, actions, now=NOW):
    """Feed SendRegister actions to the upstream core until the client stops sending."""
    reports = []
    while actions:
        action = actions.pop(0)
        if isinstance(action, TrunkReport):
            reports.append(action)
            continue
        assert isinstance(action, SendRegister)
        for response, _ in harness.send(action.data.decode(), source=TRUNK_SOURCE, now=now):
            actions.extend(client.answered(action.branch, response, now))
    return reports


def test_registers_through_the_digest_challenge_and_schedules_a_refresh():
    harness = Harness()
    client = TrunkClient(config(), local=LOCAL, now=NOW)
    reports = exchange(client, harness, client.due(NOW))
    assert [r.state for r in reports] == ["registered"]
    report = reports[0]
    assert (report.status, report.granted, report.finished_exchange) == (200, 600, True)
    assert report.registered_until == NOW + 600
    assert NOW + 500 <= client.wake_at < NOW + 600
    stored = harness.store["1001"]
    assert [b.contact_uri for b in stored] == ["sip:1001@127.0.0.1:5080"]
    # The refresh, when due, registers again on the same Call-ID with a higher CSeq.
    refresh = client.due(client.wake_at)
    assert len(refresh) == 1 and b"Call-ID: " + client.call_id.encode() in refresh[0].data
    assert exchange(client, harness, refresh, now=client.wake_at)[0].state == "registered"


@pytest.mark.parametrize("algorithms", [("SHA-256", "MD5"), ("MD5",), ("SHA-512-256",)])
def test_answers_each_digest_algorithm(algorithms):
    from registrar.sip.policy import Policy

    harness = Harness(policy=Policy(digest_algorithms=algorithms))
    client = TrunkClient(config(), local=LOCAL, now=NOW)
    assert exchange(client, harness, client.due(NOW))[0].state == "registered"


def test_wrong_password_is_classified_as_bad_credentials_and_backs_off():
    harness = Harness()
    client = TrunkClient(config(password="wrong"), local=LOCAL, now=NOW, backoff_first=30)
    report, = exchange(client, harness, client.due(NOW))
    assert (report.state, report.cause, report.status) == ("failed", "bad_credentials", 401)
    assert "rejected the password of '1001'" in report.detail
    assert report.next_attempt_at == NOW + 30
    later = client.wake_at
    report, = exchange(client, harness, client.due(later), now=later)
    assert report.next_attempt_at == later + 60  # doubled


def test_backoff_is_capped():
    client = TrunkClient(config(), local=LOCAL, now=NOW, backoff_first=30, backoff_cap=100)
    delays = []
    now = NOW
    for _ in range(5):
        send, = client.due(now)
        report, = client.timed_out(send.branch, now)
        delays.append(report.next_attempt_at - now)
        assert report.cause == "timeout" and "no answer from" in report.detail
        now = client.wake_at
    assert delays == [30, 60, 100, 100, 100]


def test_realm_mismatch_is_refused_with_both_realms_named():
    harness = Harness()
    client = TrunkClient(config(expected_realm="pbx.example.com"), local=LOCAL, now=NOW)
    report, = exchange(client, harness, client.due(NOW))
    assert report.cause == "realm_mismatch"
    assert report.detail == (f"realms do not match: server asked for '{REALM}', trunk expects 'pbx.example.com'")
    assert harness.stored == 0


def respond(send: SendRegister, status, reason, *headers):
    request = parse_message(send.data)
    lines = [f"SIP/2.0 {status} {reason}", f"Via: {request.headers.get('Via')}", f"From: {request.headers.get('From')}",
             f"To: {request.headers.get('To')};tag=up", f"Call-ID: {request.call_id}",
             f"CSeq: {request.headers.get('CSeq')}", *headers, "Content-Length: 0"]
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())


def test_407_is_answered_with_proxy_authorization():
    client = TrunkClient(config(), local=LOCAL, now=NOW)
    first, = client.due(NOW)
    again, = client.answered(first.branch, respond(
        first, 407, "Proxy Authentication Required",
        'Proxy-Authenticate: Digest realm="proxy.example", nonce="abc", qop="auth", algorithm=MD5'), NOW)
    request = parse_message(again.data)
    authorization = request.headers.get("Proxy-Authorization")
    assert authorization.startswith('Digest username="1001", realm="proxy.example", nonce="abc"')
    assert "qop=auth" in authorization and "nc=00000001" in authorization
    assert request.cseq[0] == 2
    # The same nonce challenged again means the password is wrong.
    report, = client.answered(again.branch, respond(
        again, 407, "Proxy Authentication Required",
        'Proxy-Authenticate: Digest realm="proxy.example", nonce="abc", qop="auth", algorithm=MD5'), NOW)
    assert report.cause == "bad_credentials"


def test_423_raises_the_interval_once_then_registers():
    client = TrunkClient(config(expires=60), local=LOCAL, now=NOW)
    first, = client.due(NOW)
    retry, = client.answered(first.branch, respond(first, 423, "Interval Too Brief", "Min-Expires: 300"), NOW)
    assert b"Expires: 300" in retry.data
    report, = client.answered(retry.branch, respond(retry, 200, "OK", "Contact: <sip:1001@127.0.0.1:5080>;expires=300"),
                               NOW)
    assert (report.state, report.granted) == ("registered", 300)


def test_423_beyond_our_limit_is_a_failure_with_its_reason():
    client = TrunkClient(config(), local=LOCAL, now=NOW)
    first, = client.due(NOW)
    report, = client.answered(first.branch, respond(first, 423, "Interval Too Brief", "Min-Expires: 999999"), NOW)
    assert report.cause == "interval_too_brief" and "999999" in report.detail


def test_403_and_retry_after():
    client = TrunkClient(config(), local=LOCAL, now=NOW)
    first, = client.due(NOW)
    report, = client.answered(first.branch, respond(first, 403, "Forbidden"), NOW)
    assert (report.cause, report.status, report.phrase) == ("forbidden", 403, "Forbidden")
    second, = client.due(client.wake_at)
    report, = client.answered(second.branch, respond(second, 503, "Service Unavailable", "Retry-After: 120"),
                              client.wake_at)
    assert report.cause == "server_error"
    assert report.next_attempt_at == report.at + 120


def test_unknown_digest_algorithm_is_explained():
    client = TrunkClient(config(), local=LOCAL, now=NOW)
    first, = client.due(NOW)
    report, = client.answered(first.branch, respond(
        first, 401, "Unauthorized", 'WWW-Authenticate: Digest realm="x", nonce="n", algorithm=SHA-1'), NOW)
    assert report.cause == "unsupported_challenge" and "SHA-1" in report.detail


def test_granted_expiry_comes_from_our_contact_then_the_expires_header():
    client = TrunkClient(config(), local=LOCAL, now=NOW)
    first, = client.due(NOW)
    response = respond(first, 200, "OK", "Contact: <sip:other@192.0.2.1>;expires=30",
                       "Contact: <sip:1001@127.0.0.1:5080>;expires=120", "Expires: 900")
    assert client.answered(first.branch, response, NOW)[0].granted == 120
    second, = client.due(client.wake_at)
    assert client.answered(second.branch, respond(second, 200, "OK", "Expires: 900"), NOW)[0].granted == 900


def test_stop_unregisters_a_registered_trunk():
    harness = Harness()
    client = TrunkClient(config(), local=LOCAL, now=NOW)
    exchange(client, harness, client.due(NOW))
    assert harness.store["1001"]
    reports = exchange(client, harness, client.stop(NOW + 10), now=NOW + 10)
    assert reports[-1].state == "disabled" and client.finished
    assert harness.store["1001"] == []


def test_stale_answers_are_ignored():
    client = TrunkClient(config(), local=LOCAL, now=NOW)
    first, = client.due(NOW)
    assert client.answered("z9hG4bKsomeone-else", respond(first, 200, "OK"), NOW) == []
    assert client.timed_out("z9hG4bKsomeone-else", NOW) == []


def test_register_now_skips_the_backoff():
    client = TrunkClient(config(), local=LOCAL, now=NOW)
    first, = client.due(NOW)
    client.timed_out(first.branch, NOW)
    assert client.due(NOW + 1) == []
    assert len(client.register_now(NOW + 1)) == 1


@pytest.mark.parametrize("text, expected", [
    ("sip:pbx.example.com", Target("sip", "pbx.example.com", None, "udp")),
    ("sip:pbx.example.com:5070;transport=TCP", Target("sip", "pbx.example.com", 5070, "tcp")),
    ("sips:pbx.example.com", Target("sips", "pbx.example.com", None, "tls")),
    ("sip:[2001:db8::1]:5060", Target("sip", "2001:db8::1", 5060, "udp")),
])
def test_targets(text, expected):
    target = target_from_uri(text)
    assert target == expected
    assert target_from_uri(target.uri()) == target


@pytest.mark.parametrize("text", ["http://example.com", "sip:pbx.example.com;transport=sctp", "nonsense"])
def test_bad_targets(text):
    from registrar.sip.errors import SipError

    with pytest.raises(SipError):
        target_from_uri(text)



def test_a_proxy_407_then_a_registrar_401_are_both_answered():
    # RFC 3261 §22.3: the proxy's credentials go again with the request that answers the registrar.
    client = TrunkClient(config(), local=LOCAL, now=NOW)
    first, = client.due(NOW)
    second, = client.answered(first.branch, respond(
        first, 407, "Proxy Authentication Required",
        'Proxy-Authenticate: Digest realm="proxy.example", nonce="p1", qop="auth", algorithm=MD5'), NOW)
    third, = client.answered(second.branch, respond(
        second, 401, "Unauthorized", 'WWW-Authenticate: Digest realm="registrar.example", nonce="r1", qop="auth"'),
        NOW)
    request = parse_message(third.data)
    assert 'realm="proxy.example"' in request.headers.get("Proxy-Authorization")
    assert "nc=00000002" in request.headers.get("Proxy-Authorization")  # the same nonce, counted on
    assert 'realm="registrar.example"' in request.headers.get("Authorization")
    assert "nc=00000001" in request.headers.get("Authorization")
    report, = client.answered(third.branch, respond(third, 200, "OK", "Expires: 600"), NOW)
    assert report.state == "registered"


def test_a_sips_registrar_gets_a_sips_contact():
    client = TrunkClient(config(registrar=Target("sips", REALM, None, "tls")), local=LOCAL, now=NOW)
    send, = client.due(NOW)
    contact = parse_message(send.data).headers.get("Contact")
    assert contact == "<sips:1001@127.0.0.1:5080>"
