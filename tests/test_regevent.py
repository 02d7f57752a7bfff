"""The reg event package (RFC 3680 over RFC 6665): SUBSCRIBE, NOTIFY and the reginfo document.

First without sockets (regevent.py's documents and decisions, the core's answers), then
over real UDP and TCP against a ``runsip`` subprocess with a small independent
subscriber that registers, subscribes with digest and answers NOTIFYs.
"""
import re
import secrets
import shutil
import socket
import time
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import replace

import pytest
from django.conf import settings as django_settings

from registrar import services, subscriptions
from registrar.models import AuthAttempt, Subscription
from registrar.sip import regevent
from registrar.sip.core import Credentials
from registrar.sip.errors import SipError
from registrar.sip.message import parse_message
from registrar.sip.reasons import Reason
from tests import e2e
from tests.e2e import eventually
from tests.test_core import NOW, PHONE, REALM, Harness, answer, challenges, ha1s

NS = {"r": regevent.NAMESPACE}


# -- the document ------------------------------------------------------------------------
def contact(uri="sip:1001@192.0.2.10:5062", expires_in=3600, flow="", q=None, refreshed=NOW - 10):
    return regevent.ContactState(uri, q, "call-1@phone", 7, NOW + expires_in, NOW - 100, refreshed, flow)


def parsed(body: bytes):
    return ET.fromstring(body)


def test_a_full_state_document_is_well_formed_reginfo():
    body = regevent.reginfo("sip:1001@regis.test", 0, regevent.full_state([contact(q=0.5)]), NOW, full=True)
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = parsed(body)
    assert root.tag == f"{{{regevent.NAMESPACE}}}reginfo"
    assert root.get("version") == "0" and root.get("state") == "full"
    registration, = root.findall("r:registration", NS)
    assert registration.get("aor") == "sip:1001@regis.test" and registration.get("state") == "active"
    assert registration.get("id") == regevent.registration_id("sip:1001@regis.test")
    element, = registration.findall("r:contact", NS)
    assert element.get("state") == "active" and element.get("event") == "registered"
    assert element.get("expires") == "3600" and element.get("q") == "0.5"
    assert element.get("duration-registered") == "100" and element.get("callid") == "call-1@phone"
    assert element.get("id") == regevent.contact_id("sip:1001@regis.test", "sip:1001@192.0.2.10:5062")
    assert element.find("r:uri", NS).text == "sip:1001@192.0.2.10:5062"


def test_an_aor_without_contacts_is_in_state_init():
    registration = parsed(regevent.reginfo("sip:1001@regis.test", 3, [], NOW, full=True)).find("r:registration", NS)
    assert registration.get("state") == "init" and registration.findall("r:contact", NS) == []


def test_markup_in_uris_and_call_ids_is_escaped():
    tricky = regevent.ContactState('sip:a&b@host;x="<y>"', None, 'id"<&>', 1, NOW + 60, NOW, NOW)
    body = regevent.reginfo('sip:"x"&<y>@regis.test', 1, regevent.full_state([tricky]), NOW, full=True)
    root = parsed(body)
    registration = root.find("r:registration", NS)
    assert registration.get("aor") == 'sip:"x"&<y>@regis.test'
    element = registration.find("r:contact", NS)
    assert element.find("r:uri", NS).text == 'sip:a&b@host;x="<y>"' and element.get("callid") == 'id"<&>'


def test_a_partial_document_says_the_registration_ended_with_its_last_contact():
    gone = regevent.ContactChange(contact(expires_in=-1), "terminated", "expired")
    root = parsed(regevent.reginfo("sip:1001@regis.test", 4, [gone], NOW, full=False, remaining=0))
    assert root.get("state") == "partial" and root.get("version") == "4"
    registration = root.find("r:registration", NS)
    assert registration.get("state") == "terminated"
    element = registration.find("r:contact", NS)
    assert element.get("state") == "terminated" and element.get("event") == "expired"
    assert element.get("expires") is None
    still = regevent.ContactChange(contact(), "active", "refreshed")
    root = parsed(regevent.reginfo("sip:1001@regis.test", 5, [still], NOW, full=False, remaining=2))
    assert root.find("r:registration", NS).get("state") == "active"


