"""Calls through the stateful proxy without sockets or a database: bytes in, actions out.

The core plays Regis with two callable extensions; the callee lookup is answered from a
dict of targets, as the worker would after reading the bindings.
"""
import pytest

from registrar.sip import digest
from registrar.sip.core import Credentials, RecordAttempt, RegistrarCore, SendMessage, Source
from registrar.sip.message import parse_message
from registrar.sip.proxy import CallProgress, CallRoute, CallTarget, LookupCallee, LookupContact
from registrar.sip.reasons import Reason
from tests.e2e import authorization, parse_challenge

REALM = "regis.test"
NOW = 1_800_000_000.0
US = ("192.0.2.1", 5060)
CALLER = Source("udp", "192.0.2.10", 5062)
PHONE_A = Source("udp", "192.0.2.20", 5064)
PHONE_B = Source("udp", "192.0.2.21", 5066)
T1 = 0.5


def ha1s(user, password):
    return {alg: digest.compute_ha1(user, REALM, password, alg) for alg in ("MD5", "SHA-256", "SHA-512-256")}


class Harness:
    def __init__(self):
        self.extensions = {
            "1001": Credentials("1001", True, ha1s("1001", "secret"), 3),
            "1002": Credentials("1002", True, ha1s("1002", "secret"), 3),
            "1003": Credentials("1003", True, ha1s("1003", "secret"), 3),
        }
        self.targets = {"1002": [CallTarget("sip:1002@10.0.0.20:5064", PHONE_A, 0.5),
                                 CallTarget("sip:1002@10.0.0.21:5066", PHONE_B, 1.0)]}
        self.core = RegistrarCore(realm=REALM, secret=b"k" * 32, credentials=self.extensions.get)
        self.core.proxy.set_listeners([("udp", *US)])
        self.attempts = []
        self.lookups = []
        self.bindings_by_contact = {}
        self.progress = []

    def route_for(self, lookup: LookupCallee):
        """What the database would answer (registrar.calls.start_call) for this call."""
        if lookup.user not in self.extensions and lookup.user not in self.targets:
            return CallRoute(refusal=(404, "Not Found", f"no extension or dial rule matches {lookup.user}"))
        return self.targets.get(lookup.user, [])

    def feed(self, text, source, now=NOW):
        data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode()
        return self.run(self.core.receive(data, source, now), now)

    def tick(self, now):
        return self.run(self.core.tick(now), now)

    def run(self, actions, now):
        sent = []
        while actions:
            action = actions.pop(0)
            if isinstance(action, SendMessage):
                sent.append((parse_message(action.data), action.destination))
            elif isinstance(action, RecordAttempt):
                self.attempts.append(action.attempt)
            elif isinstance(action, CallProgress):
                self.progress.append(action)
            elif isinstance(action, LookupCallee):
                self.lookups.append(action.user)
                actions.extend(self.core.callee_found(action.ticket, self.route_for(action), now))
            elif isinstance(action, LookupContact):
                self.lookups.append(action.contact_uri)
                found = self.bindings_by_contact.get(action.contact_uri)
                actions.extend(self.core.contact_found(action.ticket, found, now))
        return sent


def invite(callee="1002", branch="z9hG4bK-call-1", cseq=1, proxy_auth=None, max_forwards=70, extra=""):
    lines = [f"INVITE sip:{callee}@{REALM} SIP/2.0",
             f"Via: SIP/2.0/UDP 192.0.2.10:5062;branch={branch};rport",
             f"Max-Forwards: {max_forwards}",
             f"From: <sip:1001@{REALM}>;tag=caller-tag",
             f"To: <sip:{callee}@{REALM}>",
             "Call-ID: call-1@caller",
             f"CSeq: {cseq} INVITE",
             "Contact: <sip:1001@192.0.2.10:5062>"]
    if proxy_auth:
        lines.append(f"Proxy-Authorization: {proxy_auth}")
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\nContent-Type: application/sdp\nContent-Length: 5\n\nv=0\n"


