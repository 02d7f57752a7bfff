"""Contact qualify: OPTIONS pings from runsip, their outcomes, and how they are shown.

* the core's own answer to OPTIONS under soft parameter 105 (no network);
* :func:`registrar.services.record_qualify_results`: reachable, misses in a row,
  unreachable, events only when something notable changed;
* the API and the registrations page: status, RTT and NAT;
* end to end: a real runsip (soft parameter 106 at 1 s, 107 at 2, T1 lowered so a miss
  takes about two seconds) pinging phones on raw loopback sockets — over UDP at the
  source address although the Contact names a private one, over TCP on the phone's
  open connection — and, in chromium, the registrations page following along live.
"""
import json
import re
import secrets
import socket
import threading
import time
from datetime import datetime

import pytest
from django.conf import settings as django_settings

from registrar import services
from registrar.choices import QualifyStatus
from registrar.models import Binding
from registrar.sip.core import Origin, StoreRegistration
from registrar.sip.message import parse_message
from registrar.sip.policy import Policy
from registrar.sip.registrar import ContactRequest, RegisterRequest
from tests import e2e
from tests.test_core import Harness, answer, challenges, register

PASSWORD = "s3cret-qualify"


# -- the core: OPTIONS to the registrar (soft parameter 105) ---------------------------
def options(cseq=1, authorization=None):
    text = register(cseq=cseq, authorization=authorization, contact=None, expires=None)
    return text.replace("REGISTER sip", "OPTIONS sip").replace(f"{cseq} REGISTER", f"{cseq} OPTIONS")


def assert_capabilities(response):
    assert response.status == 200
    assert "REGISTER" in response.headers.get("Allow") and "OPTIONS" in response.headers.get("Allow")
    assert response.headers.get("Accept") == "application/sdp"
    assert "path" in response.headers.get("Supported")


def test_options_is_answered_without_authentication_when_105_is_off():
    harness = Harness(policy=Policy(options_require_auth=False))
    (response, _), = harness.send(options())
    assert_capabilities(response)
    assert not challenges(response) and harness.attempts == []


def test_options_is_challenged_when_105_is_on_and_answered_with_credentials():
    harness = Harness(policy=Policy(options_require_auth=True))
    (challenge, _), = harness.send(options())
    assert challenge.status == 401 and challenges(challenge)
    assert challenge.headers.get("Allow") is None
    credentials = answer(challenges(challenge)[0], "1001", "secret", method="OPTIONS")
    (response, _), = harness.send(options(cseq=2, authorization=credentials))
    assert_capabilities(response)


def test_options_with_a_wrong_password_is_challenged_again_and_recorded_when_105_is_on():
    harness = Harness(policy=Policy(options_require_auth=True))
    (challenge, _), = harness.send(options())
    credentials = answer(challenges(challenge)[0], "1001", "wrong", method="OPTIONS")
    (response, _), = harness.send(options(cseq=2, authorization=credentials))
    assert response.status == 401
    attempt, = harness.attempts
    assert attempt.method == "OPTIONS" and attempt.reason.value == "wrong_password"


# -- the service: outcomes of pings -----------------------------------------------------
def store_binding(number="1001", *, contact="sip:1001@192.168.1.20:5060", ip="203.0.113.7", port=40312,
                  transport="udp"):
    contact_request = ContactRequest(contact, "", None, "", None, 3600)
    request = RegisterRequest(number, f"call-{number}-{port}", 1, False, (contact_request,))
    origin = Origin(ip, port, transport, "Yealink T46", "")
    outcome, = services.store_registrations([StoreRegistration(1, request, origin, 5, Policy())], time.time())
    assert outcome.status == 200
    return Binding.objects.get(contact_uri=contact)


def result(binding, rtt_ms=None, *, at=None, port=None):
    return services.QualifyResult(binding.pk, binding.source_ip, port or binding.source_port, binding.transport,
                                  at or time.time(), rtt_ms)


@pytest.fixture
def extension(db):
    return services.create_extension("1001", PASSWORD)[0]


