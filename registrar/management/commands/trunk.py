"""`manage.py trunk add|list|show|set|enable|disable|register-now|delete`: outbound trunks from a shell.

Every change goes through :mod:`registrar.trunks`, like the web UI and the API; what
runsip last reported (state, cause, history) is read from its tables. A password is
given with --password or, to keep it out of the shell history and the process list,
with --password-stdin; it is never printed.
"""
import argparse
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from registrar import trunks
from registrar.choices import TrunkState
from registrar.models import Trunk

# Option (its dest) → Trunk field.
OPTION_FIELDS = {"registrar": "registrar_uri", "user": "aor_user", "domain": "aor_domain",
                 "auth_user": "auth_username", "realm": "expected_realm", "expires": "expires",
                 "proxy": "outbound_proxy", "contact_user": "contact_user", "rename": "name", "register": "register"}
FIELD_OPTIONS = {field: "--" + option.replace("_", "-") for option, field in OPTION_FIELDS.items()
                 if field != "name"} | {"password": "--password"}
HISTORY_SHOWN = 20


def _describe(error: ValidationError) -> str:
    if hasattr(error, "message_dict"):
        return "; ".join(f"{FIELD_OPTIONS.get(field, field)}: {' '.join(messages)}"
                         for field, messages in error.message_dict.items())
    return " ".join(error.messages)


def _clock(moment) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def state_in_words(trunk) -> str:
    """The trunk's state as the web UI says it, on one line."""
    status = getattr(trunk, "status", None)
    if not trunk.enabled:
        return "disabled"
    if status is None:
        return "registering"
    if status.state == TrunkState.REGISTERED:
        return f"registered until {_clock(status.registered_until)}"
    if status.state == TrunkState.FAILED:
        words = f"failed: {trunks.cause_label(status.cause)}" if status.cause else "failed"
        return words + (f" ({status.detail})" if status.detail else "")
    return status.state


def _yes_no(text: str) -> bool:
    if text.lower() in ("yes", "y", "1", "on"):
        return True
    if text.lower() in ("no", "n", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"yes or no, not {text!r}")


