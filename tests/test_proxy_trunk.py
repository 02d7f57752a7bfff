"""Calls out through a trunk, without sockets or a database: the proxy answers the trunk's
401/407 with the trunk's credentials (once per challenge, CSeq one higher), gives the
caller back its own From, To and CSeq, keeps the caller's later requests in step with
the trunk's CSeq, and reports the call's progress for its record.
"""
from registrar.sip import digest
from registrar.sip.core import Source
from registrar.sip.message import parse_message
from registrar.sip.proxy import CallRoute, CallTarget, TrunkLeg
from tests.test_proxy import CALLER, REALM, Harness, answer, authenticated_invite

TRUNK = Source("udp", "198.51.100.5", 5070)
LEG = TrunkLeg("carrier", "sip:+33612345678@198.51.100.5:5070", "sip:regis-out@carrier.test", TRUNK,
               "regis-out", "trunk-secret")


class TrunkHarness(Harness):
    def __init__(self, leg=LEG):
        super().__init__()
        self.leg = leg
        self.asked = []

    def route_for(self, lookup):
        self.asked.append(lookup)
        return CallRoute(trunk=self.leg)


def challenge(request, status=407, realm="carrier.test", nonce="n1", stale=False):
    header = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    value = f'Digest realm="{realm}", nonce="{nonce}", qop="auth", algorithm=MD5' + (", stale=true" if stale else "")
    text = answer(request, status, "Proxy Authentication Required" if status == 407 else "Unauthorized", "trunk")
    return text.replace("Content-Length: 0", f"{header}: {value}\nContent-Length: 0")


def requests_to(sent, destination, method="INVITE"):
    return [m for m, d in sent if d == destination and getattr(m, "method", None) == method]


def outbound_invite(harness):
    sent = authenticated_invite(harness, callee="0612345678")
    [first] = requests_to(sent, TRUNK)
    return sent, first


def test_the_call_goes_to_the_trunk_as_the_trunk_s_identity():
    harness = TrunkHarness()
    sent, first = outbound_invite(harness)
    [asked] = harness.asked
    assert (asked.user, asked.caller, asked.call_id, asked.caller_tag) == ("0612345678", "1001", "call-1@caller",
                                                                          "caller-tag")
    assert str(first.uri) == "sip:+33612345678@198.51.100.5:5070"
    assert str(first.from_.uri) == "sip:regis-out@carrier.test" and first.from_.tag == "caller-tag"
    assert str(first.to.uri) == "sip:+33612345678@198.51.100.5:5070" and first.to.tag is None
    assert "Proxy-Authorization" not in first.headers  # the caller's credentials stay with us
    assert first.cseq == (2, "INVITE") and first.headers.get_all("Record-Route")


def test_a_407_is_answered_once_with_the_trunk_s_credentials_and_a_higher_cseq():
    harness = TrunkHarness()
    _, first = outbound_invite(harness)
    sent = harness.feed(challenge(first), TRUNK)
    ack = requests_to(sent, TRUNK, "ACK")
    [retry] = requests_to(sent, TRUNK)
    assert len(ack) == 1 and ack[0].cseq == (2, "ACK")  # the 407 is acknowledged hop by hop
    assert not [m for m, d in sent if d == CALLER]  # the caller never sees the trunk's challenge
    assert retry.cseq == (3, "INVITE") and retry.top_via.branch != first.top_via.branch
    assert retry.call_id == first.call_id and retry.from_.tag == first.from_.tag
    credentials = digest.parse_authorization(retry.headers.get("Proxy-Authorization"))
    assert credentials.username == "regis-out" and credentials.realm == "carrier.test"
    ha1 = digest.compute_ha1("regis-out", "carrier.test", "trunk-secret", "MD5")
    assert credentials.response == digest.expected_response(ha1, "INVITE", credentials)
    assert credentials.nc == "00000001" and credentials.uri == "sip:+33612345678@198.51.100.5:5070"


