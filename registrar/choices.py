"""Enumerations with labels shared by models, admin, API and web UI."""
from django.db import models

from registrar.sip.reasons import EXPLANATIONS, Reason


class Transport(models.TextChoices):
    UDP = "udp", "UDP"
    TCP = "tcp", "TCP"
    TLS = "tls", "TLS"
    WS = "ws", "WS"
    WSS = "wss", "WSS"


class QualifyStatus(models.TextChoices):
    UNKNOWN = "unknown", "Not yet pinged"
    REACHABLE = "reachable", "Reachable"
    UNREACHABLE = "unreachable", "Unreachable"


class AttemptOutcome(models.TextChoices):
    REJECTED = "rejected", "Rejected"
    CHALLENGED = "challenged", "Challenged again"


ReasonCode = models.TextChoices("ReasonCode", [(r.name, (r.value, EXPLANATIONS[r])) for r in Reason])


class ParameterKind(models.TextChoices):
    BOOLEAN = "bool", "Boolean"
    INTEGER = "int", "Integer"
    TEXT = "text", "Text"
    LIST = "list", "List of values"


class AlertEvent(models.TextChoices):
    BAN = "ban", "A source address was banned"
    FAILURE_SPIKE = "failure_spike", "Many failed attempts for one extension"
    STOPPED_REGISTERING = "stopped_registering", "Extensions stopped registering"
    JOB_FAILED = "job_failed", "A housekeeping job failed"
    EMERGENCY_CALL = "emergency_call", "An emergency number was dialled"
    TEST = "test", "Test alert"


class AuthMode(models.TextChoices):
    """How an extension's requests authenticate (bearer: OAuth 2.0 access tokens, RFC 8898)."""
    DIGEST = "digest", "Digest (password)"
    BEARER = "bearer", "Bearer (OAuth token)"
    EITHER = "either", "Digest or bearer"


class OAuthMode(models.TextChoices):
    """How an OAuth server's tokens are checked."""
    INTROSPECTION = "introspection", "Token introspection (RFC 7662)"
    JWKS = "jwks", "Local JWT validation (JWKS)"


class TrunkState(models.TextChoices):
    DISABLED = "disabled", "Disabled"
    CALLS_ONLY = "calls_only", "Calls only (keeps no registration)"
    REGISTERING = "registering", "Registering"
    REGISTERED = "registered", "Registered"
    FAILED = "failed", "Failed"


class TrunkCause(models.TextChoices):
    NONE = "", "—"
    BAD_CREDENTIALS = "bad_credentials", "Bad credentials: the server challenged our answer again"
    FORBIDDEN = "forbidden", "Forbidden by the server"
    REALM_MISMATCH = "realm_mismatch", "The server's realm differs from the expected one"
    TIMEOUT = "timeout", "No answer from the server"
    TRANSPORT = "transport", "DNS or transport error"
    INTERVAL_TOO_BRIEF = "interval_too_brief", "Interval too brief, and the server's minimum is over our limit"
    UNSUPPORTED_CHALLENGE = "unsupported_challenge", "The server asked for a digest we cannot answer"
    SERVER_ERROR = "server_error", "The server failed (5xx)"
    REJECTED = "rejected", "Refused by the server"
    UNREADABLE_PASSWORD = "unreadable_password", "The stored password cannot be decrypted (SECRET_KEY changed?)"


class CallPermission(models.TextChoices):
    """What an extension may dial; the emergency numbers (soft parameter 330) always go through."""
    ALL = "all", "Extensions and outside numbers"
    INTERNAL = "internal", "Extensions only"
    EMERGENCY = "emergency", "Emergency numbers only"


class CallKind(models.TextChoices):
    INTERNAL = "internal", "Extension to extension"
    OUTBOUND = "outbound", "Out through a trunk"
    EMERGENCY = "emergency", "Emergency"


class CallState(models.TextChoices):
    SETUP = "setup", "Setting up"
    RINGING = "ringing", "Ringing"
    ANSWERED = "answered", "Answered"
    ENDED = "ended", "Ended"
