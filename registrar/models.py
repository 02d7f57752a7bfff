"""Extensions, their live bindings, soft parameters and authentication attempts.

Models hold data and small derived facts; every write goes through
``registrar.services`` so that the SIP worker, REST, web views and Celery share one
write path.
"""
import ipaddress

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator, URLValidator
from django.db import models
from django.utils import timezone
from django.utils.functional import cached_property

from registrar.choices import (AlertEvent, AttemptOutcome, AuthMode, CallKind, CallPermission, CallState, OAuthMode,
                               ParameterKind, QualifyStatus, ReasonCode, Transport, TrunkCause, TrunkState)
from registrar.sip.errors import SipError
from registrar.sip.uri import parse_uri

number_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$",
    "An extension number is 1 to 64 letters, digits, '.', '_', '+' or '-', starting with a letter or digit.",
)
# Path segments of the web UI under /extensions/ that a number must not shadow.
RESERVED_NUMBERS = frozenset({"new"})


def not_reserved(number):
    if number.lower() in RESERVED_NUMBERS:
        raise ValidationError(f"'{number}' is reserved; choose another number.")


class Extension(models.Model):
    number = models.CharField(max_length=64, unique=True, validators=[number_validator, not_reserved],
                              help_text="The user part of the address of record, e.g. 1001.")
    display_name = models.CharField(max_length=128, blank=True)
    enabled = models.BooleanField(default=True)
    # HA1 = H(number:realm:password) per digest algorithm; the plaintext is never stored.
    realm = models.CharField(max_length=255, editable=False)
    ha1_md5 = models.CharField(max_length=32, editable=False)
    ha1_sha256 = models.CharField(max_length=64, editable=False)
    ha1_sha512_256 = models.CharField(max_length=64, editable=False)
    max_contacts = models.PositiveSmallIntegerField(
        default=5, validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="How many devices may be registered at once.")
    may_watch = models.CharField(
        max_length=1024, blank=True,
        help_text="Other extensions whose registration state this one may subscribe to (reg event, RFC 3680): "
                  "comma-separated numbers, or * for all. Its own is always allowed.")
    auth_mode = models.CharField(
        max_length=8, choices=AuthMode.choices, default=AuthMode.DIGEST,
        help_text="Digest with the password, an OAuth 2.0 bearer token (RFC 8898), or either.")
    oauth_server = models.ForeignKey(
        "OAuthServer", on_delete=models.PROTECT, null=True, blank=True, related_name="extensions",
        help_text="The server that vouches for its bearer tokens; needed unless the mode is digest.")
    bearer_methods = models.CharField(
        max_length=255, default="REGISTER,SUBSCRIBE,INVITE",
        help_text="Comma-separated SIP methods that must authenticate when bearer tokens are allowed.")
    call_permission = models.CharField(
        max_length=12, choices=CallPermission.choices, default=CallPermission.ALL, db_default=CallPermission.ALL,
        help_text="What it may dial. Emergency numbers always go through, whatever this says.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["number"]

    def __str__(self):
        return f"{self.number} {self.display_name}".strip()

    def ha1_by_algorithm(self):
        return {"MD5": self.ha1_md5, "SHA-256": self.ha1_sha256, "SHA-512-256": self.ha1_sha512_256}


class Binding(models.Model):
    extension = models.ForeignKey(Extension, on_delete=models.CASCADE, related_name="bindings")
    contact_uri = models.CharField(max_length=1024)
    contact_params = models.CharField(max_length=1024, blank=True,
                                      help_text="Contact header parameters other than expires, as sent.")
    q = models.FloatField(null=True, blank=True)
    instance_id = models.CharField(max_length=255, blank=True, help_text="+sip.instance (RFC 5626)")
    reg_id = models.PositiveIntegerField(null=True, blank=True)
    call_id = models.CharField(max_length=255)
    cseq = models.PositiveIntegerField()
    expires_at = models.DateTimeField(db_index=True)
    source_ip = models.GenericIPAddressField()
    source_port = models.PositiveIntegerField()
    transport = models.CharField(max_length=8, choices=Transport.choices)
    user_agent = models.CharField(max_length=255, blank=True)
    path = models.TextField(blank=True, help_text="Path header values (RFC 3327), comma separated.")
    flow = models.CharField(max_length=128, blank=True, db_index=True,
                            help_text="The connection this binding lives on (RFC 5626 flow); when it closes the "
                                      "binding ends. Empty when the binding outlives connections.")
    first_registered = models.DateTimeField()
    last_refreshed = models.DateTimeField()
    # Qualify (OPTIONS pings from runsip): unknown until the first answer or miss.
    qualify_status = models.CharField(max_length=12, choices=QualifyStatus.choices, default=QualifyStatus.UNKNOWN,
                                      db_default=QualifyStatus.UNKNOWN)
    rtt_ms = models.FloatField(null=True, blank=True, help_text="Round-trip time of the last answered OPTIONS.")
    qualified_at = models.DateTimeField(null=True, blank=True)
    qualify_misses = models.PositiveSmallIntegerField(default=0, db_default=0)

    class Meta:
        ordering = ["extension__number", "-q", "contact_uri"]
        constraints = [
            models.UniqueConstraint(fields=["extension", "contact_uri"], name="one_binding_per_contact"),
        ]

    def __str__(self):
        return f"{self.extension.number} → {self.contact_uri}"

    @property
    def is_live(self):
        return self.expires_at > timezone.now()

    @cached_property
    def _contact_hostport(self):
        try:
            uri = parse_uri(self.contact_uri)
        except SipError:
            return None, None
        return uri.host.strip("[]"), uri.port

    @property
    def contact_address(self) -> str:
        """The Contact's host[:port], as the phone wrote it."""
        host, port = self._contact_hostport
        if not host:
            return ""
        shown = f"[{host}]" if ":" in host else host
        return f"{shown}:{port}" if port else shown

    @property
    def behind_nat(self) -> bool:
        """Whether the Contact names another IP address than the one the REGISTER came from
        (a private address behind NAT): the phone is reached at its source address. A
        Contact naming a host (or a websocket's .invalid name) says nothing either way."""
        host, _ = self._contact_hostport
        try:
            return ipaddress.ip_address(host) != ipaddress.ip_address(self.source_ip)
        except ValueError:
            return False


class Subscription(models.Model):
    """A reg-event subscription (RFC 3680): a dialog in which runsip NOTIFYs an AOR's state."""

    watched = models.ForeignKey(Extension, on_delete=models.CASCADE, related_name="watchers",
                                help_text="The extension whose registrations are watched.")
    subscriber = models.CharField(max_length=64, help_text="The authenticated extension that subscribed.")
    call_id = models.CharField(max_length=255)
    remote_tag = models.CharField(max_length=128, help_text="The subscriber's From tag.")
    local_tag = models.CharField(max_length=128, help_text="Our To tag.")
    event_id = models.CharField(max_length=128, blank=True, help_text="The id parameter of the Event header.")
    remote_target = models.CharField(max_length=1024, help_text="The subscriber's Contact URI.")
    route_set = models.TextField(blank=True, help_text="Record-Route values, in the order NOTIFYs use them.")
    remote_uri = models.CharField(max_length=1024, help_text="The subscriber's From URI (our NOTIFY's To).")
    local_uri = models.CharField(max_length=1024, help_text="The watched AOR (our NOTIFY's From).")
    remote_cseq = models.PositiveIntegerField()
    local_cseq = models.PositiveIntegerField(default=0)
    version = models.PositiveIntegerField(default=0, help_text="The reginfo version last sent.")
    transport = models.CharField(max_length=8, choices=Transport.choices)
    source_ip = models.GenericIPAddressField()
    source_port = models.PositiveIntegerField()
    flow = models.CharField(max_length=128, blank=True, help_text="The connection it came on, for TCP/TLS/WS.")
    expires_at = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["watched__number", "created_at"]
        constraints = [
            models.UniqueConstraint(fields=["call_id", "remote_tag", "local_tag"], name="one_subscription_per_dialog"),
        ]

    def __str__(self):
        return f"{self.subscriber} watches {self.watched.number}"


class SoftParameter(models.Model):
    number = models.PositiveIntegerField(primary_key=True)
    name = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=8, choices=ParameterKind.choices)
    value = models.JSONField()
    default = models.JSONField()
    minimum = models.IntegerField(null=True, blank=True)
    maximum = models.IntegerField(null=True, blank=True)
    description = models.TextField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["number"]

    def __str__(self):
        return f"{self.number} {self.name}"