def authenticated_invite(harness, callee="1002", password="secret", now=NOW):
    sent = harness.feed(invite(callee), CALLER, now)
    assert [m.status for m, _ in sent] == [407]
    challenge = parse_challenge(sent[0][0].headers.get("Proxy-Authenticate"))
    value = authorization(challenge, username="1001", password=password, method="INVITE",
                          uri=f"sip:{callee}@{REALM}")
    harness.feed(f"ACK sip:{callee}@{REALM} SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-call-1;rport\n"
                 f"From: <sip:1001@{REALM}>;tag=caller-tag\nTo: {sent[0][0].headers.get('To')}\n"
                 "Call-ID: call-1@caller\nCSeq: 1 ACK\nMax-Forwards: 70\nContent-Length: 0\n\n", CALLER, now)
    return harness.feed(invite(callee, branch="z9hG4bK-call-2", cseq=2, proxy_auth=value), CALLER, now)


def answer(request, status, phrase, to_tag="callee", contact=None):
    """A callee's response to a forwarded request, as bytes text."""
    lines = [f"SIP/2.0 {status} {phrase}"]
    lines += [f"Via: {via}" for via in request.headers.get_all("Via")]
    lines += [f"Record-Route: {rr}" for rr in request.headers.get_all("Record-Route")]
    lines += [f"From: {request.headers.get('From')}", f"To: {request.headers.get('To')};tag={to_tag}",
              f"Call-ID: {request.call_id}", f"CSeq: {request.headers.get('CSeq')}"]
    if contact:
        lines.append(f"Contact: {contact}")
    return "\n".join(lines) + "\nContent-Length: 0\n\n"


def forked(sent):
    return {destination: message for message, destination in sent if not hasattr(message, "status")}


def test_invite_without_credentials_is_challenged_with_407_and_a_wrong_password_is_recorded():
    harness = Harness()
    sent = authenticated_invite(harness, password="wrong")
    assert [m.status for m, _ in sent] == [407]
    assert sent[0][0].headers.get("Proxy-Authenticate").startswith("Digest ")
    assert sent[0][1] == CALLER
    [attempt] = harness.attempts
    assert attempt.reason is Reason.WRONG_PASSWORD and attempt.status == 407
    assert attempt.method == "INVITE" and attempt.extension_number == "1001"
    assert harness.lookups == []


def test_unknown_callee_gets_404_and_unregistered_callee_480():
    harness = Harness()
    sent = authenticated_invite(harness, callee="4444")
    assert [m.status for m, _ in sent] == [100, 404]
    harness = Harness()
    sent = authenticated_invite(harness, callee="1003")
    assert [m.status for m, _ in sent] == [100, 480]
    assert harness.lookups == ["1003"]


def test_max_forwards_zero_is_483():
    harness = Harness()
    sent = harness.feed(invite(max_forwards=0), CALLER)
    assert [m.status for m, _ in sent] == [483]


def test_fork_to_every_binding_higher_q_first_with_our_via_and_record_route():
    harness = Harness()
    sent = authenticated_invite(harness)
    assert sent[0][0].status == 100
    requests = [(m, d) for m, d in sent[1:]]
    assert [d for _, d in requests] == [PHONE_B, PHONE_A]  # q=1.0 before q=0.5
    for request, _ in requests:
        assert request.method == "INVITE"
        assert request.top_via.sent_by == "192.0.2.1:5060"
        assert request.vias[1].param("received") == "192.0.2.10" and request.vias[1].param("rport") == "5062"
        assert request.headers.get("Record-Route") == "<sip:192.0.2.1:5060;lr>"
        assert request.headers.get("Max-Forwards") == "69"
        assert "Proxy-Authorization" not in request.headers
        assert request.body == b"v=0\r\n"
    assert str(requests[0][0].uri) == "sip:1002@10.0.0.21:5066"
    assert requests[0][0].top_via.branch != requests[1][0].top_via.branch


def test_first_2xx_wins_and_the_other_branch_is_cancelled():
    harness = Harness()
    branches = forked(authenticated_invite(harness))
    ringing = harness.feed(answer(branches[PHONE_A], 180, "Ringing", "a"), PHONE_A)
    assert [(m.status, d) for m, d in ringing] == [(180, CALLER)]
    assert len(ringing[0][0].vias) == 1  # our Via removed
    harness.feed(answer(branches[PHONE_B], 180, "Ringing", "b"), PHONE_B)
    ok = harness.feed(answer(branches[PHONE_A], 200, "OK", "a", contact="<sip:1002@10.0.0.20:5064>"), PHONE_A)
    assert [(getattr(m, "status", m.method if hasattr(m, "method") else None), d) for m, d in ok] == [
        (200, CALLER), ("CANCEL", PHONE_B)]
    cancel = ok[1][0]
    assert cancel.top_via.branch == branches[PHONE_B].top_via.branch and cancel.cseq == (2, "CANCEL")
    # The 200's retransmission goes up too; the cancelled branch's 487 is ACKed hop by hop, not forwarded.
    again = harness.feed(answer(branches[PHONE_A], 200, "OK", "a"), PHONE_A)
    assert [(m.status, d) for m, d in again] == [(200, CALLER)]
    terminated = harness.feed(answer(branches[PHONE_B], 487, "Request Terminated", "b"), PHONE_B)
    assert [(m.method, d) for m, d in terminated] == [("ACK", PHONE_B)]


