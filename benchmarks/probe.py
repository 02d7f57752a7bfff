"""A latency probe beside the load: whole registration flows (REGISTER → 401 →
REGISTER with digest → 200) timed from their scheduled start.

Lean on purpose and independent of the project's SIP code, like
``tests/e2e.SipClient``: it computes its own MD5 digest (RFC 2617/7616, qop=auth). It
retransmits like a phone (T1 = 0.5 s, doubling) so that a lost datagram shows up as
latency, and gives up on a transaction after ``TRANSACTION_TIMEOUT`` (the flow then
counts as failed).

Flows start on a fixed schedule (``rate`` per second) whether or not earlier ones
have finished, each on its own task of an asyncio loop in a thread, and each is timed
from the moment it was due. A probe that waited for each flow before starting the
next would take fewer samples exactly when the server is slow and so understate the
tail ("coordinated omission").
"""
import asyncio
import hashlib
import math
import re
import secrets
import socket
import threading

T1 = 0.5
TRANSACTION_TIMEOUT = 4.0
_CHALLENGE = re.compile(rb"(?im)^WWW-Authenticate\s*:\s*Digest\s+(.*)$")
_PARAM = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')
_CALL_ID = re.compile(rb"(?im)^(?:Call-ID|i)\s*:\s*(\S+)")
_CSEQ = re.compile(rb"(?im)^CSeq\s*:\s*(\d+)")


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _challenge(data: bytes) -> dict | None:
    for match in _CHALLENGE.finditer(data):
        params = {name.lower(): value.strip('"') for name, value in _PARAM.findall(match.group(1).decode())}
        if params.get("algorithm", "MD5").upper() == "MD5":
            return params
    return None


class _Failed(Exception):
    pass


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, pending: dict):
        self.pending = pending

    def datagram_received(self, data, addr):
        if data.startswith(b"SIP/2.0 1"):
            return  # provisional
        call_id, cseq = _CALL_ID.search(data), _CSEQ.search(data)
        if call_id and cseq:
            future = self.pending.get((call_id.group(1), int(cseq.group(1))))
            if future is not None and not future.done():
                future.set_result(data)


class Probe(threading.Thread):
    """Runs flows for ``users`` (round robin) at ``rate`` flows per second until stopped."""

    def __init__(self, server: tuple, users: list, password: str, *, domain: str, rate: float = 20.0,
                 host: str = "127.0.0.1"):
        super().__init__(daemon=True, name="latency-probe")
        self.server = server
        self.users = users
        self.password = password
        self.domain = domain
        self.rate = rate
        self.host = host
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._pending = {}
        self.latencies = []   # seconds, successful flows
        self.failures = []    # short reasons
        self.retransmissions = 0

    # -- control (from other threads) ---------------------------------------------------
    def take(self) -> tuple[list, list, int]:
        """The latencies, failures and retransmissions since the last call (and reset)."""
        with self._lock:
            taken = self.latencies, self.failures, self.retransmissions
            self.latencies, self.failures, self.retransmissions = [], [], 0
        return taken

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=TRANSACTION_TIMEOUT * 3)

    # -- the probe's own loop -------------------------------------------------------------
    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Endpoint(self._pending), sock=self.sock)
        self._transport = transport
        tasks = set()
        interval = 1.0 / self.rate
        due = loop.time()
        count = 0
        try:
            while not self._halt.is_set():
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(min(delay, 0.1))
                    continue
                user = self.users[count % len(self.users)]
                count += 1
                task = asyncio.ensure_future(self._flow(user, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                due += interval
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            transport.close()

    async def _flow(self, user: str, due: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self._register_flow(user)
        except _Failed as failure:
            self._record(None, str(failure))
            return
        self._record(loop.time() - due, None)

    def _record(self, latency, failure) -> None:
        with self._lock:
            if failure is None:
                self.latencies.append(latency)
            else:
                self.failures.append(failure)

    async def _register_flow(self, user: str) -> None:
        call_id = f"{secrets.token_hex(10)}@{self.host}"
        tag = secrets.token_hex(5)
        first = await self._transaction(self._register(user, call_id, tag, 1, None), call_id, 1)
        if not first.startswith(b"SIP/2.0 401"):
            raise _Failed("first answer " + first.split(b"\r\n", 1)[0].decode(errors="replace"))
        challenge = _challenge(first)
        if challenge is None:
            raise _Failed("no MD5 challenge")
        uri = f"sip:{self.domain}"
        cnonce = secrets.token_hex(8)
        ha1 = _md5(f"{user}:{challenge['realm']}:{self.password}")
        ha2 = _md5(f"REGISTER:{uri}")
        response = _md5(f"{ha1}:{challenge['nonce']}:00000001:{cnonce}:auth:{ha2}")
        authorization = (f'Digest username="{user}", realm="{challenge["realm"]}", nonce="{challenge["nonce"]}", '
                         f'uri="{uri}", response="{response}", algorithm=MD5, qop=auth, nc=00000001, '
                         f'cnonce="{cnonce}"')
        if "opaque" in challenge:
            authorization += f', opaque="{challenge["opaque"]}"'
        final = await self._transaction(self._register(user, call_id, tag, 2, authorization), call_id, 2)
        if not final.startswith(b"SIP/2.0 200"):
            raise _Failed("second answer " + final.split(b"\r\n", 1)[0].decode(errors="replace"))

    def _register(self, user, call_id, tag, cseq, authorization) -> bytes:
        lines = [
            f"REGISTER sip:{self.domain} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{self.domain}>;tag={tag}",
            f"To: <sip:{user}@{self.domain}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} REGISTER",
            f"Contact: <sip:{user}@{self.host}:{self.port}>",
            "Expires: 3600",
        ]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        lines += ["User-Agent: regis-bench-probe", "Content-Length: 0"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def _transaction(self, request: bytes, call_id: str, cseq: int) -> bytes:
        """Send, retransmit on T1 doubling, return the first final answer to this request."""
        loop = asyncio.get_running_loop()
        key = (call_id.encode(), cseq)
        future = loop.create_future()
        self._pending[key] = future
        deadline = loop.time() + TRANSACTION_TIMEOUT
        wait = T1
        try:
            self._transport.sendto(request, self.server)
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise _Failed(f"no answer to CSeq {cseq} within {TRANSACTION_TIMEOUT:.0f} s")
                try:
                    return await asyncio.wait_for(asyncio.shield(future), min(wait, remaining))
                except asyncio.TimeoutError:
                    if deadline - loop.time() <= 0:
                        continue
                    self._transport.sendto(request, self.server)
                    with self._lock:
                        self.retransmissions += 1
                    wait *= 2
        finally:
            self._pending.pop(key, None)


def percentile(values, fraction):
    """Nearest-rank percentile (``fraction`` in 0..1) of ``values``; None when empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = math.ceil(round(fraction * len(ordered), 9))
    return ordered[min(len(ordered), max(1, rank)) - 1]
