"""End to end: a real ``manage.py runsip`` on loopback, driven by SIPp and raw sockets.

Each test arranges extensions through the services (committed: transactional_db),
starts the worker on a free port with the test database, runs a SIPp scenario from
``tests/sipp/`` (or the independent client in ``tests/e2e.py``) and then checks what
reached the database: bindings and typed authentication attempts.

SIPp 3.6 answers only the first challenge of a 401 and can compute MD5 (and AKA) but
not SHA-256, while Regis offers SHA-256 first by default (RFC 8760). The SIPp tests
therefore set soft parameter 104 (digest_algorithms) to MD5 only; SHA-256 is covered
by the independent client, against the default challenge.
"""
import re
import shutil
import socket
import time

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone

from registrar import services
from registrar.models import AuthAttempt, Binding
from tests import e2e

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

requires_sipp = pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp is not installed (apt-get install sip-tester)")

PASSWORD = "s3cret-e2e"
SIPP_USER_AGENT = "SIPp regis-e2e"


# -- fixtures --------------------------------------------------------------------------
@pytest.fixture
def sip_settings(settings):
    # The test process hashes passwords (HA1) with the realm the worker will use.
    settings.SIP_DOMAIN = e2e.SIP_DOMAIN
    settings.SIP_REALM = e2e.SIP_DOMAIN
    return settings


@pytest.fixture
def start_runsip(transactional_db, sip_settings):
    """Start runsip (after arranging data); stopped, and checked alive, at teardown."""
    with e2e.runsip_starter(e2e.database_url(django_settings.DATABASES["default"])) as start:
        yield start


@pytest.fixture
def md5_only(transactional_db):
    services.set_soft_parameter("digest_algorithms", ["MD5"])


def sipp(runsip, scenario, tmp_path, users, **kwargs):
    workdir = tmp_path / scenario.removesuffix(".xml")
    users_csv = e2e.write_users_csv(tmp_path / f"{scenario}.users.csv", users)
    result = e2e.run_sipp(scenario, runsip.address, workdir, users_csv=users_csv, **kwargs)
    return result


def assert_sipp_ok(result, runsip):
    assert result.returncode == 0, f"{result.report()}\n--- runsip\n{runsip.output[-4000:]}"


def last_response(result, cseq):
    """SIPp's last received answer to its CSeq ``cseq`` (a UDP retransmission may repeat it)."""
    answers = result.responses_to(cseq)
    assert answers, f"no answer to CSeq {cseq}\n{result.report()}"
    return answers[-1]


def contact_lines(response):
    return re.findall(r"(?m)^(?:Contact|m):\s*(.*?)\s*$", response)


def wait_for(query, timeout=5.0):
    """Poll ``query()`` until it is truthy (attempts are recorded after the answer is sent)."""
    deadline = time.monotonic() + timeout
    while True:
        value = query()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def bindings_of(number):
    return list(Binding.objects.filter(extension__number=number).order_by("contact_uri"))


def assert_expires_in(binding, seconds, slack=15):
    remaining = (binding.expires_at - timezone.now()).total_seconds()
    assert seconds - slack <= remaining <= seconds + 2, f"expires in {remaining:.0f} s, wanted about {seconds}"


# -- SIPp: registration, refresh, query, unregistration --------------------------------
@requires_sipp
@pytest.mark.parametrize("transport, sipp_transport", [("udp", "u1"), ("tcp", "t1")])
def test_it_registers_with_md5_digest(start_runsip, md5_only, tmp_path, transport, sipp_transport):
    services.create_extension("1001", PASSWORD)
    runsip = start_runsip()

    result = sipp(runsip, "register.xml", tmp_path, [("1001", PASSWORD)], transport=sipp_transport)

    assert_sipp_ok(result, runsip)
    [binding] = bindings_of("1001")
    assert binding.contact_uri.startswith(f"sip:1001@127.0.0.1:{result.local_port}")
    assert binding.source_ip == "127.0.0.1"
    assert binding.transport == transport
    assert binding.user_agent == SIPP_USER_AGENT
    assert binding.cseq == 2 and binding.call_id
    if transport == "udp":
        assert binding.source_port == result.local_port
    assert_expires_in(binding, 3600)
    assert runsip.stop() == 0, runsip.output


@requires_sipp
def test_it_clamps_a_long_interval_to_max_expires(start_runsip, md5_only, tmp_path):
    services.create_extension("1001", PASSWORD)
    runsip = start_runsip()

    result = sipp(runsip, "register.xml", tmp_path, [("1001", PASSWORD)], keys={"expires": 86400})

    assert_sipp_ok(result, runsip)
    [binding] = bindings_of("1001")
    assert_expires_in(binding, 7200)