def test_best_final_response_when_all_fail():
    harness = Harness()
    branches = forked(authenticated_invite(harness))
    first = harness.feed(answer(branches[PHONE_B], 404, "Not Here", "b"), PHONE_B)
    assert [m.method for m, _ in first] == ["ACK"]
    last = harness.feed(answer(branches[PHONE_A], 486, "Busy Here", "a"), PHONE_A)
    assert [getattr(m, "status", None) or m.method for m, _ in last] == ["ACK", 486]
    assert last[1][1] == CALLER


def test_600_ends_the_call_at_once():
    harness = Harness()
    branches = forked(authenticated_invite(harness))
    harness.feed(answer(branches[PHONE_A], 180, "Ringing", "a"), PHONE_A)
    sent = harness.feed(answer(branches[PHONE_B], 600, "Busy Everywhere", "b"), PHONE_B)
    kinds = [(getattr(m, "status", None) or m.method, d) for m, d in sent]
    assert ("ACK", PHONE_B) in kinds and ("CANCEL", PHONE_A) in kinds and (600, CALLER) in kinds


def test_cancel_from_the_caller_gives_200_cancels_branches_and_487():
    harness = Harness()
    branches = forked(authenticated_invite(harness))
    harness.feed(answer(branches[PHONE_A], 180, "Ringing", "a"), PHONE_A)
    cancel = (f"CANCEL sip:1002@{REALM} SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-call-2;rport\n"
              f"From: <sip:1001@{REALM}>;tag=caller-tag\nTo: <sip:1002@{REALM}>\nCall-ID: call-1@caller\n"
              "CSeq: 2 CANCEL\nMax-Forwards: 70\nContent-Length: 0\n\n")
    sent = harness.feed(cancel, CALLER)
    kinds = [(getattr(m, "status", None) or m.method, d) for m, d in sent]
    assert kinds[0] == (200, CALLER) and (487, CALLER) in kinds and ("CANCEL", PHONE_A) in kinds
    # Phone B never said anything: its CANCEL waits for a provisional (§9.1).
    assert ("CANCEL", PHONE_B) not in kinds
    later = harness.feed(answer(branches[PHONE_B], 180, "Ringing", "b"), PHONE_B)
    assert [(m.method, d) for m, d in later] == [("CANCEL", PHONE_B)]
    # A CANCEL for nothing we know is 481.
    stray = harness.feed(cancel.replace("z9hG4bK-call-2", "z9hG4bK-nothing"), CALLER)
    assert [m.status for m, _ in stray] == [481]


def test_ack_and_bye_are_loose_routed_to_the_source_of_the_binding():
    harness = Harness()
    branches = forked(authenticated_invite(harness))
    harness.feed(answer(branches[PHONE_A], 200, "OK", "a", contact="<sip:1002@10.0.0.20:5064>"), PHONE_A)
    dialog = (f"From: <sip:1001@{REALM}>;tag=caller-tag\nTo: <sip:1002@{REALM}>;tag=a\nCall-ID: call-1@caller\n"
              "Route: <sip:192.0.2.1:5060;lr>\nMax-Forwards: 70\nContent-Length: 0\n\n")
    ack = harness.feed("ACK sip:1002@10.0.0.20:5064 SIP/2.0\n"
                       "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-ack;rport\nCSeq: 2 ACK\n" + dialog, CALLER)
    assert [(m.method, d) for m, d in ack] == [("ACK", PHONE_A)]
    assert "Route" not in ack[0][0].headers and ack[0][0].top_via.sent_by == "192.0.2.1:5060"
    bye = harness.feed("BYE sip:1002@10.0.0.20:5064 SIP/2.0\n"
                       "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-bye;rport\nCSeq: 3 BYE\n" + dialog, CALLER)
    assert [(m.method, d) for m, d in bye] == [("BYE", PHONE_A)]
    ok = harness.feed(answer(bye[0][0], 200, "OK", "a"), PHONE_A)
    assert [(m.status, d, m.cseq[1]) for m, d in ok] == [(200, CALLER, "BYE")]
    # The BYE again (its 200 was lost): the same 200, from the server transaction.
    again = harness.feed("BYE sip:1002@10.0.0.20:5064 SIP/2.0\n"
                         "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-bye;rport\nCSeq: 3 BYE\n" + dialog, CALLER)
    assert [(m.status, d) for m, d in again] == [(200, CALLER)]


