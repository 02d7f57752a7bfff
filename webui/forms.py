"""The web UI's forms: what an admin types, as fields to render and parse.

The forms only parse input into Python values; the services validate and write, and
their ValidationError (which names the field) is shown on the form by
:meth:`ServiceForm.add_service_error`, so a rule is checked in one place whether the
change comes from the browser, the API or the CLI.
"""
import ipaddress

from django import forms
from django.core.exceptions import ValidationError

from registrar.choices import AuthMode, CallPermission, ParameterKind
from registrar.models import AlertEvent, Extension, OAuthServer, number_validator


class ServiceForm(forms.Form):
    def add_service_error(self, error: ValidationError) -> None:
        """Show a service's error on the fields it names; any other field's above the form."""
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for field, errors in error.error_dict.items():
            self.add_error(field if field in self.fields else None, errors)


def _password_field(help_text):
    return forms.CharField(
        required=False, strip=False, help_text=help_text,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )


def _max_contacts_field():
    # No min_value: the model's range is checked by the service, and its message shown here.
    return forms.IntegerField(initial=5, label="Max devices", widget=forms.NumberInput(attrs={"min": 0}),
                              help_text="How many devices (contacts) may register to this extension at once.")


class ExtensionCreateForm(ServiceForm):
    number = forms.CharField(max_length=64, help_text=Extension._meta.get_field("number").help_text,
                             widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "off"}))
    display_name = forms.CharField(max_length=128, required=False)
    password = _password_field("Leave empty to generate one; it is shown once.")
    max_contacts = _max_contacts_field()
    enabled = forms.BooleanField(required=False, initial=True)

    def clean_password(self):
        # The services generate a password for None, not for "".
        return self.cleaned_data["password"] or None


class ExtensionEditForm(ServiceForm):
    display_name = forms.CharField(max_length=128, required=False)
    max_contacts = _max_contacts_field()
    enabled = forms.BooleanField(required=False)
    auth_mode = forms.ChoiceField(label="Authentication", choices=AuthMode.choices, initial=AuthMode.DIGEST,
                                  required=False, help_text=Extension._meta.get_field("auth_mode").help_text)
    oauth_server = forms.ModelChoiceField(queryset=OAuthServer.objects.all(), required=False, label="OAuth server",
                                          to_field_name="name",
                                          help_text=Extension._meta.get_field("oauth_server").help_text)
    bearer_methods = forms.CharField(max_length=255, initial="REGISTER,SUBSCRIBE,INVITE", label="Bearer methods",
                                     required=False, help_text=Extension._meta.get_field("bearer_methods").help_text)
    call_permission = forms.ChoiceField(label="May call", choices=CallPermission.choices, required=False,
                                        initial=CallPermission.ALL,
                                        help_text=Extension._meta.get_field("call_permission").help_text)

    def service_fields(self) -> dict:
        """cleaned_data for the services; a post without the authentication fields (or without the call
        permission) leaves them as they are."""
        fields = dict(self.cleaned_data)
        if not fields.get("call_permission"):
            fields.pop("call_permission", None)
        if not fields.get("auth_mode"):
            for name in ("auth_mode", "oauth_server", "bearer_methods"):
                fields.pop(name, None)
        elif not fields.get("bearer_methods"):
            fields.pop("bearer_methods")
        return fields


class PasswordForm(ServiceForm):
    password = _password_field("Leave empty to generate one; it is shown once. Phones registered with the "
                               "old password fail at their next refresh.")

    def clean_password(self):
        return self.cleaned_data["password"] or None


