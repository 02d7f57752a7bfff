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
