"""`manage.py runsip`: the SIP worker process (UDP, TCP and TLS listeners, registrar, digest).

A tls: listener serves the certificate of SIP_TLS_CERT / SIP_TLS_KEY, or on the
embedded default a self-signed one generated on first run (registrar.worker.tls); its
SHA-256 fingerprint is printed at start so phones can pin it.

With ``--workers N`` it starts N worker processes that share the listening ports
through SO_REUSEPORT (the kernel spreads sources across them), so more than one core
serves SIP. They stay correct together: nonces are stateless (HMAC with the shared
secret), every process re-reads credentials, policy and bans from the database, and
bindings are written in transactions that lock the AOR's extension row.
"""
import asyncio
import hashlib
import signal
import subprocess
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from registrar.worker import tls
from registrar.worker.server import Listener, SipWorker


def install_fast_loop():
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


class Command(BaseCommand):
    help = "Run the SIP registrar (UDP/TCP/TLS listeners)."

    def add_arguments(self, parser):
        parser.add_argument("--listen", action="append", metavar="TRANSPORT:HOST:PORT",
                            help="udp:HOST:PORT, tcp:HOST:PORT or tls:HOST:PORT; repeatable "
                                 "(default: SIP_LISTEN setting)")
        parser.add_argument("--workers", type=int, default=1, help="worker processes sharing the ports")
        parser.add_argument("--reuse-port", action="store_true", help="bind with SO_REUSEPORT (set by --workers)")
        parser.add_argument("--secondary", action="store_true",
                            help="run no trunk registrations (set by --workers for all but the first worker)")

    def handle(self, *args, listen=None, workers=1, reuse_port=False, secondary=False, **options):
        try:
            listeners = [Listener(text) for text in (listen or settings.SIP_LISTEN)]
        except ValueError as error:
            raise CommandError(str(error)) from None
        if workers < 1:
            raise CommandError("--workers must be at least 1")
        if workers > 1:
            if any(listener.port == 0 for listener in listeners):
                raise CommandError("--workers needs fixed ports (port 0 would give each worker its own)")
            if any(listener.transport == "tls" for listener in listeners):
                # Generated here, once, rather than by the workers racing each other.
                self._load_certificate()
            return self._supervise(workers, listeners)
        loop_kind = install_fast_loop()
        secret = hashlib.sha256(b"regis-sip-nonce:" + settings.SECRET_KEY.encode()).digest()

        def announce(text):
            self.stdout.write(text)
            self.stdout.flush()

        if any(listener.transport == "tls" for listener in listeners):
            files, context = self._load_certificate()
            for listener in listeners:
                if listener.transport == "tls":
                    listener.tls_context = context
            if settings.SIP_TLS_CERT:
                state = "from SIP_TLS_CERT"
            else:
                state = "self-signed, generated now" if files.generated else "self-signed"
            announce(f"TLS certificate: {files.cert} ({state})")
            announce(f"TLS certificate SHA-256 fingerprint: {tls.fingerprint(files.cert)}")

        worker = SipWorker(listeners, realm=settings.SIP_REALM, secret=secret,
                           commit_batch=settings.SIP_COMMIT_BATCH, announce=announce,
                           tcp_message_timeout=settings.SIP_TCP_MESSAGE_TIMEOUT,
                           tcp_idle_timeout=settings.SIP_TCP_IDLE_TIMEOUT,
                           max_tcp_per_source=settings.SIP_TCP_MAX_PER_SOURCE, reuse_port=reuse_port,
                           client_t1=settings.SIP_TIMER_T1_MS / 1000, trunks=not secondary)
        announce(f"Regis SIP starting ({loop_kind}, realm {settings.SIP_REALM})")
        asyncio.run(worker.run())

    def _load_certificate(self):
        try:
            files = tls.configured_files(settings)
            return files, tls.server_context(files)
        except (OSError, ValueError) as error:
            raise CommandError(f"cannot load the TLS certificate and key: {error}") from None

    def _supervise(self, count, listeners):
        """Start ``count`` workers with SO_REUSEPORT; stop them all on SIGTERM/SIGINT."""
        command = [sys.executable, sys.argv[0], "runsip", "--reuse-port"]
        for listener in listeners:
            command += ["--listen", str(listener)]
        # One worker keeps the trunks registered: several would each register with their own Call-ID.
        children = [subprocess.Popen(command + (["--secondary"] if index else [])) for index in range(count)]
        stopping = []

        def stop(signum, frame):
            stopping.append(signum)
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        codes = [child.wait() for child in children]
        if not stopping and any(codes):
            raise CommandError(f"a SIP worker exited with {max(codes)}")
