"""`manage.py softparam list|show N|set N VALUE`: soft parameters, as on the gateway's CLI."""
import getpass

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from registrar import services, softparams
from registrar.models import SoftParameter


def _format(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return ",".join(value) or "(empty)"
    return str(value)


class Command(BaseCommand):
    help = "List, show and set soft parameters (runtime policy, live in the SIP worker within a second)."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("list")
        show = actions.add_parser("show")
        show.add_argument("key", help="number or name")
        change = actions.add_parser("set")
        change.add_argument("key", help="number or name")
        change.add_argument("value", help="0/1 for switches, a number, or a comma-separated list")

    def handle(self, *args, action, key=None, value=None, **options):
        services.ensure_soft_parameters()
        if action == "list":
            for parameter in SoftParameter.objects.all():
                self.stdout.write(f"{parameter.number:>4}  {parameter.name:<28} {_format(parameter.value)}")
            return
        if action == "set":
            try:
                parameter = services.set_soft_parameter(key, value, actor=f"{getpass.getuser()} (shell)", via="cli")
            except ValidationError as error:
                raise CommandError("; ".join(" ".join(m) for m in error.message_dict.values())) from None
            self.stdout.write(f"{parameter.number} {parameter.name} = {_format(parameter.value)}")
            return
        try:
            spec = softparams.spec_for(key)
        except KeyError:
            raise CommandError(f"There is no soft parameter {key!r}.") from None
        parameter = SoftParameter.objects.get(number=spec.number)
        self.stdout.write(f"Number:      {parameter.number}\nName:        {parameter.name}\n"
                          f"Value:       {_format(parameter.value)}\nDefault:     {_format(parameter.default)}\n"
                          f"Description: {parameter.description}")
