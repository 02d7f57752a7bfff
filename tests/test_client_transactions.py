"""Non-INVITE client transactions (RFC 3261 §17.1.2) in the sans-IO core: retransmission
by Timer E, give-up by Timer F, matching answers by branch and CSeq method."""
from registrar.sip.client import Answered, ClientTransactions, Resend, TimedOut, new_branch
from registrar.sip.core import RegistrarCore, SendMessage, Source
from registrar.sip.message import parse_message

PHONE = Source("udp", "192.0.2.10", 5060)


def options(branch):
    return (f"OPTIONS sip:1001@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch};rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:regis@regis.test>;tag=abc\r\nTo: <sip:1001@192.0.2.10>\r\n"
            "Call-ID: q1@regis\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


def answer_to(branch, status=200, method="OPTIONS"):
    reason = {100: "Trying", 200: "OK", 404: "Not Found"}[status]
    return (f"SIP/2.0 {status} {reason}\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch};rport=5060\r\n"
            "From: <sip:regis@regis.test>;tag=abc\r\nTo: <sip:1001@192.0.2.10>;tag=x\r\n"
            f"Call-ID: q1@regis\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n").encode()


def test_udp_request_is_retransmitted_with_doubling_intervals_then_times_out():
    clients = ClientTransactions()
    branch = new_branch()
    clients.start(branch=branch, method="OPTIONS", data=b"x", destination=PHONE, context="ctx", now=0.0,
                  reliable=False)
    resends = []
    for step in range(1, 801):
        now = step * 0.05
        for item in clients.tick(now):
            resends.append((round(now, 2), item))
    timed_out = [(at, item) for at, item in resends if isinstance(item, TimedOut)]
    sent_at = [at for at, item in resends if isinstance(item, Resend)]
    assert sent_at[:4] == [0.5, 1.5, 3.5, 7.5]  # T1, then doubling
    assert all(b - a <= 4.01 for a, b in zip(sent_at[3:], sent_at[4:]))  # capped at T2
    assert timed_out == [(32.0, TimedOut("ctx"))]
    assert len(clients) == 0


def test_reliable_request_is_not_retransmitted():
    clients = ClientTransactions()
    tcp = Source("tcp", "192.0.2.10", 40000, object(), "f")
    clients.start(branch=new_branch(), method="OPTIONS", data=b"x", destination=tcp, context=1, now=0.0,
                  reliable=True)
    assert clients.tick(31.9) == []
    assert clients.tick(32.0) == [TimedOut(1)]


def test_final_answer_matches_by_branch_and_method_once():
    clients = ClientTransactions()
    branch = new_branch()
    clients.start(branch=branch, method="OPTIONS", data=b"x", destination=PHONE, context="ping", now=10.0,
                  reliable=False)
    assert clients.response(parse_message(answer_to(branch, method="NOTIFY")), 10.1) is None
    assert clients.response(parse_message(answer_to("z9hG4bKother")), 10.1) is None
    answered = clients.response(parse_message(answer_to(branch, 404)), 10.25)
    assert answered.context == "ping" and answered.response.status == 404
    assert abs(answered.elapsed - 0.25) < 1e-9
    assert clients.response(parse_message(answer_to(branch)), 10.3) is None  # a retransmitted answer
    assert clients.tick(100) == []


def test_provisional_answer_slows_retransmission_to_t2():
    clients = ClientTransactions()
    branch = new_branch()
    clients.start(branch=branch, method="OPTIONS", data=b"x", destination=PHONE, context=0, now=0.0, reliable=False)
    assert clients.response(parse_message(answer_to(branch, 100)), 0.1) is None
    sent = [now / 10 for now in range(1, 200) if clients.tick(now / 10)]
    assert sent[0] == 0.5
    assert all(abs((b - a) - 4.0) < 0.11 for a, b in zip(sent[1:], sent[2:]))


def test_connection_loss_times_out_its_transactions_only():
    clients = ClientTransactions()
    connection = object()
    on_it = Source("tcp", "192.0.2.10", 40000, connection, "f1")
    elsewhere = Source("tcp", "192.0.2.11", 40000, object(), "f2")
    clients.start(branch=new_branch(), method="NOTIFY", data=b"x", destination=on_it, context="a", now=0,
                  reliable=True)
    clients.start(branch=new_branch(), method="NOTIFY", data=b"x", destination=elsewhere, context="b", now=0,
                  reliable=True)
    assert clients.fail_destination(on_it) == [TimedOut("a")]
    assert len(clients) == 1


def test_core_routes_answers_to_its_requests():
    core = RegistrarCore(realm="regis.test", secret=b"s" * 32, credentials=lambda user: None)
    branch = new_branch()
    first = core.send_request(data=options(branch), destination=PHONE, branch=branch, method="OPTIONS",
                              context="qualify", now=5.0)
    assert first == [SendMessage(options(branch), PHONE)]
    assert core.next_deadline() == 5.5
    assert core.tick(5.5) == [SendMessage(options(branch), PHONE)]
    actions = core.receive(answer_to(branch), PHONE, 5.6)
    assert len(actions) == 1 and isinstance(actions[0], Answered) and actions[0].context == "qualify"
    assert core.next_deadline() is None
    # A stray answer nobody asked for is dropped, not answered.
    assert core.receive(answer_to(new_branch()), PHONE, 6.0) == []
