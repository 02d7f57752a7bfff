"""Calls to and from browser phones: the websocket door tunnels call signalling to runsip.

The browser cases run a real runsip, a real daphne (the /ws/sip door) pointed at it by
SIP_TUNNEL_ADDRESS, JsSIP in headless chromium and SIPp, all on loopback and one test
database: (a) SIPp calls a JsSIP phone, which answers 486; (b) a JsSIP phone calls a SIPp
phone, which answers 486. The hello cases talk to runsip alone over raw TCP, and one case
drives the door in-process with no runsip behind it (503, registration unharmed).
Digest is MD5 only (soft parameter 104): SIPp and JsSIP compute nothing else.
"""
import asyncio
import shutil
import socket
import time

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings as django_settings

from registrar import services
from registrar.sip.framing import StreamFramer
from registrar.worker import tunnel
from tests import browser as web
from tests import e2e
from tests.test_calls_sipp import PASSWORD, SippPhone, final_statuses
from tests.test_websocket_sip import (JSSIP_BUNDLE, PHONE_IP, PhoneSite, WsPhone, open_phone, phone_diagnostics,
                                     phone_socket)

KEY = tunnel.tunnel_key("a test secret")
BROWSER = tunnel.Peer("testhost:1:ws:7", "ws", "198.51.100.7", 50555)
ANSWER_TIMEOUT = 5.0


# -- the hello's contract, without sockets -----------------------------------------------------
def test_a_signed_fresh_hello_names_its_peer():
    assert tunnel.read_hello(tunnel.hello(KEY, BROWSER, 1000.0), KEY, 1010.0) == BROWSER


@pytest.mark.parametrize("why, frame, now", [
    ("forged", tunnel.hello(tunnel.tunnel_key("another secret"), BROWSER, 1000.0), 1000.0),
    ("altered", tunnel.hello(KEY, BROWSER, 1000.0).replace(b"198.51.100.7", b"198.51.100.8"), 1000.0),
    ("stale", tunnel.hello(KEY, BROWSER, 1000.0), 1031.0),
    ("from the future", tunnel.hello(KEY, BROWSER, 1000.0), 969.0),
    ("udp peer", tunnel.hello(KEY, tunnel.Peer("testhost:1:ws:7", "udp", "198.51.100.7", 50555), 1000.0), 1000.0),
    ("not a hello", b"OPTIONS sip:runsip SIP/2.0\r\nContent-Length: 0\r\n\r\n", 1000.0),
])
def test_a_bad_hello_is_refused(why, frame, now):
    with pytest.raises(tunnel.HelloRefused):
        tunnel.read_hello(frame, KEY, now)


# -- runsip's side, over TCP ---------------------------------------------------------------------
@pytest.fixture
def runsip(transactional_db, settings):
    settings.SIP_DOMAIN = settings.SIP_REALM = e2e.SIP_DOMAIN
    services.set_soft_parameter("digest_algorithms", ["MD5"])
    process = e2e.RunSip(e2e.database_url(django_settings.DATABASES["default"]),
                         env={"SECRET_KEY": django_settings.SECRET_KEY, "SIP_TIMER_T1_MS": "100"})
    process.start()
    yield process
    died = process.died
    process.stop()
    if died:
        pytest.fail(f"runsip died during the test:\n{process.output[-4000:]}")


def _connect(runsip):
    connection = socket.create_connection((e2e.LOOPBACK, runsip.port), timeout=ANSWER_TIMEOUT)
    return connection


