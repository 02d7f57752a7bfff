"""Calls out through trunks and emergency calls, through a real runsip over loopback.

The carrier behind a trunk is SIPp as a UAS on a free port that nobody registers to (the
trunk has ``register=False``, so the INVITE is all it sees): tests/sipp/trunk_call_407.xml
challenges the call once with 407 and answers, trunk_call_407_twice.xml never takes the
password. The calling phone is SIPp as a UAC with the 407 dance towards Regis
(trunk_call_caller.xml, trunk_call_refused.xml); the called phones and the phone told of
an emergency call (message_receiver.xml) register with digest first, as in
tests/test_calls_sipp.py, whose helpers this file reuses. What SIPp cannot check (the
digest the trunk sent, CSeq numbers across the two legs) is read from its message logs.
Every wait is bounded: SIPp's -timeout and -m, the subprocess timeouts, eventually().
"""
import re
import shutil
import socket
import subprocess
import time

import pytest
from django.conf import settings as django_settings

from registrar import calls, services, trunks
from registrar.models import Alert, Call, Extension
from tests import e2e
from tests.test_calls_sipp import PASSWORD, SippPhone, call, explain, final_statuses

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp is not installed")]

TRUNK_PASSWORD = "carrier-s3cret"
TRUNK_USER = "9100"  # tests/sipp/trunk_call_407*.xml name it in their checks
CARRIER_REALM = "carrier.test"
DIALLED = "0612345678"
SENT = "+33612345678"


@pytest.fixture
def regis(transactional_db, settings):
    settings.SIP_DOMAIN = settings.SIP_REALM = e2e.SIP_DOMAIN
    services.set_soft_parameter("digest_algorithms", ["MD5"])
    services.create_extension("1001", PASSWORD, display_name="Front Desk")
    for number in ("1002", "1099"):
        services.create_extension(number, PASSWORD)
    with e2e.runsip_starter(e2e.database_url(django_settings.DATABASES["default"]),
                            env={"SIP_TIMER_T1_MS": "100"}) as start:
        yield start


class SippCarrier(SippPhone):
    """The carrier behind a trunk: SIPp as a UAS on a port of its own, never registered to."""

    def __init__(self, scenario, workdir, port):
        self.port = port
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(e2e.SIPP_DIR / scenario, workdir / scenario)
        command = [shutil.which("sipp"), "-sf", scenario, "-i", e2e.LOOPBACK, "-p", str(port), "-m", "1",
                   "-nostdin", "-timeout", "20s", "-timeout_error", "-trace_err", "-error_file", "errors.log",
                   "-trace_msg", "-message_file", "messages.log"]
        self.workdir = workdir
        self.process = subprocess.Popen(command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT)
        time.sleep(0.3)


def _started(kind):
    started = []

    def start(*args):
        started.append(kind(*args))
        return started[-1]

    yield start
    for uas in started:
        uas.stop()


@pytest.fixture
def phones():
    """Registered phones answering with a SIPp scenario: (runsip, number, scenario, workdir)."""
    yield from _started(SippPhone)


@pytest.fixture
def carriers():
    """Carriers behind trunks: (scenario, workdir, port)."""
    yield from _started(SippCarrier)


# -- reading SIPp's message logs ---------------------------------------------------------
def traced(workdir, direction="received") -> list:
    """The SIP messages SIPp logged as ``direction`` ("received" or "sent"), in order."""
    path = workdir / "messages.log"
    if not path.exists():
        return []
    blocks = re.split(r"(?m)^-{10,} .*$", path.read_text(errors="replace"))
    return [block.split("\n", 2)[2].strip() for block in blocks
            if re.match(rf"\s*\w+ message {direction}", block)]


def header(message: str, name: str) -> str | None:
    match = re.search(rf"(?mi)^{re.escape(name)}\s*:\s*(.*?)\s*$", message)
    return match.group(1) if match else None


def cseq(message: str) -> tuple[int, str]:
    number, method = header(message, "CSeq").split()
    return int(number), method


def top_via(message: str) -> str:
    return header(message, "Via")


def requests(messages: list, method: str) -> list:
    return [text for text in messages if text.startswith(method + " ")]


