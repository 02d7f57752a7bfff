"""The catalogue of soft parameters: runtime policy that lives in the database.

Numbers follow the gateway convention admins know from seed 000 (286 is the
third-party User-Agent inspection). The catalogue is the schema: the data migration
seeds it, services validate values against it, and :func:`policy_from_values` turns
the stored values into the core's :class:`~registrar.sip.policy.Policy`.
"""
import ipaddress
from dataclasses import dataclass

from registrar.choices import ParameterKind
from registrar.sip.policy import Policy

ALGORITHM_CHOICES = ("SHA-256", "MD5", "SHA-512-256")


def _dialable(item: str) -> None:
    if not item or any(char not in "0123456789*#+" for char in item):
        raise ValueError(item)


@dataclass(frozen=True)
class ParameterSpec:
    number: int
    name: str
    kind: str
    default: object
    description: str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple = ()
    # For lists: checks one item, raising ValueError with the reason.
    check_item: object = None


CATALOGUE = (
    ParameterSpec(100, "min_expires", ParameterKind.INTEGER, 60,
                  "Shortest registration interval accepted, in seconds; shorter requests get 423 Interval Too Brief "
                  "with Min-Expires.", 1, 86400),
    ParameterSpec(101, "default_expires", ParameterKind.INTEGER, 3600,
                  "Registration interval used when the phone asks for none, in seconds.", 1, 86400),
    ParameterSpec(102, "max_expires", ParameterKind.INTEGER, 7200,
                  "Longest registration interval granted, in seconds; longer requests are shortened to it.", 1, 604800),
    ParameterSpec(103, "nonce_lifetime", ParameterKind.INTEGER, 300,
                  "How long a digest challenge (nonce) stays valid, in seconds; after that the phone is "
                  "challenged again with stale=true.", 10, 86400),
    ParameterSpec(104, "digest_algorithms", ParameterKind.LIST, ["SHA-256", "MD5"],
                  "Digest algorithms offered in a 401 challenge, in order of preference (one WWW-Authenticate "
                  "each). Known: SHA-256, MD5, SHA-512-256.", choices=ALGORITHM_CHOICES),
    ParameterSpec(105, "options_require_auth", ParameterKind.BOOLEAN, False,
                  "Whether an OPTIONS to the registrar must authenticate (digest challenge) before it gets 200."),
    ParameterSpec(106, "qualify_interval", ParameterKind.INTEGER, 30,
                  "How often runsip pings each registered contact with OPTIONS, in seconds (0 = never).", 0, 3600),
    ParameterSpec(107, "qualify_max_misses", ParameterKind.INTEGER, 3,
                  "Unanswered pings in a row after which a contact is marked unreachable.", 1, 100),
    ParameterSpec(108, "flow_timer", ParameterKind.INTEGER, 120,
                  "Flow-Timer sent in the 200 OK of an outbound registration (RFC 5626): the phone sends a "
                  "keep-alive at least this often, in seconds.", 10, 3600),
    ParameterSpec(109, "subscribe_max_expires", ParameterKind.INTEGER, 3600,
                  "Longest reg-event subscription granted, in seconds; longer requests are shortened to it.",
                  60, 86400),
    ParameterSpec(286, "third_party_ua_inspection", ParameterKind.BOOLEAN, False,
                  "Third-party User-Agent inspection: when on, a REGISTER whose User-Agent matches none of the "
                  "accepted patterns (parameter 287) is refused with 403 Forbidden without a challenge."),
    ParameterSpec(287, "accepted_user_agents", ParameterKind.LIST, [],
                  "User-Agent patterns (case-insensitive substrings) accepted when parameter 286 is on."),
    ParameterSpec(288, "denied_user_agents", ParameterKind.LIST, list(Policy.denied_user_agents),
                  "User-Agent patterns of scanners and attack tools (case-insensitive substrings): their REGISTERs "
                  "get 403 and count towards a ban, their other requests are dropped."),
    ParameterSpec(300, "ban_failures_per_source", ParameterKind.INTEGER, Policy.ban_per_source,
                  "Failed authentications from one address within the ban window that ban it (0 = never).", 0, 100000),
    ParameterSpec(301, "ban_failures_per_extension", ParameterKind.INTEGER, Policy.ban_per_extension,
                  "Failed authentications from one address for one extension within the ban window that ban "
                  "the address (0 = never).", 0, 100000),
    ParameterSpec(302, "ban_window", ParameterKind.INTEGER, Policy.ban_window,
                  "The window, in seconds, in which failures are counted for a ban.", 1, 86400),
    ParameterSpec(303, "ban_duration", ParameterKind.INTEGER, Policy.ban_duration,
                  "How long a ban lasts, in seconds; an admin can lift it earlier.", 1, 31 * 86400),
    ParameterSpec(304, "ban_allowed_networks", ParameterKind.LIST, [],
                  "Networks (CIDR, e.g. 10.0.0.0/8) that are never banned or rate-limited.",
                  check_item=lambda item: ipaddress.ip_network(item, strict=False)),
    ParameterSpec(305, "rate_limit", ParameterKind.INTEGER, 200,
                  "Requests per second one source address may send before the excess is dropped unparsed "
                  "(0 = no limit).", 0, 1000000),
    ParameterSpec(310, "trace_extensions", ParameterKind.LIST, [],
                  "Extensions whose SIP messages (in and out) are captured into the SIP trace."),
    ParameterSpec(311, "trace_sources", ParameterKind.LIST, [],
                  "Source addresses whose SIP messages (in and out) are captured into the SIP trace.",
                  check_item=lambda item: ipaddress.ip_address(item)),
    ParameterSpec(312, "trace_max_messages", ParameterKind.INTEGER, 10000,
                  "The SIP trace keeps at most this many messages (the oldest go first).", 100, 1000000),
    ParameterSpec(313, "trace_max_age_hours", ParameterKind.INTEGER, 24,
                  "The SIP trace keeps messages for this many hours.", 1, 24 * 90),
    ParameterSpec(320, "attempts_retention_days", ParameterKind.INTEGER, 30,
                  "Failed authentication attempts are kept this many days.", 1, 3650),
    ParameterSpec(321, "audit_retention_days", ParameterKind.INTEGER, 365,
                  "Soft-parameter audit entries are kept this many days (each parameter's latest change stays).",
                  1, 36500),
    ParameterSpec(322, "stats_retention_days", ParameterKind.INTEGER, 90,
                  "The hourly registration and failure roll-ups are kept this many days.", 1, 3650),
    ParameterSpec(323, "alert_failure_threshold", ParameterKind.INTEGER, 20,
                  "An alert goes out when one extension has more than this many failed attempts in 10 minutes "
                  "(0 = never).", 0, 100000),
    ParameterSpec(330, "emergency_numbers", ParameterKind.LIST, ["112", "911", "000"],
                  "Emergency numbers: always routed (to parameter 331's destination), even for an extension barred "
                  "from other calls, and every such call alerts the extensions of parameter 332 and the dashboard.",
                  check_item=lambda item: _dialable(item)),
    ParameterSpec(331, "emergency_route", ParameterKind.TEXT, "",
                  "Where emergency calls go: an extension number, or trunk:NAME for a trunk (the number is sent "
                  "as dialled). Empty: through the dial plan like any other number."),
    ParameterSpec(332, "emergency_alert_extensions", ParameterKind.LIST, [],
                  "Extensions that get a SIP MESSAGE (\"Emergency call from 1001 (Reception) at 192.0.2.10 to 112\") "
                  "on every emergency call."),
    ParameterSpec(306, "rate_burst", ParameterKind.INTEGER, 400,
                  "How many requests one address may send at once above the rate limit.", 0, 1000000),
)

