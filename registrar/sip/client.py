"""Non-INVITE client transactions (RFC 3261 §17.1.2): the requests runsip sends itself.

OPTIONS pings (qualify), reg-event NOTIFYs and, later, trunk REGISTERs go out through
:class:`ClientTransactions`. It owns retransmission over unreliable transports
(Timer E: T1 doubling up to T2, and T2 once a provisional answer came), the give-up
deadline (Timer F, 64*T1) and matching answers to requests by the branch of our Via
and the CSeq method (§17.1.3). It never reads a clock: the adapter passes ``now`` and
calls :meth:`ClientTransactions.tick` at or after :meth:`next_deadline`.

Each transaction carries an opaque ``context`` chosen by its sender, handed back with
the answer or the timeout, so the adapter knows what the request was for.
"""
import heapq
import itertools
import secrets
from dataclasses import dataclass, field

from registrar.sip.transactions import MAGIC_COOKIE, T1

T2 = 4.0
TIMER_F = 64 * T1


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(10)


def new_tag() -> str:
    return secrets.token_hex(6)


@dataclass(frozen=True)
class Answered:
    """A final response to one of our requests; ``elapsed`` is seconds since it was first sent."""

    context: object
    response: object
    elapsed: float


@dataclass(frozen=True)
class TimedOut:
    """No final response within Timer F (or the connection it needed was gone)."""

    context: object


@dataclass(frozen=True)
class Resend:
    data: bytes
    destination: object


@dataclass
class _Transaction:
    branch: str
    method: str
    data: bytes
    destination: object
    context: object
    started: float
    reliable: bool
    interval: float
    next_resend: float
    deadline: float
    proceeding: bool = False
    done: bool = field(default=False)


class ClientTransactions:
    def __init__(self, t1: float = T1, t2: float = T2, timer_f: float = TIMER_F):
        self.t1, self.t2, self.timer_f = t1, t2, timer_f
        self._by_branch: dict[str, _Transaction] = {}
        self._timers: list = []
        self._order = itertools.count()

    def __len__(self):
        return len(self._by_branch)

    def start(self, *, branch: str, method: str, data: bytes, destination, context, now: float,
              reliable: bool) -> Resend:
        """Register a request about to be sent; returns the first send for the adapter to perform."""
        transaction = _Transaction(branch, method, data, destination, context, now, reliable,
                                   self.t1, now + self.t1, now + self.timer_f)
        self._by_branch[branch] = transaction
        heapq.heappush(self._timers, (transaction.deadline if reliable else transaction.next_resend,
                                      next(self._order), branch))
        return Resend(data, destination)

    def response(self, response, now: float) -> Answered | None:
        """Match an answer (§17.1.3); None when it is not ours, a retransmission, or provisional."""
        via = response.top_via
        branch = via.branch if via is not None else None
        transaction = self._by_branch.get(branch or "")
        if transaction is None or response.cseq[1] != transaction.method:
            return None
        if response.status < 200:
            if not transaction.proceeding:
                transaction.proceeding = True
                transaction.interval = self.t2
            return None
        del self._by_branch[branch]
        return Answered(transaction.context, response, now - transaction.started)

    def cancel(self, branch: str) -> None:
        self._by_branch.pop(branch, None)

    def next_deadline(self) -> float | None:
        while self._timers and self._timers[0][2] not in self._by_branch:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def tick(self, now: float) -> list:
        """Retransmissions due (:class:`Resend`) and transactions given up (:class:`TimedOut`)."""
        due = []
        while self._timers and self._timers[0][0] <= now:
            _, _, branch = heapq.heappop(self._timers)
            transaction = self._by_branch.get(branch)
            if transaction is None:
                continue
            if now >= transaction.deadline:
                del self._by_branch[branch]
                due.append(TimedOut(transaction.context))
                continue
            if transaction.reliable:
                heapq.heappush(self._timers, (transaction.deadline, next(self._order), branch))
                continue
            due.append(Resend(transaction.data, transaction.destination))
            if not transaction.proceeding:
                transaction.interval = min(transaction.interval * 2, self.t2)
            # From when it was due, not when the adapter got round to it: no drift.
            transaction.next_resend = max(transaction.next_resend + transaction.interval, now)
            heapq.heappush(self._timers, (min(transaction.next_resend, transaction.deadline),
                                          next(self._order), branch))
        return due

    def fail_destination(self, destination) -> list:
        """The connection under these transactions closed: they time out now."""
        failed = [branch for branch, t in self._by_branch.items()
                  if t.reliable and getattr(t.destination, "connection", None) is getattr(destination, "connection", 0)]
        return [TimedOut(self._by_branch.pop(branch).context) for branch in failed]
