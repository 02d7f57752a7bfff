"""The API's shapes: what each resource looks like on the wire, and input checks.

Serializers only shape data and check input types; they never write. The viewsets hand
validated data to ``registrar.services``, which own every write and its rules. The
HA1 hashes of an extension never leave the server, and a password is write-only.
"""
from django.utils import timezone
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from registrar import services, softparams, stats
from registrar.choices import QualifyStatus, ReasonCode
from registrar.models import (AlertEvent, AlertRoute, AuthAttempt, Ban, Binding, Extension, JobRun, OAuthServer,
                              SoftParameter, SoftParameterChange, TracedMessage, Webhook, WebhookDelivery,
                              WorkerStatus)


class StrictFieldsMixin:
    """Refuse fields the resource does not have, so that a typo is an error naming the
    field rather than a silently ignored change. Read-only fields are tolerated so that
    a representation can be sent back as it was received. (The browsable API's HTML forms
    also send their CSRF token.)"""

    tolerated = {"csrfmiddlewaretoken"}

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields) - self.tolerated)
            if unknown:
                raise serializers.ValidationError({name: ["There is no such field."] for name in unknown})
        return super().to_internal_value(data)


# -- extensions ------------------------------------------------------------------------
class ExtensionListSerializer(serializers.ListSerializer):
    """Computes the states of a whole page in one pass instead of one query per row."""

    def to_representation(self, data):
        extensions = list(data.all() if hasattr(data, "all") else data)
        self.child.context["states"] = stats.extension_states(extensions)
        return super().to_representation(extensions)


class ExtensionSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    """A SIP account: phones register to its number and authenticate with its password."""

    url = serializers.HyperlinkedIdentityField(view_name="api:extension-detail", lookup_field="number")
    password = serializers.CharField(
        write_only=True, required=False, trim_whitespace=False, style={"input_type": "password"},
        help_text="Only when creating; leave it out to have one generated (returned once as generated_password). "
                  "To change a password later use set-password.",
    )
    state = serializers.SerializerMethodField(
        help_text="online: at least one live registration; failing: failed attempts in the last hour and no "
                  "live registration; offline: neither.")
    devices_online = serializers.SerializerMethodField(help_text="How many live registrations (bindings) it has.")
    oauth_server = serializers.SlugRelatedField(
        slug_field="name", queryset=OAuthServer.objects.all(), required=False, allow_null=True,
        help_text="Name of the OAuth server that vouches for its bearer tokens (needed unless auth_mode is digest).")

    class Meta:
        model = Extension
        fields = ["url", "number", "display_name", "enabled", "max_contacts", "password", "realm", "state",
                  "devices_online", "auth_mode", "oauth_server", "bearer_methods", "call_permission", "created_at",
                  "updated_at"]
        read_only_fields = ["realm", "created_at", "updated_at"]
        # Stated here because the model's range depends on the database (SQLite has no small integers).
        extra_kwargs = {"max_contacts": {"min_value": 0, "max_value": 32767}}
        list_serializer_class = ExtensionListSerializer

    def validate_number(self, number):
        if self.instance is not None and number != self.instance.number:
            raise serializers.ValidationError(
                "An extension's number cannot change (its password hashes include it); create a new extension.")
        return number

    def validate_password(self, password):
        if self.instance is not None:
            raise serializers.ValidationError("Passwords are changed with the set-password action.")
        return password

    @extend_schema_field(serializers.ChoiceField(choices=["online", "failing", "offline"]))
    def get_state(self, extension) -> str:
        states = self.context.get("states") or stats.extension_states([extension])
        return states[extension.pk]

    def get_devices_online(self, extension) -> int:
        annotated = getattr(extension, "devices_online", None)
        if annotated is not None:
            return annotated
        return extension.bindings.filter(expires_at__gt=timezone.now()).count()


class ExtensionCreatedSerializer(ExtensionSerializer):
    """A new extension, with the generated password if one was generated."""

    generated_password = serializers.CharField(
        read_only=True, allow_null=True,
        help_text="The generated password when none was given, shown this once (only its hashes are stored); "
                  "null when the request gave one.")

    class Meta(ExtensionSerializer.Meta):
        fields = ExtensionSerializer.Meta.fields + ["generated_password"]


