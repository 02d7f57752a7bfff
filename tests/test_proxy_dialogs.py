"""Dialog details of the proxy a review found wanting, without sockets: what leaves with a
forwarded INVITE (never the caller's credentials or claimed identity), proxies that
record-route beside us, double Record-Route across transports (RFC 5658), re-INVITEs in a
trunk dialog, the trunk reached only within its calls, and every INVITE transaction ending
with a final answer and a closed call record — even on a malformed header, a failed route,
a CANCEL during the lookup, or a branch Timer C cancelled.
"""
from registrar.sip.core import Source
from registrar.sip.invite import TIMER_C
from registrar.sip.proxy import CallRoute, LookupCallee, TrunkLeg
from tests.test_proxy import (CALLER, NOW, PHONE_A, REALM, US, Harness, answer, authenticated_invite, forked,
                              invite)
from tests.test_proxy_trunk import LEG, TRUNK, TrunkHarness, challenge, outbound_invite, requests_to


def test_the_caller_s_credentials_and_claimed_identity_stay_with_us():
    harness = Harness()
    harness.targets["1002"] = harness.targets["1002"][:1]
    sent = authenticated_invite(harness)
    [forwarded] = forked(sent).values()
    assert "Proxy-Authorization" not in forwarded.headers and "Authorization" not in forwarded.headers
    assert forwarded.headers.get("P-Asserted-Identity") == f"<sip:1001@{REALM}>"


def test_a_claimed_identity_is_replaced_by_the_authenticated_one():
    harness = Harness()
    harness.targets["1002"] = harness.targets["1002"][:1]
    first = harness.feed(invite(extra="P-Asserted-Identity: <sip:911@evil>\nAuthorization: Bearer abc"), CALLER)
    assert [m.status for m, _ in first] == [407]
    from tests.e2e import authorization, parse_challenge
    value = authorization(parse_challenge(first[0][0].headers.get("Proxy-Authenticate")), username="1001",
                          password="secret", method="INVITE", uri=f"sip:1002@{REALM}")
    sent = harness.feed(invite(branch="z9hG4bK-call-2", cseq=2, proxy_auth=value,
                               extra="P-Asserted-Identity: <sip:911@evil>\nAuthorization: Bearer abc"), CALLER)
    [forwarded] = forked(sent).values()
    assert forwarded.headers.get_all("P-Asserted-Identity") == [f"<sip:1001@{REALM}>"]
    assert "Authorization" not in forwarded.headers


def test_nothing_of_the_caller_s_identity_goes_to_a_trunk():
    harness = TrunkHarness()
    _, first = outbound_invite(harness)
    assert "P-Asserted-Identity" not in first.headers and "Authorization" not in first.headers


def test_a_carrier_edge_that_record_routes_is_reached_by_the_caller_s_ack_and_bye():
    harness = TrunkHarness()
    _, first = outbound_invite(harness)
    ok = answer(first, 200, "OK", "trunk", contact="<sip:gw@198.51.100.9:5080>")
    ok = ok.replace("Record-Route: ", "Record-Route: <sip:edge.carrier.test;lr>, ", 1)
    harness.feed(ok, TRUNK)
    dialog = (f"From: <sip:1001@{REALM}>;tag=caller-tag\nTo: <sip:0612345678@{REALM}>;tag=trunk\n"
              "Call-ID: call-1@caller\nRoute: <sip:192.0.2.1:5060;lr>, <sip:edge.carrier.test;lr>\n"
              "Max-Forwards: 70\nContent-Length: 0\n\n")
    ack = harness.feed("ACK sip:gw@198.51.100.9:5080 SIP/2.0\n"
                       "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-ack;rport\nCSeq: 2 ACK\n" + dialog, CALLER)
    [(sent, where)] = ack
    assert where == TRUNK and sent.headers.get_all("Route") == ["<sip:edge.carrier.test;lr>"]