class Command(BaseCommand):
    help = "Add, list, show, change, enable, disable, re-register and delete outbound trunks."
    # Tests hand a file-like object for --password-stdin.
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        add = actions.add_parser("add", help="add a trunk (runsip registers it within seconds)")
        add.add_argument("name")
        add.add_argument("--registrar", required=True, help="sip:host[:port][;transport=udp|tcp|tls] or sips:...")
        add.add_argument("--user", required=True, help="the AOR's user part")
        self._secret_arguments(add)
        self._field_arguments(add)
        add.add_argument("--disabled", action="store_true", help="add it without registering it")

        actions.add_parser("list", help="list trunks with their state and cause")
        show = actions.add_parser("show", help="a trunk's settings, status and recent attempts")
        show.add_argument("name")

        change = actions.add_parser("set", help="change a trunk's settings")
        change.add_argument("name")
        change.add_argument("--registrar")
        change.add_argument("--user")
        change.add_argument("--rename", help="a new name")
        self._secret_arguments(change)
        self._field_arguments(change)

        for verb, says in (("enable", "register it again"), ("disable", "unregister it and stop"),
                           ("register-now", "ask runsip to register it at once"), ("delete", "delete it")):
            actions.add_parser(verb, help=says).add_argument("name")

    @staticmethod
    def _secret_arguments(parser):
        secret = parser.add_mutually_exclusive_group()
        secret.add_argument("--password")
        secret.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    @staticmethod
    def _field_arguments(parser):
        parser.add_argument("--domain", help="the AOR's domain (default: the registrar's host)")
        parser.add_argument("--auth-user", help="the digest username (default: the AOR user)")
        parser.add_argument("--realm", help="the realm expected in challenges; any other is refused")
        parser.add_argument("--expires", type=int, help="registration interval asked for, in seconds")
        parser.add_argument("--proxy", help="outbound proxy URI")
        parser.add_argument("--contact-user", help="user part of our Contact (default: the AOR user)")
        parser.add_argument("--register", type=_yes_no, metavar="yes|no",
                            help="keep a registration upstream (no: the trunk carries calls only)")

    def handle(self, *args, action, **options):
        try:
            getattr(self, "_" + action.replace("-", "_"))(**options)
        except ValidationError as error:
            raise CommandError(_describe(error)) from None

    # -- helpers ------------------------------------------------------------------------
    def _get(self, name):
        try:
            return Trunk.objects.select_related("status").get(name=name)
        except Trunk.DoesNotExist:
            raise CommandError(f"No trunk named {name!r}.") from None

    def _password(self, options):
        if not options.get("password_stdin"):
            return options.get("password")
        stream = options.get("stdin") or sys.stdin
        password = stream.readline().rstrip("\r\n")
        if not password:
            raise CommandError("--password-stdin: standard input held no password.")
        return password

    @staticmethod
    def _fields(options) -> dict:
        return {field: options[option] for option, field in OPTION_FIELDS.items() if options.get(option) is not None}

    # -- verbs --------------------------------------------------------------------------
    def _add(self, name, disabled, **options):
        if Trunk.objects.filter(name=name).exists():
            raise CommandError(f"Trunk {name!r} already exists.")
        fields = self._fields(options)
        trunk = trunks.create_trunk(name=name, password=self._password(options) or "", enabled=not disabled,
                                    **fields)
        if disabled:
            outcome = " (disabled)."
        elif not trunk.register:
            outcome = "; it carries calls only (no registration)."
        else:
            outcome = "; runsip registers it within seconds."
        self.stdout.write(f"Added trunk {trunk.name}{outcome}")

    def _list(self, **_):
        rows = [(trunk.name, "yes" if trunk.enabled else "no", state_in_words(trunk), trunk.registrar_uri)
                for trunk in Trunk.objects.select_related("status").order_by("name")]
        width = max([len("name")] + [len(row[0]) for row in rows])
        uri_width = max([len("registrar")] + [len(row[3]) for row in rows])
        self.stdout.write(f"{'name':<{width}}  {'enabled':<7}  {'registrar':<{uri_width}}  state")
        for name, enabled, state, registrar in rows:
            self.stdout.write(f"{name:<{width}}  {enabled:<7}  {registrar:<{uri_width}}  {state}")

    def _show(self, name, **_):
        trunk = self._get(name)
        status = getattr(trunk, "status", None)
        facts = [
            ("name", trunk.name), ("registrar", trunk.registrar_uri),
            ("registers as", f"{trunk.aor_user}@{trunk.aor_domain or '(the registrar host)'}"),
            ("auth user", trunk.auth_username or trunk.aor_user),
            ("password", "stored, encrypted" if trunk.password_encrypted else "none"),
            ("expected realm", trunk.expected_realm or "any"), ("expires", f"{trunk.expires} s"),
            ("outbound proxy", trunk.outbound_proxy or "none"), ("contact user", trunk.contact_user or trunk.aor_user),
            ("enabled", "yes" if trunk.enabled else "no"),
            ("state", state_in_words(trunk)),
        ]
        if status is not None:
            answer = f"{status.last_status} {status.last_phrase}" if status.last_status else "-"
            facts += [("last answer", answer), ("next attempt", _clock(status.next_attempt_at)),
                      ("status from", _clock(status.updated_at))]
        if trunk.register_now_at:
            facts.append(("register now asked", _clock(trunk.register_now_at)))
        for label, value in facts:
            self.stdout.write(f"{label + ':':<20}{value}")
        attempts = list(trunk.attempts.order_by("-at", "-id")[:HISTORY_SHOWN])
        self.stdout.write(f"\nRecent attempts ({len(attempts)}, newest first):" if attempts else "\nNo attempt yet.")
        for attempt in attempts:
            answer = f"{attempt.status} {attempt.phrase}" if attempt.status else "no answer"
            outcome = (f"{trunks.cause_label(attempt.cause)}" + (f": {attempt.detail}" if attempt.detail else "")
                       if attempt.cause else (f"registered for {attempt.expires} s" if attempt.expires else ""))
            self.stdout.write(f"  {_clock(attempt.at)}  {answer:<24}  {outcome}".rstrip())

    def _set(self, name, **options):
        trunk = self._get(name)
        fields = self._fields(options)
        password = self._password(options)
        if not fields and not password:
            raise CommandError("Nothing to change: give at least one option (see manage.py trunk set --help).")
        trunks.update_trunk(trunk, password=password, **fields)
        changed = sorted(FIELD_OPTIONS.get(field, field).lstrip("-") for field in fields)
        self.stdout.write(f"Trunk {trunk.name} changed: {', '.join(changed + (['password'] if password else []))}.")

    def _set_enabled(self, name, enabled):
        trunk = self._get(name)
        trunks.update_trunk(trunk, enabled=enabled)
        self.stdout.write(f"Trunk {trunk.name} {'enabled' if enabled else 'disabled'}.")

    def _enable(self, name, **_):
        self._set_enabled(name, True)

    def _disable(self, name, **_):
        self._set_enabled(name, False)

    def _register_now(self, name, **_):
        trunk = self._get(name)
        try:
            trunks.request_register_now(trunk)
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        self.stdout.write(f"Asked runsip to register {trunk.name} again; see manage.py trunk show {trunk.name}.")

    def _delete(self, name, **_):
        trunk = self._get(name)
        trunks.delete_trunk(trunk)
        self.stdout.write(f"Deleted trunk {name}; runsip unregisters it upstream.")
