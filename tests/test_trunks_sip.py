"""Outbound trunks over real sockets: runsip registers to an upstream and says why not.

The upstreams are real: a second Regis (its own runsip and its own SQLite database,
prepared with its own ``manage.py``) for the full digest flow, refreshes and restarts
of either side; SIPp as a UAS (tests/sipp/trunk_upstream_*.xml) for what Regis never
answers (407, 423 with Min-Expires, 403, 503 with Retry-After); a silent UDP socket
for the timeout.
"""
import shutil
import socket
import sqlite3
import subprocess
import sys
import time

import pytest
from django.conf import settings as django_settings

from registrar import trunks
from registrar.models import TrunkAttempt, TrunkStatus
from tests import e2e
from tests.e2e import eventually

UPSTREAM_USER = "9001"
UPSTREAM_PASSWORD = "up-s3cret"
# Short client timers so a timeout takes about 3 s, not 32 s (Timer F = 64*T1).
FAST_TIMERS = {"SIP_TIMER_T1_MS": "50", "TRUNK_BACKOFF_FIRST": "1"}


def manage(db_url, *args):
    env = dict(e2e.RunSip(db_url).environment())
    completed = subprocess.run([sys.executable, "manage.py", *args], cwd=e2e.REPO_ROOT, env=env,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


@pytest.fixture(scope="module")
def upstream_database(tmp_path_factory):
    """A second Regis's own database: migrated, one extension, registrations of 5 to 10 s
    so that refreshes happen within a test."""
    path = tmp_path_factory.mktemp("upstream") / "upstream.sqlite3"
    db_url = f"sqlite:///{path}"
    manage(db_url, "migrate", "--noinput", "-v", "0")
    manage(db_url, "extension", "create", UPSTREAM_USER, "--password", UPSTREAM_PASSWORD)
    manage(db_url, "softparam", "set", "min_expires", "5")
    manage(db_url, "softparam", "set", "max_expires", "10")
    return path


def upstream_bindings(path):
    with sqlite3.connect(path) as db:
        return db.execute("SELECT contact_uri FROM registrar_binding b JOIN registrar_extension e "
                          "ON b.extension_id = e.id WHERE e.number = ?", (UPSTREAM_USER,)).fetchall()


@pytest.fixture
def processes(transactional_db, settings):
    settings.SIP_DOMAIN = settings.SIP_REALM = e2e.SIP_DOMAIN
    started = []

    def start(db_url=None, port=None, extra_args=(), tls=False, **env):
        process = e2e.RunSip(db_url or e2e.database_url(django_settings.DATABASES["default"]), port=port,
                             env={**FAST_TIMERS, **env}, extra_args=extra_args, tls=tls)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


def status(trunk):
    return TrunkStatus.objects.filter(trunk=trunk).first()


def state_is(trunk, state, cause=None):
    current = status(trunk)
    return current is not None and current.state == state and (cause is None or current.cause == cause) and current


def make_trunk(target, **fields):
    values = dict(name="upstream", registrar_uri=target, aor_user=UPSTREAM_USER, aor_domain=e2e.SIP_DOMAIN,
                  password=UPSTREAM_PASSWORD, expires=60)
    values.update(fields)
    return trunks.create_trunk(**values)


def test_trunk_to_a_second_regis_registers_refreshes_and_survives_restarts(processes, upstream_database):
    upstream_url = f"sqlite:///{upstream_database}"
    upstream = processes(upstream_url)
    trunk = make_trunk(f"sip:127.0.0.1:{upstream.port}")
    local = processes()
    registered = eventually(lambda: state_is(trunk, "registered"), timeout=10)
    assert registered, (status(trunk), local.output)
    assert registered.last_status == 200 and registered.registered_until is not None
    assert upstream_bindings(upstream_database) == [(f"sip:{UPSTREAM_USER}@127.0.0.1:{local.port}",)]
    # The upstream grants 10 s: a refresh follows within it.
    assert eventually(lambda: TrunkAttempt.objects.filter(trunk=trunk, status=200).count() >= 2, timeout=15)

    # Our side restarts: it registers again at once.
    before = TrunkAttempt.objects.filter(trunk=trunk).count()
    local.stop()
    local = processes(port=local.port)
    assert eventually(lambda: TrunkAttempt.objects.filter(trunk=trunk).count() > before and
                      state_is(trunk, "registered"), timeout=10)

    # The upstream goes away: refreshes time out and the trunk fails with the reason...
    upstream.stop()
    failed = eventually(lambda: state_is(trunk, "failed", "timeout"), timeout=25)
    assert failed and f"127.0.0.1:{upstream.port}" in failed.detail
    # ... and it comes back on its own once the upstream returns.
    processes(upstream_url, port=upstream.port)
    assert eventually(lambda: state_is(trunk, "registered"), timeout=20)


def test_wrong_password_is_shown_as_bad_credentials(processes, upstream_database):
    upstream = processes(f"sqlite:///{upstream_database}")
    trunk = make_trunk(f"sip:127.0.0.1:{upstream.port}", name="wrong-password", password="not-it")
    processes()
    failed = eventually(lambda: state_is(trunk, "failed", "bad_credentials"), timeout=10)
    assert failed and failed.last_status == 401 and "rejected the password of '9001'" in failed.detail
    attempt = TrunkAttempt.objects.filter(trunk=trunk).first()
    assert attempt.cause == "bad_credentials" and attempt.status == 401


def test_realm_mismatch_is_shown_in_words(processes, upstream_database):
    upstream = processes(f"sqlite:///{upstream_database}")
    trunk = make_trunk(f"sip:127.0.0.1:{upstream.port}", name="realm", expected_realm="pbx.example.com")
    processes()
    failed = eventually(lambda: state_is(trunk, "failed", "realm_mismatch"), timeout=10)
    assert failed and failed.detail == (f"realms do not match: server asked for '{e2e.SIP_DOMAIN}', "
                                        "trunk expects 'pbx.example.com'")
    assert upstream_bindings(upstream_database) == [] or all(
        "wrong" not in uri for (uri,) in upstream_bindings(upstream_database))


def test_disabling_a_trunk_unregisters_it_upstream(processes, upstream_database):
    upstream = processes(f"sqlite:///{upstream_database}")
    trunk = make_trunk(f"sip:127.0.0.1:{upstream.port}", name="disable-me", contact_user="disable-me")
    processes()
    assert eventually(lambda: state_is(trunk, "registered"), timeout=10)
    assert eventually(lambda: any("disable-me" in uri for (uri,) in upstream_bindings(upstream_database)))
    trunks.update_trunk(trunk, enabled=False)
    assert eventually(lambda: not any("disable-me" in uri for (uri,) in upstream_bindings(upstream_database)),
                      timeout=10)
    assert eventually(lambda: state_is(trunk, "disabled"), timeout=5)


def test_register_now_sends_a_register_at_once(processes, upstream_database):
    upstream = processes(f"sqlite:///{upstream_database}")
    trunk = make_trunk(f"sip:127.0.0.1:{upstream.port}", name="now")
    processes()
    assert eventually(lambda: state_is(trunk, "registered"), timeout=10)
    before = TrunkAttempt.objects.filter(trunk=trunk).count()
    trunks.request_register_now(trunk)
    assert eventually(lambda: TrunkAttempt.objects.filter(trunk=trunk).count() > before, timeout=5)


def test_unresolvable_host_is_a_transport_error(processes):
    trunk = make_trunk("sip:no-such-host.invalid", name="nxdomain")
    processes()
    failed = eventually(lambda: state_is(trunk, "failed", "transport"), timeout=15)
    assert failed and "cannot resolve no-such-host.invalid" in failed.detail


def test_silent_upstream_is_a_timeout(processes):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        trunk = make_trunk(f"sip:127.0.0.1:{silent.getsockname()[1]}", name="silent")
        processes()
        failed = eventually(lambda: state_is(trunk, "failed", "timeout"), timeout=15)
        assert failed and failed.last_status is None and failed.next_attempt_at is not None
        silent.settimeout(1)
        assert silent.recv(65535).startswith(b"REGISTER sip:127.0.0.1:")  # it was asked, and kept asking


class SippUpstream:
    """SIPp as a UAS on a free port, answering one REGISTER dialog (bounded)."""

    def __init__(self, scenario, workdir, **keys):
        self.port = e2e.free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(e2e.SIPP_DIR / scenario, workdir / scenario)
        command = [shutil.which("sipp"), "-sf", scenario, "-i", "127.0.0.1", "-p", str(self.port), "-m", "1",
                   "-nostdin", "-timeout", "30s", "-timeout_error", "-trace_err", "-error_file", "errors.log",
                   "-trace_msg", "-message_file", "messages.log"]
        for name, value in keys.items():
            command += ["-key", name, str(value)]
        self.workdir = workdir
        self.process = subprocess.Popen(command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT)
        time.sleep(0.3)

    def finish(self):
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return -999

    def log(self):
        path = self.workdir / "errors.log"
        return path.read_text() if path.exists() else ""


needs_sipp = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) is not installed")


