"""Contact qualify: runsip pings every registered contact with OPTIONS (RFC 3261 §11).

The :class:`Qualifier` owns the pinging and nothing else. Every ``qualify_interval``
seconds (soft parameter 106; 0 turns it off) it reads the live bindings in the database
thread and pings each once, the pings spread evenly over the interval and at most
:data:`MAX_PINGS_PER_TICK` at a time, so ten thousand phones never get their OPTIONS in
one burst. A binding whose previous ping is still waiting for its answer is not pinged
again.

A phone is reached where its REGISTER came from (the binding's source address and
transport), never at its Contact: behind NAT the Contact names a private address, and
only the public address and port the NAT opened for the phone's own traffic lead back.
Over UDP the ping leaves from the listening socket (the NAT lets in only what comes from
the address the phone sent to); over TCP and TLS it goes on the phone's still-open
connection, and when none is open that counts as a miss (nobody can connect to a phone
behind NAT). Websocket bindings are skipped: the web process holds their connections.

Any final response counts as an answer: a 404, 405 or 481 still proves something is
listening at that address. ``qualify_max_misses`` (soft parameter 107) unanswered pings in
a row make the contact unreachable; the next answer makes it reachable again. Outcomes
are stored in batches through :func:`registrar.services.record_qualify_results`.

When several processes share the ports (SO_REUSEPORT, ``runsip --workers N``) a process
cannot tell which phones the kernel steers to it, and an answer reaching another process
would look like a miss; there each process pings only the TCP/TLS phones whose
connections it holds itself.
"""
import asyncio
import itertools
import logging
import secrets
import time

from django.conf import settings

from registrar import services
from registrar.sip.client import new_branch, new_tag
from registrar.sip.core import Source
# As a module: the server module imports this one, and only needs it once both are loaded.
from registrar.worker import background, server

log = logging.getLogger("regis.sip.qualify")

# How often the pinger wakes to send the pings that are due, in seconds.
TICK = 0.1
MAX_PINGS_PER_TICK = 50
# How often, at most, a change of the soft parameters is noticed while waiting.
POLICY_RECHECK = 1.0
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


class Ping:
    """One OPTIONS in flight: the context the worker hands back with its answer or timeout."""

    def __init__(self, qualifier, target: services.QualifyTarget):
        self.qualifier = qualifier
        self.target = target

    def answered(self, worker, answered) -> None:
        self.qualifier.finished(self, answered.elapsed * 1000.0)

    def timed_out(self, worker) -> None:
        self.qualifier.finished(self, None)