@requires_sipp
def test_it_refreshes_a_registration_in_the_same_call_id(start_runsip, md5_only, tmp_path):
    services.create_extension("1001", PASSWORD)
    runsip = start_runsip()

    result = sipp(runsip, "refresh.xml", tmp_path, [("1001", PASSWORD)],
                  keys={"expires": 3600, "refresh_expires": 1800})

    assert_sipp_ok(result, runsip)
    [binding] = bindings_of("1001")
    assert binding.cseq == 3
    assert_expires_in(binding, 1800)
    [contact] = contact_lines(last_response(result, 3))
    assert re.search(r";expires=1[78]\d\d\b", contact), contact


@requires_sipp
def test_it_answers_a_query_with_the_current_bindings(start_runsip, md5_only, tmp_path):
    services.create_extension("1001", PASSWORD)
    runsip = start_runsip()

    result = sipp(runsip, "query.xml", tmp_path, [("1001", PASSWORD)])

    assert_sipp_ok(result, runsip)
    [binding] = bindings_of("1001")
    assert binding.cseq == 2  # a query changes no binding
    assert_expires_in(binding, 3600)
    query_answer = last_response(result, 3)
    assert query_answer.startswith("SIP/2.0 200"), result.report()
    assert re.search(rf"(?m)^Contact: <sip:1001@127\.0\.0\.1:{result.local_port}[;>].*;expires=3[56]\d\d",
                     query_answer), query_answer


def register_other_phone(runsip, number, password=PASSWORD):
    """A second phone of the same extension, through the independent client (MD5)."""
    with e2e.SipClient(("127.0.0.1", runsip.port)) as phone:
        _, final = phone.register_with_digest(number, password, algorithm="MD5")
        assert final.status == 200, final.raw.decode(errors="replace")
        return phone.local_port


@requires_sipp
def test_it_unregisters_one_contact_with_expires_zero(start_runsip, md5_only, tmp_path):
    services.create_extension("1001", PASSWORD)
    runsip = start_runsip()
    other_port = register_other_phone(runsip, "1001")

    result = sipp(runsip, "unregister.xml", tmp_path, [("1001", PASSWORD)])

    assert_sipp_ok(result, runsip)
    [remaining] = bindings_of("1001")
    assert remaining.contact_uri.startswith(f"sip:1001@127.0.0.1:{other_port}")
    # The 200 lists what is left: the other phone only.
    [contact] = contact_lines(last_response(result, 3))
    assert f"sip:1001@127.0.0.1:{other_port}" in contact and "expires=" in contact


@requires_sipp
def test_it_unregisters_every_contact_with_a_star(start_runsip, md5_only, tmp_path):
    services.create_extension("1001", PASSWORD)
    runsip = start_runsip()
    register_other_phone(runsip, "1001")

    result = sipp(runsip, "unregister_all.xml", tmp_path, [("1001", PASSWORD)])

    assert_sipp_ok(result, runsip)
    assert bindings_of("1001") == []
    assert contact_lines(last_response(result, 3)) == []


# -- SIPp: rejections ------------------------------------------------------------------
@requires_sipp
@pytest.mark.parametrize("number, password, reason", [
    ("1001", "not-the-password", "wrong_password"),
    ("7777", PASSWORD, "unknown_user"),
])
def test_it_challenges_bad_credentials_again(start_runsip, md5_only, tmp_path, number, password, reason):
    services.create_extension("1001", PASSWORD)
    runsip = start_runsip()

    result = sipp(runsip, "register_rejected.xml", tmp_path, [(number, password)])

    assert_sipp_ok(result, runsip)
    assert not Binding.objects.exists()
    attempt = wait_for(lambda: AuthAttempt.objects.filter(reason=reason).first())
    assert attempt is not None, list(AuthAttempt.objects.values("reason", "status", "extension_number"))
    assert attempt.status == 401
    assert attempt.extension_number == number and attempt.auth_username == number
    assert attempt.source_ip == "127.0.0.1" and attempt.method == "REGISTER"
    assert attempt.user_agent == SIPP_USER_AGENT


@requires_sipp
def test_it_answers_a_too_brief_interval_with_423_and_min_expires(start_runsip, md5_only, tmp_path):
    services.create_extension("1001", PASSWORD)
    runsip = start_runsip()

    result = sipp(runsip, "interval_too_brief.xml", tmp_path, [("1001", PASSWORD)], keys={"expires": 10})

    assert_sipp_ok(result, runsip)
    too_brief = last_response(result, 2)
    assert too_brief.startswith("SIP/2.0 423 Interval Too Brief"), too_brief
    assert re.search(r"(?m)^Min-Expires: 60\s*$", too_brief), too_brief
    attempt = wait_for(lambda: AuthAttempt.objects.filter(reason="interval_too_brief").first())
    assert attempt is not None, list(AuthAttempt.objects.values("reason", "status"))
    assert attempt.status == 423 and attempt.extension_number == "1001"
    # The scenario then registers again with the Min-Expires it was given.
    [binding] = bindings_of("1001")
    assert_expires_in(binding, 60)