class SetPasswordSerializer(StrictFieldsMixin, serializers.Serializer):
    """Either a password, or generate: true."""

    password = serializers.CharField(required=False, trim_whitespace=False, style={"input_type": "password"},
                                     help_text="The new password; or leave it out and send generate: true.")
    generate = serializers.BooleanField(required=False, default=False,
                                        help_text="Generate a password and return it once.")

    def validate(self, data):
        if data["generate"] == ("password" in data):
            raise serializers.ValidationError(
                {"password": ["Give either a password or generate: true, not both and not neither."]})
        return data


class GeneratedPasswordSerializer(serializers.Serializer):
    """The outcome of set-password."""

    number = serializers.CharField()
    generated_password = serializers.CharField(
        allow_null=True, help_text="The generated password, shown this once; null when the request gave one.")


# -- registrations ---------------------------------------------------------------------
class RegistrationSerializer(serializers.ModelSerializer):
    """A live registration: one device (contact) bound to an extension until it expires."""

    url = serializers.HyperlinkedIdentityField(view_name="api:registration-detail")
    extension = serializers.CharField(source="extension.number", read_only=True)
    contact = serializers.CharField(source="contact_uri", read_only=True)
    registered_at = serializers.DateTimeField(source="first_registered", read_only=True)
    expires_in = serializers.SerializerMethodField(help_text="Seconds until the binding expires.")
    qualify_status = serializers.ChoiceField(
        choices=QualifyStatus.choices, read_only=True,
        help_text="What runsip's OPTIONS pings (soft parameters 106, 107) found at the source address: "
                  "reachable, unreachable, or unknown until the first ping's outcome.")
    rtt_ms = serializers.FloatField(read_only=True, allow_null=True,
                                    help_text="Round-trip time of the last answered ping, in ms; null when "
                                              "unknown or unreachable.")
    qualified_at = serializers.DateTimeField(read_only=True, allow_null=True,
                                             help_text="When the last ping was answered or missed.")
    behind_nat = serializers.BooleanField(
        read_only=True, help_text="The Contact names another IP address than source_ip (a private address "
                                  "behind NAT): the phone is reached at source_ip:source_port.")

    class Meta:
        model = Binding
        fields = ["id", "url", "extension", "contact", "contact_params", "q", "instance_id", "reg_id",
                  "source_ip", "source_port", "transport", "user_agent", "path", "call_id", "cseq",
                  "registered_at", "last_refreshed", "expires_at", "expires_in",
                  "qualify_status", "rtt_ms", "qualified_at", "behind_nat"]
        read_only_fields = fields

    def get_expires_in(self, binding) -> int:
        return max(0, int((binding.expires_at - timezone.now()).total_seconds()))


# -- authentication attempts -----------------------------------------------------------
class AuthAttemptSerializer(serializers.ModelSerializer):
    """A rejected or re-challenged request and why."""

    extension = serializers.CharField(source="extension_number", read_only=True,
                                      help_text="The extension the request was for, as the phone sent it.")
    reason = serializers.ChoiceField(choices=ReasonCode.choices, read_only=True, help_text="The reason code.")
    explanation = serializers.CharField(read_only=True, help_text="The reason in words, for people.")

    class Meta:
        model = AuthAttempt
        fields = ["id", "created_at", "source_ip", "source_port", "transport", "method", "aor", "extension",
                  "auth_username", "user_agent", "outcome", "reason", "explanation", "status", "detail"]
        read_only_fields = fields


# -- soft parameters -------------------------------------------------------------------
class SoftParameterSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    """A runtime policy setting; only its value can be changed."""

    value = serializers.JSONField(help_text="A boolean, integer, text or list of text, as the kind says.")
    choices = serializers.SerializerMethodField(help_text="For lists: the values allowed (empty: any).")

    class Meta:
        model = SoftParameter
        fields = ["number", "name", "kind", "value", "default", "minimum", "maximum", "choices", "description",
                  "updated_at"]
        read_only_fields = ["number", "name", "kind", "default", "minimum", "maximum", "description",
                            "updated_at"]

    def get_choices(self, parameter) -> list[str]:
        spec = softparams.BY_NUMBER.get(parameter.number)
        return list(spec.choices) if spec else []


class SoftParameterChangeSerializer(serializers.ModelSerializer):
    """One change of a soft parameter: who, when, through what, from which value to which."""

    parameter = serializers.IntegerField(source="parameter_id", read_only=True)

    class Meta:
        model = SoftParameterChange
        fields = ["id", "parameter", "changed_at", "actor", "via", "old_value", "new_value"]
        read_only_fields = fields