def test_an_answer_makes_a_contact_reachable_with_its_rtt(extension):
    binding = store_binding()
    assert binding.qualify_status == QualifyStatus.UNKNOWN
    published = services.record_qualify_results([result(binding, 12.345)], max_misses=2)
    binding.refresh_from_db()
    assert (binding.qualify_status, binding.rtt_ms, binding.qualify_misses) == ("reachable", 12.3, 0)
    assert binding.qualified_at is not None
    event, = published
    assert event["type"] == "qualify" and event["binding"] == binding.pk and event["extension"] == "1001"
    assert (event["status"], event["rtt_ms"], event["source"]) == ("reachable", 12.3, "203.0.113.7:40312")


def test_misses_in_a_row_make_it_unreachable_and_the_next_answer_reachable_again(extension):
    binding = store_binding()
    services.record_qualify_results([result(binding, 20.0)], max_misses=2)
    assert services.record_qualify_results([result(binding)], max_misses=2) == []
    binding.refresh_from_db()
    assert (binding.qualify_status, binding.qualify_misses) == ("reachable", 1)
    event, = services.record_qualify_results([result(binding)], max_misses=2)
    binding.refresh_from_db()
    assert (binding.qualify_status, binding.rtt_ms, binding.qualify_misses) == ("unreachable", None, 2)
    assert (event["status"], event["rtt_ms"]) == ("unreachable", None)
    event, = services.record_qualify_results([result(binding, 30.0)], max_misses=2)
    binding.refresh_from_db()
    assert (binding.qualify_status, binding.rtt_ms, binding.qualify_misses) == ("reachable", 30.0, 0)


def test_the_max_misses_default_to_soft_parameter_107(extension):
    services.set_soft_parameter("qualify_max_misses", 1)
    binding = store_binding()
    services.record_qualify_results([result(binding)])
    binding.refresh_from_db()
    assert binding.qualify_status == "unreachable"


def test_only_a_notable_rtt_move_is_published(extension):
    binding = store_binding()
    services.record_qualify_results([result(binding, 40.0)], max_misses=3)
    assert services.record_qualify_results([result(binding, 45.0)], max_misses=3) == []
    binding.refresh_from_db()
    assert binding.rtt_ms == 45.0
    event, = services.record_qualify_results([result(binding, 400.0)], max_misses=3)
    assert event["rtt_ms"] == 400.0


def test_a_batch_is_applied_in_order_with_one_event_per_binding(extension):
    first = store_binding()
    second = store_binding(contact="sip:1001@192.168.1.21:5060", port=40313)
    now = time.time()
    published = services.record_qualify_results(
        [result(first, at=now + 1), result(first, 10.0, at=now), result(second, 15.0, at=now)], max_misses=1)
    first.refresh_from_db()
    assert first.qualify_status == "unreachable"
    assert sorted((event["binding"], event["status"]) for event in published) == [
        (first.pk, "unreachable"), (second.pk, "reachable")]


def test_a_ping_to_an_address_the_phone_left_or_a_binding_gone_changes_nothing(extension):
    binding = store_binding()
    gone = store_binding(contact="sip:1001@192.168.1.21:5060", port=40313)
    gone_result = result(gone, 5.0)
    services.remove_binding(gone)
    assert services.record_qualify_results([result(binding, 5.0, port=40999), gone_result], max_misses=1) == []
    binding.refresh_from_db()
    assert (binding.qualify_status, binding.qualified_at) == ("unknown", None)


def test_the_targets_are_live_bindings_other_than_websockets(extension):
    udp = store_binding()
    tcp = store_binding(contact="sip:1001@192.168.1.21:5060;transport=tcp", port=40313, transport="tcp")
    store_binding(contact="sip:abc@df7jal23ls0d.invalid;transport=ws", port=40314, transport="ws")
    targets = services.qualify_targets()
    assert [(target.binding_id, target.source_port, target.transport) for target in targets] == [
        (udp.pk, 40312, "udp"), (tcp.pk, 40313, "tcp")]


