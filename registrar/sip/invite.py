"""INVITE transactions (RFC 3261 §17.1.1, §17.2.1, with RFC 6026's Accepted state), sans-IO.

:class:`InviteServer` is the caller's side of a proxied INVITE: it remembers the last
response it sent, answers a retransmitted INVITE with it, retransmits a non-2xx final
response over UDP (Timer G) until the ACK comes or Timer H gives up, and absorbs that ACK.
After a 2xx it only lingers (Accepted) so that INVITE retransmissions are absorbed; the
2xx itself is the callee's to retransmit and the proxy forwards those.

:class:`InviteClient` is one branch towards a callee: Timer A retransmits the INVITE over
UDP until a response comes, Timer B turns silence into a 408, a non-2xx final is
acknowledged hop by hop (the ACK goes out again for every retransmission of that
response, until Timer D), and a 2xx leaves the transaction Accepted for Timer M so its
retransmissions still reach the proxy.

Neither reads a clock: each exposes ``due`` (the time its next timer fires, or None) and
``fire(now)``, which the owner calls at or after ``due``.
"""
from dataclasses import dataclass

from registrar.sip.transactions import T1

T2 = 4.0
# How long a callee may ring before the proxy gives up on its branch (Timer C, > 3 min).
TIMER_C = 181.0


@dataclass(frozen=True)
class Outgoing:
    """Bytes to send (the owner wraps them into its send action)."""

    data: bytes
    destination: object


class InviteServer:
    def __init__(self, key, destination, reliable: bool, t1: float = T1):
        self.key = key
        self.destination = destination
        self.reliable = reliable
        self.t1 = t1
        self.state = "proceeding"
        self.last = None  # the last response sent (bytes)
        self.final_status = None
        self.due = None
        self._interval = t1
        self._give_up = None

    @property
    def terminated(self) -> bool:
        return self.state == "terminated"

    def send(self, data: bytes, status: int, now: float) -> list:
        """A response for the caller; returns what to send (nothing once a final went)."""
        if self.state != "proceeding":
            return []
        self.last = data
        if status < 200:
            return [Outgoing(data, self.destination)]
        self.final_status = status
        self._give_up = now + 64 * self.t1
        if 200 <= status < 300:
            self.state = "accepted"
            self.due = self._give_up
        else:
            self.state = "completed"
            self.due = self._give_up if self.reliable else min(now + self._interval, self._give_up)
        return [Outgoing(data, self.destination)]

    def retransmitted(self) -> list:
        """The caller sent the INVITE again: the last response again (§17.2.1)."""
        if self.state in ("proceeding", "completed") and self.last is not None:
            return [Outgoing(self.last, self.destination)]
        return []

    def acknowledged(self) -> bool:
        """An ACK matched this transaction; True when it was ours to absorb (non-2xx)."""
        if self.state == "completed":
            # Timer I is zero on reliable transports; on UDP ACK retransmissions simply
            # find no transaction and no Route to us, and are dropped.
            self.state = "terminated"
            self.due = None
            return True
        return self.state == "terminated" and self.final_status is not None and self.final_status >= 300

    def fire(self, now: float) -> list:
        if self.due is None or now < self.due:
            return []
        if now >= self._give_up or self.state == "accepted":
            self.state = "terminated"  # Timer H (no ACK came) or the end of Accepted
            self.due = None
            return []
        self._interval = min(self._interval * 2, T2)
        self.due = min(now + self._interval, self._give_up)
        return [Outgoing(self.last, self.destination)]


class InviteClient:
    def __init__(self, branch: str, data: bytes, destination, reliable: bool, now: float, t1: float = T1):
        self.branch = branch
        self.data = data
        self.destination = destination
        self.reliable = reliable
        self.t1 = t1
        self.state = "calling"
        self.ack = None
        self.timeout_at = now + 64 * t1  # Timer B
        self._interval = t1
        self.due = self.timeout_at if reliable else now + t1  # Timer A
        self.timed_out = False
        self.was_proceeding = False

    @property
    def pending(self) -> bool:
        """No final response yet."""
        return self.state in ("calling", "proceeding")

    @property
    def terminated(self) -> bool:
        return self.state == "terminated"

    def first_send(self) -> Outgoing:
        return Outgoing(self.data, self.destination)

    def provisional(self, now: float) -> None:
        if self.state == "calling":
            self.state = "proceeding"
        if self.state == "proceeding":
            # No more retransmissions: Timer C (reset by every provisional) bounds the ringing.
            self.due = now + TIMER_C

    def final(self, status: int, ack: bytes | None, now: float) -> tuple[bool, list]:
        """A final response; (is it new, what to send). A non-2xx gets ``ack`` hop by hop."""
        if 200 <= status < 300:
            if self.state == "accepted":
                return False, []
            fresh = self.pending
            self.state = "accepted"
            self.due = now + 64 * self.t1  # Timer M
            return fresh, []
        if self.state == "completed":
            return False, [Outgoing(self.ack, self.destination)] if self.ack else []
        if not self.pending:
            return False, []
        self.ack = ack
        self.state = "completed"
        self.due = now + (0 if self.reliable else 32.0)  # Timer D
        return True, [Outgoing(ack, self.destination)] if ack else []

    def fire(self, now: float) -> list:
        """Retransmissions due; sets ``timed_out`` when Timer B expires without an answer."""
        if self.due is None or now < self.due:
            return []
        if self.state == "calling" and now >= self.timeout_at:
            self.state = "terminated"
            self.timed_out = True
            self.due = None
            return []
        if self.state == "proceeding":
            self.state = "terminated"
            self.timed_out = self.was_proceeding = True
            self.due = None
            return []
        if self.state == "calling":
            self._interval *= 2  # Timer A doubles without the T2 cap (§17.1.1.2)
            self.due = min(now + self._interval, self.timeout_at)
            return [Outgoing(self.data, self.destination)]
        self.state = "terminated"
        self.due = None
        return []