# -- summary and tokens ----------------------------------------------------------------
class HourSerializer(serializers.Serializer):
    """One hour of the dashboard's chart."""

    hour = serializers.DateTimeField(help_text="The start of the hour.")
    registrations = serializers.IntegerField(help_text="Successful REGISTERs in the hour.")
    failures = serializers.IntegerField(help_text="Rejected or re-challenged requests in the hour.")


class SummarySerializer(serializers.Serializer):
    """The dashboard's counts."""

    extensions = serializers.IntegerField()
    extensions_registered = serializers.IntegerField(help_text="Extensions with at least one live registration.")
    devices_online = serializers.IntegerField(help_text="Live registrations (bindings).")
    failed_attempts_last_hour = serializers.IntegerField()
    failed_attempts_last_24h = serializers.IntegerField()
    hourly = HourSerializer(many=True, help_text="The last 24 hours, oldest first, the current hour last.")


class TokenSerializer(serializers.Serializer):
    """A new API token."""

    token = serializers.CharField(help_text="Send it as `Authorization: Token <token>`. Shown this once.")


# -- bans ------------------------------------------------------------------------------
EVIDENCE_LENGTH = 20


class BanSerializer(serializers.ModelSerializer):
    """A source address whose requests the SIP worker drops, why, and until when."""

    url = serializers.HyperlinkedIdentityField(view_name="api:ban-detail")
    since = serializers.DateTimeField(source="created_at", read_only=True)
    until = serializers.DateTimeField(source="expires_at", read_only=True,
                                      help_text="When the ban ends by itself.")
    active = serializers.BooleanField(read_only=True, help_text="In force now: neither lifted nor expired.")

    class Meta:
        model = Ban
        fields = ["id", "url", "ip", "since", "until", "failures", "detail", "active", "lifted_at", "lifted_by"]
        read_only_fields = fields


class BanDetailSerializer(BanSerializer):
    """A ban with its evidence: the failed attempts from its address that led to it."""

    evidence_count = serializers.SerializerMethodField(help_text="How many attempts the evidence holds in all.")
    evidence = serializers.SerializerMethodField(
        help_text=f"The latest {EVIDENCE_LENGTH} of them, newest first.")

    class Meta(BanSerializer.Meta):
        fields = BanSerializer.Meta.fields + ["evidence_count", "evidence"]
        read_only_fields = fields

    def get_evidence_count(self, ban) -> int:
        return ban.evidence().count()

    @extend_schema_field(AuthAttemptSerializer(many=True))
    def get_evidence(self, ban):
        return AuthAttemptSerializer(ban.evidence()[:EVIDENCE_LENGTH], many=True).data


# -- diagnosis -------------------------------------------------------------------------
class FindingSerializer(serializers.Serializer):
    """One reason an extension's phones failed, with what was received and the fix."""

    reason = serializers.ChoiceField(choices=ReasonCode.choices, help_text="The reason code.")
    explanation = serializers.CharField(help_text="The reason in words.")
    count = serializers.IntegerField(help_text="How many times in the last 24 hours.")
    last_seen = serializers.DateTimeField()
    received = serializers.CharField(help_text="What the phone sent: source, User-Agent, the detail that "
                                               "differs from what was expected.")
    fix = serializers.CharField(help_text="The fix, in one sentence.")
    soft_parameter = serializers.IntegerField(allow_null=True,
                                              help_text="The soft parameter involved, if a policy is the cause.")


class DiagnosisSerializer(serializers.Serializer):
    """Why an extension's phones fail to register, over the last 24 hours."""

    extension = serializers.CharField()
    exists = serializers.BooleanField(help_text="Whether an extension with this number exists.")
    registered = serializers.IntegerField(help_text="Live registrations (devices) it has now.")
    findings = FindingSerializer(many=True, help_text="Most frequent first; bans of its sources first of all.")
    bans = BanSerializer(many=True, help_text="Bans in force on addresses that tried this extension.")


# -- the User-Agent policy dry run -----------------------------------------------------
class DryRunBindingSerializer(serializers.Serializer):
    """A live registration that the User-Agent policy would refuse at its next refresh."""

    extension = serializers.CharField(source="extension.number")
    contact = serializers.CharField(source="contact_uri")
    source = serializers.SerializerMethodField(help_text="ip:port the phone registers from.")
    transport = serializers.CharField()
    user_agent = serializers.CharField()
    expires_at = serializers.DateTimeField()

    def get_source(self, binding) -> str:
        return f"{binding.source_ip}:{binding.source_port}"


