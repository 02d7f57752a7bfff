"""The asyncio adapter that runs :class:`~registrar.sip.core.RegistrarCore` on sockets.

The event loop thread only moves bytes and actions: it feeds the core with the
wall-clock ``now`` (nonces and binding expiries are absolute times), sends what the
core answers, and hands database work to a single database thread. Nothing here
calls the ORM on the loop thread.

Group commit: REGISTERs that pass authentication queue up while one batch is being
committed; the next batch takes everything queued (up to SIP_COMMIT_BATCH), so under
load many REGISTERs share one transaction, and each is answered when its batch has
committed — a 200 OK always means the binding is durable.
"""
import asyncio
import itertools
import logging
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections, connections

from registrar import events, live, services, sipconfig
from registrar.metrics import WorkerCounters
from registrar.sip.client import T1 as CLIENT_T1
from registrar.oauth_client import TokenVerifier
from registrar.sip.bearer_auth import VerifyToken
from registrar.sip.client import Answered, TimedOut
from registrar.sip.core import (BanSource, RecordAttempt, RegistrarCore, SendMessage, Source, StoreRegistration,
                                TraceMessage)
from registrar.sip.errors import SipError
from registrar.sip import stun
from registrar.sip.framing import KeepAlive, StreamFramer
from registrar.sip.proxy import CallProgress, LookupCallee, LookupContact
from registrar.sip.regevent import StoreSubscription
from registrar.worker import qualify, tunnel
from registrar.worker.calls import CallRouter
from registrar.worker.subscriptions import RegEventNotifier
from registrar.worker.trunks import TrunkManager

log = logging.getLogger("regis.sip")

POLL_INTERVAL = 0.5
# How often the worker writes its status row (health page, /metrics).
STATUS_INTERVAL = 5.0
MAX_DATAGRAM = 65535
# A flow may idle this long (phones keep NAT bindings open with CRLF pings well within it).
TCP_IDLE_TIMEOUT = 900.0
# A message started must be complete within this: slow senders cannot hold buffers open.
TCP_MESSAGE_TIMEOUT = 10.0
MAX_TCP_CONNECTIONS = 10_000
MAX_TCP_CONNECTIONS_PER_SOURCE = 100


def _db_job(function, *args):
    """Run ``function`` in the database thread with a usable connection."""
    close_old_connections()
    try:
        return function(*args)
    finally:
        close_old_connections()


class Listener:
    """Parses 'udp:HOST:PORT' / 'tcp:[::1]:PORT' / 'tls:HOST:PORT'. A tls: listener
    serves with its ``tls_context`` (an ssl.SSLContext; registrar.worker.tls makes it)."""

    TRANSPORTS = ("udp", "tcp", "tls")

    def __init__(self, text: str, tls_context=None):
        transport, _, rest = text.partition(":")
        host, _, port = rest.rpartition(":")
        if transport not in self.TRANSPORTS or not host or not port.isdigit():
            raise ValueError(f"listen address must look like udp:HOST:PORT, tcp:HOST:PORT or tls:HOST:PORT, "
                             f"not {text!r}")
        self.transport = transport
        self.host = host.strip("[]")
        self.port = int(port)
        self.tls_context = tls_context

    def __str__(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


class _UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, worker):
        self.worker = worker
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if len(data) > MAX_DATAGRAM:
            return
        if stun.might_be_stun(data):
            self._answer_stun(data, addr)
            return
        self.worker.feed(data, Source("udp", addr[0], addr[1], self))

    def _answer_stun(self, data, addr):
        """RFC 5626 §4.4.2 keep-alive: answered here, the SIP core never sees it."""
        answer = stun.binding_response(data, addr[0], addr[1])
        if answer is None or self.transport is None:
            return
        self.transport.sendto(answer, addr)
        status = 200 if answer[:2] == b"\x01\x01" else 420
        self.worker.counters.responses[("STUN Binding", status)] += 1

    def send(self, data, destination):
        if self.transport is not None:
            self.transport.sendto(data, (destination.ip, destination.port))

    def error_received(self, exc):
        log.debug("udp error: %s", exc)


