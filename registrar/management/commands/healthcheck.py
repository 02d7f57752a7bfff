"""`manage.py healthcheck [--sip]`: the /healthz report on stdout; exit status 1 when the
database does not answer, or with --sip when no runsip process on this host reported
in the last 15 seconds (a container health check for the sip service)."""
import json

from django.core.management.base import BaseCommand, CommandError

from registrar import health


class Command(BaseCommand):
    help = "Check the database (and with --sip this host's SIP worker); exit 1 when unhealthy."

    def add_arguments(self, parser):
        parser.add_argument("--sip", action="store_true", help="also require a live runsip process on this host")

    def handle(self, *args, sip=False, **options):
        result = health.report()
        self.stdout.write(json.dumps(result, indent=2))
        if result["status"] != "ok":
            raise CommandError("The database does not answer.")
        if sip and not health.sip_worker_alive():
            raise CommandError("No runsip process on this host reported in the last 15 seconds.")