def test_the_caller_gets_its_own_transaction_back_and_its_dialog_stays_in_step():
    harness = TrunkHarness()
    _, first = outbound_invite(harness)
    [retry] = requests_to(harness.feed(challenge(first), TRUNK), TRUNK)
    ringing = harness.feed(answer(retry, 180, "Ringing", "trunk"), TRUNK)
    [(up, where)] = ringing
    assert where == CALLER and up.status == 180 and up.cseq == (2, "INVITE")
    assert str(up.from_.uri) == f"sip:1001@{REALM}" and str(up.to.uri) == f"sip:0612345678@{REALM}"
    assert up.to.tag == "trunk"
    ok = harness.feed(answer(retry, 200, "OK", "trunk", contact="<sip:gw@198.51.100.5:5070>"), TRUNK)
    [(up, where)] = [(m, d) for m, d in ok if d == CALLER]
    assert up.status == 200 and up.cseq == (2, "INVITE") and up.to.tag == "trunk"
    assert [(p.state, p.status) for p in harness.progress] == [("ringing", 180), ("answered", 200)]
    dialog = (f"From: <sip:1001@{REALM}>;tag=caller-tag\nTo: <sip:0612345678@{REALM}>;tag=trunk\n"
              "Call-ID: call-1@caller\nRoute: <sip:192.0.2.1:5060;lr>\nMax-Forwards: 70\nContent-Length: 0\n\n")
    ack = harness.feed("ACK sip:gw@198.51.100.5:5070 SIP/2.0\n"
                       "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-ack;rport\nCSeq: 2 ACK\n" + dialog, CALLER)
    assert [(m.method, m.cseq[0], d) for m, d in ack] == [("ACK", 3, TRUNK)]  # the INVITE's CSeq as the trunk saw it
    bye = harness.feed("BYE sip:gw@198.51.100.5:5070 SIP/2.0\n"
                       "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-bye;rport\nCSeq: 3 BYE\n" + dialog, CALLER)
    assert [(m.method, m.cseq[0], d) for m, d in bye] == [("BYE", 4, TRUNK)]
    for request in (ack[0][0], bye[0][0]):  # the dialog as the trunk knows it (§12.2.1.1)
        assert str(request.from_.uri) == "sip:regis-out@carrier.test" and request.from_.tag == "caller-tag"
        assert str(request.to.uri) == "sip:+33612345678@198.51.100.5:5070" and request.to.tag == "trunk"
    assert harness.progress[-1].state == "ended" and harness.progress[-1].bye_from_tag == "caller-tag"
    done = harness.feed(answer(bye[0][0], 200, "OK", "trunk"), TRUNK)
    assert [(m.status, m.cseq, d) for m, d in done] == [(200, (3, "BYE"), CALLER)]
    assert str(done[0][0].from_.uri) == f"sip:1001@{REALM}" and str(done[0][0].to.uri) == f"sip:0612345678@{REALM}"


def test_a_bye_from_the_trunk_reaches_the_caller_in_the_caller_s_terms():
    harness = TrunkHarness()
    _, first = outbound_invite(harness)
    harness.feed(answer(first, 200, "OK", "trunk", contact="<sip:gw@198.51.100.5:5070>"), TRUNK)
    bye = harness.feed("BYE sip:1001@192.0.2.10:5062 SIP/2.0\n"
                       "Via: SIP/2.0/UDP 198.51.100.5:5070;branch=z9hG4bK-tbye;rport\n"
                       "From: <sip:+33612345678@198.51.100.5:5070>;tag=trunk\n"
                       "To: <sip:regis-out@carrier.test>;tag=caller-tag\nCall-ID: call-1@caller\nCSeq: 7 BYE\n"
                       "Route: <sip:192.0.2.1:5060;lr>\nMax-Forwards: 70\nContent-Length: 0\n\n", TRUNK)
    [(down, where)] = bye
    assert where == CALLER and down.method == "BYE" and down.cseq == (7, "BYE")
    assert str(down.from_.uri) == f"sip:0612345678@{REALM}" and down.from_.tag == "trunk"
    assert str(down.to.uri) == f"sip:1001@{REALM}" and down.to.tag == "caller-tag"
    assert harness.progress[-1].bye_from_tag == "trunk"
    done = harness.feed(answer(down, 200, "OK", "caller-tag"), CALLER)
    [(up, where)] = done
    assert where == TRUNK and str(up.from_.uri) == "sip:+33612345678@198.51.100.5:5070" and up.cseq == (7, "BYE")


def test_a_second_challenge_fails_the_call_with_the_reason():
    harness = TrunkHarness()
    _, first = outbound_invite(harness)
    [retry] = requests_to(harness.feed(challenge(first), TRUNK), TRUNK)
    sent = harness.feed(challenge(retry, nonce="n2"), TRUNK)
    assert not requests_to(sent, TRUNK)  # no third INVITE
    [final] = [m for m, d in sent if d == CALLER]
    assert final.status == 502 and final.cseq == (2, "INVITE")
    [ended] = harness.progress
    assert ended.state == "ended" and ended.status == 502
    assert "trunk 'carrier' challenged again (407)" in ended.reason and "'regis-out'" in ended.reason