class SoftParameterChange(models.Model):
    """The audit trail of soft parameters: who changed what, when, from where."""

    parameter = models.ForeignKey(SoftParameter, on_delete=models.CASCADE, related_name="changes")
    changed_at = models.DateTimeField(default=timezone.now, db_index=True)
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor = models.CharField(max_length=150, help_text="Who, as shown: a username, or the shell user for the CLI.")
    via = models.CharField(max_length=16, help_text="web, api, cli or admin")
    old_value = models.JSONField(null=True)
    new_value = models.JSONField()

    class Meta:
        ordering = ["-changed_at", "-id"]

    def __str__(self):
        return f"{self.parameter_id} {self.old_value!r} → {self.new_value!r} by {self.actor} via {self.via}"


class AuthAttempt(models.Model):
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    source_ip = models.GenericIPAddressField()
    source_port = models.PositiveIntegerField()
    transport = models.CharField(max_length=8, choices=Transport.choices)
    method = models.CharField(max_length=32)
    aor = models.CharField(max_length=255, blank=True, help_text="The address of record in To.")
    extension_number = models.CharField(max_length=64, blank=True, db_index=True)
    auth_username = models.CharField(max_length=255, blank=True)
    user_agent = models.CharField(max_length=255, blank=True)
    outcome = models.CharField(max_length=16, choices=AttemptOutcome.choices)
    reason = models.CharField(max_length=32, choices=ReasonCode.choices, db_index=True)
    status = models.PositiveSmallIntegerField(help_text="The SIP status answered.")
    detail = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["source_ip", "created_at"])]

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.extension_number or self.aor} {self.reason}"

    @property
    def explanation(self):
        return ReasonCode(self.reason).label


