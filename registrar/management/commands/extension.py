"""`manage.py extension create|set-password|list|delete`: manage extensions from a shell."""
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from registrar import services
from registrar.models import Extension


def _describe(error: ValidationError) -> str:
    if hasattr(error, "message_dict"):
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items())
    return " ".join(error.messages)


class Command(BaseCommand):
    help = "Create, list, delete extensions and set their SIP passwords."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="create an extension")
        create.add_argument("number")
        secret = create.add_mutually_exclusive_group()
        secret.add_argument("--password")
        secret.add_argument("--generate", action="store_true", help="generate a password and print it once")
        create.add_argument("--name", default="", help="display name")
        create.add_argument("--max-contacts", type=int, default=5)
        set_password = actions.add_parser("set-password", help="set or generate an extension's password")
        set_password.add_argument("number")
        secret = set_password.add_mutually_exclusive_group(required=True)
        secret.add_argument("--password")
        secret.add_argument("--generate", action="store_true")
        actions.add_parser("list", help="list extensions")
        delete = actions.add_parser("delete", help="delete an extension and its bindings")
        delete.add_argument("number")

    def handle(self, *args, action, **options):
        try:
            getattr(self, "_" + action.replace("-", "_"))(**options)
        except ValidationError as error:
            raise CommandError(_describe(error)) from None

    def _get(self, number):
        try:
            return Extension.objects.get(number=number)
        except Extension.DoesNotExist:
            raise CommandError(f"No extension {number}.") from None

    def _create(self, number, password, generate, name, max_contacts, **_):
        if Extension.objects.filter(number=number).exists():
            raise CommandError(f"Extension {number} already exists.")
        extension, generated = services.create_extension(number, None if generate or not password else password,
                                                         name, max_contacts)
        self.stdout.write(f"Created extension {extension.number}.")
        if generated:
            self.stdout.write(f"Password (shown once): {generated}")

    def _set_password(self, number, password, generate, **_):
        generated = services.set_password(self._get(number), None if generate else password)
        self.stdout.write(f"Password of {number} changed.")
        if generated:
            self.stdout.write(f"Password (shown once): {generated}")

    def _list(self, **_):
        self.stdout.write(f"{'number':<12} {'enabled':<8} {'contacts':<9} name")
        for extension in Extension.objects.all():
            live = services.live_bindings().filter(extension=extension).count()
            self.stdout.write(f"{extension.number:<12} {'yes' if extension.enabled else 'no':<8} "
                              f"{live:<9} {extension.display_name}")

    def _delete(self, number, **_):
        services.delete_extension(self._get(number))
        self.stdout.write(f"Deleted extension {number}.")