class DryRunSerializer(serializers.Serializer):
    """Who soft parameter 286 would refuse with these accepted patterns."""

    patterns = serializers.ListField(child=serializers.CharField(),
                                     help_text="The accepted patterns tried (case-insensitive substrings).")
    inspection_on = serializers.BooleanField(help_text="Whether soft parameter 286 is on now.")
    refused = DryRunBindingSerializer(many=True, help_text="Live registrations whose User-Agent matches none of "
                                                          "the patterns.")


# -- the SIP trace ---------------------------------------------------------------------
class TracedMessageSerializer(serializers.ModelSerializer):
    """One SIP message captured in or out. Its text never holds a password (SIP carries none)."""

    extension = serializers.CharField(source="extension_number", read_only=True)
    direction = serializers.ChoiceField(choices=["in", "out"], read_only=True,
                                        help_text="in: received from the phone; out: sent to it.")

    class Meta:
        model = TracedMessage
        fields = ["id", "captured_at", "direction", "transport", "peer_ip", "peer_port", "local_port", "extension",
                  "call_id", "summary", "data"]
        read_only_fields = fields


# -- operations ------------------------------------------------------------------------
class JobRunSerializer(serializers.ModelSerializer):
    """One run of a housekeeping job, however it was started."""

    duration = serializers.FloatField(read_only=True, help_text="Seconds.")
    result = serializers.CharField(read_only=True, help_text="What the job did, or the error that stopped it.")

    class Meta:
        model = JobRun
        fields = ["id", "name", "started_at", "finished_at", "duration", "outcome", "result"]
        read_only_fields = fields


class JobSerializer(serializers.Serializer):
    """A housekeeping job: its schedule, its last run and whether it needs attention."""

    url = serializers.HyperlinkedIdentityField(view_name="api:job-detail", lookup_field="name")
    name = serializers.CharField()
    runnable = serializers.BooleanField(help_text="false for a job that no longer exists but has recorded runs.")
    interval = serializers.FloatField(allow_null=True, help_text="Seconds between scheduled runs "
                                                                 "(CELERY_BEAT_SCHEDULE); null: not on a fixed "
                                                                 "interval.")
    last_run = JobRunSerializer(allow_null=True, help_text="null: it never ran.")
    last_success = serializers.DateTimeField(allow_null=True, help_text="When its latest successful run finished.")
    failed = serializers.BooleanField(help_text="Its last run failed.")
    overdue = serializers.BooleanField(help_text=f"Its last run started more than {services.OVERDUE_INTERVALS} "
                                                 "intervals ago: its scheduler is not running it.")


class JobStartedSerializer(serializers.Serializer):
    """The outcome of run: the recorded run, or null when the job was queued for a Celery worker."""

    name = serializers.CharField()
    queued = serializers.BooleanField(help_text="true: a Celery worker runs it (poll job-runs); false: it ran "
                                                "in this request.")
    run = JobRunSerializer(allow_null=True, help_text="The run, failed or not, when it ran in this request.")


class WorkerStatusSerializer(serializers.ModelSerializer):
    """A runsip process, as it last reported itself (every few seconds)."""

    alive = serializers.SerializerMethodField(help_text="It reported in the last 15 seconds.")
    uptime = serializers.SerializerMethodField(help_text="Seconds since it started.")

    class Meta:
        model = WorkerStatus
        fields = ["id", "hostname", "pid", "listeners", "started_at", "uptime", "last_seen", "alive",
                  "credentials", "connections", "requests_per_second", "received", "errors", "batches", "stored"]
        read_only_fields = fields

    def get_alive(self, status) -> bool:
        return status.last_seen >= timezone.now() - services.LIVE_WORKER_WITHIN

    def get_uptime(self, status) -> float:
        return round((timezone.now() - status.started_at).total_seconds(), 1)


