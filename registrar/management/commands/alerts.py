"""`manage.py alerts list` shows recent alerts and how they went out; `manage.py alerts
test [--event EVENT]` raises a test alert and sends it through the configured e-mail
route and webhooks at once (routes and webhooks are managed in the Django admin)."""
import getpass

from django.core.management.base import BaseCommand

from registrar import services
from registrar.models import AlertEvent
from registrar.tasks import send_pending_alerts


class Command(BaseCommand):
    help = "List recent alerts, or send a test alert."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("list")
        test = actions.add_parser("test")
        test.add_argument("--event", default=AlertEvent.TEST, choices=AlertEvent.values,
                          help="send it as this event, to that event's route and webhooks (default: test)")

    def handle(self, *args, action, event=AlertEvent.TEST, **options):
        if action == "list":
            for alert in services.recent_alerts(50):
                sent = f"e-mail to {alert.emailed_to}" if alert.emailed_to else "no e-mail"
                if alert.email_error:
                    sent += f" (failed: {alert.email_error})"
                self.stdout.write(f"{alert.created_at:%Y-%m-%d %H:%M:%S} {alert.event:<20} {alert.subject}  [{sent}]")
            return
        alert = services.raise_alert(event, "Test alert",
                                     f"A test alert sent by {getpass.getuser()} with `manage.py alerts test`.",
                                     details={"test": True})
        send_pending_alerts()
        alert.refresh_from_db()
        self.stdout.write(f"Alert #{alert.pk} sent: e-mail to {alert.emailed_to or 'nobody'}"
                          + (f" (failed: {alert.email_error})" if alert.email_error else "")
                          + f"; {len(services.webhooks_for(event))} webhook(s) queued.")