def status(message: str) -> int:
    return int(message.split()[1])


def tag(value: str) -> str:
    return re.search(r";\s*tag=([^;\s]+)", value).group(1)


# -- carriers ------------------------------------------------------------------------------
class SilentCarrier:
    """A UDP socket on the trunk's port, for a call that must not go out: what reached it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((e2e.LOOPBACK, 0))
        self.port = self.sock.getsockname()[1]

    def heard(self, within: float = 0.5) -> list:
        self.sock.settimeout(within)
        datagrams = []
        try:
            while len(datagrams) < 10:
                datagrams.append(self.sock.recv(65535).decode(errors="replace"))
        except (TimeoutError, socket.timeout):
            pass
        return datagrams

    def close(self):
        self.sock.close()


@pytest.fixture
def silent_carrier():
    carrier = SilentCarrier()
    yield carrier
    carrier.close()


# -- the data runsip reads ----------------------------------------------------------------
def make_trunk(port: int):
    return trunks.create_trunk(name="carrier", registrar_uri=f"sip:{e2e.LOOPBACK}:{port}", aor_user=TRUNK_USER,
                               password=TRUNK_PASSWORD, register=False, enabled=True)


def make_dial_rule(trunk, **changes):
    fields = dict(name="national", position=10, pattern=r"0\d+", strip=1, prefix="+33", trunk=trunk, enabled=True)
    fields.update(changes)
    return calls.create_dial_rule(**fields)


def set_call_permission(number: str, permission: str):
    extension = Extension.objects.get(number=number)
    if "call_permission" in services.EXTENSION_FIELDS:
        services.update_extension(extension, call_permission=permission)
    else:  # the model field, until the service takes it
        extension.call_permission = permission
        extension.save(update_fields=["call_permission"])


def ended_call(**filters):
    return e2e.eventually(lambda: Call.objects.filter(ended_at__isnull=False, **filters).first(), timeout=8)


def caller_tag(result) -> str:
    return tag(header(traced(result.workdir, "sent")[0], "From"))


# -- outbound calls -----------------------------------------------------------------------
def test_outbound_call_through_a_trunk_that_challenges_it(regis, carriers, tmp_path):
    port = e2e.free_port()
    make_dial_rule(make_trunk(port))
    runsip = regis()
    carrier = carriers("trunk_call_407.xml", tmp_path / "carrier", port)
    result = call(runsip, "trunk_call_caller.xml", tmp_path, DIALLED, caller="1001")
    assert result.returncode == 0, explain(result, runsip, carrier)
    assert carrier.finish() == 0, explain(result, runsip, carrier)

    received = traced(carrier.workdir)
    first, second = requests(received, "INVITE")
    for invite in (first, second):
        assert invite.startswith(f"INVITE sip:{SENT}@{e2e.LOOPBACK}:{port} SIP/2.0"), invite
        # The trunk's address instead of the extension's, the caller's display name and tag kept.
        assert re.fullmatch(rf'"Front Desk"\s*<sip:{TRUNK_USER}@127\.0\.0\.1>;tag=\S+', header(invite, "From")), invite
        assert tag(header(invite, "From")) == caller_tag(result)
        assert f"<sip:{runsip.address};lr>" in header(invite, "Record-Route"), invite
        assert top_via(invite).startswith(f"SIP/2.0/UDP {runsip.address};branch=z9hG4bK"), invite
    assert header(first, "Proxy-Authorization") is None
    assert header(second, "Call-ID") == header(first, "Call-ID")
    assert cseq(second) == (cseq(first)[0] + 1, "INVITE")

    # The 407 was acknowledged hop by hop, then answered with the trunk's password (checked here
    # against an independent digest computation, SIPp's verifyauth reading only Authorization).
    challenge_ack = requests(received, "ACK")[0]
    assert cseq(challenge_ack) == (cseq(first)[0], "ACK")
    assert top_via(challenge_ack) == top_via(first)
    sent_challenge = next(text for text in traced(carrier.workdir, "sent") if text.startswith("SIP/2.0 407"))
    nonce = e2e.parse_challenge(header(sent_challenge, "Proxy-Authenticate"))["nonce"]
    answer = e2e.parse_challenge(header(second, "Proxy-Authorization"))
    assert answer["username"] == TRUNK_USER and answer["realm"] == CARRIER_REALM and answer["nonce"] == nonce
    assert answer["uri"] == f"sip:{SENT}@{e2e.LOOPBACK}:{port}"
    assert answer["response"] == e2e.digest_response(
        algorithm="MD5", username=TRUNK_USER, realm=CARRIER_REALM, password=TRUNK_PASSWORD, method="INVITE",
        uri=answer["uri"], nonce=nonce, nc=answer["nc"], cnonce=answer["cnonce"], qop=answer["qop"])

    # The caller's ACK and BYE reached the carrier through Regis, in the carrier's CSeq space.
    ack, bye = requests(received, "ACK")[-1], requests(received, "BYE")[0]
    assert ack.startswith("ACK sip:carrier@") and bye.startswith("BYE sip:carrier@")
    for request in (ack, bye):
        assert top_via(request).startswith(f"SIP/2.0/UDP {runsip.address};branch=z9hG4bKregis"), request
        assert tag(header(request, "From")) == caller_tag(result)
    assert cseq(ack) == (cseq(second)[0], "ACK")
    assert cseq(bye)[0] > cseq(second)[0]

    # The caller saw its own CSeq numbers and From in every answer.
    answers = result.received()
    assert {header(text, "From") for text in answers} == {f'"Front Desk" <sip:1001@{e2e.SIP_DOMAIN}>;tag={caller_tag(result)}'}
    assert {cseq(text) for text in answers if status(text) == 200} == {(2, "INVITE"), (3, "BYE")}, result.report()
    assert {cseq(text)[0] for text in answers if cseq(text)[1] == "INVITE"} <= {1, 2}

    record = ended_call()
    assert Call.objects.count() == 1
    assert (record.caller, record.dialled, record.callee, record.kind, record.trunk_name) == (
        "1001", DIALLED, SENT, "outbound", "carrier")
    assert record.state == "ended" and record.answered_at is not None and record.ended_at is not None
    assert record.reason == "hung up by the caller"

    # In the carrier's dialog the caller is the trunk's address (RFC 3261 §12.2.1.1: From is the
    # dialog's local URI), in the ACK and the BYE as in the INVITE.
    for request in (ack, bye):
        assert header(request, "From") == header(second, "From"), request


def test_a_trunk_that_refuses_the_password_ends_the_call_with_an_error(regis, carriers, tmp_path):
    port = e2e.free_port()
    make_dial_rule(make_trunk(port))
    runsip = regis()
    carrier = carriers("trunk_call_407_twice.xml", tmp_path / "carrier", port)
    result = call(runsip, "trunk_call_refused.xml", tmp_path, DIALLED, caller="1001")
    assert result.returncode == 0, explain(result, runsip, carrier)
    # Both 407s acknowledged, and no third INVITE within the scenario's closing pause.
    assert carrier.finish() == 0, explain(result, runsip, carrier)
    assert len(requests(traced(carrier.workdir), "INVITE")) == 2
    finals = [status(text) for text in result.responses_to(2) if status(text) >= 200]
    assert finals and 407 not in finals and finals[-1] >= 400, result.report()

    record = ended_call()
    assert record.state == "ended" and record.answered_at is None and record.kind == "outbound"
    assert "carrier" in record.reason or "trunk" in record.reason.lower(), record.reason


def test_an_extension_kept_to_internal_calls_cannot_dial_out(regis, silent_carrier, tmp_path):
    make_dial_rule(make_trunk(silent_carrier.port))
    set_call_permission("1001", "internal")
    runsip = regis()
    result = call(runsip, "trunk_call_refused.xml", tmp_path, DIALLED, caller="1001")
    assert result.returncode == 0, explain(result, runsip)
    assert final_statuses(result)[-1] == 403, result.report()
    assert silent_carrier.heard() == []
    record = ended_call()
    assert (record.dialled, record.status, record.answered_at) == (DIALLED, 403, None)


# -- emergency calls ----------------------------------------------------------------------
def test_an_emergency_only_extension_is_refused_other_calls_and_reaches_112(regis, phones, silent_carrier, tmp_path,
                                                                           client, django_user_model):
    make_dial_rule(make_trunk(silent_carrier.port))
    set_call_permission("1001", "emergency")
    services.set_soft_parameter("emergency_route", "1002")
    services.set_soft_parameter("emergency_alert_extensions", ["1099"])
    runsip = regis()
    for number in (DIALLED, "1002"):
        refused = call(runsip, "trunk_call_refused.xml", tmp_path, number, caller="1001", name=f"refused-{number}")
        assert refused.returncode == 0, explain(refused, runsip)
        assert final_statuses(refused)[-1] == 403, refused.report()
    assert silent_carrier.heard() == []
    assert set(Call.objects.filter(ended_at__isnull=False).values_list("dialled", "status")) == {
        (DIALLED, 403), ("1002", 403)}

    callee = phones(runsip, "1002", "callee_answer.xml", tmp_path / "callee")
    told = phones(runsip, "1099", "message_receiver.xml", tmp_path / "told")
    result = call(runsip, "trunk_call_caller.xml", tmp_path, "112", caller="1001", name="emergency")
    assert result.returncode == 0, explain(result, runsip, callee, told)
    assert callee.finish() == 0, explain(result, runsip, callee, told)
    assert told.finish() == 0, explain(result, runsip, callee, told)
    message = requests(traced(told.workdir), "MESSAGE")[0]
    assert header(message, "Content-Type").startswith("text/plain")
    body = re.split(r"\r?\n\r?\n", message, maxsplit=1)[-1]
    assert "Emergency call from 1001" in body and " to 112" in body, message

    record = ended_call(dialled="112")
    assert (record.caller, record.kind, record.callee) == ("1001", "emergency", "1002")
    assert record.answered_at is not None and record.reason == "hung up by the caller"
    alert = e2e.eventually(lambda: Alert.objects.filter(event="emergency_call", acknowledged_at__isnull=True).first())
    assert alert is not None and "1001" in alert.subject
    told_of = e2e.eventually(lambda: Alert.objects.get(pk=alert.pk).details.get("messages"))
    assert [(sent["extension"], sent["status"]) for sent in told_of] == [("1099", 200)], told_of

    client.force_login(django_user_model.objects.create_superuser("boss", "", "pw-boss-1"))
    page = client.get("/")
    assert page.status_code == 200
    assert alert.subject in page.content.decode(), "the dashboard does not show the emergency alert"


@pytest.mark.parametrize("route", ["trunk:carrier", ""])
def test_an_emergency_call_goes_out_through_the_trunk_the_route_or_the_dial_plan_names(regis, carriers, tmp_path,
                                                                                      route):
    port = e2e.free_port()
    trunk = make_trunk(port)
    if not route:  # an empty route: the dial plan, like any other number
        make_dial_rule(trunk, name="emergency", pattern=r"1\d\d", strip=0, prefix="")
    set_call_permission("1001", "internal")  # barred from outside numbers, never from emergency ones
    services.set_soft_parameter("emergency_route", route)
    runsip = regis()
    carrier = carriers("callee_answer.xml", tmp_path / "carrier", port)
    result = call(runsip, "trunk_call_caller.xml", tmp_path, "112", caller="1001")
    assert result.returncode == 0, explain(result, runsip, carrier)
    assert carrier.finish() == 0, explain(result, runsip, carrier)

    invite, = requests(traced(carrier.workdir), "INVITE")
    assert invite.startswith(f"INVITE sip:112@{e2e.LOOPBACK}:{port} SIP/2.0"), invite
    assert re.fullmatch(rf'"Front Desk"\s*<sip:{TRUNK_USER}@127\.0\.0\.1>;tag=\S+', header(invite, "From")), invite
    assert header(invite, "Proxy-Authorization") is None

    record = ended_call(dialled="112")
    assert (record.caller, record.kind, record.callee, record.trunk_name) == ("1001", "emergency", "112", "carrier")
    assert record.answered_at is not None
    assert Alert.objects.filter(event="emergency_call", acknowledged_at__isnull=True).exists()