def test_bye_from_the_callee_reaches_the_caller_where_its_invite_came_from():
    harness = Harness()
    branches = forked(authenticated_invite(harness))
    harness.feed(answer(branches[PHONE_A], 200, "OK", "a"), PHONE_A)
    bye = harness.feed("BYE sip:1001@192.0.2.99:5062 SIP/2.0\n"
                       "Via: SIP/2.0/UDP 10.0.0.20:5064;branch=z9hG4bK-cbye;rport\n"
                       f"From: <sip:1002@{REALM}>;tag=a\nTo: <sip:1001@{REALM}>;tag=caller-tag\n"
                       "Call-ID: call-1@caller\nCSeq: 1 BYE\nRoute: <sip:192.0.2.1:5060;lr>\n"
                       "Max-Forwards: 70\nContent-Length: 0\n\n".replace("192.0.2.99", "192.0.2.10"), PHONE_A)
    assert [(m.method, d) for m, d in bye] == [("BYE", CALLER)]


def test_loop_is_482_and_a_spiral_is_forwarded():
    harness = Harness()
    # A misconfigured phone registered a contact that is Regis itself.
    harness.targets["1002"] = [CallTarget("sip:1002@192.0.2.1:5060", Source("udp", *US), 1.0)]
    first = authenticated_invite(harness)
    forwarded = first[1][0]
    us = Source("udp", *US)
    spiral = harness.run(harness.core.receive(forwarded.to_bytes(), us, NOW), NOW)
    # Its Request-URI changed on the way: a spiral, so it is challenged like any INVITE.
    assert [m.status for m, _ in spiral] == [407]
    # Back through another proxy with the Request-URI it had when we forwarded it: a loop.
    looped = forwarded.to_bytes().replace(b"INVITE sip:1002@192.0.2.1:5060 SIP/2.0\r\n",
                                          f"INVITE sip:1002@{REALM} SIP/2.0\r\n"
                                          "Via: SIP/2.0/UDP 192.0.2.50;branch=z9hG4bK-other\r\n".encode())
    assert looped != forwarded.to_bytes()
    again = harness.run(harness.core.receive(looped, us, NOW), NOW)
    assert [m.status for m, _ in again] == [482]


def test_invite_retransmissions_and_timers():
    harness = Harness()
    sent = harness.feed(invite(max_forwards=0), CALLER)
    assert [m.status for m, _ in sent] == [483]
    # The INVITE again: the same answer; Timer G retransmits it until the ACK.
    assert [m.status for m, _ in harness.feed(invite(max_forwards=0), CALLER)] == [483]
    assert [m.status for m, _ in harness.tick(NOW + T1)] == [483]
    harness.feed(f"ACK sip:1002@{REALM} SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-call-1;rport\n"
                 f"From: <sip:1001@{REALM}>;tag=caller-tag\nTo: {sent[0][0].headers.get('To')}\n"
                 "Call-ID: call-1@caller\nCSeq: 1 ACK\nMax-Forwards: 70\nContent-Length: 0\n\n", CALLER)
    assert harness.tick(NOW + 10) == []


def test_silent_callee_times_out_to_408_after_timer_a_retransmissions():
    harness = Harness()
    harness.targets["1002"] = harness.targets["1002"][:1]
    branches = forked(authenticated_invite(harness))
    assert list(branches) == [PHONE_A]
    resent = harness.tick(NOW + T1)
    assert [(m.method, d) for m, d in resent] == [("INVITE", PHONE_A)]
    now, statuses = NOW, []
    while now < NOW + 64 * T1 + 1:
        now += 1
        statuses += [getattr(m, "status", None) for m, _ in harness.tick(now)]
    assert 408 in statuses