def test_a_stale_nonce_is_answered_again():
    harness = TrunkHarness()
    _, first = outbound_invite(harness)
    [retry] = requests_to(harness.feed(challenge(first), TRUNK), TRUNK)
    [again] = requests_to(harness.feed(challenge(retry, nonce="n2", stale=True), TRUNK), TRUNK)
    assert again.cseq == (4, "INVITE")
    assert digest.parse_authorization(again.headers.get("Proxy-Authorization")).nonce == "n2"


def test_a_proxy_s_407_then_the_trunk_s_401_are_both_answered():
    harness = TrunkHarness()
    _, first = outbound_invite(harness)
    [retry] = requests_to(harness.feed(challenge(first, 407, realm="edge.test", nonce="p1"), TRUNK), TRUNK)
    [third] = requests_to(harness.feed(challenge(retry, 401, realm="carrier.test", nonce="w1"), TRUNK), TRUNK)
    proxy_answer = digest.parse_authorization(third.headers.get("Proxy-Authorization"))
    registrar_answer = digest.parse_authorization(third.headers.get("Authorization"))
    assert (proxy_answer.realm, proxy_answer.nonce, proxy_answer.nc) == ("edge.test", "p1", "00000002")
    assert (registrar_answer.realm, registrar_answer.nc) == ("carrier.test", "00000001")
    assert third.cseq == (4, "INVITE")


def test_a_realm_other_than_the_expected_one_is_refused_in_words():
    leg = TrunkLeg(**{**LEG.__dict__, "expected_realm": "pbx.example.com"})
    harness = TrunkHarness(leg)
    _, first = outbound_invite(harness)
    sent = harness.feed(challenge(first, realm="asterisk"), TRUNK)
    assert not requests_to(sent, TRUNK)
    assert [m.status for m, d in sent if d == CALLER] == [502]
    assert harness.progress[-1].reason == ("realms do not match: server asked for 'asterisk', trunk 'carrier' "
                                           "expects 'pbx.example.com'")


def test_an_outbound_proxy_is_a_route_and_the_caller_cancel_reaches_the_trunk():
    leg = TrunkLeg(**{**LEG.__dict__, "route": "<sip:edge.carrier.test;lr>"})
    harness = TrunkHarness(leg)
    _, first = outbound_invite(harness)
    assert first.headers.get_all("Route") == ["<sip:edge.carrier.test;lr>"]
    harness.feed(answer(first, 180, "Ringing", "trunk"), TRUNK)
    cancel = harness.feed(f"CANCEL sip:0612345678@{REALM} SIP/2.0\n"
                          "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-call-2;rport\n"
                          f"From: <sip:1001@{REALM}>;tag=caller-tag\nTo: <sip:0612345678@{REALM}>\n"
                          "Call-ID: call-1@caller\nCSeq: 2 CANCEL\nMax-Forwards: 70\nContent-Length: 0\n\n", CALLER)
    [downstream] = requests_to(cancel, TRUNK, "CANCEL")
    assert downstream.top_via.branch == first.top_via.branch and downstream.cseq == (2, "CANCEL")
    assert sorted(m.status for m, d in cancel if d == CALLER) == [200, 487]
    assert harness.progress[-1].reason == "cancelled by the caller"


def test_a_refused_route_answers_the_caller_without_a_progress_report():
    harness = Harness()
    harness.targets["0800"] = CallRoute(refusal=(403, "Forbidden", "1001 may call emergency numbers only"))
    sent = authenticated_invite(harness, callee="0800")
    assert [m.status for m, _ in sent] == [100, 403]


def test_the_alert_message_is_plain_text_to_the_binding_through_its_path():
    harness = Harness()
    target = CallTarget("sip:1099@10.0.0.99:5080", Source("udp", "192.0.2.99", 5080), 1.0, "udp",
                        ("<sip:edge.example;lr>",))
    data = harness.core.proxy.instant_message(target, "Emergency call from 1001 (Reception) at 192.0.2.10 to 112",
                                              "z9hG4bK-alert")
    message = parse_message(data)
    assert message.method == "MESSAGE" and str(message.uri) == "sip:1099@10.0.0.99:5080"
    assert message.headers.get("Content-Type").startswith("text/plain")
    assert message.headers.get_all("Route") == ["<sip:edge.example;lr>"]
    assert message.body.decode() == "Emergency call from 1001 (Reception) at 192.0.2.10 to 112"
    assert message.from_.tag and message.cseq == (1, "MESSAGE") and message.top_via.branch == "z9hG4bK-alert"
