"""`manage.py serve`: the embedded default — SIP worker, web (ASGI) and housekeeping in one command.

Each part runs as it does in production (runsip and daphne as child processes), so
nothing SIP-related starts inside the web process. Housekeeping that Celery beat
schedules in production runs here on a timer. Ctrl-C or SIGTERM stops everything.

With a certificate (SIP_TLS_CERT/SIP_TLS_KEY, or the self-signed default that runsip's
tls: listener uses, generated here first so both children find it) daphne also serves
HTTPS and wss:// on WEB_TLS_PORT, so browsers can reach /ws/sip securely.
"""
import os
import signal
import socket
import subprocess
import sys
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from registrar import services
from registrar.tasks import run_due_jobs
from registrar.worker import tls


def _twisted_escape(text) -> str:
    return str(text).replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def web_tls_endpoint(port: int, host: str, certificate) -> str:
    """The Twisted endpoint string daphne serves HTTPS and wss:// on."""
    return (f"ssl:{port}:interface={_twisted_escape(host.strip('[]'))}"
            f":privateKey={_twisted_escape(certificate.key)}:certKey={_twisted_escape(certificate.cert)}")


def _transport_and_port(listen: str) -> str:
    return f"{listen.partition(':')[0].upper()} {listen.rpartition(':')[2]}"


def _reachable_address():
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
    return address


class Command(BaseCommand):
    help = "Run Regis on its embedded default: SIP worker, web UI and housekeeping."

    def add_arguments(self, parser):
        parser.add_argument("--web", default=os.environ.get("REGIS_WEB", "0.0.0.0:8000"), metavar="HOST:PORT")
        parser.add_argument("--listen", action="append", help="passed to runsip")
        parser.add_argument("--web-tls-port", type=int, default=settings.WEB_TLS_PORT, metavar="PORT",
                            help="HTTPS and wss:// port (default: WEB_TLS_PORT; 0: off)")

    def handle(self, *args, web, listen, web_tls_port=0, **options):
        services.ensure_soft_parameters()
        login_hint = self._ensure_admin()
        web_host, _, web_port = web.rpartition(":")
        manage = [sys.executable, os.path.join(settings.BASE_DIR, "manage.py")]
        sip_args = [arg for text in (listen or []) for arg in ("--listen", text)]
        sip_listen = listen or settings.SIP_LISTEN
        certificate = self._web_certificate(web_tls_port, sip_listen)
        web_endpoints = []
        if certificate is not None:
            web_endpoints = ["-e", web_tls_endpoint(web_tls_port, web_host or "0.0.0.0", certificate)]
        web_env = dict(os.environ)
        if listen and not os.environ.get("SIP_TUNNEL_ADDRESS"):
            # The browsers' calls must reach the runsip started here, on the listeners given here.
            from pbx.settings import tunnel_address_for
            web_env["SIP_TUNNEL_ADDRESS"] = tunnel_address_for(listen)
        children = [
            subprocess.Popen(manage + ["runsip", *sip_args]),
            subprocess.Popen([sys.executable, "-m", "daphne", "-b", web_host or "0.0.0.0", "-p", web_port,
                              *web_endpoints, "pbx.asgi:application"], env=web_env),
        ]
        shown_host = _reachable_address()
        sip_port = sip_listen[0].rpartition(":")[2]
        self.stdout.write(self.style.SUCCESS("Regis is running."))
        self.stdout.write(f"  Point phones at: sip:{shown_host}:{sip_port} (domain/realm {settings.SIP_REALM}; "
                          f"{', '.join(_transport_and_port(text) for text in sip_listen)})")
        self.stdout.write(f"  Web UI and admin: http://{shown_host}:{web_port}/  ({login_hint})")
        if certificate is not None:
            self.stdout.write(f"  Over TLS: https://{shown_host}:{web_tls_port}/ and wss://{shown_host}:"
                              f"{web_tls_port}/ws/sip")
            self.stdout.write(f"  TLS certificate SHA-256 fingerprint: {tls.fingerprint(certificate.cert)}")
        self.stdout.write("  Add an extension: ./regis manage extension create 1001 --generate")
        self.stdout.flush()

        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        due = {}
        while not stopping:
            if any(child.poll() is not None for child in children):
                self.stderr.write("A Regis process ended; stopping the others.")
                break
            run_due_jobs(due)
            time.sleep(0.5)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()

    def _web_certificate(self, web_tls_port, sip_listen):
        """The certificate daphne serves on ``web_tls_port``, or None for no TLS endpoint."""
        if not web_tls_port:
            return None
        if settings.SIP_TLS_CERT or any(text.startswith("tls:") for text in sip_listen):
            return tls.configured_files(settings)
        return tls.existing_files(settings)

    def _ensure_admin(self):
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            return "log in with your admin account; reset with ./regis manage changepassword admin"
        password = services.generate_password()
        users.objects.create_superuser("admin", "", password)
        return f"user 'admin', password '{password}' — shown once"