def test_a_websocket_callee_without_a_tunnel_is_480_and_with_one_it_rings():
    harness = Harness()
    # No tunnel from the web process for that websocket: the adapter finds no destination.
    harness.targets["1002"] = [CallTarget("sip:x@y.invalid;transport=ws", None, 1.0, "ws")]
    sent = authenticated_invite(harness)
    assert [m.status for m, _ in sent] == [100, 480]
    harness = Harness()
    tunnel = Source("ws", "192.0.2.30", 443)
    harness.targets["1002"] = [CallTarget("sip:x@y.invalid;transport=ws", tunnel, 1.0, "ws")]
    sent = authenticated_invite(harness)
    [(invite, where)] = [(m, d) for m, d in sent if hasattr(m, "method")]
    assert where == tunnel and invite.top_via.transport == "WS"


@pytest.mark.parametrize("method", ["BYE", "INFO"])
def test_in_dialog_request_without_route_to_us_keeps_the_registrar_answer(method):
    harness = Harness()
    sent = harness.feed(f"{method} sip:1002@{REALM} SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-x\n"
                        f"From: <sip:1001@{REALM}>;tag=a\nTo: <sip:1002@{REALM}>;tag=b\nCall-ID: c@x\n"
                        f"CSeq: 1 {method}\nMax-Forwards: 70\nContent-Length: 0\n\n", CALLER)
    assert [m.status for m, _ in sent] == [405]


def test_require_is_for_the_callee_and_a_tcp_phone_gets_a_tcp_via():
    harness = Harness()
    connection = object()
    harness.targets["1002"] = [CallTarget("sip:1002@10.0.0.20:5064;transport=tcp",
                                          Source("tcp", "192.0.2.20", 40000, connection), 1.0, "tcp")]
    harness.core.proxy.set_listeners([("udp", *US), ("tcp", *US)])
    sent = harness.feed(invite(extra="Require: 100rel"), CALLER)
    assert [m.status for m, _ in sent] == [407]  # not 420: the proxy does not answer for the callee
    challenge = parse_challenge(sent[0][0].headers.get("Proxy-Authenticate"))
    value = authorization(challenge, username="1001", password="secret", method="INVITE", uri=f"sip:1002@{REALM}")
    sent = harness.feed(invite(branch="z9hG4bK-call-2", cseq=2, proxy_auth=value, extra="Require: 100rel"), CALLER)
    (request, destination), = [(m, d) for m, d in sent if hasattr(m, "method")]
    assert destination.connection is connection and request.top_via.transport == "TCP"
    assert request.headers.get("Record-Route") == "<sip:192.0.2.1:5060;transport=tcp;lr>"
    assert request.headers.get("Require") == "100rel"


def test_a_caller_authenticated_as_someone_else_is_forbidden_and_recorded():
    harness = Harness()
    sent = harness.feed(invite(), CALLER)
    challenge = parse_challenge(sent[0][0].headers.get("Proxy-Authenticate"))
    value = authorization(challenge, username="1003", password="secret", method="INVITE", uri=f"sip:1002@{REALM}")
    sent = harness.feed(invite(branch="z9hG4bK-call-2", cseq=2, proxy_auth=value), CALLER)
    assert [m.status for m, _ in sent] == [403]
    assert [a.reason for a in harness.attempts] == [Reason.AUTH_USER_MISMATCH]


def test_a_2xx_racing_the_callers_cancel_still_goes_up():
    harness = Harness()
    harness.targets["1002"] = harness.targets["1002"][:1]
    branches = forked(authenticated_invite(harness))
    harness.feed(answer(branches[PHONE_A], 180, "Ringing", "a"), PHONE_A)
    harness.feed(f"CANCEL sip:1002@{REALM} SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-call-2;rport\n"
                 f"From: <sip:1001@{REALM}>;tag=caller-tag\nTo: <sip:1002@{REALM}>\nCall-ID: call-1@caller\n"
                 "CSeq: 2 CANCEL\nMax-Forwards: 70\nContent-Length: 0\n\n", CALLER)
    late = harness.feed(answer(branches[PHONE_A], 200, "OK", "a"), PHONE_A)
    assert [(m.status, d) for m, d in late] == [(200, CALLER)]


def test_an_initial_invite_with_our_route_preloaded_is_still_authenticated_and_the_route_popped():
    harness = Harness()
    sent = harness.feed(invite(extra="Route: <sip:192.0.2.1:5060;lr>"), CALLER)
    assert [m.status for m, _ in sent] == [407]
    challenge = parse_challenge(sent[0][0].headers.get("Proxy-Authenticate"))
    value = authorization(challenge, username="1001", password="secret", method="INVITE", uri=f"sip:1002@{REALM}")
    sent = harness.feed(invite(branch="z9hG4bK-call-2", cseq=2, proxy_auth=value,
                               extra="Route: <sip:192.0.2.1:5060;lr>"), CALLER)
    requests = [m for m, _ in sent if hasattr(m, "method")]
    assert len(requests) == 2 and all("Route" not in m.headers for m in requests)


