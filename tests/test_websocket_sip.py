"""SIP over WebSocket (RFC 7118) at /ws/sip: the web process's door to the registrar.

The protocol cases drive the real ASGI application (pbx.asgi) with Channels'
WebsocketCommunicator on the committed test database; the browser case runs JsSIP
(pinned in tests/js/package.json, installed by ``npm ci``) in headless chromium against
daphne, served to the page from loopback.
"""
import asyncio
import http.server
import os
import secrets
import socket
import threading
import time
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth.models import Group

from pbx.asgi import application
from registrar import services
from registrar.models import AuthAttempt, Binding
from tests import browser as web
from tests import e2e

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "ws-secret-1"
PHONE_IP = "192.0.2.44"
# How long a closed websocket's binding may outlive it.
GONE_WITHIN = 1.0
JSSIP_BUNDLE = Path(__file__).resolve().parent / "js" / "node_modules" / "jssip" / "dist" / "jssip.min.js"


@pytest.fixture
def relay_socket(settings):
    """Live events go through a private relay socket (as in the embedded default)."""
    path = web.relay_socket_path()
    settings.LIVE_RELAY_SOCKET = path
    yield path
    web.remove_relay_socket(path)


@pytest.fixture
def extension(settings, relay_socket):
    settings.SIP_DOMAIN = e2e.SIP_DOMAIN
    settings.SIP_REALM = e2e.SIP_DOMAIN
    services.create_extension("2001", PASSWORD)
    return "2001"


def phone_socket(subprotocols=("sip",), port=50123):
    communicator = WebsocketCommunicator(application, "/ws/sip", subprotocols=list(subprotocols))
    communicator.scope["client"] = [PHONE_IP, port]
    return communicator


class WsPhone:
    """A browser phone as JsSIP builds its REGISTERs: Via WS x.invalid, an outbound Contact."""

    def __init__(self, communicator, user):
        self.communicator = communicator
        self.user = user
        self.call_id = secrets.token_hex(10)
        self.tag = secrets.token_hex(5)
        self.cseq = 0
        self.host = f"{secrets.token_hex(4)}.invalid"
        self.instance = "urn:uuid:6f2a1a4e-52b4-4c1c-9d38-2c1f9f9b1f0e"

    def register_bytes(self, *, expires=600, authorization_value=None):
        self.cseq += 1
        lines = [
            f"REGISTER sip:{e2e.SIP_DOMAIN} SIP/2.0",
            f"Via: SIP/2.0/WS {self.host};branch=z9hG4bK{secrets.token_hex(8)}",
            "Max-Forwards: 69",
            f"To: <sip:{self.user}@{e2e.SIP_DOMAIN}>",
            f'From: "{self.user}" <sip:{self.user}@{e2e.SIP_DOMAIN}>;tag={self.tag}',
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f'Contact: <sip:k7{self.user}@{self.host};transport=ws>;+sip.ice;reg-id=1;'
            f'+sip.instance="<{self.instance}>";expires={expires}',
            f"Expires: {expires}",
            "Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY",
            "Supported: path,gruu,outbound",
            "User-Agent: JsSIP-like test phone",
        ]
        if authorization_value:
            lines.append(f"Authorization: {authorization_value}")
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def exchange(self, data: bytes, *, binary=False):
        if binary:
            await self.communicator.send_to(bytes_data=data)
        else:
            await self.communicator.send_to(text_data=data.decode())
        frame = await self.communicator.receive_from(timeout=5)
        return e2e.parse_response(frame.encode() if isinstance(frame, str) else frame)

    async def register(self, password, **kwargs):
        """REGISTER, answer the MD5 challenge: (the 401, the final answer)."""
        challenged = await self.exchange(self.register_bytes(**kwargs))
        if challenged.status != 401:
            return challenged, challenged
        challenge = next(c for c in map(e2e.parse_challenge, challenged.get_all("WWW-Authenticate"))
                         if c.get("algorithm", "MD5") == "MD5")
        value = e2e.authorization(challenge, username=self.user, password=password, method="REGISTER",
                                  uri=f"sip:{e2e.SIP_DOMAIN}")
        return challenged, await self.exchange(self.register_bytes(authorization_value=value, **kwargs))