def shown_value(value) -> str:
    """A soft parameter value as an admin reads and types it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return "" if value is None else str(value)


class SoftParameterForm(ServiceForm):
    """One parameter's value; the field's kind follows the parameter's."""

    def __init__(self, parameter, data=None, *, editable=True):
        initial = parameter.value if parameter.kind == ParameterKind.BOOLEAN else shown_value(parameter.value)
        # Every parameter's form is on one page: prefix the ids so they stay unique.
        super().__init__(data, initial={"value": initial}, auto_id=f"id_param{parameter.number}_%s")
        self.parameter = parameter
        self.fields["value"] = self._value_field(parameter)
        self.fields["value"].disabled = not editable

    @staticmethod
    def _value_field(parameter):
        label = parameter.name
        if parameter.kind == ParameterKind.BOOLEAN:
            return forms.BooleanField(required=False, label=label, widget=forms.CheckboxInput(
                attrs={"class": "switch", "role": "switch", "data-autosubmit": ""}))
        if parameter.kind == ParameterKind.INTEGER:
            # A CharField: the range and the message about it come from the service.
            attrs = {"min": parameter.minimum, "max": parameter.maximum, "inputmode": "numeric"}
            return forms.CharField(label=label, widget=forms.NumberInput(
                attrs={name: value for name, value in attrs.items() if value is not None}))
        if parameter.kind == ParameterKind.LIST:
            return forms.CharField(required=False, label=label, help_text="Comma-separated.")
        return forms.CharField(required=False, label=label)


class TraceTargetForm(ServiceForm):
    """Start or stop tracing one extension or one source address (soft parameters 310, 311)."""

    action = forms.ChoiceField(choices=[("start", "Start"), ("stop", "Stop")], widget=forms.HiddenInput)
    kind = forms.ChoiceField(choices=[("extension", "Extension"), ("ip", "Source address")],
                             widget=forms.HiddenInput)
    value = forms.CharField(max_length=64)

    def clean(self):
        data = super().clean()
        kind, value = data.get("kind"), data.get("value")
        if kind == "extension" and value:
            try:
                number_validator(value)
            except ValidationError as error:
                self.add_error("value", error)
        elif kind == "ip" and value:
            try:
                data["value"] = str(ipaddress.ip_address(value))
            except ValueError:
                self.add_error("value", f"{value!r} is not an IPv4 or IPv6 address.")
        return data


# -- alert routing ------------------------------------------------------------------------
def _secret_field(help_text):
    # Never rendered back, not even after an error: a secret is typed or generated, then gone.
    return forms.CharField(required=False, max_length=128, help_text=help_text,
                           widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}))


class AlertRouteForm(ServiceForm):
    event = forms.ChoiceField(choices=AlertEvent.choices)
    emails = forms.CharField(label="E-mail addresses", widget=forms.Textarea(attrs={"rows": 3}),
                             help_text="Separated by commas or new lines.")
    enabled = forms.BooleanField(required=False, initial=True)


class WebhookForm(ServiceForm):
    name = forms.CharField(max_length=100, required=False, help_text="For people; the URL is shown without one.")
    # Parsed as text: the service checks the URL, and its message is the one shown.
    url = forms.CharField(label="URL", max_length=500, widget=forms.URLInput(attrs={"placeholder": "https://"}),
                          help_text="Alerts are POSTed here as JSON, signed in the X-Regis-Signature header.")
    events = forms.MultipleChoiceField(choices=AlertEvent.choices, required=False,
                                       widget=forms.CheckboxSelectMultiple(attrs={"class": "choices"}),
                                       help_text="The alerts sent here.")
    enabled = forms.BooleanField(required=False, initial=True)


class WebhookCreateForm(WebhookForm):
    secret = _secret_field("The key of the signature's HMAC-SHA256. Leave empty to generate one; it is shown "
                           "once.")

    def clean_secret(self):
        return self.cleaned_data["secret"] or None


class WebhookSecretForm(ServiceForm):
    secret = _secret_field("Leave empty to generate one; it is shown once. The receiver must check signatures "
                           "with the new secret from now on.")

    def clean_secret(self):
        return self.cleaned_data["secret"] or None


# -- outbound trunks ----------------------------------------------------------------------
from registrar.models import Trunk  # noqa: E402


