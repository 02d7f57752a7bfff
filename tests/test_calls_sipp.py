"""Calls between extensions through a real runsip acting as a stateful proxy, over loopback.

A callee phone registers with digest from a UDP port (the independent client of
tests/e2e.py), then SIPp plays that phone as a UAS on the same port (tests/sipp/callee_*.xml,
in the background and bounded); SIPp plays the caller (tests/sipp/caller_*.xml) with the
407 Proxy-Authenticate dance (MD5 only: SIPp cannot do SHA-256, so soft parameter 104 is
set to MD5). One test uses raw sockets instead: an in-dialog BYE that only the database can
route. Every wait is bounded: SIPp's -timeout, the subprocess timeouts, eventually().
"""
import shutil
import subprocess
import time

import pytest
from django.conf import settings as django_settings

from registrar import services
from registrar.models import AuthAttempt
from registrar.sip.reasons import Reason
from tests import e2e

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp is not installed")]

PASSWORD = "call-s3cret"


@pytest.fixture
def regis(transactional_db, settings):
    settings.SIP_DOMAIN = settings.SIP_REALM = e2e.SIP_DOMAIN
    services.set_soft_parameter("digest_algorithms", ["MD5"])
    for number in ("2001", "2002", "2003"):
        services.create_extension(number, PASSWORD)
    with e2e.runsip_starter(e2e.database_url(django_settings.DATABASES["default"]),
                            env={"SIP_TIMER_T1_MS": "100"}) as start:
        yield start


class SippPhone:
    """A phone: registered with digest from a free port, then SIPp answering calls on it."""

    def __init__(self, runsip, number, scenario, workdir):
        # Registered from a socket whose port SIPp then takes over: the binding's source.
        with e2e.SipClient((e2e.LOOPBACK, runsip.port)) as client:
            _, final = client.register_with_digest(number, PASSWORD, algorithm="MD5")
            assert final.status == 200, final
            self.port = client.local_port
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(e2e.SIPP_DIR / scenario, workdir / scenario)
        command = [shutil.which("sipp"), "-sf", scenario, "-i", e2e.LOOPBACK, "-p", str(self.port), "-m", "1",
                   "-nostdin", "-timeout", "20s", "-timeout_error", "-trace_err", "-error_file", "errors.log",
                   "-trace_msg", "-message_file", "messages.log"]
        self.workdir = workdir
        self.process = subprocess.Popen(command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT)
        time.sleep(0.3)

    def finish(self, timeout=25):
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
            return -999

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def log(self):
        text = ""
        for name in ("errors.log", "messages.log"):
            path = self.workdir / name
            if path.exists():
                text += f"--- phone {name}\n" + path.read_text(errors="replace")[-6000:]
        return text

    def received(self):
        path = self.workdir / "messages.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def phones():
    started = []

    def start(*args):
        phone = SippPhone(*args)
        started.append(phone)
        return phone

    yield start
    for phone in started:
        phone.stop()


def call(runsip, scenario, tmp_path, callee, caller="2001", password=PASSWORD, name=None, transport="u1"):
    workdir = tmp_path / (name or scenario.removesuffix(".xml"))
    users = e2e.write_users_csv(tmp_path / f"{workdir.name}.users.csv", [(caller, password)])
    return e2e.run_sipp(scenario, runsip.address, workdir, users_csv=users, keys={"callee": callee},
                        global_timeout=20, transport=transport)


def explain(result, runsip, *phones):
    return "\n".join([result.report(), *(phone.log() for phone in phones), "--- runsip", runsip.output[-4000:]])


def final_statuses(result):
    return [int(text.split()[1]) for text in result.received() if text.startswith("SIP/2.0 ")
            and int(text.split()[1]) >= 200]


def test_basic_call_and_hang_up_through_regis(regis, phones, tmp_path):
    runsip = regis()
    callee = phones(runsip, "2002", "callee_answer.xml", tmp_path / "callee")
    result = call(runsip, "call_caller.xml", tmp_path, "2002")
    assert result.returncode == 0, explain(result, runsip, callee)
    assert callee.finish() == 0, explain(result, runsip, callee)
    received = callee.received()
    assert "INVITE sip:2002@127.0.0.1" in received and "Proxy-Authorization" not in received
    assert "ACK sip:callee@" in received and "BYE sip:callee@" in received
    # The ACK and the BYE came through Regis (its Via on top), not straight from the caller.
    assert received.count(f"Via: SIP/2.0/UDP 127.0.0.1:{runsip.port};branch=z9hG4bKregis") >= 3


def test_a_caller_on_tcp_calls_a_phone_on_udp(regis, phones, tmp_path):
    runsip = regis()
    callee = phones(runsip, "2002", "callee_answer.xml", tmp_path / "callee")
    result = call(runsip, "call_caller.xml", tmp_path, "2002", transport="t1")
    assert result.returncode == 0, explain(result, runsip, callee)
    assert callee.finish() == 0, explain(result, runsip, callee)
    assert "Via: SIP/2.0/TCP 127.0.0.1:" in callee.received()  # the caller's hop, below Regis's UDP one