def test_changes_name_what_happened_to_each_contact():
    before = {"sip:a": contact("sip:a"), "sip:b": contact("sip:b"), "sip:c": contact("sip:c", expires_in=-1),
              "sip:d": contact("sip:d", flow="host:1:ws:1"), "sip:e": contact("sip:e", flow="host:1:tcp:2")}
    after = {"sip:a": contact("sip:a"), "sip:b": contact("sip:b", refreshed=NOW, expires_in=3700),
             "sip:new": contact("sip:new")}
    found = {change.contact.uri: (change.state, change.event)
             for change in regevent.changes(before, after, NOW, unregistered={"sip:e"})}
    assert found == {"sip:b": ("active", "refreshed"), "sip:new": ("active", "registered"),
                     "sip:c": ("terminated", "expired"), "sip:d": ("terminated", "deactivated"),
                     "sip:e": ("terminated", "unregistered")}
    assert regevent.changes(after, after, NOW) == []


# -- SUBSCRIBE and NOTIFY ------------------------------------------------------------------
def subscribe(watched="1001", user="1001", *, event="reg", expires="600", cseq=1, call_id="sub-1@watcher",
              to_tag=None, authorization=None, extra=(), contact=True, method="SUBSCRIBE"):
    to = f"<sip:{watched}@{REALM}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [f"{method} sip:{watched}@{REALM} SIP/2.0",
             f"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-{call_id}-{cseq};rport",
             "Max-Forwards: 70", f"From: <sip:{user}@{REALM}>;tag=from-{user}", f"To: {to}",
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method}"]
    if contact:
        lines.append(f"Contact: <sip:{user}@192.0.2.10:5062>")
    if event is not None:
        lines.append(f"Event: {event}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if authorization:
        lines.append(f"Authorization: {authorization}")
    lines += list(extra) + ["Content-Length: 0"]
    return "\r\n".join(lines) + "\r\n\r\n"


def test_interpret_subscribe_reads_the_dialog_and_clamps_expires():
    request = parse_message(subscribe(expires="99999", extra=(
        "Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>", "Accept: application/reginfo+xml"),
        event="reg;id=42").encode())
    asked = regevent.interpret_subscribe(request, 3600, "ourtag")
    assert asked.watched == "1001" and asked.expires == 3600 and asked.event_id == "42"
    assert asked.route_set == ("<sip:p1.example;lr>", "<sip:p2.example;lr>")
    assert (asked.remote_tag, asked.local_tag, asked.in_dialog) == ("from-1001", "ourtag", False)
    assert asked.remote_target == "sip:1001@192.0.2.10:5062" and asked.local_uri == f"sip:1001@{REALM}"
    default = regevent.interpret_subscribe(parse_message(subscribe(expires=None).encode()), 86400, "t")
    assert default.expires == regevent.DEFAULT_EXPIRES


@pytest.mark.parametrize("event", ["presence", "Reg", None])
def test_another_event_package_is_a_bad_event(event):
    with pytest.raises(SipError) as raised:
        regevent.interpret_subscribe(parse_message(subscribe(event=event).encode()), 3600, "t")
    assert raised.value.status == 489 and ("Allow-Events", "reg") in raised.value.headers


def test_an_accept_without_reginfo_is_not_acceptable():
    request = parse_message(subscribe(extra=("Accept: application/pidf+xml",)).encode())
    with pytest.raises(SipError) as raised:
        regevent.interpret_subscribe(request, 3600, "t")
    assert raised.value.status == 406


def test_a_notify_is_built_in_the_dialog():
    dialog = regevent.Dialog(7, 1, "1001", "1001", "sub-1@watcher", "from-1001", "ourtag", "42",
                             "sip:1001@192.0.2.10:5062", ("<sip:p1.example;lr>",), f"sip:1001@{REALM}",
                             f"sip:1001@{REALM}", 1, 3, 2, "udp", "192.0.2.10", 5062, "", NOW + 300)
    body = regevent.reginfo(dialog.aor, 2, [], NOW, full=True)
    note = regevent.Notification(dialog, regevent.subscription_state(dialog, NOW), body)
    request = parse_message(regevent.notify_request(note, branch="z9hG4bKabc", local_host="192.0.2.1",
                                                    local_port=5060, user_agent="Regis"))
    assert request.method == "NOTIFY" and str(request.uri) == "sip:1001@192.0.2.10:5062"
    assert request.headers.get_all("Route") == ["<sip:p1.example;lr>"]
    assert request.from_.tag == "ourtag" and request.to.tag == "from-1001" and request.cseq == (3, "NOTIFY")
    assert request.headers.get("Event") == "reg;id=42"
    assert request.headers.get("Subscription-State") == "active;expires=300"
    assert request.headers.get("Content-Type") == "application/reginfo+xml" and request.body == body
    assert request.top_via.branch == "z9hG4bKabc"
    terminated = regevent.subscription_state(dialog, NOW, "timeout")
    assert terminated == "terminated;reason=timeout"


# -- the core's answers ------------------------------------------------------------------------
def watch_harness():
    return Harness(extensions={
        "1001": Credentials("1001", True, ha1s("1001", "secret"), 3),
        "1003": Credentials("1003", True, ha1s("1003", "secret"), 3),
        "1004": Credentials("1004", True, ha1s("1004", "secret"), 3, frozenset({"*"})),
    })


def authenticated(harness, watched, user, **kwargs):
    """SUBSCRIBE → 401 → with digest; the core's actions for the second."""
    (first, _), = harness.send(subscribe(watched, user, **kwargs))
    assert first.status == 401
    credentials = answer(challenges(first)[0], user, "secret", uri=f"sip:{watched}@{REALM}", method="SUBSCRIBE")
    text = subscribe(watched, user, authorization=credentials, cseq=2, **kwargs)
    return harness.core.receive(text.encode(), PHONE, NOW)


def test_a_subscribe_for_its_own_aor_is_handed_to_the_database_then_answered():
    harness = watch_harness()
    action, = authenticated(harness, "1001", "1001")
    assert isinstance(action, regevent.StoreSubscription)
    assert action.subscriber == "1001" and action.subscribe.watched == "1001" and action.subscribe.expires == 600
    outcome = regevent.SubscribeOutcome(200, "OK", expires=600, contact="<sip:192.0.2.1:5060;transport=udp>")
    sent, = harness.core.subscription_stored(action.ticket, outcome, NOW)
    response = parse_message(sent.data)
    assert response.status == 200 and response.headers.get("Expires") == "600"
    assert response.headers.get("Contact") == "<sip:192.0.2.1:5060;transport=udp>"
    assert response.to.tag == action.subscribe.local_tag


def test_watching_another_aor_needs_the_may_watch_list():
    harness = watch_harness()
    record, sent = authenticated(harness, "1001", "1003")
    assert parse_message(sent.data).status == 403
    assert record.attempt.reason == Reason.WATCH_NOT_ALLOWED and record.attempt.method == "SUBSCRIBE"
    action, = authenticated(harness, "1001", "1004", call_id="sub-2@watcher")
    assert isinstance(action, regevent.StoreSubscription)
    sent, = authenticated(harness, "9999", "1004", call_id="sub-3@watcher")
    assert parse_message(sent.data).status == 404


def test_a_refusal_decided_by_the_database_is_recorded():
    harness = watch_harness()
    action, = authenticated(harness, "1001", "1001")
    outcome = regevent.SubscribeOutcome(403, "Forbidden", reason=Reason.NOT_REGISTERED, detail="no binding")
    record, sent = harness.core.subscription_stored(action.ticket, outcome, NOW)
    assert record.attempt.reason == Reason.NOT_REGISTERED and parse_message(sent.data).status == 403


def test_other_methods_get_405_and_allow_names_subscribe():
    # (INVITE is a call now, relayed by the proxy: tests/test_proxy.py.)
    (response, _), = watch_harness().send(subscribe(method="MESSAGE"))
    assert response.status == 405 and "SUBSCRIBE" in response.headers.get("Allow")


# -- stored subscriptions, and the admin's read-only view --------------------------------------
def store_action(watched="1001", subscriber="1001", call_id="sub-1@watcher"):
    request = parse_message(subscribe(watched, subscriber, call_id=call_id).encode())
    return regevent.StoreSubscription(1, regevent.interpret_subscribe(request, 3600, "ourtag"), subscriber, "udp",
                                      "192.0.2.10", 5062, "", NOW)


@pytest.mark.django_db
def test_each_notify_counts_up_the_stored_cseq_and_version():
    extension, _ = services.create_extension("1001", "pw")
    dialog = subscriptions.create(store_action(), extension.pk, NOW + 600)
    assert (dialog.local_cseq, dialog.version, dialog.watched) == (1, 0, "1001")
    assert subscriptions.advance([dialog.id, 999]) == {dialog.id: (2, 1)}
    assert subscriptions.find("sub-1@watcher", "from-1001", "ourtag") == replace(dialog, local_cseq=2, version=1)
    assert subscriptions.end([dialog.id]) == 1 and subscriptions.advance([dialog.id]) == {}


@pytest.mark.django_db
def test_the_api_lists_subscriptions_read_only(as_viewer, as_admin, client):
    extension, _ = services.create_extension("1001", "pw")
    subscriptions.create(store_action(), extension.pk, NOW + 600)
    body = as_viewer.get("/api/v1/subscriptions/").json()
    row, = body["results"]
    assert row["watched"] == "1001" and row["subscriber"] == "1001" and row["transport"] == "udp"
    assert row["version"] == 0 and row["remote_target"] == "sip:1001@192.0.2.10:5062"
    assert as_admin.post("/api/v1/subscriptions/", {}).status_code == 405
    assert client.get("/api/v1/subscriptions/").status_code in (401, 403)


# -- over real sockets, against runsip -----------------------------------------------------------
PASSWORD = "watch-s3cret"


def _message(data: bytes):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return lines[0], headers, body


class Notify:
    def __init__(self, data):
        self.start, self.headers, self.body = _message(data)
        self.data = data

    def header(self, name):
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def document(self):
        return ET.fromstring(self.body)

    @property
    def version(self):
        return int(self.document.get("version"))

    @property
    def state(self):
        return self.document.get("state")

    def contacts(self):
        return [(element.get("state"), element.get("event"), element.find("r:uri", NS).text)
                for element in self.document.iter(f"{{{regevent.NAMESPACE}}}contact")]


class Watcher:
    """A device that registers and subscribes from one socket, and answers NOTIFYs
    (200 unless told otherwise)."""

    def __init__(self, port, user, *, transport="udp", bind_host=e2e.LOOPBACK, password=PASSWORD):
        self.client = e2e.SipClient((e2e.LOOPBACK, port), transport=transport, bind_host=bind_host)
        self.server = (e2e.LOOPBACK, port)
        self.user = user
        self.password = password
        self.transport = transport
        self.call_id = secrets.token_hex(8) + "@watcher"
        self.tag = secrets.token_hex(4)
        self.to_tag = None
        self.cseq = 0
        self.notifies = deque()
        self.answer_status = 200

    def close(self):
        self.client.close()

    def register(self, expires=3600):
        return self.client.register_with_digest(self.user, self.password, algorithm="SHA-256", expires=expires)[1]

    def _subscribe_bytes(self, watched, expires, event, authorization=None):
        self.cseq += 1
        host, port = self.client.host, self.client.local_port
        to = f"<sip:{watched}@{e2e.SIP_DOMAIN}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        lines = [f"SUBSCRIBE sip:{watched}@{e2e.SIP_DOMAIN} SIP/2.0",
                 f"Via: SIP/2.0/{self.transport.upper()} {host}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport",
                 "Max-Forwards: 70", f"From: <sip:{self.user}@{e2e.SIP_DOMAIN}>;tag={self.tag}", f"To: {to}",
                 f"Call-ID: {self.call_id}", f"CSeq: {self.cseq} SUBSCRIBE",
                 f"Contact: <sip:{self.user}@{host}:{port};transport={self.transport}>",
                 f"Event: {event}", f"Expires: {expires}", "Accept: application/reginfo+xml"]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def subscribe(self, watched, *, expires=600, event="reg", authenticate=True):
        """(first answer, final answer): a 401 is answered with digest when ``authenticate``."""
        first = self._request(self._subscribe_bytes(watched, expires, event))
        final = first
        if first.status == 401 and authenticate:
            challenge = next(e2e.parse_challenge(v) for v in first.get_all("WWW-Authenticate"))
            value = e2e.authorization(challenge, username=self.user, password=self.password, method="SUBSCRIBE",
                                      uri=f"sip:{watched}@{e2e.SIP_DOMAIN}")
            final = self._request(self._subscribe_bytes(watched, expires, event, value))
        if final.status == 200 and self.to_tag is None:
            self.to_tag = re.search(r";tag=([^;>\s]+)", final.get("To")).group(1)
        return first, final

    def _request(self, data, timeout=5.0):
        self.client.send(data)
        cseq = self.cseq
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw = self._receive(deadline)
            if raw is None:
                break
            if raw.startswith(b"SIP/2.0"):
                response = e2e.parse_response(raw)
                if response.status >= 200 and response.get("CSeq") == f"{cseq} SUBSCRIBE":
                    return response
            else:
                self._take_request(raw)
        raise TimeoutError("no final answer to the SUBSCRIBE")

    def _receive(self, deadline):
        self.client.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            return self.client.receive()
        except (TimeoutError, socket.timeout):
            return None

    def _take_request(self, raw):
        notify = Notify(raw)
        if notify.start.startswith("NOTIFY"):
            self.notifies.append(notify)
            self._answer(notify, self.answer_status)

    def _answer(self, notify, status):
        phrase = {200: "OK", 481: "Subscription Does Not Exist"}[status]
        lines = [f"SIP/2.0 {status} {phrase}"]
        for name in ("via", "from", "to", "call-id", "cseq"):
            lines += [f"{name.title() if name != 'call-id' else 'Call-ID'}: {value}" for value in notify.headers[name]]
        lines.append("Content-Length: 0")
        self.client.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    def next_notify(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not self.notifies and time.monotonic() < deadline:
            raw = self._receive(deadline)
            if raw is not None and not raw.startswith(b"SIP/2.0"):
                self._take_request(raw)
        if not self.notifies:
            raise TimeoutError("no NOTIFY")
        return self.notifies.popleft()

    def no_notify(self, within=1.0):
        try:
            return self.next_notify(within) and False
        except TimeoutError:
            return True


@pytest.fixture
def runsip(transactional_db, settings):
    settings.SIP_DOMAIN = settings.SIP_REALM = e2e.SIP_DOMAIN
    started = []

    def start(port=None, **env):
        process = e2e.RunSip(e2e.database_url(django_settings.DATABASES["default"]), port=port, env=env)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        alive = not process.died
        process.stop()
        assert alive, process.output


@pytest.fixture
def watchers():
    made = []

    def make(*args, **kwargs):
        made.append(Watcher(*args, **kwargs))
        return made[-1]

    yield make
    for watcher in made:
        watcher.close()


def phone_register(worker, user, expires=3600):
    with e2e.SipClient((e2e.LOOPBACK, worker.port)) as phone:
        answer_ = phone.register_with_digest(user, PASSWORD, algorithm="SHA-256", expires=expires)[1]
        assert answer_.status == 200
        return phone.local_port, phone.call_id, phone.tag


def test_a_subscriber_gets_the_full_state_then_a_partial_notify_per_change(runsip, watchers):
    services.create_extension("3001", PASSWORD)
    worker = runsip()
    watcher = watchers(worker.port, "3001")
    assert watcher.register().status == 200
    first, final = watcher.subscribe("3001", expires=600)
    assert first.status == 401
    assert final.status == 200 and final.get("Expires") == "600" and "reg" in final.get("Allow-Events")
    assert re.match(r"<sip:127\.0\.0\.1:\d+;transport=udp>", final.get("Contact"))
    full = watcher.next_notify()
    assert full.header("Event") == "reg" and full.header("Content-Type") == "application/reginfo+xml"
    assert re.fullmatch(r"active;expires=(600|599)", full.header("Subscription-State"))
    assert full.header("Call-ID") == watcher.call_id and f"tag={watcher.to_tag}" in full.header("From")
    assert full.state == "full" and full.version == 0
    own_contact = f"sip:3001@127.0.0.1:{watcher.client.local_port};transport=udp"
    assert full.contacts() == [("active", "registered", own_contact)]
    subscription = Subscription.objects.get()
    assert subscription.subscriber == "3001" and subscription.watched.number == "3001"

    with e2e.SipClient((e2e.LOOPBACK, worker.port)) as phone:
        assert phone.register_with_digest("3001", PASSWORD, algorithm="SHA-256")[1].status == 200
        phone_contact = f"sip:3001@127.0.0.1:{phone.local_port};transport=udp"
        registered = watcher.next_notify()
        assert registered.state == "partial" and registered.version == 1
        assert registered.contacts() == [("active", "registered", phone_contact)]
        assert int(registered.header("CSeq").split()[0]) > int(full.header("CSeq").split()[0])

        answer_ = phone.register("3001", authorization_value=None)  # refresh: challenged, then with digest
        challenge = e2e.parse_challenge(answer_.get("WWW-Authenticate"))
        value = e2e.authorization(challenge, username="3001", password=PASSWORD, method="REGISTER",
                                  uri=f"sip:{e2e.SIP_DOMAIN}")
        assert phone.register("3001", authorization_value=value).status == 200
        refreshed = watcher.next_notify()
        assert refreshed.version == 2 and refreshed.contacts() == [("active", "refreshed", phone_contact)]

        answer_ = phone.register("3001", expires=0)
        challenge = e2e.parse_challenge(answer_.get("WWW-Authenticate"))
        value = e2e.authorization(challenge, username="3001", password=PASSWORD, method="REGISTER",
                                  uri=f"sip:{e2e.SIP_DOMAIN}")
        assert phone.register("3001", expires=0, authorization_value=value).status == 200
        unregistered = watcher.next_notify()
        assert unregistered.version == 3
        assert unregistered.contacts() == [("terminated", "unregistered", phone_contact)]
        assert unregistered.document.find("r:registration", NS).get("state") == "active"

    # A refresh in the dialog re-arms it and is answered with the full state.
    assert watcher.subscribe("3001", expires=300)[1].status == 200
    again = watcher.next_notify()
    assert again.state == "full" and again.version == 4 and "expires=300" in again.header("Subscription-State")
    # Unsubscribing ends it with a final NOTIFY.
    assert watcher.subscribe("3001", expires=0)[1].status == 200
    final_notify = watcher.next_notify()
    assert final_notify.header("Subscription-State") == "terminated;reason=timeout"
    assert not Subscription.objects.exists()


def test_an_expired_binding_and_an_expired_subscription_are_notified(runsip, watchers):
    services.create_extension("3002", PASSWORD)
    services.set_soft_parameter("min_expires", 1, actor="test")
    worker = runsip()
    watcher = watchers(worker.port, "3002")
    assert watcher.register().status == 200
    assert watcher.subscribe("3002", expires=600)[1].status == 200
    watcher.next_notify()
    port, _, _ = phone_register(worker, "3002", expires=2)
    assert watcher.next_notify().contacts()[0][:2] == ("active", "registered")
    expired = watcher.next_notify(timeout=10)
    assert expired.contacts() == [("terminated", "expired", f"sip:3002@127.0.0.1:{port};transport=udp")]

    # A subscription of 2 s ends by itself with a terminated NOTIFY.
    short = watchers(worker.port, "3002")
    assert short.register().status == 200
    assert short.subscribe("3002", expires=2)[1].status == 200
    assert short.next_notify().state == "full"
    ended = short.next_notify(timeout=10)
    assert ended.header("Subscription-State") == "terminated;reason=timeout"
    assert eventually(lambda: Subscription.objects.count() == 1)


def test_who_may_subscribe(runsip, watchers):
    for number in ("3003", "3004", "3005"):
        services.create_extension(number, PASSWORD)
    worker = runsip()
    other = watchers(worker.port, "3004")
    assert other.register().status == 200
    first, final = other.subscribe("3003")
    assert first.status == 401 and final.status == 403
    assert eventually(lambda: AuthAttempt.objects.filter(reason=Reason.WATCH_NOT_ALLOWED, auth_username="3004",
                                                         method="SUBSCRIBE").exists())
    services.update_extension(services.Extension.objects.get(number="3004"), may_watch="3003, 3009")
    allowed = watchers(worker.port, "3004")
    assert allowed.register().status == 200
    assert eventually(lambda: allowed.subscribe("3003")[1].status == 200)
    assert allowed.next_notify().contacts() == []

    # Seed 001: a device whose REGISTER failed gets 403 to its SUBSCRIBE.
    failed = watchers(worker.port, "3005", bind_host="127.0.0.5")
    assert failed.client.register_with_digest("3005", "wrong", algorithm="SHA-256")[1].status == 401
    assert failed.subscribe("3005")[1].status == 403
    assert eventually(lambda: AuthAttempt.objects.filter(reason=Reason.NOT_REGISTERED, method="SUBSCRIBE",
                                                         source_ip="127.0.0.5").exists())
    # No credentials: challenged, never subscribed.
    anonymous = watchers(worker.port, "3005")
    first, final = anonymous.subscribe("3005", authenticate=False)
    assert first.status == 401 and first.get("WWW-Authenticate")


def test_other_events_and_methods_are_refused(runsip, watchers):
    services.create_extension("3006", PASSWORD)
    worker = runsip()
    watcher = watchers(worker.port, "3006")
    first, _ = watcher.subscribe("3006", event="presence", authenticate=False)
    assert first.status == 489 and first.get("Allow-Events") == "reg"
    assert watcher.register().status == 200
    assert watcher.subscribe("9999")[1].status == 403  # not on its may-watch list, existing or not
    with e2e.SipClient((e2e.LOOPBACK, worker.port)) as caller:
        invite = (f"MESSAGE sip:3006@{e2e.SIP_DOMAIN} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{caller.local_port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
                  f"Max-Forwards: 70\r\nFrom: <sip:x@{e2e.SIP_DOMAIN}>;tag=1\r\nTo: <sip:3006@{e2e.SIP_DOMAIN}>\r\n"
                  f"Call-ID: {secrets.token_hex(6)}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n").encode()
        response = caller.request(invite)
    assert response.status == 405 and "SUBSCRIBE" in response.get("Allow")


def test_a_subscribe_with_expires_zero_fetches_the_state_once(runsip, watchers):
    services.create_extension("3013", PASSWORD)
    worker = runsip()
    watcher = watchers(worker.port, "3013")
    assert watcher.register().status == 200
    final = watcher.subscribe("3013", expires=0)[1]
    assert final.status == 200 and final.get("Expires") == "0"
    fetched = watcher.next_notify()
    assert fetched.state == "full" and fetched.header("Subscription-State") == "terminated;reason=timeout"
    assert len(fetched.contacts()) == 1 and not Subscription.objects.exists()


def test_a_notify_answered_481_ends_the_subscription(runsip, watchers):
    services.create_extension("3007", PASSWORD)
    worker = runsip()
    watcher = watchers(worker.port, "3007")
    assert watcher.register().status == 200
    assert watcher.subscribe("3007")[1].status == 200
    watcher.next_notify()
    watcher.answer_status = 481
    phone_register(worker, "3007")
    assert watcher.next_notify().state == "partial"
    assert eventually(lambda: not Subscription.objects.exists())
    phone_register(worker, "3007")
    assert watcher.no_notify(within=1.5)


def test_a_subscription_survives_a_restart_with_the_full_state(runsip, watchers):
    services.create_extension("3008", PASSWORD)
    port = e2e.free_port()
    worker = runsip(port=port)
    watcher = watchers(port, "3008")
    assert watcher.register().status == 200
    assert watcher.subscribe("3008")[1].status == 200
    before = watcher.next_notify()
    phone_port, _, _ = phone_register(worker, "3008")
    assert watcher.next_notify().version == 1
    worker.stop()
    # While runsip is down an admin removes the phone's binding.
    services.remove_binding(services.Binding.objects.get(contact_uri__contains=f":{phone_port};"))
    runsip(port=port)
    reloaded = watcher.next_notify(timeout=10)
    assert reloaded.state == "full" and reloaded.version == 2
    assert reloaded.header("Call-ID") == before.header("Call-ID")
    assert [uri for _, _, uri in reloaded.contacts()] == [
        f"sip:3008@127.0.0.1:{watcher.client.local_port};transport=udp"]
    assert Subscription.objects.get().version == 2


def outbound_register(phone, user, authorization_value=None):
    """REGISTER over the phone's TCP connection with +sip.instance and reg-id (RFC 5626): the
    binding lives on that connection."""
    phone.cseq += 1
    lines = [f"REGISTER sip:{e2e.SIP_DOMAIN} SIP/2.0",
             f"Via: SIP/2.0/TCP {phone.host}:{phone.local_port};branch=z9hG4bK{secrets.token_hex(8)};rport",
             "Max-Forwards: 70", f"From: <sip:{user}@{e2e.SIP_DOMAIN}>;tag={phone.tag}",
             f"To: <sip:{user}@{e2e.SIP_DOMAIN}>", f"Call-ID: {phone.call_id}", f"CSeq: {phone.cseq} REGISTER",
             "Supported: outbound, path",
             f'Contact: <sip:{user}@{phone.host}:{phone.local_port};transport=tcp>;reg-id=1;'
             f'+sip.instance="<urn:uuid:00000000-0000-1000-8000-00000000ab{user[-2:]}>"',
             "Expires: 600"]
    if authorization_value:
        lines.append(f"Authorization: {authorization_value}")
    lines.append("Content-Length: 0")
    return phone.request(("\r\n".join(lines) + "\r\n\r\n").encode())


def test_a_binding_whose_connection_closes_is_deactivated_and_an_admin_delete_unregistered(runsip, watchers):
    services.create_extension("3012", PASSWORD)
    worker = runsip()
    watcher = watchers(worker.port, "3012")
    assert watcher.register().status == 200
    assert watcher.subscribe("3012")[1].status == 200
    watcher.next_notify()
    phone = e2e.SipClient((e2e.LOOPBACK, worker.port), transport="tcp")
    challenge = e2e.parse_challenge(outbound_register(phone, "3012").get("WWW-Authenticate"))
    value = e2e.authorization(challenge, username="3012", password=PASSWORD, method="REGISTER",
                              uri=f"sip:{e2e.SIP_DOMAIN}")
    assert outbound_register(phone, "3012", value).status == 200
    assert watcher.next_notify().contacts()[0][:2] == ("active", "registered")
    phone.close()
    deactivated = watcher.next_notify()
    assert deactivated.contacts() == [("terminated", "deactivated",
                                       f"sip:3012@127.0.0.1:{phone.local_port};transport=tcp")]
    # An admin's delete, in this process while runsip runs, reaches the subscriber too.
    phone_register(worker, "3012")
    registered = watcher.next_notify()
    services.remove_binding(services.Binding.objects.get(contact_uri=registered.contacts()[0][2]))
    assert watcher.next_notify().contacts()[0][:2] == ("terminated", "unregistered")


def test_a_tcp_subscription_ends_with_its_connection(runsip, watchers):
    services.create_extension("3010", PASSWORD)
    worker = runsip()
    watcher = watchers(worker.port, "3010", transport="tcp")
    assert watcher.register().status == 200
    assert watcher.subscribe("3010")[1].status == 200
    assert watcher.next_notify().state == "full"
    assert Subscription.objects.get().transport == "tcp"
    watcher.close()
    assert eventually(lambda: not Subscription.objects.exists())


# -- SIPp ----------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp is not installed")
def test_sipp_registers_subscribes_and_acknowledges_the_notify(runsip, tmp_path):
    services.create_extension("3011", PASSWORD)
    services.set_soft_parameter(104, ["MD5"], actor="test")
    worker = runsip()
    users_csv = e2e.write_users_csv(tmp_path / "users.csv", [("3011", PASSWORD)])
    result = e2e.run_sipp("subscribe_reg.xml", worker.address, tmp_path / "sipp", users_csv=users_csv)
    assert result.returncode == 0, result.report()
    first, last = [text for text in result.received() if text.startswith("NOTIFY")]
    assert "Content-Type: application/reginfo+xml" in first and 'state="full"' in first
    assert "Subscription-State: terminated;reason=timeout" in last
    assert not Subscription.objects.exists()