def bindings_of(number):
    return list(Binding.objects.filter(extension__number=number))


async def eventually_async(check, timeout):
    """Poll an ORM ``check`` from async code until truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = await sync_to_async(check)()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


# -- the protocol, through the ASGI application ------------------------------------------
def test_it_refuses_a_websocket_without_the_sip_subprotocol(extension):
    async def scenario():
        results = {}
        for offered in ((), ("chat",), ("sip",)):
            communicator = phone_socket(offered)
            results[offered] = await communicator.connect()
            await communicator.disconnect()
        return results

    results = async_to_sync(scenario)()
    assert results[()][0] is False
    assert results[("chat",)][0] is False
    assert results[("sip",)] == (True, "sip")


def test_it_registers_over_ws_and_the_binding_ends_with_the_socket(extension, django_user_model):
    viewer = django_user_model.objects.create_user("watcher", password="pw")
    viewer.groups.add(Group.objects.get(name="viewer"))

    async def scenario():
        dashboard = WebsocketCommunicator(application, "/ws/live/")
        dashboard.scope["user"] = viewer
        assert (await dashboard.connect())[0]
        communicator = phone_socket()
        assert (await communicator.connect())[0]
        phone = WsPhone(communicator, extension)
        challenged, registered = await phone.register(PASSWORD)
        stored = await sync_to_async(bindings_of)(extension)
        await communicator.disconnect()
        gone = await eventually_async(lambda: not bindings_of(extension), GONE_WITHIN)
        seen = []
        while not any(e["action"] == "unregistered" for e in seen if e["type"] == "registration"):
            seen.extend((await dashboard.receive_json_from(timeout=5))["events"])
        await dashboard.disconnect()
        return challenged, registered, stored, gone, seen

    challenged, registered, stored, gone, seen = async_to_sync(scenario)()
    assert challenged.status == 401, challenged.raw
    assert registered.status == 200, registered.raw
    # Via sent-by is x.invalid: the answer names where it really came from.
    assert f"received={PHONE_IP}" in registered.get("Via")
    [binding] = stored
    assert binding.transport == "ws"
    assert binding.flow.startswith(f"{socket.gethostname()}:{os.getpid()}:ws:"), binding.flow
    assert (binding.source_ip, binding.source_port) == (PHONE_IP, 50123)
    assert any(f"k7{extension}@" in value for value in registered.get_all("Contact")), registered.raw
    assert gone, "the binding outlived its websocket"
    registrations = [e for e in seen if e["type"] == "registration"]
    assert [e["action"] for e in registrations] == ["registered", "unregistered"]
    assert all(e["transport"] == "ws" and e["extension"] == extension for e in registrations)


@pytest.mark.parametrize("secure_scope", [{"scheme": "wss"}, {"server": ("127.0.0.1", 8443)}],
                         ids=["scheme", "daphne-tls-port"])
def test_wss_is_named_by_the_scope_scheme_or_the_tls_port(extension, settings, secure_scope):
    # Daphne sets no "scheme" for websockets: its TLS endpoint is known by WEB_TLS_PORT.
    settings.WEB_TLS_PORT = 8443

    async def scenario():
        communicator = phone_socket()
        communicator.scope.update(secure_scope)
        assert (await communicator.connect())[0]
        _, registered = await WsPhone(communicator, extension).register(PASSWORD)
        transport = (await sync_to_async(bindings_of)(extension))[0].transport
        await communicator.disconnect()
        return registered, transport

    registered, transport = async_to_sync(scenario)()
    assert registered.status == 200, registered.raw
    assert transport == "wss"


def test_a_wrong_password_is_challenged_again_and_recorded(extension):
    async def scenario():
        communicator = phone_socket()
        assert (await communicator.connect())[0]
        _, answered = await WsPhone(communicator, extension).register("not-it")
        recorded = await eventually_async(
            lambda: list(AuthAttempt.objects.filter(extension_number=extension).values_list("transport", "reason")),
            5)
        await communicator.disconnect()
        return answered, recorded

    answered, recorded = async_to_sync(scenario)()
    assert answered.status == 401
    assert recorded == [("ws", "wrong_password")]
    assert not Binding.objects.exists()


def test_bad_input_gets_400_and_the_socket_lives_on(extension):
    async def scenario():
        communicator = phone_socket()
        assert (await communicator.connect())[0]
        phone = WsPhone(communicator, extension)
        bad = await phone.exchange(phone.register_bytes().replace(b"Expires: 600", b"Expires: soon"))
        await communicator.send_to(bytes_data=b"\x00\xff not SIP at all")
        await communicator.send_to(text_data="\r\n\r\n")
        pong = await communicator.receive_from(timeout=5)
        _, registered = await phone.register(PASSWORD)
        await communicator.disconnect()
        return bad, pong, registered

    bad, pong, registered = async_to_sync(scenario)()
    assert bad.status == 400, bad.raw
    assert pong == "\r\n"
    assert registered.status == 200, registered.raw


def test_a_message_sent_as_a_binary_frame_is_answered(extension):
    async def scenario():
        communicator = phone_socket()
        assert (await communicator.connect())[0]
        answered = await WsPhone(communicator, extension).exchange(
            WsPhone(communicator, extension).register_bytes(), binary=True)
        await communicator.disconnect()
        return answered

    assert async_to_sync(scenario)().status == 401


def test_an_oversized_message_closes_the_socket(extension):
    async def scenario():
        communicator = phone_socket()
        assert (await communicator.connect())[0]
        await communicator.send_to(text_data="OPTIONS " + "x" * 70_000)
        closed = await communicator.receive_output(timeout=5)
        await communicator.wait()
        return closed

    closed = async_to_sync(scenario)()
    assert closed == {"type": "websocket.close", "code": 1009}


def test_a_banned_address_cannot_open_a_sip_websocket(extension):
    from registrar.sip.protection import BanDecision

    services.ban_sources([BanDecision(PHONE_IP, time.time() + 600, 10, "test")])

    async def scenario():
        communicator = phone_socket()
        return await communicator.connect()

    assert async_to_sync(scenario)()[0] is False


def test_one_address_holds_at_most_its_share_of_sip_websockets(extension, settings):
    settings.SIP_TCP_MAX_PER_SOURCE = 1

    async def scenario():
        first, second = phone_socket(port=50001), phone_socket(port=50002)
        opened = [await first.connect(), await second.connect()]
        await first.disconnect()
        third = phone_socket(port=50003)
        opened.append(await third.connect())
        await third.disconnect()
        return [result[0] for result in opened]

    assert async_to_sync(scenario)() == [True, False, True]


# -- JsSIP in headless chromium, against daphne -------------------------------------------
# Last in the module: while the module's browser is up, Playwright holds a loop in this thread
# and async_to_sync (the protocol tests above) cannot run.
ADMIN = "wsboss"
ADMIN_PASSWORD = "ws-browser-pw-1"
PHONE_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>JsSIP phone</title>
<script src="/jssip.min.js"></script></head>
<body><p id="state">loading</p></body></html>"""
# JsSIP registers with a +sip.instance / reg-id Contact, Supported: path, gruu, outbound
# and Via SIP/2.0/WS <random>.invalid: as it comes, unconfigured.
START_PHONE = """([wsUrl, user, domain, password]) => {
    const state = document.getElementById("state");
    const socket = new JsSIP.WebSocketInterface(wsUrl);
    const ua = new JsSIP.UA({sockets: [socket], uri: `sip:${user}@${domain}`, password, register: true,
                             user_agent: "JsSIP regis-test", session_timers: false});
    ua.on("registered", () => { state.textContent = "registered"; });
    ua.on("registrationFailed", (event) => { state.textContent = `failed: ${event.cause}`; });
    state.textContent = "registering";
    window.__ua = ua;
    ua.start();
}"""