BY_NUMBER = {spec.number: spec for spec in CATALOGUE}
BY_NAME = {spec.name: spec for spec in CATALOGUE}


def spec_for(key) -> ParameterSpec:
    """Find a parameter by number (int or digits) or name; KeyError if there is none."""
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
        return BY_NUMBER[int(key)]
    return BY_NAME[key]


def coerce(spec: ParameterSpec, value):
    """The typed value for ``value`` (which may be text from a form or the CLI); ValueError says why not."""
    if spec.kind == ParameterKind.BOOLEAN:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "on", "yes"):
            return True
        if text in ("0", "false", "off", "no"):
            return False
        raise ValueError(f"{spec.name} takes 0 or 1 (on/off), not {value!r}")
    if spec.kind == ParameterKind.INTEGER:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError(f"{spec.name} takes a whole number, not {value!r}") from None
        if spec.minimum is not None and number < spec.minimum:
            raise ValueError(f"{spec.name} must be at least {spec.minimum}")
        if spec.maximum is not None and number > spec.maximum:
            raise ValueError(f"{spec.name} must be at most {spec.maximum}")
        return number
    if spec.kind == ParameterKind.LIST:
        items = value if isinstance(value, (list, tuple)) else str(value).split(",")
        items = [str(item).strip() for item in items if str(item).strip()]
        if spec.choices:
            canonical = {choice.lower(): choice for choice in spec.choices}
            unknown = [item for item in items if item.lower() not in canonical]
            if unknown:
                raise ValueError(f"{spec.name}: unknown value(s) {', '.join(unknown)}; known: {', '.join(spec.choices)}")
            items = [canonical[item.lower()] for item in items]
            if not items:
                raise ValueError(f"{spec.name} needs at least one value")
        if spec.check_item is not None:
            for item in items:
                try:
                    spec.check_item(item)
                except ValueError:
                    raise ValueError(f"{spec.name}: {item!r} is not valid here") from None
        return items
    return str(value)


def policy_from_values(values: dict) -> Policy:
    def get(name):
        return values.get(name, BY_NAME[name].default)

    min_expires = get("min_expires")
    return Policy(
        min_expires=min_expires,
        default_expires=max(get("default_expires"), min_expires),
        max_expires=max(get("max_expires"), min_expires),
        nonce_lifetime=get("nonce_lifetime"),
        digest_algorithms=tuple(get("digest_algorithms")) or ("SHA-256", "MD5"),
        ua_inspection=bool(get("third_party_ua_inspection")),
        accepted_user_agents=tuple(get("accepted_user_agents")),
        denied_user_agents=tuple(get("denied_user_agents")),
        rate_limit=get("rate_limit"),
        rate_burst=get("rate_burst"),
        ban_window=get("ban_window"),
        ban_per_source=get("ban_failures_per_source"),
        ban_per_extension=get("ban_failures_per_extension"),
        ban_duration=get("ban_duration"),
        allowed_networks=tuple(get("ban_allowed_networks")),
        trace_extensions=frozenset(get("trace_extensions")),
        trace_sources=frozenset(get("trace_sources")),
        options_require_auth=bool(get("options_require_auth")),
        qualify_interval=get("qualify_interval"),
        qualify_max_misses=get("qualify_max_misses"),
        flow_timer=get("flow_timer"),
        subscribe_max_expires=get("subscribe_max_expires"),
    )