@needs_sipp
def test_407_from_upstream_is_answered_with_proxy_authorization(processes, tmp_path):
    sipp = SippUpstream("trunk_upstream_407.xml", tmp_path, realm="carrier.example", user=UPSTREAM_USER)
    trunk = make_trunk(f"sip:127.0.0.1:{sipp.port}", name="proxy-auth")
    processes()
    registered = eventually(lambda: state_is(trunk, "registered"), timeout=10)
    assert registered, (status(trunk).detail, sipp.log())
    assert sipp.finish() == 0, sipp.log()


@needs_sipp
def test_423_is_followed_by_the_interval_the_upstream_asks_for(processes, tmp_path):
    sipp = SippUpstream("trunk_upstream_423.xml", tmp_path, min_expires=900)
    trunk = make_trunk(f"sip:127.0.0.1:{sipp.port}", name="brief", expires=60)
    processes()
    registered = eventually(lambda: state_is(trunk, "registered"), timeout=10)
    assert registered, status(trunk)
    assert sipp.finish() == 0, sipp.log()
    assert [a.status for a in TrunkAttempt.objects.filter(trunk=trunk)] == [200]


@needs_sipp
def test_403_from_upstream_is_forbidden(processes, tmp_path):
    sipp = SippUpstream("trunk_upstream_403.xml", tmp_path)
    trunk = make_trunk(f"sip:127.0.0.1:{sipp.port}", name="forbidden")
    processes()
    failed = eventually(lambda: state_is(trunk, "failed", "forbidden"), timeout=10)
    assert failed and (failed.last_status, failed.last_phrase) == (403, "Forbidden")
    assert sipp.finish() == 0, sipp.log()