def _logged(runsip, text: str, within: float = 3.0) -> bool:
    """Whether runsip logs ``text`` soon: its output is read by another thread, which may lag
    behind the socket closing."""
    deadline = time.monotonic() + within
    while text not in runsip.output:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _closed_by_peer(connection) -> bool:
    """Whether runsip closes the connection (reads until EOF, bounded by the socket timeout)."""
    try:
        while True:
            data = connection.recv(65535)
            if not data:
                return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def _invite(user="1003", callee="1002") -> bytes:
    return (f"INVITE sip:{callee}@{e2e.SIP_DOMAIN} SIP/2.0\r\n"
            "Via: SIP/2.0/WSS abc.invalid;branch=z9hG4bK-tunnel-1\r\nMax-Forwards: 70\r\n"
            f"From: <sip:{user}@{e2e.SIP_DOMAIN}>;tag=t1\r\nTo: <sip:{callee}@{e2e.SIP_DOMAIN}>\r\n"
            "Call-ID: tunnel-call@test\r\nCSeq: 1 INVITE\r\nContact: <sip:k1@abc.invalid;transport=ws>\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def _hello(peer=BROWSER, *, key=None, at=None) -> bytes:
    return tunnel.hello(key or tunnel.tunnel_key(), peer, time.time() if at is None else at)


@pytest.mark.e2e
@pytest.mark.parametrize("why", ["forged", "stale", "udp peer"])
def test_runsip_closes_a_connection_whose_hello_is_bad(runsip, why):
    hello = {"forged": lambda: _hello(key=tunnel.tunnel_key("not the secret")),
             "stale": lambda: _hello(at=time.time() - 60),
             "udp peer": lambda: _hello(tunnel.Peer("testhost:1:ws:7", "udp", "198.51.100.7", 50555))}[why]()
    with _connect(runsip) as connection:
        connection.sendall(hello + _invite())
        assert _closed_by_peer(connection), f"runsip kept a connection with a {why} hello\n{runsip.output[-2000:]}"
    assert _logged(runsip, "tunnel hello refused")


@pytest.mark.e2e
def test_runsip_closes_a_connection_that_says_hello_after_other_traffic(runsip):
    with _connect(runsip) as connection:
        connection.sendall(b"\r\n\r\n")
        assert connection.recv(16) == b"\r\n"  # a keep-alive is no traffic: a hello could still come
        connection.sendall(_invite(user="nobody"))
        assert connection.recv(65535).startswith(b"SIP/2.0 ")
        connection.sendall(_hello())
        assert _closed_by_peer(connection)
    assert _logged(runsip, "tunnel hello after other traffic")


@pytest.mark.e2e
def test_a_good_hello_makes_the_connection_the_browsers_and_its_invite_is_challenged_on_it(runsip):
    services.create_extension("1003", PASSWORD)
    with _connect(runsip) as connection:
        connection.sendall(_hello() + _invite())
        framer_buffer = b""
        while b"\r\n\r\n" not in framer_buffer or b" 407 " not in framer_buffer:
            data = connection.recv(65535)
            assert data, f"runsip closed the tunnel\n{runsip.output[-2000:]}"
            framer_buffer += data
    answer = e2e.parse_response(framer_buffer[framer_buffer.index(b"SIP/2.0 407"):])
    assert answer.status == 407 and answer.get("Proxy-Authenticate")
    # Answered as to the browser itself: its address, from the hello, is where it came from.
    assert answer.get("Via").endswith(f";received={BROWSER.ip}"), answer.raw


# -- the door without runsip ----------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_without_runsip_an_invite_gets_503_and_registration_still_works(settings):
    settings.SIP_DOMAIN = settings.SIP_REALM = e2e.SIP_DOMAIN
    settings.SIP_TUNNEL_ADDRESS = f"{e2e.LOOPBACK}:{e2e.free_port()}"  # nothing listens there
    services.create_extension("2005", PASSWORD)

    async def scenario():
        communicator = phone_socket()
        assert (await communicator.connect())[0]
        phone = WsPhone(communicator, "2005")
        _, registered = await phone.register(PASSWORD)
        refused = await phone.exchange(_invite(user="2005"))
        _, again = await phone.register(PASSWORD)
        await communicator.disconnect()
        return registered, refused, again

    registered, refused, again = async_to_sync(scenario)()
    assert registered.status == 200, registered.raw
    assert refused.status == 503 and refused.get("Retry-After"), refused.raw
    assert refused.get("CSeq") == "1 INVITE" and ";tag=" in refused.get("To")
    assert again.status == 200, again.raw


@pytest.mark.django_db(transaction=True)
def test_the_door_tunnels_call_signalling_after_a_registration_and_closes_it_with_the_websocket(settings):
    """The door against a stand-in for runsip (a TCP server of the test): what goes into the
    tunnel, in which order, and what comes out to the browser."""
    settings.SIP_DOMAIN = settings.SIP_REALM = e2e.SIP_DOMAIN
    services.create_extension("2006", PASSWORD)
    trying = (b"SIP/2.0 100 Trying\r\nVia: SIP/2.0/WSS abc.invalid;branch=z9hG4bK-tunnel-1\r\n"
              b"Call-ID: tunnel-call@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    # Content-Length is optional on a websocket (RFC 7118): the door adds it for the stream.
    busy = (f"SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKregis-x\r\n"
            f"From: <sip:1001@{e2e.SIP_DOMAIN}>;tag=a\r\nTo: <sip:2006@{e2e.SIP_DOMAIN}>;tag=b\r\n"
            "Call-ID: in@test\r\nCSeq: 1 INVITE\r\n\r\n")

    async def scenario():
        frames, ended, writers = asyncio.Queue(), asyncio.Event(), []

        async def runsip_stand_in(reader, writer):
            writers.append(writer)
            framer = StreamFramer()
            while data := await reader.read(65535):
                for frame in framer.feed(data):
                    frames.put_nowait(frame)
            ended.set()

        server = await asyncio.start_server(runsip_stand_in, e2e.LOOPBACK, 0)
        settings.SIP_TUNNEL_ADDRESS = f"{e2e.LOOPBACK}:{server.sockets[0].getsockname()[1]}"
        try:
            communicator = phone_socket()
            assert (await communicator.connect())[0]
            phone = WsPhone(communicator, "2006")
            _, registered = await phone.register(PASSWORD)
            hello = await asyncio.wait_for(frames.get(), ANSWER_TIMEOUT)
            await communicator.send_to(text_data=_invite(user="2006").decode())
            invite = await asyncio.wait_for(frames.get(), ANSWER_TIMEOUT)
            writers[0].write(trying)
            relayed = await communicator.receive_from(timeout=ANSWER_TIMEOUT)
            await communicator.send_to(text_data=busy)
            answered = await asyncio.wait_for(frames.get(), ANSWER_TIMEOUT)
            await communicator.disconnect()
            await asyncio.wait_for(ended.wait(), ANSWER_TIMEOUT)
        finally:
            server.close()
        return registered, hello, invite, relayed, answered

    registered, hello, invite, relayed, answered = async_to_sync(scenario)()
    assert registered.status == 200, registered.raw
    # The REGISTERs stayed in the door; the tunnel opened after the 200, with a good hello first.
    peer = tunnel.read_hello(hello, tunnel.tunnel_key(), time.time())
    assert (peer.transport, peer.ip, peer.port) == ("ws", PHONE_IP, 50123) and ":ws:" in peer.flow
    assert invite == _invite(user="2006")
    assert relayed == trying.decode()
    assert answered == busy.replace("\r\n\r\n", "\r\nContent-Length: 0\r\n\r\n").encode()


@pytest.mark.django_db(transaction=True)
def test_a_registered_browsers_tunnel_comes_back_when_runsip_drops_it(settings):
    """runsip restarting must not leave a registered browser unreachable until its next REGISTER."""
    settings.SIP_DOMAIN = settings.SIP_REALM = e2e.SIP_DOMAIN
    services.create_extension("2007", PASSWORD)

    async def scenario():
        hellos = asyncio.Queue()

        async def runsip_stand_in(reader, writer):
            framer = StreamFramer()
            data = await reader.read(65535)
            hellos.put_nowait(framer.feed(data)[0])
            writer.close()  # as a restarting runsip does

        server = await asyncio.start_server(runsip_stand_in, e2e.LOOPBACK, 0)
        settings.SIP_TUNNEL_ADDRESS = f"{e2e.LOOPBACK}:{server.sockets[0].getsockname()[1]}"
        try:
            communicator = phone_socket()
            assert (await communicator.connect())[0]
            _, registered = await WsPhone(communicator, "2007").register(PASSWORD)
            first = await asyncio.wait_for(hellos.get(), ANSWER_TIMEOUT)
            second = await asyncio.wait_for(hellos.get(), ANSWER_TIMEOUT)
            await communicator.disconnect()
        finally:
            server.close()
        return registered, first, second

    registered, first, second = async_to_sync(scenario)()
    assert registered.status == 200, registered.raw
    key = tunnel.tunnel_key()
    assert tunnel.read_hello(first, key, time.time()) == tunnel.read_hello(second, key, time.time())


# -- JsSIP in chromium, daphne, runsip and SIPp -----------------------------------------------------
def _browser_requirements():
    if not JSSIP_BUNDLE.exists():
        return f"JsSIP is not installed ({JSSIP_BUNDLE}); run: npm ci --prefix tests/js"
    if shutil.which("sipp") is None:
        return "SIPp is not installed"
    return web.missing_requirements()


_missing = _browser_requirements()

# JsSIP as it comes, plus: incoming sessions are recorded and refused with 486 Busy Here, and
# window.__call(target) places a call with a silent stream (no audio device needed).
START_PHONE = """([wsUrl, user, domain, password]) => {
    const state = document.getElementById("state");
    const socket = new JsSIP.WebSocketInterface(wsUrl);
    const ua = new JsSIP.UA({sockets: [socket], uri: `sip:${user}@${domain}`, password, register: true,
                             user_agent: "JsSIP regis-calls", session_timers: false});
    window.__incoming = [];
    ua.on("newRTCSession", ({originator, session}) => {
        if (originator !== "remote") return;
        window.__incoming.push({from: session.remote_identity.uri.user});
        session.terminate({status_code: 486});
    });
    ua.on("registered", () => { state.textContent = "registered"; });
    ua.on("registrationFailed", (event) => { state.textContent = `failed: ${event.cause}`; });
    window.__call = (target) => {
        const stream = new AudioContext().createMediaStreamDestination().stream;
        window.__outcome = null;
        ua.call(target, {mediaStream: stream, pcConfig: {iceServers: []}, eventHandlers: {
            failed: (event) => { window.__outcome = `failed: ${event.cause}`; },
            confirmed: () => { window.__outcome = "confirmed"; },
        }});
    };
    state.textContent = "registering";
    ua.start();
}"""


class Stack:
    def __init__(self, runsip, daphne):
        self.runsip, self.daphne = runsip, daphne

    def output(self) -> str:
        return f"--- runsip\n{self.runsip.output[-4000:]}\n--- daphne\n{self.daphne.output[-4000:]}"


@pytest.fixture
def stack(transactional_db, settings):
    """runsip, and daphne tunnelling to it; extensions 1001-1003, MD5-only digest."""
    settings.SIP_DOMAIN = settings.SIP_REALM = e2e.SIP_DOMAIN
    services.set_soft_parameter("digest_algorithms", ["MD5"])
    for number in ("1001", "1002", "1003"):
        services.create_extension(number, PASSWORD)
    relay = web.relay_socket_path()
    env = web.process_environment(e2e.database_url(django_settings.DATABASES["default"]), relay)
    env["SECRET_KEY"] = django_settings.SECRET_KEY
    runsip = e2e.RunSip(env["DATABASE_URL"], env={"SECRET_KEY": env["SECRET_KEY"], "LIVE_RELAY_SOCKET": relay,
                                                  "SIP_TIMER_T1_MS": "100"})
    daphne = web.Daphne({**env, "SIP_TUNNEL_ADDRESS": runsip.address})
    try:
        runsip.start()
        daphne.start()
        yield Stack(runsip, daphne)
    finally:
        died = [(name, p) for name, p in (("daphne", daphne), ("runsip", runsip)) if p.died]
        daphne.stop()
        runsip.stop()
        web.remove_relay_socket(relay)
    if died:
        pytest.fail("\n".join(f"{name} died during the test:\n{p.output[-4000:]}" for name, p in died))


@pytest.fixture
def browser_phone(chromium, stack):
    """JsSIP registered as 1003 over ws, its tunnel to runsip open."""
    site = PhoneSite()
    page = open_phone(chromium, site)
    page.evaluate(START_PHONE, [f"ws://{e2e.LOOPBACK}:{stack.daphne.port}/ws/sip", "1003", e2e.SIP_DOMAIN,
                                PASSWORD])
    try:
        page.wait_for_function("document.getElementById('state').textContent !== 'registering'",
                               timeout=web.TIMEOUT_MS)
    except Exception as error:
        pytest.fail(f"JsSIP never finished registering: {error}\n{phone_diagnostics(page, stack.daphne)}")
    assert page.locator("#state").inner_text() == "registered", phone_diagnostics(page, stack.daphne)
    assert e2e.eventually(lambda: "tunnel for ws" in stack.runsip.output, timeout=5), stack.output()
    yield page
    page.context.close()
    site.close()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(_missing is not None, reason=_missing or "")
def test_sipp_calls_a_browser_phone_which_answers_busy(stack, browser_phone, tmp_path):
    users = e2e.write_users_csv(tmp_path / "users.csv", [("1001", PASSWORD)])
    result = e2e.run_sipp("caller_refused.xml", stack.runsip.address, tmp_path / "caller", users_csv=users,
                          keys={"callee": "1003"}, global_timeout=20)
    assert result.returncode == 0, f"{result.report()}\n{stack.output()}"
    assert final_statuses(result)[-1] == 486, result.report()
    assert browser_phone.evaluate("window.__incoming") == [{"from": "1001"}], \
        phone_diagnostics(browser_phone, stack.daphne)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(_missing is not None, reason=_missing or "")
def test_a_browser_phone_calls_a_busy_sipp_phone(stack, browser_phone, tmp_path):
    callee = SippPhone(stack.runsip, "1002", "callee_busy.xml", tmp_path / "callee")
    try:
        browser_phone.evaluate(f"window.__call('sip:1002@{e2e.SIP_DOMAIN}')")
        try:
            browser_phone.wait_for_function("window.__outcome", timeout=web.TIMEOUT_MS)
        except Exception as error:
            pytest.fail(f"the call never ended: {error}\n{phone_diagnostics(browser_phone, stack.daphne)}\n"
                        f"{callee.log()}\n{stack.output()}")
        assert browser_phone.evaluate("window.__outcome") == "failed: Busy", stack.output()
        assert callee.finish() == 0, f"{callee.log()}\n{stack.output()}"  # 486 acknowledged by Regis
    finally:
        callee.stop()
    received = callee.received()
    assert f"INVITE sip:1002@{e2e.LOOPBACK}" in received, received
    # Through Regis (its Via on top) from the browser (JsSIP's Via below it, received from loopback).
    assert f"Via: SIP/2.0/UDP {stack.runsip.address};branch=z9hG4bKregis" in received
    assert ".invalid;branch=" in received and "From: " in received and "sip:1003@" in received