class HourlyStat(models.Model):
    """Successful registrations and failed attempts per hour, kept by the write path so
    that the dashboard's chart never scans the attempts table."""

    hour = models.DateTimeField(primary_key=True)
    registrations = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["hour"]

    def __str__(self):
        return f"{self.hour:%Y-%m-%d %H}:00 {self.registrations} ok, {self.failures} failed"


class Ban(models.Model):
    """A source address whose requests the SIP worker drops, and why."""

    ip = models.GenericIPAddressField(db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)
    failures = models.PositiveIntegerField(help_text="Failed attempts that tipped the threshold.")
    detail = models.CharField(max_length=255)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.CharField(max_length=150, blank=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.ip} until {self.expires_at:%Y-%m-%d %H:%M}"

    @property
    def active(self):
        return self.lifted_at is None and self.expires_at > timezone.now()

    def evidence(self):
        """The failed attempts from this address that led to the ban."""
        return AuthAttempt.objects.filter(source_ip=self.ip, created_at__lte=self.created_at).order_by(
            "-created_at")


class TracedMessage(models.Model):
    """One SIP message in or out, captured for the SIP trace (never a plaintext secret:
    SIP carries none — Authorization holds only a digest response)."""

    captured_at = models.DateTimeField(db_index=True)
    direction = models.CharField(max_length=3, choices=[("in", "received"), ("out", "sent")])
    transport = models.CharField(max_length=8, choices=Transport.choices)
    peer_ip = models.GenericIPAddressField(db_index=True)
    peer_port = models.PositiveIntegerField()
    local_port = models.PositiveIntegerField(default=0)
    extension_number = models.CharField(max_length=64, blank=True, db_index=True)
    summary = models.CharField(max_length=255, help_text="The start line.")
    call_id = models.CharField(max_length=255, blank=True)
    data = models.TextField()

    class Meta:
        ordering = ["captured_at", "id"]

    def __str__(self):
        arrow = "←" if self.direction == "in" else "→"
        return f"{self.captured_at:%H:%M:%S.%f} {arrow} {self.peer_ip}:{self.peer_port} {self.summary}"


# -- operations: housekeeping jobs, alerts, process health ----------------------------
class JobOutcome(models.TextChoices):
    OK = "ok", "OK"
    FAILED = "failed", "Failed"


class JobRun(models.Model):
    """One run of a housekeeping job (``registrar.tasks.JOBS``), however it was started:
    Celery beat, the embedded timer of ``manage.py serve`` or ``manage.py jobs run``."""

    name = models.CharField(max_length=64)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    duration = models.FloatField(help_text="Seconds.")
    outcome = models.CharField(max_length=8, choices=JobOutcome.choices)
    result = models.TextField(blank=True, help_text="What the job did, or the error that stopped it.")

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["name", "-started_at"])]

    def __str__(self):
        return f"{self.name} {self.started_at:%Y-%m-%d %H:%M:%S} {self.outcome}"