def test_a_request_routed_to_an_address_no_call_taught_us_is_not_relayed():
    harness = Harness()
    sent = harness.feed("BYE sip:victim@198.51.100.7:5060 SIP/2.0\n"
                        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-relay;rport\n"
                        f"From: <sip:1001@{REALM}>;tag=a\nTo: <sip:x@{REALM}>;tag=b\nCall-ID: relay@x\n"
                        "CSeq: 1 BYE\nRoute: <sip:192.0.2.1:5060;lr>\nMax-Forwards: 70\nContent-Length: 0\n\n", CALLER)
    assert [(m.status, d) for m, d in sent] == [(404, CALLER)]
    assert harness.lookups == ["sip:victim@198.51.100.7:5060"]  # no binding has that Contact


def test_an_in_dialog_request_to_a_registered_contact_no_call_taught_us_reaches_its_binding():
    harness = Harness()  # e.g. runsip restarted during the call
    harness.bindings_by_contact["sip:1002@10.0.0.20:5064"] = CallTarget("sip:1002@10.0.0.20:5064", PHONE_A, 1.0)
    sent = harness.feed("BYE sip:1002@10.0.0.20:5064 SIP/2.0\n"
                        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-late;rport\n"
                        f"From: <sip:1001@{REALM}>;tag=a\nTo: <sip:1002@{REALM}>;tag=b\nCall-ID: late@x\n"
                        "CSeq: 5 BYE\nRoute: <sip:192.0.2.1:5060;lr>\nMax-Forwards: 70\nContent-Length: 0\n\n", CALLER)
    assert [(m.method, d) for m, d in sent] == [("BYE", PHONE_A)]


def test_a_re_invite_is_routed_in_its_dialog_and_its_answer_comes_back():
    harness = Harness()
    branches = forked(authenticated_invite(harness))
    harness.feed(answer(branches[PHONE_A], 200, "OK", "a", contact="<sip:1002@10.0.0.20:5064>"), PHONE_A)
    reinvite = ("INVITE sip:1002@10.0.0.20:5064 SIP/2.0\n"
                "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-reinvite;rport\n"
                f"From: <sip:1001@{REALM}>;tag=caller-tag\nTo: <sip:1002@{REALM}>;tag=a\nCall-ID: call-1@caller\n"
                "CSeq: 4 INVITE\nContact: <sip:1001@192.0.2.10:5062>\nRoute: <sip:192.0.2.1:5060;lr>\n"
                "Max-Forwards: 70\nContent-Length: 0\n\n")
    sent = harness.feed(reinvite, CALLER)
    assert [(getattr(m, "status", None) or m.method, d) for m, d in sent] == [(100, CALLER), ("INVITE", PHONE_A)]
    forwarded = sent[1][0]
    assert "Route" not in forwarded.headers and "Record-Route" not in forwarded.headers
    ok = harness.feed(answer(forwarded, 200, "OK", "a"), PHONE_A)
    assert [(m.status, d, m.cseq) for m, d in ok] == [(200, CALLER, (4, "INVITE"))]


def test_proxy_require_names_what_we_do_not_support():
    harness = Harness()
    sent = harness.feed(invite(extra="Proxy-Require: sec-agree"), CALLER)
    assert [(m.status, m.headers.get("Unsupported")) for m, _ in sent] == [(420, "sec-agree")]


def test_a_binding_registered_through_an_edge_proxy_is_reached_through_its_path():
    harness = Harness()
    edge = Source("udp", "192.0.2.50", 5060)
    harness.targets["1002"] = [CallTarget("sip:1002@10.0.0.20:5064;ob", edge, 1.0, "udp",
                                          ("<sip:edge.example:5060;lr;ob>",))]
    sent = authenticated_invite(harness)
    [(forwarded, where)] = [(m, d) for m, d in sent if hasattr(m, "method")]
    assert where == edge and str(forwarded.uri) == "sip:1002@10.0.0.20:5064;ob"
    assert forwarded.headers.get_all("Route") == ["<sip:edge.example:5060;lr;ob>"]
