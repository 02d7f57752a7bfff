"""`manage.py serve`: the embedded default — SIP worker, web (ASGI) and housekeeping in one command.

Each part runs as it does in production (runsip and daphne as child processes), so
nothing SIP-related starts inside the web process. Housekeeping that Celery beat
schedules in production runs here on a timer. Ctrl-C or SIGTERM stops everything.
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

    def handle(self, *args, web, listen, **options):
        services.ensure_soft_parameters()
        login_hint = self._ensure_admin()
        web_host, _, web_port = web.rpartition(":")
        manage = [sys.executable, os.path.join(settings.BASE_DIR, "manage.py")]
        sip_args = [arg for text in (listen or []) for arg in ("--listen", text)]
        children = [
            subprocess.Popen(manage + ["runsip", *sip_args]),
            subprocess.Popen([sys.executable, "-m", "daphne", "-b", web_host or "0.0.0.0", "-p", web_port,
                              "pbx.asgi:application"]),
        ]
        shown_host = _reachable_address()
        sip_port = (listen or settings.SIP_LISTEN)[0].rpartition(":")[2]
        self.stdout.write(self.style.SUCCESS("Regis is running."))
        self.stdout.write(f"  Point phones at: sip:{shown_host}:{sip_port} (domain/realm {settings.SIP_REALM}; "
                          f"UDP and TCP)")
        self.stdout.write(f"  Web UI and admin: http://{shown_host}:{web_port}/  ({login_hint})")
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

    def _ensure_admin(self):
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            return "log in with your admin account; reset with ./regis manage changepassword admin"
        password = services.generate_password()
        users.objects.create_superuser("admin", "", password)
        return f"user 'admin', password '{password}' — shown once"