class AlertRoute(models.Model):
    """Where the e-mail for one kind of event goes (webhooks subscribe on the Webhook)."""

    event = models.CharField(max_length=32, choices=AlertEvent.choices, unique=True)
    emails = models.TextField(help_text="E-mail addresses, separated by commas or new lines.")
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["event"]

    def __str__(self):
        return f"{self.get_event_display()} → {', '.join(self.recipients())}"

    def recipients(self) -> list[str]:
        separated = self.emails.replace("\n", ",").replace(";", ",")
        return [address.strip() for address in separated.split(",") if address.strip()]


class Webhook(models.Model):
    """An outbound webhook: alerts of the subscribed events are POSTed as JSON, signed
    with ``X-Regis-Signature: sha256=<hex HMAC-SHA256 of the body keyed with secret>``."""

    name = models.CharField(max_length=100, blank=True)
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=128, help_text="The key of the body's HMAC-SHA256 signature.")
    events = models.JSONField(default=list, help_text="The alert events sent here (AlertEvent values).")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self):
        return self.name or self.url


class Alert(models.Model):
    """An event worth telling a human about, kept with how it was sent."""

    event = models.CharField(max_length=32, choices=AlertEvent.choices, db_index=True)
    target = models.CharField(max_length=255, blank=True, db_index=True,
                              help_text="What it is about: an extension number, an address, a job name.")
    dedupe_key = models.CharField(max_length=255, null=True, blank=True, unique=True,
                                  help_text="Two alerts with one key are one alert (repeat suppression).")
    subject = models.CharField(max_length=255)
    text = models.TextField()
    details = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    dispatched_at = models.DateTimeField(null=True, blank=True, db_index=True,
                                         help_text="When a process took it to send (e-mail, webhooks).")
    emailed_to = models.TextField(blank=True)
    email_error = models.TextField(blank=True)
    # Emergency-call alerts stay on the dashboard until someone says they have seen them.
    acknowledged_at = models.DateTimeField(null=True, blank=True, db_index=True)
    acknowledged_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.subject}"


class BanNotice(models.Model):
    """A ban an alert has told about: each ban is announced once, however many
    processes look for new bans at the same time."""

    ban = models.OneToOneField(Ban, on_delete=models.CASCADE, primary_key=True, related_name="notice")
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="ban_notices")


class ExtensionPresence(models.Model):
    """The extensions that had a live binding at the last stopped-registering check."""

    extension = models.OneToOneField(Extension, on_delete=models.CASCADE, primary_key=True,
                                     related_name="presence")
    registered_since = models.DateTimeField(help_text="The first check that saw it registered.")


class WebhookDelivery(models.Model):
    """One attempt to deliver one alert to one webhook."""

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    attempt = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    succeeded = models.BooleanField(default=False)
    will_retry = models.BooleanField(default=False)
    duration = models.FloatField(default=0, help_text="Seconds.")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self):
        outcome = self.status_code or self.error or "?"
        return f"{self.webhook} #{self.alert_id} attempt {self.attempt}: {outcome}"


class WorkerStatus(models.Model):
    """What one runsip process last reported about itself (every few seconds)."""

    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    listeners = models.JSONField(default=list)
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)
    credentials = models.PositiveIntegerField(default=0, help_text="Extensions in its credentials cache.")
    connections = models.PositiveIntegerField(default=0, help_text="Open TCP connections.")
    received = models.BigIntegerField(default=0, help_text="Messages received since start.")
    errors = models.BigIntegerField(default=0, help_text="Messages that raised an unexpected error.")
    batches = models.BigIntegerField(default=0, help_text="Group commits of REGISTERs.")
    stored = models.BigIntegerField(default=0, help_text="REGISTERs stored.")
    requests_per_second = models.FloatField(default=0, help_text="Messages received per second since the "
                                                                  "previous report.")
    counters = models.JSONField(default=dict, help_text="Responses by method and status, REGISTER latency "
                                                         "histogram (registrar.metrics.WorkerCounters).")

    class Meta:
        ordering = ["hostname", "pid"]
        constraints = [models.UniqueConstraint(fields=["hostname", "pid"], name="one_status_per_process")]
        verbose_name_plural = "worker statuses"

    def __str__(self):
        return f"runsip {self.hostname}:{self.pid}"