def _trunk_text(name, **kwargs):
    model_field = Trunk._meta.get_field(name)
    return forms.CharField(max_length=model_field.max_length, required=not model_field.blank,
                           help_text=model_field.help_text, **kwargs)


class TrunkForm(ServiceForm):
    """A trunk as typed; registrar.trunks checks the URIs and ranges, and its messages are shown here.
    The password is never rendered back: blank on an edit keeps the stored one."""

    name = _trunk_text("name", widget=forms.TextInput(attrs={"autocomplete": "off"}))
    registrar_uri = _trunk_text("registrar_uri", label="Registrar URI",
                                widget=forms.TextInput(attrs={"placeholder": "sip:pbx.example.com;transport=tcp"}))
    aor_user = _trunk_text("aor_user", label="AOR user")
    aor_domain = _trunk_text("aor_domain", label="AOR domain")
    auth_username = _trunk_text("auth_username", label="Auth username")
    password = forms.CharField(required=False, strip=False, max_length=255,
                               widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}))
    expected_realm = _trunk_text("expected_realm")
    expires = forms.IntegerField(initial=3600, help_text=Trunk._meta.get_field("expires").help_text,
                                 widget=forms.NumberInput(attrs={"min": 60, "max": 86400}))
    outbound_proxy = _trunk_text("outbound_proxy")
    contact_user = _trunk_text("contact_user")
    enabled = forms.BooleanField(required=False, initial=True)
    # A choice, not a checkbox: a form posted without it (older scripts) keeps what is stored.
    register = forms.TypedChoiceField(
        required=False, label="Registration", initial=True, coerce=lambda value: value == "1", empty_value=None,
        choices=(("1", "Keep a registration with the upstream"), ("0", "Calls only: keep no registration")),
        help_text=Trunk._meta.get_field("register").help_text)

    def __init__(self, *args, editing=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["password"].help_text = (
            "Leave empty to keep the stored password." if editing else
            "The password the upstream server expects; stored encrypted, never shown again.")

    def service_fields(self) -> dict:
        """cleaned_data for registrar.trunks: an empty password means none given."""
        fields = dict(self.cleaned_data)
        fields["password"] = fields["password"] or None
        if fields.get("register") is None:
            fields.pop("register", None)
        return fields


# -- calls: the dial plan, the call log, an extension's call permission -----------------
from registrar.models import DialRule  # noqa: E402


def _rule_field(name):
    return DialRule._meta.get_field(name)


class DialRuleForm(ServiceForm):
    """A dial rule as typed; registrar.calls checks the pattern, the ranges and the trunk, and its messages
    are shown here."""

    name = forms.CharField(max_length=_rule_field("name").max_length, required=False,
                           help_text="For people, e.g. “national”.")
    position = forms.IntegerField(initial=100, help_text=_rule_field("position").help_text,
                                  widget=forms.NumberInput(attrs={"min": 0}))
    pattern = forms.CharField(max_length=_rule_field("pattern").max_length, help_text=_rule_field("pattern").help_text,
                              widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}))
    strip = forms.IntegerField(initial=0, help_text=_rule_field("strip").help_text,
                               widget=forms.NumberInput(attrs={"min": 0, "max": 32}))
    prefix = forms.CharField(max_length=_rule_field("prefix").max_length, required=False,
                             help_text=_rule_field("prefix").help_text)
    trunk = forms.ModelChoiceField(queryset=Trunk.objects.order_by("name"), empty_label="Choose a trunk",
                                   help_text="Where matching numbers go out.")
    enabled = forms.BooleanField(required=False, initial=True)


class RoutePreviewForm(forms.Form):
    number = forms.CharField(max_length=128, label="Try a number",
                             widget=forms.TextInput(attrs={"autocomplete": "off", "inputmode": "tel",
                                                           "placeholder": "e.g. 0612345678"}))
    caller = forms.CharField(max_length=64, required=False, label="from extension",
                             help_text="Optional: its call permission is checked too.",
                             widget=forms.TextInput(attrs={"autocomplete": "off", "size": 8}))