def _browser_requirements():
    if not JSSIP_BUNDLE.exists():
        return f"JsSIP is not installed ({JSSIP_BUNDLE}); run: npm ci --prefix tests/js"
    missing = web.missing_requirements()
    if missing:
        return missing
    return None


_missing_for_browser = _browser_requirements()


@pytest.fixture
def web_stack(transactional_db, settings, django_user_model, relay_socket):
    """daphne alone (no runsip: websockets are the web process's door).

    Digest stays as shipped (SHA-256, then MD5): JsSIP 3.12 does MD5 only, and it keeps the
    last WWW-Authenticate of a 401 (its parser's setHeader replaces), which is MD5's."""
    settings.SIP_DOMAIN = e2e.SIP_DOMAIN
    settings.SIP_REALM = e2e.SIP_DOMAIN
    services.ensure_soft_parameters()
    django_user_model.objects.create_superuser(ADMIN, "", ADMIN_PASSWORD)
    env = web.process_environment(e2e.database_url(django_settings.DATABASES["default"]), relay_socket)
    daphne = web.Daphne(env)
    try:
        daphne.start()
        yield daphne
    finally:
        died = daphne.died
        daphne.stop()
    if died:
        pytest.fail(f"daphne died during the test:\n{daphne.output[-4000:]}")