def _via_host(host: str) -> str:
    if host in WILDCARD_HOSTS:
        host = settings.SIP_ADVERTISED_HOST or "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def options_request(target: services.QualifyTarget, *, via_transport: str, via_host: str, via_port: int,
                    branch: str, domain: str, call_id: str, cseq: int) -> bytes:
    lines = [
        f"OPTIONS {target.contact_uri} SIP/2.0",
        f"Via: SIP/2.0/{via_transport.upper()} {via_host}:{via_port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:regis@{domain}>;tag={new_tag()}",
        f"To: <{target.contact_uri}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} OPTIONS",
        "Accept: application/sdp",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Qualifier:
    def __init__(self, worker, *, domain: str | None = None):
        self.worker = worker
        self.domain = domain or settings.SIP_DOMAIN
        self.in_flight: dict[int, Ping] = {}
        self._results: list[services.QualifyResult] = []
        self._writing = False
        self._cseq = itertools.count(1)
        self._task = None
        self._connections = {}
        self._connections_at = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        await background.cancel(self._task)
        deadline = time.monotonic() + 5
        while (self._writing or self._results) and time.monotonic() < deadline:
            if not self._writing:
                self._write_results()
            await asyncio.sleep(0.05)

    # -- the rounds --------------------------------------------------------------------
    @property
    def interval(self) -> int:
        return self.worker.core.policy.qualify_interval

    async def _run(self) -> None:
        while True:
            interval = self.interval
            if interval <= 0:
                await asyncio.sleep(POLICY_RECHECK)
                continue
            try:
                await self._round(interval)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A failed round (database unavailable) is retried; qualify never stops the worker.
                log.exception("a qualify round failed")
                await asyncio.sleep(min(interval, 5))

    async def _round(self, interval: int) -> None:
        loop = self.worker.loop
        started = loop.time()
        targets = await loop.run_in_executor(self.worker.db, server._db_job, services.qualify_targets)
        spacing = interval / max(len(targets), 1)
        sent = 0
        while sent < len(targets):
            if self.interval != interval:
                return
            due = min(int((loop.time() - started) / spacing) + 1, len(targets))
            for target in targets[sent:min(due, sent + MAX_PINGS_PER_TICK)]:
                self.ping(target)
                sent += 1
            if sent < len(targets):
                next_slot = started + sent * spacing
                await asyncio.sleep(min(max(TICK, next_slot - loop.time()), POLICY_RECHECK))
        while loop.time() < started + interval and self.interval == interval:
            await asyncio.sleep(min(POLICY_RECHECK, started + interval - loop.time()))

    # -- one ping --------------------------------------------------------------------------
    def ping(self, target: services.QualifyTarget) -> None:
        if target.binding_id in self.in_flight:
            return
        shared_ports = self.worker.reuse_port
        if target.transport == "udp":
            if shared_ports:
                return
            endpoint = self._udp_endpoint(target.source_ip)
            if endpoint is None:
                return
            destination = Source("udp", target.source_ip, target.source_port, endpoint.get_protocol())
            local_host, local_port = endpoint.get_extra_info("sockname")[:2]
        else:
            connection = self._connection(target)
            if connection is None:
                if not shared_ports:
                    self._record(target, None)
                return
            destination = connection.source
            local_host, local_port = connection.transport.get_extra_info("sockname")[:2]
        branch = new_branch()
        data = options_request(target, via_transport=target.transport, via_host=_via_host(local_host),
                               via_port=local_port, branch=branch, domain=self.domain,
                               call_id=f"{secrets.token_hex(12)}@regis", cseq=next(self._cseq))
        ping = Ping(self, target)
        self.in_flight[target.binding_id] = ping
        try:
            self.worker.send_request(data=data, destination=destination, branch=branch, method="OPTIONS",
                                     context=ping)
        except Exception:
            self.in_flight.pop(target.binding_id, None)
            log.exception("sending OPTIONS to %s:%s failed", target.source_ip, target.source_port)

    def _udp_endpoint(self, ip: str):
        """The listening UDP socket of the phone's address family (a phone reached over IPv4
        answers from IPv4)."""
        want_v6 = ":" in ip
        for listening in self.worker._servers:
            if not hasattr(listening, "sendto") or listening.is_closing():
                continue
            sockname = listening.get_extra_info("sockname")
            if sockname is not None and (":" in sockname[0]) == want_v6:
                return listening
        return None

    def _connection(self, target):
        """The open connection from the phone's source address, through an index rebuilt at
        most once a tick (a scan per ping would be quadratic with many phones on TCP)."""
        now = self.worker.loop.time()
        if self._connections_at is None or now - self._connections_at >= TICK:
            self._connections_at = now
            self._connections = {(c.source.transport, c.source.ip, c.source.port): c
                                 for c in self.worker.connections if c.source is not None}
        connection = self._connections.get((target.transport, target.source_ip, target.source_port))
        if connection is None or connection.transport is None or connection.transport.is_closing():
            return None
        return connection

    def finished(self, ping: Ping, rtt_ms: float | None) -> None:
        if self.in_flight.get(ping.target.binding_id) is ping:
            del self.in_flight[ping.target.binding_id]
        self._record(ping.target, rtt_ms)

    # -- outcomes to the database, in batches -------------------------------------------------
    def _record(self, target, rtt_ms) -> None:
        self._results.append(services.QualifyResult(target.binding_id, target.source_ip, target.source_port,
                                                    target.transport, time.time(), rtt_ms))
        if not self._writing:
            self._write_results()

    def _write_results(self) -> None:
        results, self._results = self._results, []
        self._writing = True
        future = self.worker.loop.run_in_executor(self.worker.db, server._db_job, services.record_qualify_results,
                                                  results, self.worker.core.policy.qualify_max_misses)
        future.add_done_callback(self._written)

    def _written(self, future) -> None:
        self._writing = False
        if future.exception() is not None:
            log.error("storing qualify results failed: %r", future.exception())
        if self._results:
            self._write_results()
