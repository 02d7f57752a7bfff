"""The runtime policy the core applies, as plain values.

The database's soft parameters are turned into a :class:`Policy` by the adapters;
the core only ever sees this frozen snapshot, so a change takes effect by handing the
core a new one.
"""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Policy:
    min_expires: int = 60
    default_expires: int = 3600
    max_expires: int = 7200
    nonce_lifetime: int = 300
    digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    # Soft parameter 286: inspect the User-Agent and refuse third-party phones outright.
    ua_inspection: bool = False
    accepted_user_agents: tuple[str, ...] = field(default_factory=tuple)
    # Scanners and attack tools: every request from them is refused or dropped.
    denied_user_agents: tuple[str, ...] = ("friendly-scanner", "sipvicious", "sipcli", "sip-scan", "sundayddr",
                                           "iwar", "sivus", "vaxsipuseragent", "pplsip", "smap")
    # Per-source request rate (requests per second, burst); 0 disables the limit.
    rate_limit: float = 0
    rate_burst: float = 0
    # Brute force: failures per source / per (source, extension) within ban_window seconds.
    ban_window: int = 60
    ban_per_source: int = 30
    ban_per_extension: int = 10
    ban_duration: int = 3600
    allowed_networks: tuple[str, ...] = ()
    # SIP trace: every message in and out for these extensions / source addresses.
    trace_extensions: frozenset = frozenset()
    trace_sources: frozenset = frozenset()
    options_require_auth: bool = False
    # Qualify: OPTIONS to each contact every qualify_interval seconds (0 = off).
    qualify_interval: int = 30
    qualify_max_misses: int = 3
    # RFC 5626 Flow-Timer for outbound registrations, seconds.
    flow_timer: int = 120
    subscribe_max_expires: int = 3600
