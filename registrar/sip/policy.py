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
