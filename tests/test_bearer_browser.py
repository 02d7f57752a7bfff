"""A web phone with an OAuth token (issue 6): JsSIP 3.12 in headless chromium registers
over ws with a bearer token from Regis's own authorization server, with no SIP password.

JsSIP's ``authorization_jwt`` option is the whole Authorization header value: its
RequestSender sets ``Authorization: <authorization_jwt>`` on every request it sends,
verbatim, so the page passes ``"Bearer " + token`` (RFC 8898 §2.1). With neither password
nor ha1 configured JsSIP never answers a challenge: a 401 is the end (``registrationFailed``).

The token comes from daphne's ``/o/token/`` (password grant) and the websocket door, in
the same daphne, asks ``/o/introspect/`` about it (RFC 7662). JsSIP's bundle and the
phone's page are served from loopback by the test (tests/test_websocket_sip.PhoneSite).
"""
import pytest

from registrar.models import AuthAttempt, Binding
from tests import browser as web
from tests import e2e
from tests.test_websocket_sip import PhoneSite, _browser_requirements, open_phone, phone_diagnostics

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

_missing = _browser_requirements()
needs_browser = pytest.mark.skipif(_missing is not None, reason=_missing or "")

# The page records every message JsSIP hands its socket, so the test sees the REGISTERs as sent.
START_PHONE = """([wsUrl, user, domain, authorization]) => {
    const state = document.getElementById("state");
    const socket = new JsSIP.WebSocketInterface(wsUrl);
    window.__sent = [];
    const send = socket.send.bind(socket);
    socket.send = (message) => { window.__sent.push(String(message)); return send(message); };
    const ua = new JsSIP.UA({sockets: [socket], uri: `sip:${user}@${domain}`, authorization_jwt: authorization,
                             register: true, user_agent: "JsSIP regis-bearer", session_timers: false});
    ua.on("registered", () => { state.textContent = "registered"; });
    ua.on("registrationFailed", (event) => {
        window.__challenge = event.response ? event.response.getHeader("WWW-Authenticate") : null;
        state.textContent = `failed: ${event.cause}`;
    });
    state.textContent = "registering";
    window.__ua = ua;
    ua.start();
}"""
PHONE_SECRETS = "[window.__ua.configuration.password, window.__ua.configuration.ha1]"


@pytest.fixture
def phone_site():
    site = PhoneSite()
    yield site
    site.close()


@pytest.fixture
def token_for(bearer_setup):
    return bearer_setup[0]


def start_phone(chromium, site, daphne, user, token):
    page = open_phone(chromium, site)
    ws_url = f"ws://{e2e.LOOPBACK}:{daphne.port}/ws/sip"
    page.evaluate(START_PHONE, [ws_url, user, e2e.SIP_DOMAIN, f"Bearer {token}"])
    try:
        page.wait_for_function("document.getElementById('state').textContent !== 'registering'",
                               timeout=web.TIMEOUT_MS)
    except Exception as error:
        pytest.fail(f"JsSIP never finished registering: {error}\n{phone_diagnostics(page, daphne)}")
    return page, page.locator("#state").inner_text()


def sent_registers(page) -> list[str]:
    return [message for message in page.evaluate("window.__sent") if message.startswith("REGISTER ")]


def header(message: str, name: str) -> list[str]:
    prefix = f"{name.lower()}:"
    return [line.split(":", 1)[1].strip() for line in message.split("\r\n") if line.lower().startswith(prefix)]


@needs_browser
def test_jssip_registers_over_ws_with_a_bearer_token_and_no_password(chromium, token_for, authorization_server,
                                                                     phone_site):
    value = token_for("1001")
    phone, state = start_phone(chromium, phone_site, authorization_server, "1001", value)
    assert state == "registered", f"JsSIP: {state}\n{phone_diagnostics(phone, authorization_server)}"

    assert phone.evaluate(PHONE_SECRETS) == [None, None], "JsSIP had a password or ha1"
    # One REGISTER, the token on it from the start: no challenge answered.
    [register] = sent_registers(phone)
    assert header(register, "Authorization") == [f"Bearer {value}"]
    [binding] = Binding.objects.filter(extension__number="1001")
    assert binding.transport == "ws" and binding.flow, (binding.transport, binding.flow)
    assert binding.user_agent == "JsSIP regis-bearer"
    phone.context.close()


@needs_browser
def test_jssip_with_another_extensions_token_is_refused(chromium, token_for, authorization_server, phone_site):
    theirs = token_for("1002")
    phone, state = start_phone(chromium, phone_site, authorization_server, "1001", theirs)
    assert state == "failed: Authentication Error", \
        f"JsSIP: {state}\n{phone_diagnostics(phone, authorization_server)}"
    assert 'error="invalid_request"' in (phone.evaluate("window.__challenge") or "")
    [register] = sent_registers(phone)
    assert header(register, "Authorization") == [f"Bearer {theirs}"]

    attempt = e2e.eventually(lambda: AuthAttempt.objects.filter(reason="token_user_mismatch").first())
    assert attempt, f"no token_user_mismatch attempt\n{authorization_server.output[-4000:]}"
    assert (attempt.status, attempt.transport, attempt.extension_number, attempt.user_agent) == \
        (401, "ws", "1001", "JsSIP regis-bearer")
    assert not Binding.objects.filter(extension__number__in=["1001", "1002"]).exists()
    phone.context.close()

