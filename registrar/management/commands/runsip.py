"""`manage.py runsip`: the SIP worker process (UDP and TCP listeners, registrar, digest)."""
import asyncio
import hashlib

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from registrar.worker.server import Listener, SipWorker


def install_fast_loop():
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


class Command(BaseCommand):
    help = "Run the SIP registrar (UDP/TCP listeners)."

    def add_arguments(self, parser):
        parser.add_argument("--listen", action="append", metavar="TRANSPORT:HOST:PORT",
                            help="udp:HOST:PORT or tcp:HOST:PORT; repeatable (default: SIP_LISTEN setting)")

    def handle(self, *args, listen=None, **options):
        try:
            listeners = [Listener(text) for text in (listen or settings.SIP_LISTEN)]
        except ValueError as error:
            raise CommandError(str(error)) from None
        loop_kind = install_fast_loop()
        secret = hashlib.sha256(b"regis-sip-nonce:" + settings.SECRET_KEY.encode()).digest()

        def announce(text):
            self.stdout.write(text)
            self.stdout.flush()

        worker = SipWorker(listeners, realm=settings.SIP_REALM, secret=secret,
                           commit_batch=settings.SIP_COMMIT_BATCH, announce=announce,
                           tcp_message_timeout=settings.SIP_TCP_MESSAGE_TIMEOUT,
                           tcp_idle_timeout=settings.SIP_TCP_IDLE_TIMEOUT,
                           max_tcp_per_source=settings.SIP_TCP_MAX_PER_SOURCE)
        announce(f"Regis SIP starting ({loop_kind}, realm {settings.SIP_REALM})")
        asyncio.run(worker.run())
