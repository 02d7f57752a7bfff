"""SIP over TLS (RFC 3261 §26, RFC 5630) and the certificate it is served with.

A real runsip listens on TLS with a certificate made for the test; a Python ``ssl``
client that verifies the server against that certificate registers through the full
401 → digest → 200 flow, with sip: and sips: URIs, pings with CRLFCRLF (RFC 5626
§4.4.1), and shows that clients failing their handshake do not disturb the worker.
The self-signed default is generated once into the data folder and reused, its
fingerprint printed; `manage.py serve` serves HTTPS and wss:// with it.

The Debian SIPp build has no TLS transport ("To use a TLS transport you must compile
SIPp with OpenSSL"), so the TLS client here is Python's ssl with tests/e2e.py's own
digest code.
"""
import base64
import datetime
import ipaddress
import os
import re
import socket
import ssl
import sys
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from registrar import services
from registrar.models import Binding
from registrar.worker import tls
from registrar.worker.server import Listener
from tests import e2e

PASSWORD = "s3cret-tls"


# -- fixtures --------------------------------------------------------------------------
@pytest.fixture
def certificate(tmp_path):
    files = tls.ensure_self_signed(tmp_path / "tls", e2e.SIP_DOMAIN)
    return files


@pytest.fixture
def trusting(certificate):
    """A client context that trusts only the test certificate."""
    return ssl.create_default_context(cafile=str(certificate.cert))


@pytest.fixture
def start_runsip(transactional_db, settings):
    settings.SIP_DOMAIN = settings.SIP_REALM = e2e.SIP_DOMAIN
    with e2e.runsip_starter(e2e.database_url(django_settings.DATABASES["default"]), tls=True) as start:
        yield start


@pytest.fixture
def runsip(start_runsip, certificate):
    """runsip with the test certificate; extensions 1001-1004 exist before it starts."""
    for number in ("1001", "1002", "1003", "1004"):
        services.create_extension(number, PASSWORD)
    return start_runsip({"SIP_TLS_CERT": str(certificate.cert), "SIP_TLS_KEY": str(certificate.key)})


def tls_phone(runsip, context, **kwargs):
    return e2e.SipClient((e2e.LOOPBACK, runsip.tls_port), transport="tls", ssl_context=context, **kwargs)


def register(runsip, context, number, *, scheme="sip"):
    with tls_phone(runsip, context) as phone:
        challenge, final = phone.register_with_digest(number, PASSWORD, algorithm="SHA-256", scheme=scheme)
        return phone.local_port, challenge, final


# -- registering over TLS --------------------------------------------------------------
@pytest.mark.e2e
def test_it_registers_over_tls_with_digest(runsip, trusting):
    local_port, challenge, final = register(runsip, trusting, "1001")

    assert challenge.status == 401
    assert final.status == 200, runsip.output
    assert f"sip:1001@127.0.0.1:{local_port};transport=tls" in final.get("Contact")
    assert re.match(r"SIP/2\.0/TLS ", final.get("Via"))
    [binding] = Binding.objects.filter(extension__number="1001")
    assert (binding.transport, binding.source_port) == ("tls", local_port)


@pytest.mark.e2e
def test_it_registers_a_sips_address_of_record(runsip, trusting):
    local_port, challenge, final = register(runsip, trusting, "1002", scheme="sips")

    assert (challenge.status, final.status) == (401, 200), runsip.output
    assert f"<sips:1002@127.0.0.1:{local_port}>" in final.get("Contact")
    [binding] = Binding.objects.filter(extension__number="1002")
    assert (binding.contact_uri, binding.transport) == (f"sips:1002@127.0.0.1:{local_port}", "tls")


@pytest.mark.e2e
def test_a_crlf_ping_gets_a_crlf_pong_over_tls(runsip, trusting):
    with tls_phone(runsip, trusting) as phone:
        phone.send(b"\r\n\r\n")
        assert phone.sock.recv(16) == b"\r\n"

        # The flow stays usable: a REGISTER follows the ping on the same connection.
        _, final = phone.register_with_digest("1003", PASSWORD, algorithm="SHA-256")
        assert final.status == 200


