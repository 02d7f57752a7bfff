"""Non-INVITE server transactions (RFC 3261 §17.2.2), reduced to what a registrar needs.

A request is processed once: its retransmissions are absorbed while the answer is
being prepared and get the same answer again afterwards, until Timer J (64*T1 on
unreliable transports) ends the transaction. Reliable transports never retransmit,
so their transactions end with the answer.
"""
from collections import deque
from dataclasses import dataclass

T1 = 0.5
TIMER_J = 64 * T1
MAGIC_COOKIE = "z9hG4bK"


def transaction_key(request):
    """RFC 3261 §17.2.3, with the RFC 2543 fallback for branches without the cookie."""
    via = request.top_via
    branch = via.branch or ""
    method = request.method
    if branch.startswith(MAGIC_COOKIE):
        return (branch, via.sent_by, method)
    return (request.call_id, request.cseq[0], request.from_.tag, via.raw, method)


@dataclass
class _Entry:
    answer: bytes | None = None
    destination: object = None


class ServerTransactions:
    def __init__(self, timer_j: float = TIMER_J):
        self._timer_j = timer_j
        self._entries: dict = {}
        self._expiry_queue: deque = deque()

    def __len__(self):
        return len(self._entries)

    def begin(self, key) -> tuple[bool, bytes | None, object]:
        """Returns (is_new, cached answer or None, its destination)."""
        entry = self._entries.get(key)
        if entry is not None:
            return False, entry.answer, entry.destination
        self._entries[key] = _Entry()
        return True, None, None

    def complete(self, key, answer: bytes, destination, now: float, reliable: bool) -> None:
        if reliable:
            self._entries.pop(key, None)
            return
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.answer = answer
        entry.destination = destination
        self._expiry_queue.append((now + self._timer_j, key))

    def abandon(self, key) -> None:
        self._entries.pop(key, None)

    def expire(self, now: float) -> None:
        queue = self._expiry_queue
        while queue and queue[0][0] <= now:
            _, key = queue.popleft()
            self._entries.pop(key, None)