def test_busy_callee_486_is_passed_back(regis, phones, tmp_path):
    runsip = regis()
    callee = phones(runsip, "2002", "callee_busy.xml", tmp_path / "callee")
    result = call(runsip, "caller_refused.xml", tmp_path, "2002")
    assert result.returncode == 0, explain(result, runsip, callee)
    assert final_statuses(result)[-1] == 486
    assert callee.finish() == 0, explain(result, runsip, callee)  # it got the hop-by-hop ACK


def test_no_answer_and_cancel_gives_487(regis, phones, tmp_path):
    runsip = regis()
    callee = phones(runsip, "2002", "callee_ring.xml", tmp_path / "callee")
    result = call(runsip, "caller_cancel.xml", tmp_path, "2002")
    assert result.returncode == 0, explain(result, runsip, callee)
    assert callee.finish() == 0, explain(result, runsip, callee)  # CANCEL, 487, ACK
    assert 487 in final_statuses(result)


@pytest.mark.parametrize("callee, status", [("4444", 404), ("2003", 480)])
def test_unknown_number_404_and_unregistered_callee_480(regis, tmp_path, callee, status):
    runsip = regis()
    result = call(runsip, "caller_refused.xml", tmp_path, callee)
    assert result.returncode == 0, explain(result, runsip)
    assert final_statuses(result)[-1] == status


def test_caller_with_a_wrong_password_is_challenged_again_and_recorded(regis, tmp_path):
    runsip = regis()
    result = call(runsip, "caller_wrong_password.xml", tmp_path, "2002", password="not-it")
    assert result.returncode == 0, explain(result, runsip)
    assert set(final_statuses(result)) == {407}  # (a 407 may come twice: UDP retransmissions)
    attempt = e2e.eventually(lambda: AuthAttempt.objects.filter(method="INVITE").first(), timeout=5)
    assert attempt is not None and attempt.reason == Reason.WRONG_PASSWORD
    assert attempt.extension_number == "2001" and attempt.status == 407


def test_fork_to_two_contacts_one_answers_the_other_is_cancelled(regis, phones, tmp_path):
    runsip = regis()
    ringing = phones(runsip, "2002", "callee_ring.xml", tmp_path / "ringing")
    answering = phones(runsip, "2002", "callee_answer.xml", tmp_path / "answering")
    result = call(runsip, "call_caller.xml", tmp_path, "2002")
    assert result.returncode == 0, explain(result, runsip, ringing, answering)
    assert answering.finish() == 0, explain(result, runsip, ringing, answering)
    assert ringing.finish() == 0, explain(result, runsip, ringing, answering)
    assert "CANCEL sip:2002@127.0.0.1" in ringing.received()


def test_an_in_dialog_bye_to_a_registered_contact_is_found_in_the_database(regis, tmp_path):
    """No call through this runsip taught it the phone (as after a restart): the worker reads
    the binding whose Contact the Request-URI names and relays the BYE to its source."""
    runsip = regis()
    with e2e.SipClient((e2e.LOOPBACK, runsip.port)) as phone, e2e.SipClient((e2e.LOOPBACK, runsip.port)) as peer:
        assert phone.register_with_digest("2002", PASSWORD, algorithm="MD5")[1].status == 200
        contact = f"sip:2002@{e2e.LOOPBACK}:{phone.local_port};transport=udp"
        peer.send((f"BYE {contact} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {e2e.LOOPBACK}:{peer.local_port};branch=z9hG4bK-restart-bye;rport\r\n"
                   f"From: <sip:2001@{e2e.SIP_DOMAIN}>;tag=a\r\nTo: <sip:2002@{e2e.SIP_DOMAIN}>;tag=b\r\n"
                   f"Call-ID: restart@test\r\nCSeq: 7 BYE\r\nRoute: <sip:{runsip.address};lr>\r\n"
                   "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode())
        relayed = phone.receive().decode()
        assert relayed.startswith(f"BYE {contact} SIP/2.0") and "Route:" not in relayed
        assert f"Via: SIP/2.0/UDP {runsip.address};branch=z9hG4bKregis" in relayed
        vias = [line for line in relayed.split("\r\n") if line.startswith("Via:")]
        headers = [line for line in relayed.split("\r\n") if line.split(":")[0] in ("From", "To", "Call-ID", "CSeq")]
        phone.sock.sendto(("SIP/2.0 200 OK\r\n" + "\r\n".join(vias + headers) + "\r\nContent-Length: 0\r\n\r\n")
                          .encode(), (e2e.LOOPBACK, runsip.port))
        answer = e2e.parse_response(peer.receive())
    assert answer.status == 200 and answer.get("CSeq") == "7 BYE"