def test_different_transports_on_the_two_sides_get_a_double_record_route():
    harness = Harness()
    tcp_phone = Source("tcp", "192.0.2.20", 5064)
    from registrar.sip.proxy import CallTarget
    harness.core.proxy.set_listeners([("udp", *US), ("tcp", *US)])
    harness.targets["1002"] = [CallTarget("sip:1002@10.0.0.20:5064;transport=tcp", tcp_phone, 1.0, "tcp")]
    [forwarded] = forked(authenticated_invite(harness)).values()
    assert forwarded.headers.get_all("Record-Route") == ["<sip:192.0.2.1:5060;transport=tcp;lr>",
                                                         "<sip:192.0.2.1:5060;lr>"]
    # Both of ours are popped from an in-dialog request's Route set.
    harness.feed(answer(forwarded, 200, "OK", "a", contact="<sip:1002@10.0.0.20:5064;transport=tcp>"), tcp_phone)
    bye = harness.feed("BYE sip:1002@10.0.0.20:5064;transport=tcp SIP/2.0\n"
                       "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-bye;rport\n"
                       f"From: <sip:1001@{REALM}>;tag=caller-tag\nTo: <sip:1002@{REALM}>;tag=a\n"
                       "Call-ID: call-1@caller\nCSeq: 3 BYE\n"
                       "Route: <sip:192.0.2.1:5060;lr>, <sip:192.0.2.1:5060;transport=tcp;lr>\n"
                       "Max-Forwards: 70\nContent-Length: 0\n\n", CALLER)
    [(sent, where)] = bye
    assert where == tcp_phone and "Route" not in sent.headers


def test_a_re_invite_in_a_trunk_dialog_comes_back_in_the_caller_s_terms():
    harness = TrunkHarness()
    _, first = outbound_invite(harness)
    [retry] = requests_to(harness.feed(challenge(first), TRUNK), TRUNK)
    harness.feed(answer(retry, 200, "OK", "trunk", contact="<sip:gw@198.51.100.5:5070>"), TRUNK)
    reinvite = harness.feed("INVITE sip:gw@198.51.100.5:5070 SIP/2.0\n"
                            "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-re;rport\n"
                            f"From: <sip:1001@{REALM}>;tag=caller-tag\nTo: <sip:0612345678@{REALM}>;tag=trunk\n"
                            "Call-ID: call-1@caller\nCSeq: 4 INVITE\nRoute: <sip:192.0.2.1:5060;lr>\n"
                            "Max-Forwards: 70\nContent-Length: 0\n\n", CALLER)
    [sent] = requests_to(reinvite, TRUNK)
    assert sent.cseq == (5, "INVITE") and str(sent.from_.uri) == "sip:regis-out@carrier.test"
    back = harness.feed(answer(sent, 200, "OK", "trunk"), TRUNK)
    [(up, where)] = [(m, d) for m, d in back if d == CALLER]
    assert up.status == 200 and up.cseq == (4, "INVITE") and str(up.from_.uri) == f"sip:1001@{REALM}"


def test_the_trunk_is_reached_only_within_a_call_with_it():
    harness = TrunkHarness()
    _, first = outbound_invite(harness)
    harness.feed(answer(first, 200, "OK", "trunk", contact="<sip:gw@198.51.100.5:5070>"), TRUNK)
    forged = harness.feed("MESSAGE sip:gw@198.51.100.5:5070 SIP/2.0\n"
                          "Via: SIP/2.0/UDP 192.0.2.66:5062;branch=z9hG4bK-x;rport\n"
                          f"From: <sip:anyone@{REALM}>;tag=x\nTo: <sip:gw@198.51.100.5>;tag=y\n"
                          "Call-ID: other@x\nCSeq: 1 MESSAGE\nRoute: <sip:192.0.2.1:5060;lr>\n"
                          "Max-Forwards: 70\nContent-Length: 0\n\n", Source("udp", "192.0.2.66", 5062))
    assert not requests_to(forged, TRUNK, "MESSAGE")
    assert [m.status for m, _ in forged] == [404]


def test_a_trunk_that_calls_every_answer_stale_is_answered_twice_then_refused():
    harness = TrunkHarness()
    _, request = outbound_invite(harness)
    [request] = requests_to(harness.feed(challenge(request), TRUNK), TRUNK)
    for nonce in ("s1", "s2"):
        [request] = requests_to(harness.feed(challenge(request, nonce=nonce, stale=True), TRUNK), TRUNK)
    sent = harness.feed(challenge(request, nonce="s3", stale=True), TRUNK)
    assert not requests_to(sent, TRUNK) and [m.status for m, d in sent if d == CALLER] == [502]


def test_a_malformed_header_ends_the_invite_transaction():
    harness = Harness()
    sent = harness.feed(invite().replace("Max-Forwards: 70", "Max-Forwards: abc"), CALLER)
    assert [m.status for m, _ in sent] == [400]
    harness.tick(NOW + 64 * 0.5 + 1)  # Timer H: no ACK came
    assert harness.core.proxy._servers == {}