# -- SIPp: a thousand phones -----------------------------------------------------------
@requires_sipp
def test_it_registers_a_thousand_extensions_over_udp(start_runsip, md5_only, tmp_path):
    users = [(str(2000 + i), f"pw-{i:04d}") for i in range(1000)]
    started = time.monotonic()
    with transaction.atomic():
        for number, password in users:
            services.create_extension(number, password)
    creation_seconds = time.monotonic() - started
    runsip = start_runsip()

    started = time.monotonic()
    result = sipp(runsip, "register.xml", tmp_path, users, calls=1000, rate=200, trace_msg=False,
                  global_timeout=60, recv_timeout="10s")
    sipp_seconds = time.monotonic() - started

    assert_sipp_ok(result, runsip)
    assert result.counter("FailedCall") == 0, result.report()
    assert result.counter("SuccessfulCall") == 1000, result.report()
    assert Binding.objects.count() == 1000
    assert Binding.objects.values("extension").distinct().count() == 1000
    print(f"created 1000 extensions in {creation_seconds:.1f} s; SIPp registered them in {sipp_seconds:.1f} s")


# -- the independent client: SHA-256, uniform answers, field seeds ----------------------
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_it_registers_with_sha256_digest(start_runsip, transport):
    services.create_extension("1001", PASSWORD)
    runsip = start_runsip()

    with e2e.SipClient(("127.0.0.1", runsip.port), transport=transport) as phone:
        challenge, final = phone.register_with_digest("1001", PASSWORD, algorithm="SHA-256", expires=1200)
        local_port = phone.local_port

    offered = [e2e.parse_challenge(v) for v in challenge.get_all("WWW-Authenticate")]
    assert [c.get("algorithm") for c in offered] == ["SHA-256", "MD5"]
    assert all(c.get("qop") == "auth" and c["realm"] == e2e.SIP_DOMAIN for c in offered)
    assert final.status == 200, final.raw.decode(errors="replace")
    [contact] = final.get_all("Contact")
    assert f"sip:1001@127.0.0.1:{local_port}" in contact and "expires=" in contact
    assert (final.get("Date") or "").endswith(" GMT")
    [binding] = bindings_of("1001")
    assert binding.transport == transport and binding.source_ip == "127.0.0.1"
    assert binding.source_port == local_port
    assert_expires_in(binding, 1200)


def test_unknown_user_and_wrong_password_look_alike_on_the_wire(start_runsip):
    services.create_extension("1001", PASSWORD)
    runsip = start_runsip()
    answers = {}
    for number, password in (("1001", "not-the-password"), ("7777", PASSWORD)):
        with e2e.SipClient(("127.0.0.1", runsip.port)) as phone:
            _, answers[number] = phone.register_with_digest(number, password, algorithm="SHA-256")

    wrong, unknown = answers["1001"], answers["7777"]
    assert wrong.status == unknown.status == 401
    assert wrong.reason == unknown.reason
    assert wrong.header_names == unknown.header_names

    def shape(response):
        return [{k: v for k, v in e2e.parse_challenge(value).items() if k != "nonce"}
                for value in response.get_all("WWW-Authenticate")]

    assert shape(wrong) == shape(unknown)
    reasons = wait_for(lambda: set(AuthAttempt.objects.values_list("reason", flat=True)) >= {
        "wrong_password", "unknown_user"})
    assert reasons, list(AuthAttempt.objects.values("reason", "status"))


@pytest.mark.parametrize("seed, transport", [
    ("3cxphone_register_tcp.sip", "tcp"),
    ("voxstack_register_udp.sip", "udp"),
])
def test_field_seed_registers_are_challenged_not_forbidden(start_runsip, seed, transport):
    # Seed 000: the U1981 answered these with 403 because its UA inspection (286) was on.
    services.create_extension("660001", PASSWORD)
    runsip = start_runsip()

    with e2e.SipClient(("127.0.0.1", runsip.port), transport=transport) as phone:
        response = phone.request(e2e.load_seed(seed, local_port=phone.local_port))

    assert response.status == 401, response.raw.decode(errors="replace")
    challenges = [e2e.parse_challenge(v) for v in response.get_all("WWW-Authenticate")]
    assert {c.get("algorithm") for c in challenges} == {"SHA-256", "MD5"}
    assert response.get("Call-ID") in e2e.load_seed(seed, local_port=0).decode()
    assert not Binding.objects.exists()


def test_the_worker_survives_garbage(start_runsip):
    services.create_extension("1001", PASSWORD)
    runsip = start_runsip()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
        for payload in (b"", b"\r\n\r\n", b"\x00\xff" * 100, b"REGISTER sip:x SIP/2.0\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n"):
            junk.sendto(payload, ("127.0.0.1", runsip.port))

    with e2e.SipClient(("127.0.0.1", runsip.port)) as phone:
        _, final = phone.register_with_digest("1001", PASSWORD, algorithm="SHA-256")
    assert final.status == 200, runsip.output[-4000:]