def named_enum_field(name: str, choices) -> type:
    """A ChoiceField over ``choices`` (a TextChoices) that the schema shows as one named enum
    component, however many fields use it (drf-spectacular would otherwise inline a copy per field)."""

    def __init__(self, **kwargs):
        serializers.ChoiceField.__init__(self, choices=choices.choices, **kwargs)

    field = type(f"{name}Field", (serializers.ChoiceField,), {"__init__": __init__, "__doc__": f"One of {name}."})

    def map_serializer_field(self, auto_schema, direction):
        component = ResolvedComponent(
            name=name, type=ResolvedComponent.SCHEMA, object=name,
            schema={"type": "string", "enum": choices.values,
                    "description": "\n".join(f"* `{value}` - {label}" for value, label in choices.choices)})
        auto_schema.registry.register_on_missing(component)
        return component.ref

    # Subclassing registers the extension with drf-spectacular.
    type(f"{name}FieldExtension", (OpenApiSerializerFieldExtension,),
         {"target_class": field, "map_serializer_field": map_serializer_field})
    return field


AlertEventField = named_enum_field("AlertEvent", AlertEvent)


class RecipientsField(serializers.ListField):
    """A route's addresses: a list on the wire, text separated by commas in the table."""

    child = serializers.CharField()

    def get_attribute(self, route):
        return route.recipients()


class AlertRouteSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    """Where the e-mail for one event goes; one route per event."""

    url = serializers.HyperlinkedIdentityField(view_name="api:alertroute-detail")
    # Declared, so that a second route for an event is refused by the service, in its words.
    event = AlertEventField()
    emails = RecipientsField(allow_empty=False, help_text="E-mail addresses.")

    class Meta:
        model = AlertRoute
        fields = ["id", "url", "event", "emails", "enabled", "updated_at"]
        read_only_fields = ["updated_at"]


class WebhookSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    """An outbound webhook: alerts of its events are POSTed to url as JSON, signed with its secret in
    X-Regis-Signature (sha256=<hex HMAC-SHA256 of the body>). The secret is never shown after creation."""

    events = serializers.ListField(child=AlertEventField(), allow_empty=False,
                                   help_text="The alert events sent here.")
    secret = serializers.CharField(
        write_only=True, required=False, max_length=128, style={"input_type": "password"},
        help_text="Only when creating; leave it out to have one generated (returned once as generated_secret). "
                  "To change it later use set-secret.")

    class Meta:
        model = Webhook
        fields = ["id", "name", "url", "events", "enabled", "secret", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]

    def validate_secret(self, secret):
        if self.instance is not None:
            raise serializers.ValidationError("A secret is changed with the set-secret action.")
        return secret


class WebhookCreatedSerializer(WebhookSerializer):
    """A new webhook, with the generated secret if one was generated."""

    generated_secret = serializers.CharField(
        read_only=True, allow_null=True,
        help_text="The generated secret when none was given, shown this once; null when the request gave one.")

    class Meta(WebhookSerializer.Meta):
        fields = WebhookSerializer.Meta.fields + ["generated_secret"]


class SetSecretSerializer(StrictFieldsMixin, serializers.Serializer):
    """Either a secret, or generate: true."""

    secret = serializers.CharField(required=False, max_length=128, style={"input_type": "password"},
                                   help_text="The new secret; or leave it out and send generate: true.")
    generate = serializers.BooleanField(required=False, default=False,
                                        help_text="Generate a secret and return it once.")

    def validate(self, data):
        if data["generate"] == ("secret" in data):
            raise serializers.ValidationError(
                {"secret": ["Give either a secret or generate: true, not both and not neither."]})
        return data


class GeneratedSecretSerializer(serializers.Serializer):
    """The outcome of set-secret."""

    id = serializers.IntegerField()
    generated_secret = serializers.CharField(
        allow_null=True, help_text="The generated secret, shown this once; null when the request gave one.")


class WebhookDeliverySerializer(serializers.ModelSerializer):
    """One attempt to deliver one alert to one webhook."""

    event = serializers.CharField(source="alert.event", read_only=True)
    subject = serializers.CharField(source="alert.subject", read_only=True, help_text="The alert's subject.")
    status_code = serializers.IntegerField(read_only=True, allow_null=True,
                                           help_text="The receiver's HTTP answer; null when there was none.")
    error = serializers.CharField(read_only=True, help_text="The network error, when there was no answer.")

    class Meta:
        model = WebhookDelivery
        fields = ["id", "created_at", "webhook", "alert", "event", "subject", "attempt", "status_code", "error",
                  "succeeded", "will_retry", "duration"]
        read_only_fields = fields