def test_a_route_that_cannot_be_used_still_answers_the_caller_and_ends_the_record():
    broken = TrunkLeg(**{**LEG.__dict__, "request_uri": "sip:0\u0666\u0661@198.51.100.5"})
    harness = TrunkHarness(broken)
    sent = authenticated_invite(harness, callee="0612345678")
    assert [m.status for m, d in sent if d == CALLER] == [100, 500]
    assert harness.progress[-1].state == "ended" and harness.progress[-1].status == 500


class SlowLookup(Harness):
    """The database has not answered yet: the lookup waits."""

    def __init__(self):
        super().__init__()
        self.pending = []

    def run(self, actions, now):
        self.pending += [action for action in actions if isinstance(action, LookupCallee)]
        return super().run([action for action in actions if not isinstance(action, LookupCallee)], now)


def test_a_cancel_while_the_database_decides_ends_the_call_record():
    harness = SlowLookup()
    authenticated_invite(harness)
    [pending] = harness.pending
    cancelled = harness.feed(f"CANCEL sip:1002@{REALM} SIP/2.0\n"
                             "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-call-2;rport\n"
                             f"From: <sip:1001@{REALM}>;tag=caller-tag\nTo: <sip:1002@{REALM}>\n"
                             "Call-ID: call-1@caller\nCSeq: 2 CANCEL\nMax-Forwards: 70\nContent-Length: 0\n\n", CALLER)
    assert sorted(m.status for m, _ in cancelled) == [200, 487]
    assert [(p.state, p.status, p.reason) for p in harness.progress] == [("ended", 487, "cancelled by the caller")]
    assert harness.run(harness.core.callee_found(pending.ticket, CallRoute(), NOW), NOW) == []


def test_the_487_of_a_branch_timer_c_cancelled_is_acknowledged():
    harness = Harness()
    harness.targets["1002"] = harness.targets["1002"][:1]
    [branch] = forked(authenticated_invite(harness)).values()
    harness.feed(answer(branch, 180, "Ringing", "a"), PHONE_A)
    cancel = [m for m, d in harness.tick(NOW + TIMER_C + 1) if getattr(m, "method", None) == "CANCEL"]
    assert len(cancel) == 1
    harness.feed(answer(cancel[0], 200, "OK", "a"), PHONE_A)
    acks = harness.feed(answer(branch, 487, "Request Terminated", "a"), PHONE_A)
    assert [(m.method, m.cseq, d) for m, d in acks] == [("ACK", (2, "ACK"), PHONE_A)]


def test_a_trunk_that_challenges_the_bye_is_answered_with_the_trunk_s_credentials():
    harness = TrunkHarness()
    _, first = outbound_invite(harness)
    harness.feed(answer(first, 200, "OK", "trunk", contact="<sip:gw@198.51.100.5:5070>"), TRUNK)
    bye = harness.feed("BYE sip:gw@198.51.100.5:5070 SIP/2.0\n"
                       "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-bye;rport\n"
                       f"From: <sip:1001@{REALM}>;tag=caller-tag\nTo: <sip:0612345678@{REALM}>;tag=trunk\n"
                       "Call-ID: call-1@caller\nCSeq: 3 BYE\nRoute: <sip:192.0.2.1:5060;lr>\n"
                       "Proxy-Authorization: Digest username=\"1001\", realm=\"regis.test\", nonce=\"x\", "
                       "uri=\"sip:gw@198.51.100.5:5070\", response=\"0\"\n"
                       "Max-Forwards: 70\nContent-Length: 0\n\n", CALLER)
    [sent] = requests_to(bye, TRUNK, "BYE")
    assert "Proxy-Authorization" not in sent.headers  # the caller's own credentials stay with us
    again = harness.feed(challenge(sent), TRUNK)
    assert not [m for m, d in again if d == CALLER]  # the caller never sees the carrier's challenge
    [retry] = requests_to(again, TRUNK, "BYE")
    assert retry.cseq == (sent.cseq[0] + 1, "BYE") and "regis-out" in retry.headers.get("Proxy-Authorization")
    done = harness.feed(answer(retry, 200, "OK", "trunk"), TRUNK)
    assert [(m.status, m.cseq, d) for m, d in done] == [(200, (3, "BYE"), CALLER)]


def test_a_database_that_never_answers_gets_the_caller_a_500_not_endless_ringing():
    harness = SlowLookup()
    sent = authenticated_invite(harness)
    assert [m.status for m, _ in sent] == [100] and harness.pending
    assert harness.core.next_deadline() <= NOW + 32
    late = harness.tick(NOW + 33)
    assert [m.status for m, _ in late] == [500]
    assert harness.progress[-1].reason == "the database did not answer in time"