# -- API and page -----------------------------------------------------------------------
def test_a_binding_knows_when_its_contact_is_behind_nat(extension):
    natted = store_binding()
    assert natted.behind_nat and natted.contact_address == "192.168.1.20:5060"
    direct = store_binding(contact="sip:1001@203.0.113.8:5062", ip="203.0.113.8", port=5062)
    assert not direct.behind_nat
    named = store_binding(contact="sip:abc@df7jal23ls0d.invalid;transport=ws", port=40314, transport="ws")
    assert not named.behind_nat and named.contact_address == "df7jal23ls0d.invalid"
    v6 = store_binding(contact="sip:1001@[2001:db8::1]:5060", ip="2001:db8:0:0::1", port=5060)
    assert not v6.behind_nat and v6.contact_address == "[2001:db8::1]:5060"


def test_the_api_shows_status_rtt_and_nat(as_viewer, extension):
    natted = store_binding()
    direct = store_binding(contact="sip:1001@203.0.113.8:5062", ip="203.0.113.8", port=5062)
    services.record_qualify_results([result(natted, 12.3)], max_misses=2)
    rows = {row["id"]: row for row in as_viewer.get("/api/v1/registrations/").json()["results"]}
    natted.refresh_from_db()
    row = rows[natted.pk]
    assert (row["qualify_status"], row["rtt_ms"], row["behind_nat"]) == ("reachable", 12.3, True)
    assert datetime.fromisoformat(row["qualified_at"]) == natted.qualified_at
    assert (row["source_ip"], row["source_port"], row["contact"]) == ("203.0.113.7", 40312,
                                                                      "sip:1001@192.168.1.20:5060")
    row = rows[direct.pk]
    assert (row["qualify_status"], row["rtt_ms"], row["qualified_at"], row["behind_nat"]) == (
        "unknown", None, None, False)
    assert as_viewer.get(f"/api/v1/registrations/{natted.pk}/").json() == rows[natted.pk]


def test_the_schema_documents_the_qualify_fields(as_viewer):
    response = as_viewer.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    schema = json.loads(response.content)
    properties = schema["components"]["schemas"]["Registration"]["properties"]
    assert {"qualify_status", "rtt_ms", "qualified_at", "behind_nat"} <= set(properties)


def row_of(page, binding):
    return page.split(f'data-binding="{binding.pk}"')[1].split("</tr>")[0]


def test_the_registrations_page_shows_status_rtt_and_nat(admin_client, extension):
    natted = store_binding()
    direct = store_binding(contact="sip:1001@203.0.113.8:5062", ip="203.0.113.8", port=5062)
    lost = store_binding(contact="sip:1001@203.0.113.9:5062", ip="203.0.113.9", port=5062)
    services.record_qualify_results([result(natted, 12.3), result(lost)], max_misses=1)
    for url in ("/registrations/", "/registrations/?partial=1", "/extensions/1001/"):
        page = admin_client.get(url).content.decode()
        row = row_of(page, natted)
        assert "Contact 192.168.1.20:5060, seen from 203.0.113.7:40312 — behind NAT" in row, url
        assert 'data-qualify="reachable"' in row and "Reachable" in row and "12.3 ms" in row, url
        row = row_of(page, direct)
        assert "behind NAT" not in row and 'data-qualify="unknown"' in row and " ms<" not in row, url
        row = row_of(page, lost)
        assert 'data-qualify="unreachable"' in row and "Unreachable" in row, url
    assert "<th>Reachable</th>" in admin_client.get("/registrations/").content.decode()


# -- the OPTIONS runsip sends -------------------------------------------------------------
def test_the_via_names_the_listening_host_or_the_advertised_one_for_a_wildcard(settings):
    from registrar.worker.qualify import _via_host

    settings.SIP_ADVERTISED_HOST = ""
    assert (_via_host("192.0.2.1"), _via_host("0.0.0.0"), _via_host("::1")) == ("192.0.2.1", "127.0.0.1", "[::1]")
    settings.SIP_ADVERTISED_HOST = "sip.example.com"
    assert (_via_host("0.0.0.0"), _via_host("::")) == ("sip.example.com", "sip.example.com")