# -- outbound trunks: Regis registering to upstream servers (registrar.trunks owns the writes) --------
class Trunk(models.Model):
    """A remote registration runsip keeps alive, like a row of Kamailio's uacreg table."""

    name = models.SlugField(max_length=64, unique=True, help_text="A short name: letters, digits, '-' or '_'.")
    registrar_uri = models.CharField(
        max_length=255, help_text="Where to register: sip:host[:port][;transport=udp|tcp|tls] or sips:host[:port].")
    aor_user = models.CharField(max_length=64, help_text="The user part of the address registered (From/To).")
    aor_domain = models.CharField(max_length=255, blank=True,
                                  help_text="The domain of the address registered; empty = the registrar's host.")
    auth_username = models.CharField(max_length=128, blank=True,
                                     help_text="The digest username; empty = the AOR user.")
    # Encrypted with a key derived from SECRET_KEY (registrar.crypto): digest needs the
    # password itself, because the realm and algorithm are only known from the challenge.
    password_encrypted = models.TextField(editable=False)
    expected_realm = models.CharField(max_length=255, blank=True,
                                      help_text="When set, a challenge for any other realm is refused.")
    expires = models.PositiveIntegerField(default=3600, validators=[MinValueValidator(60), MaxValueValidator(86400)],
                                          help_text="Registration interval asked for, in seconds.")
    outbound_proxy = models.CharField(max_length=255, blank=True,
                                      help_text="Send the REGISTERs here instead (sip:host[:port][;transport=...]).")
    contact_user = models.CharField(max_length=64, blank=True, help_text="User part of our Contact; empty = AOR user.")
    enabled = models.BooleanField(default=True)
    register = models.BooleanField(
        default=True, db_default=True,
        help_text="Keep a registration with the upstream. Off for a trunk that only carries calls (the upstream "
                  "knows us by address, or challenges each call).")
    register_now_at = models.DateTimeField(null=True, blank=True, editable=False,
                                           help_text="When an admin last asked for an immediate re-registration.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class TrunkStatus(models.Model):
    """What runsip last knew about a trunk's registration (one row per trunk)."""

    trunk = models.OneToOneField(Trunk, on_delete=models.CASCADE, related_name="status", primary_key=True)
    state = models.CharField(max_length=12, choices=TrunkState.choices, default=TrunkState.REGISTERING)
    registered_until = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Last SIP status received.")
    last_phrase = models.CharField(max_length=128, blank=True)
    cause = models.CharField(max_length=24, choices=TrunkCause.choices, blank=True, default="")
    detail = models.CharField(max_length=255, blank=True, help_text="The cause in words, for the admin.")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"{self.trunk_id}: {self.state}"


class TrunkAttempt(models.Model):
    """One finished REGISTER exchange of a trunk (the recent history; old rows are pruned)."""

    trunk = models.ForeignKey(Trunk, on_delete=models.CASCADE, related_name="attempts")
    at = models.DateTimeField(default=timezone.now, db_index=True)
    status = models.PositiveSmallIntegerField(null=True, blank=True, help_text="SIP status, empty on a timeout.")
    phrase = models.CharField(max_length=128, blank=True)
    cause = models.CharField(max_length=24, choices=TrunkCause.choices, blank=True, default="")
    detail = models.CharField(max_length=255, blank=True)
    expires = models.PositiveIntegerField(null=True, blank=True, help_text="Seconds granted, on success.")

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self):
        return f"{self.trunk_id} {self.status or 'timeout'} {self.at:%H:%M:%S}"


http_url_validator = URLValidator(schemes=["http", "https"])