# -- outbound trunks (registrar.trunks owns the writes) ---------------------------------
from registrar import trunks  # noqa: E402
from registrar.choices import TrunkState  # noqa: E402
from registrar.models import Trunk, TrunkAttempt, TrunkStatus  # noqa: E402


class TrunkStatusSerializer(serializers.ModelSerializer):
    """What runsip last knew about the trunk's registration upstream."""

    cause_label = serializers.SerializerMethodField(help_text="The cause in words (empty when there is none).")

    class Meta:
        model = TrunkStatus
        fields = ["state", "registered_until", "last_status", "last_phrase", "cause", "cause_label", "detail",
                  "next_attempt_at", "updated_at"]
        read_only_fields = fields

    def get_cause_label(self, status) -> str:
        return trunks.cause_label(status.cause) if status.cause else ""


class TrunkSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    """A registration Regis keeps alive at an upstream server. The password is write-only: it is stored
    encrypted (digest needs it back to answer a challenge) and never returned."""

    url = serializers.HyperlinkedIdentityField(view_name="api:trunk-detail")
    password = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False, max_length=255,
        style={"input_type": "password"},
        help_text="Required when creating. On an update, leave it out (or empty) to keep the stored one.")
    has_password = serializers.SerializerMethodField(help_text="Whether a password is stored.")
    status = TrunkStatusSerializer(read_only=True, allow_null=True,
                                   help_text="Null until the trunk has a status row.")

    class Meta:
        model = Trunk
        fields = ["id", "url", "name", "registrar_uri", "aor_user", "aor_domain", "auth_username", "password",
                  "has_password", "expected_realm", "expires", "outbound_proxy", "contact_user", "enabled",
                  "register", "register_now_at", "status", "created_at", "updated_at"]
        read_only_fields = ["register_now_at", "created_at", "updated_at"]

    def get_has_password(self, trunk) -> bool:
        return bool(trunk.password_encrypted)


class TrunkAttemptSerializer(serializers.ModelSerializer):
    """One finished REGISTER exchange with the upstream server."""

    cause_label = serializers.SerializerMethodField(help_text="The cause in words (empty on success).")

    class Meta:
        model = TrunkAttempt
        fields = ["id", "at", "status", "phrase", "cause", "cause_label", "detail", "expires"]
        read_only_fields = fields

    def get_cause_label(self, attempt) -> str:
        return trunks.cause_label(attempt.cause) if attempt.cause else ""