@needs_sipp
def test_retry_after_is_followed(processes, tmp_path):
    sipp = SippUpstream("trunk_upstream_503.xml", tmp_path, retry_after=600)
    trunk = make_trunk(f"sip:127.0.0.1:{sipp.port}", name="busy")
    processes()
    failed = eventually(lambda: state_is(trunk, "failed", "server_error"), timeout=10)
    assert failed and failed.last_status == 503
    wait = (failed.next_attempt_at - failed.updated_at).total_seconds()
    assert 599 <= wait <= 601
    assert sipp.finish() == 0, sipp.log()


def test_trunk_over_tcp_keeps_its_connection(processes, upstream_database):
    upstream = processes(f"sqlite:///{upstream_database}")
    trunk = make_trunk(f"sip:127.0.0.1:{upstream.port};transport=tcp", name="over-tcp", contact_user="tcp-trunk")
    local = processes()
    assert eventually(lambda: state_is(trunk, "registered"), timeout=10), status(trunk)
    assert (f"sip:tcp-trunk@127.0.0.1:{local.port};transport=tcp",) in upstream_bindings(upstream_database)
    # Refreshes (every 5 s or so) reuse the connection and keep succeeding.
    assert eventually(lambda: TrunkAttempt.objects.filter(trunk=trunk, status=200).count() >= 2, timeout=15)


def test_several_workers_keep_one_registration_per_trunk(processes):
    """With runsip --workers 2 only the first worker registers trunks: two would register
    with two Call-IDs and the upstream would see the trunk twice."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as upstream:
        upstream.bind(("127.0.0.1", 0))
        make_trunk(f"sip:127.0.0.1:{upstream.getsockname()[1]}", name="once")
        processes(extra_args=("--workers", "2"))
        upstream.settimeout(0.5)
        call_ids, deadline = set(), time.monotonic() + 4
        while time.monotonic() < deadline:
            try:
                data = upstream.recv(65535)
            except socket.timeout:
                continue
            call_ids |= {line.split(":", 1)[1].strip() for line in data.decode().split("\r\n")
                         if line.lower().startswith("call-id:")}
        assert len(call_ids) == 1, call_ids


def test_trunk_over_tls_to_a_sips_upstream(processes, upstream_database, tmp_path):
    # The upstream's self-signed certificate is generated into its own data folder; our
    # side is told not to verify it (TRUNK_TLS_VERIFY=0), as for a lab upstream.
    upstream = processes(f"sqlite:///{upstream_database}", tls=True, REGIS_DATA_DIR=str(tmp_path),
                         SIP_TLS_CERT="", SIP_TLS_KEY="")
    trunk = make_trunk(f"sips:127.0.0.1:{upstream.tls_port}", name="over-tls", contact_user="tls-trunk")
    processes(TRUNK_TLS_VERIFY="0")
    registered = eventually(lambda: state_is(trunk, "registered"), timeout=10)
    assert registered, status(trunk)
    assert any(uri.startswith("sips:tls-trunk@") for (uri,) in upstream_bindings(upstream_database))


def test_a_tls_upstream_with_an_untrusted_certificate_is_a_transport_error(processes, upstream_database, tmp_path):
    upstream = processes(f"sqlite:///{upstream_database}", tls=True, REGIS_DATA_DIR=str(tmp_path),
                         SIP_TLS_CERT="", SIP_TLS_KEY="")
    trunk = make_trunk(f"sips:127.0.0.1:{upstream.tls_port}", name="untrusted")
    processes()
    failed = eventually(lambda: state_is(trunk, "failed", "transport"), timeout=10)
    assert failed and "certificate" in failed.detail.lower(), failed.detail