class OAuthServer(models.Model):
    """An OAuth 2.0 authorization server that vouches for extensions' bearer tokens (RFC 8898):
    asked per token over HTTP (introspection, RFC 7662) or trusted through its signing keys
    (a JWKS, for JWTs checked locally). Like the seed's "Remote Web Service"."""

    name = models.SlugField(max_length=64, unique=True, help_text="A short name: letters, digits, '-' or '_'.")
    mode = models.CharField(max_length=16, choices=OAuthMode.choices, default=OAuthMode.INTROSPECTION)
    introspection_url = models.CharField(max_length=500, blank=True, validators=[http_url_validator],
                                        help_text="Where tokens are POSTed (introspection mode).")
    client_id = models.CharField(max_length=255, blank=True,
                                 help_text="HTTP Basic user for the introspection call.")
    # Encrypted (registrar.crypto): the introspection call needs it back in clear.
    client_secret_encrypted = models.TextField(blank=True, editable=False)
    timeout_seconds = models.FloatField(default=2, validators=[MinValueValidator(0.1), MaxValueValidator(30)],
                                        help_text="How long to wait for the server before answering 503.")
    verify_tls = models.BooleanField(default=True, help_text="Check the server's HTTPS certificate.")
    jwks_url = models.CharField(max_length=500, blank=True, validators=[http_url_validator],
                                help_text="The server's signing keys (JWKS mode).")
    issuer = models.CharField(max_length=500, blank=True, help_text="Expected iss claim of JWTs (empty: any).")
    audience = models.CharField(max_length=500, blank=True, help_text="Expected aud claim of JWTs (empty: any).")
    authz_server = models.CharField(max_length=500, blank=True,
                                    help_text='Sent to phones in the 401 challenge as authz_server="..." (RFC 8898).')
    required_scope = models.CharField(max_length=255, blank=True,
                                      help_text="A scope every token must carry (empty: none required).")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "OAuth server"

    def __str__(self):
        return self.name


def regular_expression(pattern):
    import re
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValidationError(f"Not a regular expression: {error}.") from None


dial_prefix_validator = RegexValidator(r"^[0-9*#+]*$", "Only digits, '*', '#' and '+'.")


class DialRule(models.Model):
    """One line of the dial plan: a number the caller dials that matches ``pattern`` (a
    regular expression the whole number must match) goes out through ``trunk``, with
    ``strip`` leading characters removed and ``prefix`` put in front. Extensions are
    matched first; rules are tried in ``position`` order."""

    name = models.CharField(max_length=100, blank=True)
    position = models.PositiveIntegerField(default=100, help_text="Rules are tried from the lowest position up.")
    pattern = models.CharField(max_length=200, validators=[regular_expression],
                               help_text=r"A regular expression the whole dialled number must match, e.g. 0\d{6,15} "
                                         r"or \+[1-9]\d{6,14}.")
    strip = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(32)],
                                             help_text="How many leading characters to remove.")
    prefix = models.CharField(max_length=32, blank=True, validators=[dial_prefix_validator],
                              help_text="What to put in front once stripped.")
    trunk = models.ForeignKey(Trunk, on_delete=models.PROTECT, related_name="dial_rules")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self):
        return f"{self.pattern} → {self.trunk}"


class Call(models.Model):
    """A call through the proxy: live while ``ended_at`` is empty, its call record (CDR) after."""

    call_id = models.CharField(max_length=255)
    caller_tag = models.CharField(max_length=128, help_text="The caller's From tag: with Call-ID, the call.")
    caller = models.CharField(max_length=64, db_index=True, help_text="The calling extension.")
    caller_name = models.CharField(max_length=128, blank=True)
    dialled = models.CharField(max_length=128, db_index=True, help_text="The number as dialled.")
    callee = models.CharField(max_length=128, blank=True,
                              help_text="The extension called, or the number sent to the trunk.")
    kind = models.CharField(max_length=12, choices=CallKind.choices, db_index=True)
    trunk = models.ForeignKey(Trunk, on_delete=models.SET_NULL, null=True, blank=True, related_name="calls")
    trunk_name = models.CharField(max_length=64, blank=True, help_text="Kept when the trunk is deleted.")
    state = models.CharField(max_length=12, choices=CallState.choices, default=CallState.SETUP, db_index=True)
    source_ip = models.GenericIPAddressField()
    source_port = models.PositiveIntegerField()
    transport = models.CharField(max_length=8, choices=Transport.choices)
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True, db_index=True)
    status = models.PositiveSmallIntegerField(null=True, blank=True, help_text="The final status of the INVITE.")
    reason = models.CharField(max_length=255, blank=True, help_text="How it ended, in words.")
    worker = models.CharField(max_length=128, blank=True, help_text="The runsip process that carried it.")

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["call_id", "caller_tag"], name="one_row_per_call")]

    def __str__(self):
        return f"{self.caller} → {self.dialled} ({self.state})"

    @property
    def duration(self):
        """Seconds talked: from the answer to the end (or to now while it lasts); None unanswered."""
        if self.answered_at is None:
            return None
        end = self.ended_at or timezone.now()
        return max(0.0, (end - self.answered_at).total_seconds())