@pytest.mark.e2e
def test_failed_handshakes_do_not_disturb_the_worker(runsip, certificate, trusting, tmp_path):
    address = (e2e.LOOPBACK, runsip.tls_port)

    # A plain-TCP phone on the TLS port: its REGISTER is not a ClientHello.
    with socket.create_connection(address, timeout=5) as plain:
        plain.sendall(e2e.load_seed("3cxphone_register_tcp.sip", local_port=plain.getsockname()[1]))
        assert read_until_closed(plain) is not None
    # Garbage bytes, then a client that does not trust the certificate.
    with socket.create_connection(address, timeout=5) as garbage:
        garbage.sendall(os.urandom(512))
        read_until_closed(garbage)
    stranger = ssl.create_default_context(cafile=str(tls.ensure_self_signed(tmp_path / "other", "x.test").cert))
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_phone(runsip, stranger)
    # A client that connects and never says anything is closed at the handshake timeout,
    # so it must not hold up a following phone either.
    idle = socket.create_connection(address, timeout=5)

    try:
        _, challenge, final = register(runsip, trusting, "1004")
    finally:
        idle.close()

    assert (challenge.status, final.status) == (401, 200), runsip.output
    assert not runsip.died
    assert "unhandled error" not in runsip.output


@pytest.mark.e2e
def test_a_client_that_never_finishes_its_handshake_is_closed(start_runsip, certificate):
    runsip = start_runsip({"SIP_TLS_CERT": str(certificate.cert), "SIP_TLS_KEY": str(certificate.key),
                           "SIP_TCP_MESSAGE_TIMEOUT": "1"})

    with socket.create_connection((e2e.LOOPBACK, runsip.tls_port), timeout=15) as idle:
        assert read_until_closed(idle) is not None


def read_until_closed(sock):
    """What the server sent before closing (b"" when nothing), or None if it kept it open."""
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        return None
    return received