class _TcpConnection(asyncio.Protocol):
    """One TCP flow. Bounded: the framer caps a message's size, a started message must
    complete within TCP_MESSAGE_TIMEOUT, an idle flow closes after TCP_IDLE_TIMEOUT, and
    the worker caps connections in all and per source address."""

    transport_name = "tcp"

    def __init__(self, worker):
        self.worker = worker
        self.framer = StreamFramer()
        self.transport = None
        self.source = None
        self.idle_timer = None
        self.message_timer = None
        self.carried = False  # whether a SIP message came (a tunnel hello must come first)
        self.tunnelled = False  # a browser's websocket tunnelled from the web process (tunnel.py)

    def connection_made(self, transport):
        self.transport = transport
        ip, port = transport.get_extra_info("peername")[:2]
        self.source = Source(self.transport_name, ip, port, self, self.worker.new_flow_name(self.transport_name))
        if not self.worker.accept_connection(self):
            # Refused before it carried anything: nothing to end when it goes.
            self.source = None
            transport.abort()
            return
        self._touch()

    def _touch(self):
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.idle_timer = asyncio.get_running_loop().call_later(self.worker.tcp_idle_timeout, self.close)

    def data_received(self, data):
        self._touch()
        try:
            frames = self.framer.feed(data)
        except SipError as error:
            log.info("closing tcp %s:%s: %s", self.source.ip, self.source.port, error.reason)
            self.close()
            return
        if self.framer.partial and self.message_timer is None:
            self.message_timer = asyncio.get_running_loop().call_later(self.worker.tcp_message_timeout, self.close)
        elif not self.framer.partial and self.message_timer is not None:
            self.message_timer.cancel()
            self.message_timer = None
        for frame in frames:
            if isinstance(frame, KeepAlive):
                self.transport.write(b"\r\n")
            elif frame.startswith(tunnel.HELLO_START):
                if not tunnel.open_tunnel(self.worker, self, frame):
                    self.close()
                    return
            else:
                self.carried = True
                self.worker.feed(frame, self.source)

    def send(self, data, destination):
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self):
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc):
        for timer in (self.idle_timer, self.message_timer):
            if timer is not None:
                timer.cancel()
        self.worker.connection_closed(self)
        self.transport = None


class _TlsConnection(_TcpConnection):
    """One TLS flow: a TCP flow whose bytes asyncio has already decrypted. It exists
    only once the handshake succeeded, so a failed handshake or a plain-TCP client on
    the TLS port never reaches the worker (asyncio closes it, bounded by the
    handshake timeout)."""

    transport_name = "tls"


UDP_RECEIVE_BUFFER = 8 * 1024 * 1024