class PhoneSite:
    """The phone's page and JsSIP's bundle, served from loopback by a tiny HTTP server of the
    test (never a CDN). A page of its own origin, as a web phone would be, not the admin's."""

    def __init__(self):
        files = {"/phone.html": (PHONE_HTML.encode(), "text/html"),
                 "/jssip.min.js": (JSSIP_BUNDLE.read_bytes(), "text/javascript")}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body, content_type = files.get(self.path, (None, None))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((e2e.LOOPBACK, 0), Handler)
        self.url = f"http://{e2e.LOOPBACK}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def phone_site():
    site = PhoneSite()
    yield site
    site.close()


def open_phone(chromium, site):
    page = web.new_page(chromium, site.url)
    page.goto("/phone.html")
    assert page.evaluate("typeof JsSIP") == "object", page.console_messages_seen
    return page


def phone_diagnostics(page, daphne) -> str:
    console = "\n".join(page.console_messages_seen[-40:])
    return f"--- console\n{console}\n--- daphne\n{daphne.output[-4000:]}"


@pytest.mark.e2e
@pytest.mark.skipif(_missing_for_browser is not None, reason=_missing_for_browser or "")
def test_jssip_registers_over_websocket_and_its_binding_ends_with_the_page(chromium, web_stack, phone_site,
                                                                           tmp_path):
    services.create_extension("2002", PASSWORD)
    dashboard = web.new_page(chromium, web_stack.url)
    web.login(dashboard, ADMIN, ADMIN_PASSWORD)
    dashboard.goto("/registrations/")
    web.wait_live(dashboard)
    rows = dashboard.locator('table#registrations tr[data-extension="2002"]')
    assert rows.count() == 0
    web.mark_no_reload(dashboard)

    phone = open_phone(chromium, phone_site)
    ws_url = f"ws://{e2e.LOOPBACK}:{web_stack.port}/ws/sip"
    phone.evaluate(START_PHONE, [ws_url, "2002", e2e.SIP_DOMAIN, PASSWORD])
    try:
        phone.wait_for_function("document.getElementById('state').textContent !== 'registering'",
                                timeout=web.TIMEOUT_MS)
    except Exception as error:
        pytest.fail(f"JsSIP never finished registering: {error}\n{phone_diagnostics(phone, web_stack)}")
    state = phone.locator("#state").inner_text()
    assert state == "registered", f"JsSIP: {state}\n{phone_diagnostics(phone, web_stack)}"

    [binding] = bindings_of("2002")
    assert binding.transport == "ws" and binding.flow, (binding.transport, binding.flow)
    assert binding.user_agent == "JsSIP regis-test"
    assert binding.instance_id, "JsSIP's +sip.instance was not kept"
    rows.first.wait_for(timeout=web.TIMEOUT_MS)
    text = " ".join(rows.first.inner_text().split())
    assert " WS " in f" {text} " and "JsSIP regis-test" in text, text
    web.screenshot(dashboard, tmp_path, "registrations-jssip-ws.png")

    phone.context.close()

    assert e2e.eventually(lambda: not bindings_of("2002"), timeout=GONE_WITHIN), \
        f"the binding outlived the page's websocket\n{web_stack.output[-4000:]}"
    rows.first.wait_for(state="detached", timeout=web.TIMEOUT_MS)
    assert web.still_not_reloaded(dashboard), "the registrations page reloaded instead of updating live"
    dashboard.context.close()