# -- the certificate -------------------------------------------------------------------
def test_the_self_signed_certificate_names_the_domain_and_loopback(tmp_path):
    files = tls.ensure_self_signed(tmp_path, "pbx.example")

    certificate = x509.load_pem_x509_certificate(files.cert.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["pbx.example", "localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                          ipaddress.ip_address("::1")]
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime >= datetime.timedelta(days=3650)
    assert files.generated
    assert oct(files.key.stat().st_mode & 0o777) == "0o600"
    assert tls.fingerprint(files.cert) == ":".join(
        f"{byte:02X}" for byte in certificate.fingerprint(hashes.SHA256()))


def test_it_is_generated_once_and_reused(tmp_path):
    first = tls.ensure_self_signed(tmp_path, "pbx.example")
    again = tls.ensure_self_signed(tmp_path, "pbx.example")

    assert first.generated and not again.generated
    assert tls.fingerprint(first.cert) == tls.fingerprint(again.cert)


def test_processes_starting_together_agree_on_one_certificate(tmp_path):
    results = []
    threads = [threading.Thread(target=lambda: results.append(tls.ensure_self_signed(tmp_path, "pbx.example")))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sum(files.generated for files in results) == 1
    context = tls.server_context(results[0])  # the key matches the certificate
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_settings_paths_win_over_the_default(tmp_path, settings):
    made = tls.ensure_self_signed(tmp_path / "mine", "pbx.example")
    settings.SIP_TLS_CERT, settings.SIP_TLS_KEY = str(made.cert), str(made.key)
    settings.DATA_DIR = tmp_path / "data"

    assert tls.configured_files(settings) == tls.CertificateFiles(made.cert, made.key)
    assert not (tmp_path / "data" / "tls").exists()

    settings.SIP_TLS_CERT = settings.SIP_TLS_KEY = ""
    assert tls.existing_files(settings) is None
    generated = tls.configured_files(settings)
    assert generated.generated and generated.cert.parent == tmp_path / "data" / "tls"
    assert tls.existing_files(settings) == tls.CertificateFiles(generated.cert, generated.key)


def test_settings_want_the_certificate_and_key_together(monkeypatch):
    import importlib

    import pbx.settings

    monkeypatch.setenv("SIP_TLS_CERT", "/etc/regis/cert.pem")
    monkeypatch.delenv("SIP_TLS_KEY", raising=False)
    try:
        with pytest.raises(ImproperlyConfigured, match="SIP_TLS_CERT and SIP_TLS_KEY"):
            importlib.reload(pbx.settings)
    finally:
        monkeypatch.undo()
        importlib.reload(pbx.settings)
    assert pbx.settings.SIP_LISTEN[-1] == "tls:0.0.0.0:5061"
    assert pbx.settings.WEB_TLS_PORT == 8443


def test_a_tls_listener_address_parses():
    listener = Listener("tls:[::1]:5061")
    assert (listener.transport, listener.host, listener.port, str(listener)) == ("tls", "::1", 5061, "tls:[::1]:5061")
    with pytest.raises(ValueError, match="tls:HOST:PORT"):
        Listener("dtls:127.0.0.1:5061")


@pytest.mark.e2e
def test_runsip_generates_the_default_certificate_once_and_prints_its_fingerprint(start_runsip, tmp_path):
    services.create_extension("1005", PASSWORD)
    data_dir = tmp_path / "data"
    env = {"REGIS_DATA_DIR": str(data_dir), "SIP_TLS_CERT": "", "SIP_TLS_KEY": ""}

    first = start_runsip(env)
    first.stop()
    cert_path = data_dir / "tls" / "cert.pem"
    fingerprint = tls.fingerprint(cert_path)
    assert f"TLS certificate SHA-256 fingerprint: {fingerprint}" in first.output
    assert "generated now" in first.output

    second = start_runsip(env)
    assert f"TLS certificate SHA-256 fingerprint: {fingerprint}" in second.output
    assert "generated now" not in second.output
    _, challenge, final = register(second, ssl.create_default_context(cafile=str(cert_path)), "1005")
    assert (challenge.status, final.status) == (401, 200), second.output


# -- the web process: HTTPS and wss:// -------------------------------------------------
class Serve(e2e.ManagedProcess):
    """``manage.py serve`` with its web ports on loopback; ready when HTTPS answers."""

    name = "serve"

    def __init__(self, env, *, sip_port, tls_port, web_port, web_tls_port):
        super().__init__()
        self.env, self.web_tls_port = env, web_tls_port
        self.arguments = ["--web", f"{e2e.LOOPBACK}:{web_port}", "--web-tls-port", str(web_tls_port),
                          "--listen", f"udp:{e2e.LOOPBACK}:{sip_port}", "--listen", f"tls:{e2e.LOOPBACK}:{tls_port}"]

    def command(self):
        return [sys.executable, "manage.py", "serve", *self.arguments]

    def environment(self):
        return self.env

    def is_ready(self):
        try:
            with socket.create_connection((e2e.LOOPBACK, self.web_tls_port), timeout=0.5):
                return True
        except OSError:
            return False


@pytest.mark.e2e
def test_serve_offers_https_and_wss_with_the_certificate(transactional_db, tmp_path):
    data_dir = tmp_path / "data"
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="pbx.settings", PYTHONUNBUFFERED="1",
               DATABASE_URL=e2e.database_url(django_settings.DATABASES["default"]), REGIS_DATA_DIR=str(data_dir),
               SIP_DOMAIN=e2e.SIP_DOMAIN, SIP_TLS_CERT="", SIP_TLS_KEY="")
    serve = Serve(env, sip_port=e2e.free_port(), tls_port=e2e.free_port(), web_port=e2e.free_port(),
                  web_tls_port=e2e.free_port())

    with serve:
        assert e2e.eventually(lambda: "Regis SIP ready" in serve.output, timeout=20), serve.output
        context = ssl.create_default_context(cafile=str(data_dir / "tls" / "cert.pem"))
        with context.wrap_socket(socket.create_connection((e2e.LOOPBACK, serve.web_tls_port), timeout=5),
                                 server_hostname="localhost") as https:
            https.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert read_until_closed(https).startswith(b"HTTP/1.1 200")
        with context.wrap_socket(socket.create_connection((e2e.LOOPBACK, serve.web_tls_port), timeout=5),
                                 server_hostname="localhost") as wss:
            key = base64.b64encode(os.urandom(16)).decode()
            wss.sendall((f"GET /ws/sip HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                         f"Sec-WebSocket-Protocol: sip\r\n\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = wss.recv(4096)
                assert chunk, f"closed before the handshake answer: {head!r}\n{serve.output}"
                head += chunk
            assert head.startswith(b"HTTP/1.1 101"), head
            assert re.search(rb"(?im)^sec-websocket-protocol:\s*sip\r$", head)
    fingerprint = tls.fingerprint(data_dir / "tls" / "cert.pem")
    assert serve.output.count(f"TLS certificate SHA-256 fingerprint: {fingerprint}") >= 2
    assert "generated now" not in serve.output  # serve made it before starting runsip and daphne
