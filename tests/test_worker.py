"""The SIP worker process as a whole: caches kept in step with the database across
processes, soft parameters live without a restart, live events after commit, and
stream keep-alives. Drives a real ``runsip`` over loopback with the independent client
of tests/e2e.py."""
import json
import socket
import tempfile
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from registrar import services
from registrar.models import Binding
from tests import e2e
from tests.e2e import eventually

PASSWORD = "worker-s3cret"


@pytest.fixture
def runsip(transactional_db, settings):
    settings.SIP_DOMAIN = settings.SIP_REALM = e2e.SIP_DOMAIN
    started = []

    def start(extra_args=(), **env):
        process = e2e.RunSip(e2e.database_url(django_settings.DATABASES["default"]), env=env,
                             extra_args=extra_args)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        alive = not process.died
        process.stop()
        assert alive, process.output


def register(runsip, user, password, **kwargs):
    with e2e.SipClient(("127.0.0.1", runsip.port)) as phone:
        return phone.register_with_digest(user, password, algorithm="SHA-256", **kwargs)[1]


def test_an_extension_created_in_another_process_can_register_without_a_restart(runsip):
    worker = runsip()
    assert register(worker, "2001", PASSWORD).status == 401
    services.create_extension("2001", PASSWORD)
    assert eventually(lambda: register(worker, "2001", PASSWORD).status == 200)


def test_a_new_password_or_a_disabled_extension_takes_effect_without_a_restart(runsip):
    extension, _ = services.create_extension("2002", PASSWORD)
    worker = runsip()
    assert register(worker, "2002", PASSWORD).status == 200
    services.set_password(extension, "changed")
    assert eventually(lambda: register(worker, "2002", PASSWORD).status == 401)
    assert register(worker, "2002", "changed").status == 200
    services.update_extension(extension, enabled=False)
    assert eventually(lambda: register(worker, "2002", "changed").status == 401)


def test_a_soft_parameter_change_is_live_without_a_restart(runsip):
    services.create_extension("2003", PASSWORD)
    worker = runsip()
    assert register(worker, "2003", PASSWORD, expires=90).status == 200
    services.set_soft_parameter("min_expires", 120, actor="test")
    answer = eventually(lambda: (r := register(worker, "2003", PASSWORD, expires=90)).status == 423 and r)
    assert answer and answer.get("Min-Expires") == "120"


