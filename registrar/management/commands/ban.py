"""`manage.py ban list|lift IP`: see and lift the bans the SIP worker imposed."""
import getpass

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from registrar import services
from registrar.models import Ban


class Command(BaseCommand):
    help = "List bans in force, or lift the bans of an address."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("list")
        lift = actions.add_parser("lift")
        lift.add_argument("ip")

    def handle(self, *args, action, ip=None, **options):
        active = Ban.objects.filter(lifted_at__isnull=True, expires_at__gt=timezone.now())
        if action == "list":
            for ban in active:
                self.stdout.write(f"{ban.ip:<40} until {ban.expires_at:%Y-%m-%d %H:%M:%S}  {ban.detail}")
            return
        bans = list(active.filter(ip=ip))
        if not bans:
            raise CommandError(f"{ip} is not banned.")
        for ban in bans:
            services.lift_ban(ban, by=f"{getpass.getuser()} (shell)")
        self.stdout.write(f"Lifted the ban on {ip}.")
