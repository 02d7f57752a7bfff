"""Protection against hostile sources, without I/O: rate limits, failure counting, bans.

- A per-source token bucket (like Kamailio's pike) drops excess requests before they
  are parsed.
- Authentication failures are counted per source and per (source, extension) in a
  sliding window; past either threshold the source is banned for a while. A banned
  source's requests are dropped without an answer — an answer would only confirm to a
  scanner that something listens, and recording each one would let it fill our tables.
  The attempts that caused the ban are its evidence.
- The thresholds are per *source* and per *source and extension*, never per extension
  alone, so an attacker cannot lock a legitimate phone out by failing in its name;
  and they are high enough that a phone with a mistyped password, retrying every few
  seconds or minutes, does not ban the office behind its NAT address.
- Networks on the allow-list and the server's own addresses are never banned or
  rate-limited.

Every structure here is bounded: counters expire with their window and the tables
evict their oldest entries past a maximum size.
"""
import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass

from registrar.sip.reasons import Reason

MAX_TRACKED_SOURCES = 100_000

# Failures that say "someone is guessing"; expiry, ordering or stale-nonce trouble does not.
COUNTED_REASONS = frozenset({
    Reason.UNKNOWN_USER, Reason.WRONG_PASSWORD, Reason.AUTH_USER_MISMATCH, Reason.FORGED_NONCE,
    Reason.REPLAYED_NONCE, Reason.REALM_MISMATCH, Reason.MALFORMED_CREDENTIALS, Reason.DISABLED_EXTENSION,
    Reason.UA_POLICY,
})


@dataclass(frozen=True)
class BanDecision:
    ip: str
    until: float
    failures: int
    detail: str


class _BoundedTable(OrderedDict):
    """An insertion-ordered dict that drops its oldest entries past ``limit``."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit

    def touch(self, key, factory):
        value = self.get(key)
        if value is None:
            value = self[key] = factory()
            while len(self) > self.limit:
                self.popitem(last=False)
        return value


class Guard:
    def __init__(self, *, own_addresses=(), max_sources: int = MAX_TRACKED_SOURCES):
        self.own_addresses = frozenset(own_addresses)
        self._allowed_networks = ()
        self._bans: dict[str, float] = {}
        self._buckets = _BoundedTable(max_sources)
        self._source_failures = _BoundedTable(max_sources)
        self._pair_failures = _BoundedTable(max_sources)
        self.configure()

    def configure(self, *, rate: float = 0, burst: float = 0, window: float = 60, per_source: int = 0,
                  per_extension: int = 0, duration: float = 3600, allowed_networks=()) -> None:
        """rate/burst: requests per second per source (0 = no limit); per_source and
        per_extension: failures in ``window`` seconds before a ban (0 = never)."""
        self.rate, self.burst = rate, max(burst, rate)
        self.window, self.per_source, self.per_extension, self.duration = window, per_source, per_extension, duration
        self._allowed_networks = tuple(ipaddress.ip_network(net, strict=False) for net in allowed_networks)

    def exempt(self, ip: str) -> bool:
        if ip in self.own_addresses:
            return True
        if not self._allowed_networks:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self._allowed_networks)

    # -- bans ----------------------------------------------------------------------------
    def set_bans(self, bans: dict) -> None:
        """The bans in force ({ip: until}), as stored; replaces what we knew."""
        lifted = set(self._bans) - set(bans)
        self._bans = dict(bans)
        for ip in lifted:
            self.forget(ip)

    def add_ban(self, ip: str, until: float) -> None:
        self._bans[ip] = max(until, self._bans.get(ip, 0))

    def is_banned(self, ip: str, now: float) -> bool:
        until = self._bans.get(ip)
        return until is not None and until > now

    def forget(self, ip: str) -> None:
        self._source_failures.pop(ip, None)
        for key in [key for key in self._pair_failures if key[0] == ip]:
            del self._pair_failures[key]

    # -- rate limit ----------------------------------------------------------------------
    def admit(self, ip: str, now: float) -> bool:
        """False when ``ip`` sends faster than the rate limit: drop its request."""
        if not self.rate or ip in self.own_addresses:
            return True
        bucket = self._buckets.touch(ip, lambda: [self.burst, now])
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1
        return True

    # -- failures ------------------------------------------------------------------------
    def _count(self, table, key, now) -> int:
        times = table.touch(key, deque)
        times.append(now)
        horizon = now - self.window
        while times and times[0] <= horizon:
            times.popleft()
        return len(times)

    def note_failure(self, ip: str, extension: str, reason: Reason, now: float) -> BanDecision | None:
        """Count a failure; a :class:`BanDecision` when it tips the source into a ban."""
        if reason not in COUNTED_REASONS or self.exempt(ip) or self.is_banned(ip, now):
            return None
        from_source = self._count(self._source_failures, ip, now) if self.per_source else 0
        for_pair = self._count(self._pair_failures, (ip, extension), now) if self.per_extension else 0
        if self.per_source and from_source >= self.per_source:
            detail = f"{from_source} failed attempts from this address within {self.window:g} s"
        elif self.per_extension and for_pair >= self.per_extension:
            detail = f"{for_pair} failed attempts for extension {extension} within {self.window:g} s"
        else:
            return None
        until = now + self.duration
        self.add_ban(ip, until)
        self.forget(ip)
        return BanDecision(ip, until, max(from_source, for_pair), detail)