def test_live_events_are_published_after_the_commit(runsip):
    services.create_extension("2004", PASSWORD)
    folder = tempfile.mkdtemp(dir="/tmp")
    relay_path = str(Path(folder) / "live.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(relay_path)
    listener.settimeout(5)
    try:
        worker = runsip(LIVE_RELAY_SOCKET=relay_path)
        assert register(worker, "2004", PASSWORD).status == 200
        events = json.loads(listener.recv(65535))
        # The event is sent only once the binding is committed: it is visible here.
        assert Binding.objects.filter(extension__number="2004").exists()
        assert events[0]["type"] == "registration" and events[0]["action"] == "registered"
        assert events[0]["extension"] == "2004" and events[0]["transport"] == "udp"
        assert register(worker, "2004", "wrong").status == 401
        attempt, = json.loads(listener.recv(65535))
        assert attempt["type"] == "attempt" and attempt["reason"] == "wrong_password"
        assert "password" in attempt["explanation"]
    finally:
        listener.close()


def test_a_double_crlf_ping_on_tcp_gets_a_crlf_pong(runsip):
    worker = runsip()
    with socket.create_connection(("127.0.0.1", worker.port), timeout=5) as stream:
        stream.sendall(b"\r\n\r\n")
        assert stream.recv(16) == b"\r\n"


def test_sigterm_stops_the_worker_cleanly(runsip):
    worker = runsip()
    assert worker.stop() == 0
    assert "stopping" in worker.output


def test_a_dictionary_attack_is_banned_and_an_admin_can_lift_the_ban(runsip):
    from django.core.management import call_command

    from registrar.models import AuthAttempt, Ban

    services.create_extension("2005", PASSWORD)
    services.set_soft_parameter("ban_failures_per_extension", 5, actor="test")
    worker = runsip()
    attacker_ip = "127.0.0.66"  # loopback, but not the server's own address
    answers = []
    for guess in range(8):
        with e2e.SipClient(("127.0.0.1", worker.port), timeout=1.0, bind_host=attacker_ip) as attacker:
            try:
                answers.append(attacker.register_with_digest("2005", f"guess{guess}", algorithm="MD5")[1].status)
            except (TimeoutError, socket.timeout):
                answers.append(None)
    assert answers[:5] == [401] * 5 and answers[-1] is None, answers
    ban = Ban.objects.get(ip=attacker_ip)
    assert ban.failures == 5 and "extension 2005" in ban.detail
    assert ban.evidence().filter(reason="wrong_password").count() >= 5
    # The legitimate phone on another address is not affected.
    assert register(worker, "2005", PASSWORD).status == 200
    call_command("ban", "lift", attacker_ip)

    def registers_again():
        with e2e.SipClient(("127.0.0.1", worker.port), timeout=1.0, bind_host=attacker_ip) as phone:
            try:
                return phone.register_with_digest("2005", PASSWORD, algorithm="MD5")[1].status == 200
            except (TimeoutError, socket.timeout):
                return False

    assert eventually(registers_again, timeout=5)
    assert AuthAttempt.objects.filter(source_ip=attacker_ip).count() == 5


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_and_excess_tcp_connections_are_bounded(runsip):
    services.create_extension("2006", PASSWORD)
    worker = runsip(SIP_TCP_MESSAGE_TIMEOUT="1", SIP_TCP_MAX_PER_SOURCE="5")
    slow_ip = "127.0.0.70"
    held = []
    try:
        for _ in range(8):
            stream = socket.socket()
            stream.bind((slow_ip, 0))
            stream.settimeout(3)
            stream.connect(("127.0.0.1", worker.port))
            held.append(stream)
        # Past the per-source cap the server closes the connection at once.
        assert held[-1].recv(1) == b""
        # A message started and never finished is cut off after the timeout.
        held[0].sendall(b"REGISTER sip:regis.test SIP/2.0\r\nVia: SIP/2.0/TCP ")
        assert held[0].recv(1) == b""
    finally:
        for stream in held:
            stream.close()
    with e2e.SipClient(("127.0.0.1", worker.port), transport="tcp") as phone:
        assert phone.register_with_digest("2006", PASSWORD, algorithm="SHA-256")[1].status == 200


def test_a_udp_flood_is_dropped_and_the_worker_keeps_answering_with_bounded_memory(runsip):
    services.create_extension("2007", PASSWORD)
    services.set_soft_parameter("rate_limit", 100, actor="test")
    worker = runsip()
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.bind(("127.0.0.80", 0))
    packet = (b"OPTIONS sip:regis.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.80:9;branch=z9hG4bKflood%d\r\n"
              b"From: <sip:x@y>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: flood\r\nCSeq: 1 OPTIONS\r\n"
              b"Content-Length: 0\r\n\r\n")
    before = rss_kib(worker.process.pid)
    started = time.monotonic()
    sent = 0
    while sent < 20_000 and time.monotonic() - started < 10:
        try:
            flood.sendto(packet % sent, ("127.0.0.1", worker.port))
        except BlockingIOError:
            pass
        sent += 1
    flood.close()
    assert register(worker, "2007", PASSWORD).status == 200
    grown = rss_kib(worker.process.pid) - before
    print(f"flood: {sent} packets in {time.monotonic() - started:.1f} s; runsip RSS grew {grown} KiB")
    assert grown < 50_000


SEED_PHONES = [("3cxphone_register_tcp.sip", "tcp", "3CXPhone 6.0.26523.0"),
               ("voxstack_register_udp.sip", "udp", "VoxStack Analog Gateway")]


def test_seed_000_third_party_phones_refused_by_286_then_registered_once_it_is_off(runsip):
    """Seed 000 end to end: 403 without a challenge while 286 is on; one command later they register."""
    from django.core.management import call_command

    from registrar.models import AuthAttempt

    services.create_extension("660001", PASSWORD)
    call_command("softparam", "set", "287", "Huawei,eSpace", stdout=open("/dev/null", "w"))
    call_command("softparam", "set", "286", "1", stdout=open("/dev/null", "w"))
    worker = runsip()
    for seed, transport, user_agent in SEED_PHONES:
        with e2e.SipClient(("127.0.0.1", worker.port), transport=transport) as phone:
            response = phone.request(e2e.load_seed(seed, local_port=phone.local_port))
        assert response.status == 403 and not response.get_all("WWW-Authenticate")
    refused = eventually(lambda: len(found := list(AuthAttempt.objects.filter(reason="ua_policy")
                                                 .order_by("created_at"))) == 2 and found)
    assert [a.user_agent for a in refused] == [ua for _, _, ua in SEED_PHONES]
    assert [a.transport for a in refused] == ["tcp", "udp"]
    assert "3CXPhone" in refused[0].detail and "matches no accepted pattern" in refused[0].detail

    call_command("softparam", "set", "286", "0", stdout=open("/dev/null", "w"))
    for _, transport, user_agent in SEED_PHONES:
        def registers():
            with e2e.SipClient(("127.0.0.1", worker.port), transport=transport) as phone:
                original = phone.register

                def as_seed_phone(*args, **kwargs):
                    return original(*args, user_agent=user_agent, **kwargs)

                phone.register = as_seed_phone
                return phone.register_with_digest("660001", PASSWORD, algorithm="MD5")[1].status == 200

        assert eventually(registers)
    assert sorted(Binding.objects.values_list("transport", flat=True)) == ["tcp", "udp"]


def test_several_workers_share_the_port_and_each_serves_phones(runsip):
    services.create_extension("2008", PASSWORD)
    worker = runsip(extra_args=("--workers", "2"))
    assert eventually(lambda: worker.output.count("ready") == 2, timeout=20), worker.output
    # SO_REUSEPORT hands each source to one of the processes; every phone is served.
    answers = [register(worker, "2008", PASSWORD).status for _ in range(20)]
    assert answers == [200] * 20
    assert Binding.objects.filter(extension__number="2008").count() == 5  # max contacts keeps the newest
    assert worker.stop() == 0