class RegisterNowSerializer(serializers.Serializer):
    """The outcome of register-now: runsip is asked, not waited for."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    register_now_at = serializers.DateTimeField()
    state = serializers.ChoiceField(choices=TrunkState.choices, help_text="The state before runsip acts.")
    detail = serializers.CharField()


# -- reg-event subscriptions (RFC 3680) --------------------------------------------------
from registrar.models import Subscription  # noqa: E402


class SubscriptionSerializer(serializers.ModelSerializer):
    """A reg-event subscription runsip serves: who watches which extension's registrations, from where,
    until when. Read-only: a subscription ends when its subscriber unsubscribes, lets it expire, or stops
    answering NOTIFYs."""

    watched = serializers.SlugRelatedField(slug_field="number", read_only=True,
                                           help_text="The extension whose registrations are watched.")

    class Meta:
        model = Subscription
        fields = ["id", "watched", "subscriber", "transport", "source_ip", "source_port", "event_id",
                  "remote_target", "version", "expires_at", "created_at"]
        read_only_fields = fields


# -- calls: the dial plan, call records, emergency alerts (registrar.calls owns the writes) --
from registrar.choices import CallKind  # noqa: E402
from registrar.models import Alert, Call, DialRule  # noqa: E402


CallKindField = named_enum_field("CallKind", CallKind)


@extend_schema_field(str)
class TrunkReferenceField(serializers.RelatedField):
    """A trunk as the API refers to it: shown by name; given by name, or by id (a JSON number, or digits that
    name no trunk)."""

    default_error_messages = {"missing": "There is no trunk {value!r} (give its name or its id).",
                              "incorrect_type": "Give the trunk's name or its id, not {data_type}."}

    def __init__(self, **kwargs):
        kwargs.setdefault("queryset", Trunk.objects.all())
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (str, int)):
            self.fail("incorrect_type", data_type=type(data).__name__)
        queryset = self.get_queryset()
        if isinstance(data, str):
            trunk = queryset.filter(name=data).first()
            if trunk is None and data.isdigit():
                trunk = queryset.filter(pk=int(data)).first()
        else:
            trunk = queryset.filter(pk=data).first()
        if trunk is None:
            self.fail("missing", value=data)
        return trunk

    def to_representation(self, trunk):
        return trunk.name


class DialRuleSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    """One line of the dial plan: a dialled number matching ``pattern`` (the whole number) goes out through
    ``trunk`` with ``strip`` leading characters removed and ``prefix`` put in front. Extensions are matched
    first; rules are tried by position, lowest first."""

    url = serializers.HyperlinkedIdentityField(view_name="api:dialrule-detail")
    trunk = TrunkReferenceField(help_text="The trunk's name (or its id).")
    trunk_id = serializers.IntegerField(read_only=True)

    class Meta:
        model = DialRule
        fields = ["id", "url", "name", "position", "pattern", "strip", "prefix", "trunk", "trunk_id", "enabled",
                  "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]
        extra_kwargs = {"strip": {"min_value": 0, "max_value": 32}}


class RoutePreviewRequestSerializer(StrictFieldsMixin, serializers.Serializer):
    """A number to try against the dial plan, optionally as one extension would dial it."""

    number = serializers.CharField(max_length=128, help_text="The number as a phone would dial it.")
    caller = serializers.CharField(max_length=64, required=False,
                                   help_text="The calling extension: its call permission is checked too. Left "
                                             "out: what any extension allowed everything would get.")


class RouteRuleSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField(allow_blank=True)
    pattern = serializers.CharField()


class RouteRefusalSerializer(serializers.Serializer):
    status = serializers.IntegerField(help_text="The SIP status the caller would get.")
    phrase = serializers.CharField(help_text="Its reason phrase.")
    reason = serializers.CharField(help_text="Why, in words.")


class RoutePreviewSerializer(serializers.Serializer):
    """Where a call to the number would go now (an extension, the emergency route, a dial rule's trunk), or
    why it would be refused. It places no call and stores nothing."""

    dialled = serializers.CharField()
    kind = CallKindField()
    callee = serializers.CharField(allow_blank=True,
                                   help_text="The extension called, or the number sent to the trunk (after strip "
                                             "and prefix).")
    trunk = serializers.CharField(allow_blank=True, help_text="The trunk's name when it goes out through one.")
    rule = RouteRuleSerializer(allow_null=True, help_text="The dial rule that matched, if one did.")
    bindings = serializers.IntegerField(help_text="For an extension: how many registered phones would ring.")
    refusal = RouteRefusalSerializer(allow_null=True, help_text="Null when the call would go through.")


class CallSerializer(serializers.ModelSerializer):
    """A call through the proxy: live while ended_at is null, its call record (CDR) after."""

    url = serializers.HyperlinkedIdentityField(view_name="api:call-detail")
    trunk = serializers.CharField(source="trunk_name", read_only=True,
                                  help_text="The trunk it went through (its name, kept after the trunk is deleted).")
    kind = CallKindField(read_only=True)
    active = serializers.SerializerMethodField(help_text="It is going on now (not ended).")
    duration_seconds = serializers.SerializerMethodField(
        help_text="Seconds talked: from the answer to the end (to now while it lasts); null when unanswered.")

    class Meta:
        model = Call
        fields = ["id", "url", "call_id", "caller", "caller_name", "dialled", "callee", "kind", "trunk", "state",
                  "active", "source_ip", "source_port", "transport", "started_at", "answered_at", "ended_at",
                  "duration_seconds", "status", "reason"]
        read_only_fields = fields

    def get_active(self, call) -> bool:
        return call.ended_at is None

    def get_duration_seconds(self, call) -> float | None:
        duration = call.duration
        return None if duration is None else round(duration, 3)


class AlertSerializer(serializers.ModelSerializer):
    """An alert Regis raised. Emergency-call alerts wait for someone to acknowledge them."""

    url = serializers.HyperlinkedIdentityField(view_name="api:alert-detail")
    event = AlertEventField(read_only=True)
    acknowledged = serializers.SerializerMethodField(help_text="Someone acknowledged it.")

    class Meta:
        model = Alert
        fields = ["id", "url", "event", "target", "subject", "text", "created_at", "acknowledged",
                  "acknowledged_at", "acknowledged_by"]
        read_only_fields = fields

    def get_acknowledged(self, alert) -> bool:
        return alert.acknowledged_at is not None