def test_an_options_request_is_addressed_to_the_contact():
    from registrar.worker.qualify import options_request

    target = services.QualifyTarget(7, "1001", "sip:1001@10.0.0.5:5060;transport=tcp", "203.0.113.7", 40312, "tcp")
    data = options_request(target, via_transport="tcp", via_host="192.0.2.1", via_port=5060, branch="z9hG4bKabc",
                           domain="regis.test", call_id="c1@regis", cseq=3).decode()
    head, separator, body = data.partition("\r\n\r\n")
    lines = head.split("\r\n")
    assert separator and body == ""
    assert lines[0] == "OPTIONS sip:1001@10.0.0.5:5060;transport=tcp SIP/2.0"
    assert "Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKabc;rport" in lines
    assert "To: <sip:1001@10.0.0.5:5060;transport=tcp>" in lines and "CSeq: 3 OPTIONS" in lines
    assert {"Max-Forwards: 70", "Call-ID: c1@regis", "Content-Length: 0"} <= set(lines)
    assert any(re.fullmatch(r"From: <sip:regis@regis\.test>;tag=\w+", line) for line in lines)
    parsed = parse_message(data.encode())
    assert (parsed.method, parsed.top_via.branch, parsed.call_id) == ("OPTIONS", "z9hG4bKabc", "c1@regis")


# -- end to end: runsip pings phones ----------------------------------------------------
QUALIFY_ENV = {"SIP_TIMER_T1_MS": "30"}  # Timer F = 64*T1 ≈ 2 s: a miss is known within seconds
QUALIFY_WAIT = 30.0