def _enlarge_receive_buffer(sock) -> None:
    """Room for a burst (an avalanche of phones after an outage) while a batch commits;
    the kernel caps it at net.core.rmem_max."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
    except OSError:
        pass


def _own_addresses(listeners):
    """Addresses that are this server: never banned or rate-limited."""
    addresses = {listener.host for listener in listeners}
    if addresses & {"0.0.0.0", "::"}:
        addresses |= {"127.0.0.1", "::1"}
    return addresses


def _advertised(host: str) -> str:
    """The host others reach a listener at (Via and Record-Route of forwarded calls)."""
    if host in ("0.0.0.0", "::", ""):
        return settings.SIP_ADVERTISED_HOST or "127.0.0.1"
    return host


def _record_failures(attempts, bans, traced):
    """Attempts, bans and traced messages: what is written after the answer, in one job."""
    if attempts:
        services.record_attempts(attempts)
    if bans:
        services.ban_sources(bans)
    if traced:
        services.record_trace(traced)


def _registration_events(batch, outcomes, now):
    published = []
    for item, outcome in zip(batch, outcomes):
        if not outcome.ok:
            continue
        origin, user = item.origin, item.register.user
        for state in outcome.upserts:
            published.append(events.registration_changed(
                "registered", user, state.contact_uri, origin.source_ip, origin.source_port, origin.transport,
                origin.user_agent, state.expires_at, now))
        for contact in outcome.removals:
            published.append(events.registration_changed(
                "unregistered", user, contact, origin.source_ip, origin.source_port, origin.transport,
                origin.user_agent, None, now))
    return published


class SipWorker:
    def __init__(self, listeners, *, realm: str, secret: bytes, commit_batch: int = 500, announce=print,
                 tcp_message_timeout: float = TCP_MESSAGE_TIMEOUT, tcp_idle_timeout: float = TCP_IDLE_TIMEOUT,
                 max_tcp_per_source: int = MAX_TCP_CONNECTIONS_PER_SOURCE, reuse_port: bool = False,
                 client_t1: float = CLIENT_T1, trunks: bool = True):
        self.reuse_port = reuse_port
        self.runs_trunks = trunks
        self.tcp_message_timeout = tcp_message_timeout
        self.tcp_idle_timeout = tcp_idle_timeout
        self.max_tcp_per_source = max_tcp_per_source
        self.listeners = [Listener(text) if isinstance(text, str) else text for text in listeners]
        self.commit_batch = commit_batch
        self.announce = announce
        self.credentials = {}
        self.core = RegistrarCore(realm=realm, secret=secret, credentials=self._lookup_credentials,
                                  own_addresses=_own_addresses(self.listeners), client_t1=client_t1)
        self.connections = set()
        self.connections_per_source = {}
        self.db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="regis-db")
        self._store_queue = []
        self._attempt_queue = []
        self._ban_queue = []
        self._trace_queue = []
        self._storing = False
        self._recording = False
        self._versions = None
        self._servers = []
        self._stopping = None
        self.loop = None
        self.stats = {"received": 0, "errors": 0, "batches": 0, "stored": 0}
        self.counters = WorkerCounters()
        self.started_at = time.time()
        self.hostname = socket.gethostname()
        self._flow_serial = itertools.count(1)
        self._ended_flows = []
        self._ending_flows = False
        self._open_flows = set()
        self._ticker = None
        self._ticker_due = 0.0
        self.tokens = TokenVerifier()
        self.tunnel_key = tunnel.tunnel_key()

    def _lookup_credentials(self, user):
        return self.credentials.get(user)

    def accept_connection(self, connection) -> bool:
        ip = connection.source.ip
        if (len(self.connections) >= MAX_TCP_CONNECTIONS
                or self.connections_per_source.get(ip, 0) >= self.max_tcp_per_source
                or self.core.guard.is_banned(ip, time.time())):
            return False
        self.connections.add(connection)
        self._open_flows.add(connection.source.flow)
        self.connections_per_source[ip] = self.connections_per_source.get(ip, 0) + 1
        return True

    def new_flow_name(self, transport: str) -> str:
        return services.flow_name(self.hostname, os.getpid(), transport, next(self._flow_serial))

    def connection_closed(self, connection) -> None:
        if connection.source is not None:
            self._perform(self.core.connection_lost(connection))
            if not connection.tunnelled:  # a tunnel's bindings end with its websocket, in the web process
                self._ended_flows.append(connection.source.flow)
                if not self._ending_flows:
                    self._start_ending_flows()
        if connection in self.connections:
            self.connections.discard(connection)
            self._open_flows.discard(connection.source.flow)
            ip = connection.source.ip
            remaining = self.connections_per_source.get(ip, 1) - 1
            if remaining:
                self.connections_per_source[ip] = remaining
            else:
                self.connections_per_source.pop(ip, None)

    # -- bytes in, actions out ---------------------------------------------------------
    def feed(self, data: bytes, source: Source) -> None:
        self.stats["received"] += 1
        arrived = time.monotonic()
        try:
            actions = self.core.receive(data, source, time.time())
        except Exception:
            # The worker never dies on a packet; the traceback says what to fix.
            self.stats["errors"] += 1
            log.exception("unhandled error on a message from %s:%s", source.ip, source.port)
            return
        self.counters.received(actions, arrived, time.monotonic())
        self._perform(actions)
        self._schedule_tick()  # a call's transactions may have started timers

    def _perform(self, actions) -> None:
        for action in actions:
            if isinstance(action, SendMessage):
                destination = action.destination
                if destination.connection is None:
                    continue  # a phone whose connection is gone: its transaction times out
                destination.connection.send(action.data, destination)
                self.counters.sent(action.data)
            elif isinstance(action, LookupCallee):
                self.calls.lookup(action)
            elif isinstance(action, CallProgress):
                self.calls.progress(action)
            elif isinstance(action, LookupContact):
                self._lookup_contact(action)
            elif isinstance(action, StoreRegistration):
                self._store_queue.append(action)
            elif isinstance(action, StoreSubscription):
                self.regevent.store(action)
            elif isinstance(action, RecordAttempt):
                self._attempt_queue.append(action.attempt)
            elif isinstance(action, BanSource):
                self._ban_queue.append(action.ban)
            elif isinstance(action, TraceMessage):
                self._trace_queue.append(action)
            elif isinstance(action, VerifyToken):
                asyncio.ensure_future(self._verify_token(action))
            elif isinstance(action, (Answered, TimedOut)):
                self._conclude(action)
        if self._store_queue and not self._storing:
            self._start_store_batch()
        if (self._attempt_queue or self._trace_queue) and not self._recording:
            self._start_attempt_flush()

    def _conclude(self, action) -> None:
        """A request of ours ended: its sender decides what follows. A failing sender must
        not cost the actions after it (the core has already forgotten them)."""
        try:
            if isinstance(action, Answered):
                action.context.answered(self, action)
            else:
                action.context.timed_out(self)
        except Exception:
            log.exception("handling the end of %r failed", action.context)

    async def _verify_token(self, question: VerifyToken) -> None:
        """Ask the authorization server (in the OAuth threads), then let the core go on."""
        verdict = await self.tokens.verdict(question.server, question.token)
        self._perform(self.core.token_verified(question.server.id, question.token, verdict, time.time()))

    # -- calls: the proxy's database reads and destinations (new calls: registrar.worker.calls) ----
    def _lookup_contact(self, action: LookupContact) -> None:
        future = self.loop.run_in_executor(self.db, _db_job, services.contact_binding, action.contact_uri)
        future.add_done_callback(lambda f: self._contact_read(action, f))

    def _contact_read(self, action: LookupContact, future) -> None:
        try:
            row = None if future.exception() is not None else future.result()
            target = None if row is None else self.calls.target(row)
            self._perform(self.core.contact_found(action.ticket, target, time.time()))
        except Exception:
            log.exception("routing an in-dialog request to %s failed", action.contact_uri)
        self._schedule_tick()

    def _destination(self, transport: str, ip: str, port: int):
        """A phone reached at its source address: from the UDP listener, or on the connection it
        holds open (nobody can connect to a phone behind NAT), a browser's on its websocket's
        tunnel from the web process (registrar.worker.tunnel); None when there is no way."""
        if transport == "udp":
            endpoint = self.udp_endpoint_for(socket.AF_INET6 if ":" in ip else socket.AF_INET)
            return Source("udp", ip, port, endpoint) if endpoint is not None else None
        if transport in ("tcp", "tls", "ws", "wss"):
            for connection in self.connections:
                source = connection.source
                if source is not None and (source.transport, source.ip, source.port) == (transport, ip, port):
                    return source
        return None

    # -- requests we send: client-transaction timers ----------------------------------------
    def send_request(self, *, data: bytes, destination: Source, branch: str, method: str, context) -> None:
        """Send a request of ours; ``context.answered(worker, Answered)`` or
        ``context.timed_out(worker)`` is called on the loop when it ends."""
        self._perform(self.core.send_request(data=data, destination=destination, branch=branch, method=method,
                                             context=context, now=time.time()))
        self._schedule_tick()

    def udp_endpoint_for(self, family):
        """The listening UDP endpoint for an address family (AF_INET / AF_INET6), or None."""
        want_v6 = family == socket.AF_INET6
        for listening in self._servers:
            if not hasattr(listening, "sendto") or listening.is_closing():
                continue
            sockname = listening.get_extra_info("sockname")
            if sockname is not None and (":" in sockname[0]) == want_v6:
                return listening.get_protocol()
        return None

    def _schedule_tick(self) -> None:
        deadline = self.core.next_deadline()
        if deadline is None:
            return
        delay = max(0.0, deadline - time.time())
        due = self.loop.time() + delay
        # Kept ourselves: uvloop's call_later(0, ...) gives a plain Handle, without when().
        if self._ticker is not None and self._ticker_due <= due:
            return
        if self._ticker is not None:
            self._ticker.cancel()
        self._ticker = self.loop.call_later(delay, self._tick)
        self._ticker_due = due

    def _tick(self) -> None:
        self._ticker = None
        try:
            self._perform(self.core.tick(time.time()))
        except Exception:
            log.exception("client transaction timers failed")
        self._schedule_tick()

    # -- connections that close end their flows' bindings ---------------------------------
    def _start_ending_flows(self) -> None:
        flows, self._ended_flows = self._ended_flows, []
        self._ending_flows = True
        future = self.loop.run_in_executor(self.db, _db_job, services.end_flows, flows)
        future.add_done_callback(self._flows_ended)

    def _flows_ended(self, future) -> None:
        self._ending_flows = False
        if future.exception() is not None:
            log.error("ending the bindings of closed connections failed: %r", future.exception())
        if self._ended_flows:
            self._start_ending_flows()

    def _start_store_batch(self) -> None:
        batch = self._store_queue[: self.commit_batch]
        del self._store_queue[: self.commit_batch]
        self._storing = True
        future = self.loop.run_in_executor(self.db, _db_job, services.store_registrations, batch, time.time())
        future.add_done_callback(lambda f: self._store_done(batch, f))

    def _store_done(self, batch, future) -> None:
        self._storing = False
        now = time.time()
        self.counters.answered([item.ticket for item in batch], time.monotonic())
        error = future.exception()
        actions = []
        if error is not None:
            log.error("storing %d registrations failed: %r", len(batch), error)
            for item in batch:
                actions.extend(self.core.registration_failed(item.ticket, now))
        else:
            self.stats["batches"] += 1
            self.stats["stored"] += len(batch)
            outcomes = future.result()
            for item, outcome in zip(batch, outcomes):
                actions.extend(self.core.registration_stored(item.ticket, outcome, now))
            live.publish_from_loop(_registration_events(batch, outcomes, now))
            self.regevent.nudge(batch, outcomes)
            # A connection that closed while its REGISTER waited for this batch was ended
            # before the binding existed: end it again now that it does.
            late = {item.origin.flow for item in batch if item.origin.flow and item.origin.flow not in self._open_flows}
            if late:
                self._ended_flows.extend(late)
                if not self._ending_flows:
                    self._start_ending_flows()
        self._perform(actions)
        if self._store_queue and not self._storing:
            self._start_store_batch()

    def _start_attempt_flush(self) -> None:
        attempts, self._attempt_queue = self._attempt_queue, []
        bans, self._ban_queue = self._ban_queue, []
        traced, self._trace_queue = self._trace_queue, []
        self._recording = True
        future = self.loop.run_in_executor(self.db, _db_job, _record_failures, attempts, bans, traced)
        future.add_done_callback(lambda f: self._attempts_done(attempts, f))

    def _attempts_done(self, attempts, future) -> None:
        self._recording = False
        if future.exception() is not None:
            log.error("recording auth attempts failed: %r", future.exception())
        else:
            live.publish_from_loop([events.attempt_recorded(attempt) for attempt in attempts])
        if self._attempt_queue or self._trace_queue:
            self._start_attempt_flush()

    # -- caches kept in step with the database ------------------------------------------
    async def refresh_caches(self) -> None:
        changes = await self.loop.run_in_executor(self.db, _db_job, sipconfig.changes_since, self._versions)
        if changes.credentials is not None:
            self.credentials = changes.credentials
            log.info("credentials cache loaded: %d extensions", len(changes.credentials))
        if changes.policy is not None:
            self.core.set_policy(changes.policy)
            log.info("policy loaded: %s", changes.policy)
        if changes.bans is not None:
            self.core.set_bans(changes.bans)
        if changes.oauth is not None:
            self.core.set_oauth(*changes.oauth, cache_seconds=settings.OAUTH_CACHE_SECONDS)
        # Last: if applying failed, the same changes are read and applied again.
        self._versions = changes.versions

    def status_report(self) -> dict:
        return {"hostname": socket.gethostname(), "pid": os.getpid(),
                "listeners": [str(listener) for listener in self.listeners], "started_at": self.started_at,
                "stats": dict(self.stats), "credentials": len(self.credentials),
                "connections": len(self.connections), "counters": self.counters.as_dict()}

    async def _poll_forever(self) -> None:
        next_report = 0.0
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                await self.refresh_caches()
                if time.monotonic() >= next_report:
                    next_report = time.monotonic() + STATUS_INTERVAL
                    await self.loop.run_in_executor(self.db, _db_job, services.record_worker_status,
                                                    self.status_report())
            except Exception:
                log.exception("reading changes from the database failed; retrying")
            try:
                self.core.expire(time.time())
            except Exception:
                log.exception("expiring server transactions failed")

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.regevent = RegEventNotifier(self)
        await self.refresh_caches()
        ended = await self.loop.run_in_executor(self.db, _db_job, services.end_orphaned_flows, self.hostname)
        if ended:
            log.info("ended %d bindings whose connections closed with an earlier process", ended)
        self.calls = CallRouter(self)
        await self.calls.start()
        for listener in self.listeners:
            if listener.transport == "udp":
                transport, _ = await self.loop.create_datagram_endpoint(
                    lambda: _UdpEndpoint(self), local_addr=(listener.host, listener.port),
                    reuse_port=self.reuse_port or None)
                _enlarge_receive_buffer(transport.get_extra_info("socket"))
                if listener.port == 0:
                    listener.port = transport.get_extra_info("sockname")[1]
                self._servers.append(transport)
            else:
                tls = {}
                if listener.transport == "tls":
                    if listener.tls_context is None:
                        raise ValueError(f"{listener} has no certificate (registrar.worker.tls.server_context)")
                    # A client that never completes its handshake holds a socket no longer
                    # than one that never completes a message.
                    tls = {"ssl": listener.tls_context, "ssl_handshake_timeout": self.tcp_message_timeout}
                flow_class = _TlsConnection if listener.transport == "tls" else _TcpConnection
                server = await self.loop.create_server(
                    lambda flow_class=flow_class: flow_class(self), listener.host, listener.port,
                    reuse_address=True, reuse_port=self.reuse_port or None, **tls)
                if listener.port == 0:
                    listener.port = server.sockets[0].getsockname()[1]
                self._servers.append(server)
        self.core.proxy.set_listeners(
            [(listener.transport, _advertised(listener.host), listener.port) for listener in self.listeners])
        self._poller = asyncio.ensure_future(self._poll_forever())
        await self.regevent.start()
        self.qualifier = qualify.Qualifier(self)
        self.qualifier.start()
        self.trunks = TrunkManager(self)
        if self.runs_trunks:
            self.trunks.start()

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        await self.qualifier.stop()
        await self.regevent.stop()
        await self.trunks.stop()
        self._poller.cancel()
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            connection.close()
        deadline = time.monotonic() + 5
        while ((self._storing or self._recording or self._store_queue or self._ending_flows or self._ended_flows
                or self.calls.busy) and time.monotonic() < deadline):
            await asyncio.sleep(0.05)
        try:
            await self.loop.run_in_executor(self.db, _db_job, services.forget_worker_status, socket.gethostname(),
                                            os.getpid())
        except Exception:
            log.warning("could not remove this worker's status row", exc_info=True)
        await self.loop.run_in_executor(self.db, connections.close_all)
        self.db.shutdown(wait=True)
        self.tokens.shutdown()

    async def run(self) -> None:
        await self.start()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(signum, stop.set)
        self.announce("Regis SIP ready: " + " ".join(str(listener) for listener in self.listeners))
        await stop.wait()
        self.announce("Regis SIP stopping")
        await self.stop()