class Phone:
    """A phone on a raw loopback socket. It registers with the Contact it is given, then a
    thread collects the OPTIONS it receives and answers each with ``status`` while
    ``answering`` is set (over UDP to the address the request came from, per rport)."""

    def __init__(self, runsip, transport="udp", status=200):
        self.client = e2e.SipClient((e2e.LOOPBACK, runsip.port), transport=transport)
        self.transport = transport
        self.status = status
        self.answering = threading.Event()
        self.answering.set()
        self.received = []
        self._stop = threading.Event()
        self._thread = None

    @property
    def port(self):
        return self.client.local_port

    def register(self, user, password, contact):
        first = self.client.request(self._register(user, contact, cseq=1))
        assert first.status == 401, first.raw
        challenge = e2e.parse_challenge(first.get_all("WWW-Authenticate")[0])
        value = e2e.authorization(challenge, username=user, password=password, method="REGISTER",
                                  uri=f"sip:{e2e.SIP_DOMAIN}")
        final = self.client.request(self._register(user, contact, cseq=2, authorization=value))
        assert final.status == 200, final.raw
        return final

    def _register(self, user, contact, *, cseq, authorization=None):
        lines = [
            f"REGISTER sip:{e2e.SIP_DOMAIN} SIP/2.0",
            f"Via: SIP/2.0/{self.transport.upper()} {e2e.LOOPBACK}:{self.port};branch=z9hG4bK{secrets.token_hex(8)}"
            ";rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{e2e.SIP_DOMAIN}>;tag={self.client.tag}",
            f"To: <sip:{user}@{e2e.SIP_DOMAIN}>",
            f"Call-ID: {self.client.call_id}",
            f"CSeq: {cseq} REGISTER",
            f"Contact: <{contact}>",
            "Expires: 3600",
            "User-Agent: qualify-test-phone",
        ]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def start_answering(self):
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _serve(self):
        self.client.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                if self.transport == "udp":
                    data, sender = self.client.sock.recvfrom(65535)
                else:
                    data, sender = self.client.receive(), None
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            if not data.startswith(b"OPTIONS "):
                continue
            self.received.append(data.decode())
            if self.answering.is_set():
                response = self._response_to(data.decode())
                if self.transport == "udp":
                    self.client.sock.sendto(response, sender)
                else:
                    self.client.sock.sendall(response)

    def _response_to(self, request):
        head = request.split("\r\n\r\n", 1)[0].split("\r\n")
        copied = [line for line in head[1:] if line.split(":", 1)[0].strip().lower() in
                  ("via", "from", "call-id", "cseq")]
        to = next(line for line in head if line.lower().startswith("to:"))
        phrase = {200: "OK", 405: "Method Not Allowed"}.get(self.status, "Whatever")
        lines = [f"SIP/2.0 {self.status} {phrase}", *copied, f"{to};tag=phone", "Content-Length: 0"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.client.close()


@pytest.fixture
def qualifying_runsip(transactional_db, settings):
    """runsip pinging every second, unreachable after two misses in a row."""
    settings.SIP_DOMAIN = e2e.SIP_DOMAIN
    settings.SIP_REALM = e2e.SIP_DOMAIN
    services.ensure_soft_parameters()
    services.create_extension("1001", PASSWORD)
    services.set_soft_parameter("qualify_interval", 1)
    services.set_soft_parameter("qualify_max_misses", 2)
    runsip = e2e.RunSip(e2e.database_url(django_settings.DATABASES["default"]), env=QUALIFY_ENV)
    runsip.start()
    phones = []
    yield runsip, phones
    for phone in phones:
        phone.close()
    died = runsip.died
    runsip.stop()
    if died:
        pytest.fail(f"runsip died during the test:\n{runsip.output[-4000:]}")


def binding_state(contact):
    binding = Binding.objects.filter(contact_uri=contact).first()
    return binding and (binding.qualify_status, binding.rtt_ms, binding.qualify_misses)


def wait_status(contact, status, runsip, phone):
    state = e2e.eventually(lambda: (binding_state(contact) or ("",))[0] == status and binding_state(contact),
                           timeout=QUALIFY_WAIT)
    assert state, (f"{contact} never became {status}: {binding_state(contact)}; {len(phone.received)} OPTIONS "
                   f"received\n{runsip.output[-3000:]}")
    return state


@pytest.mark.e2e
def test_runsip_pings_a_udp_phone_at_its_source_address_and_follows_it(qualifying_runsip):
    runsip, phones = qualifying_runsip
    phone = Phone(runsip)
    phones.append(phone)
    contact = "sip:1001@10.0.0.5:5060"  # a private address: only the source address reaches the phone
    phone.register("1001", PASSWORD, contact)
    phone.start_answering()

    status, rtt_ms, misses = wait_status(contact, "reachable", runsip, phone)
    assert rtt_ms is not None and rtt_ms >= 0 and misses == 0
    request = phone.received[0]
    head = request.split("\r\n")
    assert head[0] == f"OPTIONS {contact} SIP/2.0"
    assert re.search(rf"(?m)^Via: SIP/2\.0/UDP {re.escape(runsip.address)};branch=z9hG4bK[^;\s]+;rport\r$",
                     request), request
    assert re.search(rf"(?m)^From: <sip:regis@{re.escape(e2e.SIP_DOMAIN)}>;tag=\w+\r$", request), request
    assert f"\r\nTo: <{contact}>\r\n" in request and "\r\nMax-Forwards: 70\r\n" in request
    assert re.search(r"(?m)^CSeq: \d+ OPTIONS\r$", request) and "\r\nContent-Length: 0\r\n" in request
    assert re.search(r"(?m)^Call-ID: \S+\r$", request)

    phone.answering.clear()
    status, rtt_ms, misses = wait_status(contact, "unreachable", runsip, phone)
    assert rtt_ms is None and misses >= 2

    phone.answering.set()
    status, rtt_ms, misses = wait_status(contact, "reachable", runsip, phone)
    assert rtt_ms is not None and misses == 0


@pytest.mark.e2e
def test_runsip_pings_a_tcp_phone_on_its_open_connection_and_misses_it_once_closed(qualifying_runsip):
    runsip, phones = qualifying_runsip
    phone = Phone(runsip, transport="tcp", status=405)  # any final answer proves the phone is there
    phones.append(phone)
    contact = "sip:1001@10.0.0.6:5060;transport=tcp"
    phone.register("1001", PASSWORD, contact)
    phone.start_answering()

    status, rtt_ms, misses = wait_status(contact, "reachable", runsip, phone)
    assert rtt_ms is not None
    request = phone.received[0]
    assert request.startswith(f"OPTIONS {contact} SIP/2.0\r\n")
    assert re.search(rf"(?m)^Via: SIP/2\.0/TCP {re.escape(runsip.address)};branch=z9hG4bK", request), request

    phone.close()  # nobody can connect back to a phone behind NAT: no connection, no answer
    status, rtt_ms, misses = wait_status(contact, "unreachable", runsip, phone)
    assert misses >= 2


# -- in chromium: the registrations page follows the pings live -------------------------
ADMIN, ADMIN_PASSWORD = "boss", "browser-pw-1"


@pytest.fixture
def qualifying_stack(transactional_db, settings, django_user_model):
    """daphne and a qualifying runsip on one relay socket, an admin to log in with."""
    from tests import browser as web

    missing = web.missing_requirements()
    if missing:
        pytest.skip(missing)
    settings.SIP_DOMAIN = e2e.SIP_DOMAIN
    settings.SIP_REALM = e2e.SIP_DOMAIN
    relay = web.relay_socket_path()
    settings.LIVE_RELAY_SOCKET = relay
    services.ensure_soft_parameters()
    services.create_extension("1001", PASSWORD)
    services.set_soft_parameter("qualify_interval", 1)
    services.set_soft_parameter("qualify_max_misses", 2)
    django_user_model.objects.create_superuser(ADMIN, "", ADMIN_PASSWORD)
    env = web.process_environment(e2e.database_url(django_settings.DATABASES["default"]), relay)
    daphne = web.Daphne(env)
    runsip = e2e.RunSip(env["DATABASE_URL"], env={"LIVE_RELAY_SOCKET": relay, **QUALIFY_ENV})
    try:
        daphne.start()
        runsip.start()
        yield daphne, runsip
    finally:
        died = [(name, p) for name, p in (("daphne", daphne), ("runsip", runsip)) if p.died]
        runsip.stop()
        daphne.stop()
        web.remove_relay_socket(relay)
    if died:
        pytest.fail("\n".join(f"{name} died during the test:\n{p.output[-4000:]}" for name, p in died))


@pytest.fixture
def chromium_page(qualifying_stack):
    """Playwright's sync API marks this thread's loop as running, which Django's ORM guard
    mistakes for async code; the ORM calls here are plain synchronous ones between
    Playwright calls (Django's documented escape hatch, DJANGO_ALLOW_ASYNC_UNSAFE)."""
    from playwright.sync_api import sync_playwright

    from tests import browser as web

    daphne, _ = qualifying_stack
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        chromium = web.launch_chromium(playwright)
        try:
            page = web.new_page(chromium, daphne.url)
            yield page
        finally:
            chromium.close()


@pytest.mark.e2e
def test_the_registrations_page_shows_reachability_and_nat_live(qualifying_stack, chromium_page, tmp_path):
    from tests import browser as web

    daphne, runsip = qualifying_stack
    page = chromium_page
    web.login(page, ADMIN, ADMIN_PASSWORD)
    page.goto("/registrations/")
    web.wait_live(page)
    web.mark_no_reload(page)

    phone = Phone(runsip)
    try:
        phone.register("1001", PASSWORD, "sip:1001@10.0.0.5:5060")
        phone.start_answering()
        row = page.locator('table#registrations tr[data-extension="1001"]')
        reachable = row.locator('td.qualify[data-qualify="reachable"]')
        reachable.wait_for()
        text = " ".join(row.inner_text().split())
        assert "Reachable" in text and re.search(r"\d+(\.\d)? ms", text), text
        assert f"Contact 10.0.0.5:5060, seen from 127.0.0.1:{phone.port} — behind NAT" in text, text
        web.screenshot(page, tmp_path, "registrations-qualify.png")

        phone.answering.clear()
        row.locator('td.qualify[data-qualify="unreachable"]').wait_for(timeout=QUALIFY_WAIT * 1000)
        assert "Unreachable" in row.inner_text()
        assert web.still_not_reloaded(page), "the registrations page reloaded instead of updating live"
    finally:
        phone.close()
