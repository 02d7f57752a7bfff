"""The web process's door to the registrar: SIP over WebSocket (RFC 7118).

One registrar, two doors. ``runsip`` serves UDP and TCP through
:mod:`registrar.worker.server`; the web process serves websockets through this
module. Both run the same sans-IO :class:`~registrar.sip.core.RegistrarCore` with the
same realm, nonce secret and services, so a phone gets the same answers, the same
recorded attempts and the same bans whichever door it comes through.

The door is process-wide and bound to the event loop that first used it (daphne runs
one). It owns no sockets: each websocket consumer hands it the frames it receives
(:meth:`WebSocketDoor.receive`) and is the ``connection`` of its :class:`Source`, so
answers go back through ``connection.send_sip(data)``.

Calls go through runsip: each websocket gets a :class:`Tunnel`, a TCP connection to
runsip (SIP_TUNNEL_ADDRESS) opened once a REGISTER on it is answered 2xx (so calls can
reach the browser) or when the first message to tunnel arrives, and closed with the
websocket. Call signalling — every request but REGISTER, SUBSCRIBE, PUBLISH and an OPTIONS
without Route, and every response (this door sends browsers no requests) — goes into the
tunnel unchanged, and whatever runsip sends back goes to the websocket; runsip's proxy
handles it as if the browser were its own TCP phone (:mod:`registrar.worker.tunnel` says
how). Without runsip, registration here goes on working and a request to tunnel gets 503.

Nothing here calls the ORM on the loop: database work goes through
``database_sync_to_async``, in one FIFO job queue, so a connection's bindings end
(``services.end_flows``) only after every REGISTER it sent before closing is stored.
REGISTERs queued together share one transaction (group commit), and each is answered
when its batch has committed. Credentials, policy and bans are re-read when their
version fingerprints change, checked at most every ``REFRESH_INTERVAL`` seconds before
a message is handled.
"""
import asyncio
import collections
import hashlib
import itertools
import logging
import os
import random
import re
import socket
import time

from channels.db import database_sync_to_async
from django.conf import settings

from registrar import events, live, services, sipconfig
from registrar.oauth_client import TokenVerifier
from registrar.sip.bearer_auth import VerifyToken
from registrar.sip.core import (BanSource, RecordAttempt, RegistrarCore, SendMessage, Source, StoreRegistration,
                                TraceMessage)
from registrar.sip.errors import SipError
from registrar.sip.framing import KeepAlive, StreamFramer
from registrar.sip.message import Request, parse_message
from registrar.sip.proxy import LookupCallee, LookupContact
from registrar.sip.regevent import StoreSubscription, SubscribeOutcome
from registrar.worker import tunnel as tunnel_contract
from registrar.worker.server import _record_failures, _registration_events

log = logging.getLogger("regis.sip.ws")

REFRESH_INTERVAL = 0.5
WEBSOCKET_SUBSCRIBE_REFUSAL = SubscribeOutcome(403, "Reg Event Subscriptions Need UDP, TCP or TLS")
# A flow of ours, ending: queued behind the REGISTERs that came before its close.
_END_FLOW = "end-flow"
# Tunnels: messages waiting for the connection, bytes waiting in its write buffer, how long
# a connection may take, how often an idle tunnel pings runsip (under runsip's idle timeout),
# and the longest wait before reconnecting a tunnel runsip closed.
MAX_TUNNEL_PENDING = 64
MAX_TUNNEL_BUFFER = 1 << 20
TUNNEL_CONNECT_TIMEOUT = 5.0
TUNNEL_KEEPALIVE = 120.0
MAX_TUNNEL_RECONNECT_DELAY = 30.0
TUNNEL_RETRY_AFTER = "5"
_DOOR_METHODS = frozenset({b"REGISTER", b"SUBSCRIBE", b"PUBLISH"})
_METHOD = re.compile(rb"[A-Za-z]+")
_ROUTE = re.compile(rb"\r\nroute[ \t]*:", re.IGNORECASE)
_CONTENT_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)


def nonce_secret() -> bytes:
    """The secret runsip signs nonces with, so a nonce from one door is good at the other."""
    return hashlib.sha256(b"regis-sip-nonce:" + settings.SECRET_KEY.encode()).digest()


def tunnelled(data: bytes) -> bool:
    """Whether a message from a browser is call signalling, for runsip: every response, and
    every request but REGISTER, SUBSCRIBE, PUBLISH and an OPTIONS without Route."""
    if data.startswith(b"SIP/2.0 "):
        return True
    method = data.split(b" ", 1)[0]
    if not _METHOD.fullmatch(method) or method in _DOOR_METHODS:
        return False
    if method == b"OPTIONS":
        return bool(_ROUTE.search(data.partition(b"\r\n\r\n")[0]))
    return True


def stream_framed(data: bytes) -> bytes | None:
    """A websocket message as a stream needs it: Content-Length is optional on websockets
    (RFC 7118 §5.2) and required on TCP, where a wrong one would put the tunnel out of step.
    None for a message whose Content-Length disagrees with its body."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return None
    lengths = {value.strip() for value in _CONTENT_LENGTH.findall(head)}
    if not lengths:
        return head + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    if lengths == {str(len(body)).encode()}:
        return data
    return None


class Tunnel(asyncio.Protocol):
    """One websocket's connection to runsip: its call signalling in both directions.

    Bounded: at most MAX_TUNNEL_PENDING messages wait for the connection, at most
    MAX_TUNNEL_BUFFER bytes for runsip to read (then the tunnel closes), runsip's messages
    are cut by a StreamFramer, and the websocket's own outbox bounds what goes to the browser."""

    def __init__(self, door, source: Source):
        self.door = door
        self.source = source
        self.transport = None
        self.connecting = None
        self.pending = collections.deque()
        self.framer = StreamFramer()
        self.ended = False  # the websocket closed
        self.wanted = False  # the browser registered: keep a tunnel for calls to it
        self.reconnect_delay = 1.0
        self.timer = None

    # -- from the door -----------------------------------------------------------------------
    def registered(self) -> None:
        """A REGISTER of this websocket was answered 2xx: calls may now come to it."""
        self.wanted = True
        self.open()

    def send(self, data: bytes) -> None:
        """A message from the browser for runsip."""
        framed = stream_framed(data)
        if framed is None:
            log.info("dropping a message from ws %s:%s: Content-Length does not match its body",
                     self.source.ip, self.source.port)
            return
        if self.transport is not None and not self.transport.is_closing():
            self._write(framed)
            return
        if not _is_request(framed) or framed.startswith(b"ACK "):
            return  # nothing to answer, and nothing in runsip waits for it on a tunnel that is gone
        if len(self.pending) >= MAX_TUNNEL_PENDING:
            self.door.refuse(framed, self.source)
            return
        self.pending.append(framed)
        self.open()

    def open(self) -> None:
        if self.ended or self.transport is not None or self.connecting is not None:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.connecting = self.door.loop.create_task(self._connect())

    def close(self) -> None:
        self.ended = True
        self.pending.clear()
        for handle in (self.timer, self.connecting):
            if handle is not None:
                handle.cancel()
        self.timer = self.connecting = None
        if self.transport is not None:
            self.transport.close()

    # -- the connection ----------------------------------------------------------------------
    async def _connect(self) -> None:
        host, port = self.door.tunnel_address
        try:
            await asyncio.wait_for(self.door.loop.create_connection(lambda: self, host, port),
                                   TUNNEL_CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as error:
            # Once per outage per websocket: retries after the first say nothing new.
            log.log(logging.INFO if self.reconnect_delay == 1.0 else logging.DEBUG,
                    "no tunnel to runsip at %s:%s for ws %s:%s: %s", host, port, self.source.ip, self.source.port,
                    error or type(error).__name__)
            self.connecting = None
            waiting, self.pending = list(self.pending), collections.deque()
            for data in waiting:
                self.door.refuse(data, self.source)
            self._retry_later()
            return
        self.connecting = None

    def connection_made(self, transport) -> None:
        if self.ended:
            transport.close()
            return
        self.transport = transport
        self.reconnect_delay = 1.0
        source = self.source
        peer = tunnel_contract.Peer(source.flow, source.transport, source.ip, source.port)
        transport.write(tunnel_contract.hello(self.door.tunnel_key, peer, time.time()))
        while self.pending and self.transport is not None:
            self._write(self.pending.popleft())
        self._arm_keepalive()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.framer.feed(data)
        except SipError as error:
            log.info("closing the tunnel of ws %s:%s: %s", self.source.ip, self.source.port, error.reason)
            self.transport.close()
            return
        for frame in frames:
            if not isinstance(frame, KeepAlive):  # runsip's pong
                self.source.connection.send_sip(frame)

    def connection_lost(self, exc) -> None:
        self.transport = None
        self.framer = StreamFramer()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.ended:
            log.info("the tunnel of ws %s:%s closed: %s", self.source.ip, self.source.port, exc or "by runsip")
            if self.pending:
                self.open()
            else:
                self._retry_later()

    def _write(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > MAX_TUNNEL_BUFFER:
            log.info("closing the tunnel of ws %s:%s: runsip reads nothing", self.source.ip, self.source.port)
            self.transport.close()

    def _retry_later(self) -> None:
        """A registered browser must stay reachable when runsip restarts: reconnect, backing off."""
        if self.ended or not self.wanted or self.timer is not None:
            return
        # Jittered: after a runsip restart, every registered browser's tunnel comes back, not all at once.
        self.timer = self.door.loop.call_later(self.reconnect_delay * random.uniform(0.5, 1.5), self._reconnect)
        self.reconnect_delay = min(self.reconnect_delay * 2, MAX_TUNNEL_RECONNECT_DELAY)

    def _reconnect(self) -> None:
        self.timer = None
        self.open()

    def _arm_keepalive(self) -> None:
        self.timer = self.door.loop.call_later(TUNNEL_KEEPALIVE, self._keepalive)

    def _keepalive(self) -> None:
        self.timer = None
        if self.transport is not None:
            self.transport.write(b"\r\n\r\n")  # RFC 5626 ping: keeps runsip's idle timer off
            self._arm_keepalive()


def _is_request(data: bytes) -> bool:
    return not data.startswith(b"SIP/2.0 ")


def _answers_register(data: bytes) -> bool:
    """Whether an answer the door sends is a 2xx to a REGISTER."""
    if not data.startswith(b"SIP/2.0 2"):
        return False
    match = re.search(rb"\r\ncseq[ \t]*:[ \t]*\d+[ \t]+REGISTER[ \t]*\r\n", data.partition(b"\r\n\r\n")[0] + b"\r\n",
                      re.IGNORECASE)
    return match is not None


def _tunnel_address(text: str):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"SIP_TUNNEL_ADDRESS must look like HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


class WebSocketDoor:
    def __init__(self, *, realm: str, secret: bytes, commit_batch: int = 500, max_per_source: int = 100):
        self.loop = asyncio.get_running_loop()
        self.hostname = socket.gethostname()
        self.commit_batch = commit_batch
        self.credentials = {}
        # Nothing is exempt from bans and rate limits: every websocket peer is a phone.
        self.core = RegistrarCore(realm=realm, secret=secret, credentials=self.credentials.get)
        self._versions = None
        self.tokens = TokenVerifier()
        self._checked_at = None
        self._refreshing = None
        # Bindings left by websockets of a dead web process on this host end at our start.
        self._orphans_ended = False
        self.max_per_source = max_per_source
        self.connections_per_source = {}
        self._flow_serial = itertools.count(1)
        self._jobs = []
        self._draining = False
        self._attempts, self._bans, self._traced = [], [], []
        self._recording = False
        self._tasks = set()
        self.tunnel_address = _tunnel_address(settings.SIP_TUNNEL_ADDRESS)
        self.tunnel_key = tunnel_contract.tunnel_key()
        self.tunnels = {}  # flow -> Tunnel

    # -- connections -------------------------------------------------------------------
    async def admits(self, ip: str) -> bool:
        """Whether a websocket from ``ip`` may open: not banned, not past its share of connections."""
        await self._ensure_fresh()
        return (not self.core.guard.is_banned(ip, time.time())
                and self.connections_per_source.get(ip, 0) < self.max_per_source)

    def new_source(self, transport: str, ip: str, port: int, connection) -> Source:
        """The Source of an accepted websocket, named as a flow; pair with :meth:`connection_closed`."""
        self.connections_per_source[ip] = self.connections_per_source.get(ip, 0) + 1
        flow = services.flow_name(self.hostname, os.getpid(), transport, next(self._flow_serial))
        source = Source(transport, ip, port, connection, flow)
        self.tunnels[flow] = Tunnel(self, source)
        return source

    async def receive(self, data: bytes, source: Source) -> None:
        """One SIP message from a websocket; answers go to ``source.connection.send_sip``."""
        tunnel = self.tunnels.get(source.flow)
        if tunnel is not None and tunnelled(data):
            tunnel.send(data)
            return
        await self._ensure_fresh()
        try:
            actions = self.core.receive(data, source, time.time())
        except Exception:
            # The web process never fails a connection on a message; the traceback says what to fix.
            log.exception("unhandled error on a message from %s:%s", source.ip, source.port)
            return
        self._perform(actions)

    def connection_closed(self, source: Source) -> None:
        """The websocket closed: its bindings end once its queued REGISTERs are stored."""
        remaining = self.connections_per_source.get(source.ip, 1) - 1
        if remaining > 0:
            self.connections_per_source[source.ip] = remaining
        else:
            self.connections_per_source.pop(source.ip, None)
        tunnel = self.tunnels.pop(source.flow, None)
        if tunnel is not None:
            tunnel.close()
        self._perform(self.core.connection_lost(source.connection))
        if source.flow:
            self._jobs.append((_END_FLOW, source.flow))
            self._start_draining()

    def refuse(self, data: bytes, source: Source) -> None:
        """A request runsip cannot be asked about (no tunnel): 503, try again later."""
        try:
            request = parse_message(data)
            if not isinstance(request, Request):
                return
            answer, _ = self.core._response_bytes(request, source, 503, "Service Unavailable",
                                                  (("Retry-After", TUNNEL_RETRY_AFTER),))
        except SipError:
            return
        source.connection.send_sip(answer)

    # -- actions -----------------------------------------------------------------------
    async def _verify_token(self, question: VerifyToken) -> None:
        verdict = await self.tokens.verdict(question.server, question.token)
        self._perform(self.core.token_verified(question.server.id, question.token, verdict, time.time()))

    def _perform(self, actions) -> None:
        for action in actions:
            if isinstance(action, SendMessage):
                if action.destination.connection is None:
                    continue  # routed by URI to a peer this door has no way to (calls go through runsip)
                action.destination.connection.send_sip(action.data)
                if _answers_register(action.data):
                    tunnel = self.tunnels.get(action.destination.flow)
                    if tunnel is not None:
                        tunnel.registered()
            elif isinstance(action, StoreRegistration):
                self._jobs.append(action)
            elif isinstance(action, RecordAttempt):
                self._attempts.append(action.attempt)
            elif isinstance(action, BanSource):
                self._bans.append(action.ban)
            elif isinstance(action, TraceMessage):
                self._traced.append(action)
            elif isinstance(action, VerifyToken):
                self._spawn(self._verify_token(action))
            elif isinstance(action, LookupCallee):
                # Calls go through the tunnel to runsip; none reaches this core's proxy (a
                # websocket without a flow would): nobody is reachable from here.
                self._perform(self.core.callee_found(action.ticket, [], time.time()))
            elif isinstance(action, LookupContact):
                self._perform(self.core.contact_found(action.ticket, None, time.time()))
            elif isinstance(action, StoreSubscription):
                # NOTIFYs are sent by runsip, which cannot reach a browser's websocket (the
                # web process holds it): refuse rather than accept a subscription nobody
                # would serve.
                self._perform(self.core.subscription_stored(action.ticket, WEBSOCKET_SUBSCRIBE_REFUSAL, time.time()))
            # Client-transaction outcomes (Answered, TimedOut): this door sends no requests yet.
        self._start_draining()
        if (self._attempts or self._bans or self._traced) and not self._recording:
            self._spawn(self._record())

    def _spawn(self, coroutine) -> None:
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_draining(self) -> None:
        if self._jobs and not self._draining:
            self._draining = True
            self._spawn(self._drain())

    async def _drain(self) -> None:
        """The database jobs in arrival order: a run of REGISTERs is one batch, a run of
        closed flows one ``end_flows`` call."""
        try:
            while self._jobs:
                if isinstance(self._jobs[0], StoreRegistration):
                    count = 0
                    while (count < len(self._jobs) and count < self.commit_batch
                           and isinstance(self._jobs[count], StoreRegistration)):
                        count += 1
                    batch, self._jobs = self._jobs[:count], self._jobs[count:]
                    await self._store(batch)
                else:
                    count = 0
                    while count < len(self._jobs) and not isinstance(self._jobs[count], StoreRegistration):
                        count += 1
                    flows, self._jobs = [flow for _, flow in self._jobs[:count]], self._jobs[count:]
                    try:
                        await database_sync_to_async(services.end_flows)(flows)
                    except Exception:
                        log.exception("ending the bindings of %d closed websockets failed", len(flows))
        finally:
            self._draining = False

    async def _store(self, batch) -> None:
        try:
            outcomes = await database_sync_to_async(services.store_registrations)(batch, time.time())
        except Exception:
            log.exception("storing %d registrations failed", len(batch))
            now = time.time()
            self._perform([action for item in batch for action in self.core.registration_failed(item.ticket, now)])
            return
        now = time.time()
        actions = []
        for item, outcome in zip(batch, outcomes):
            actions.extend(self.core.registration_stored(item.ticket, outcome, now))
        live.publish_from_loop(_registration_events(batch, outcomes, now))
        self._perform(actions)

    async def _record(self) -> None:
        self._recording = True
        try:
            while self._attempts or self._bans or self._traced:
                attempts, self._attempts = self._attempts, []
                bans, self._bans = self._bans, []
                traced, self._traced = self._traced, []
                try:
                    await database_sync_to_async(_record_failures)(attempts, bans, traced)
                except Exception:
                    log.exception("recording %d auth attempts failed", len(attempts))
                    continue
                live.publish_from_loop([events.attempt_recorded(attempt) for attempt in attempts])
        finally:
            self._recording = False

    # -- caches kept in step with the database -----------------------------------------
    async def _ensure_fresh(self) -> None:
        if self._checked_at is not None and time.monotonic() - self._checked_at < REFRESH_INTERVAL:
            return
        if self._refreshing is None:
            self._refreshing = self.loop.create_task(self._refresh())
        refreshing = self._refreshing
        try:
            await asyncio.shield(refreshing)
        except Exception:
            # A database hiccup: go on with what is cached (an empty cache only challenges).
            log.exception("reading changes from the database failed")

    async def _refresh(self) -> None:
        try:
            changes = await database_sync_to_async(sipconfig.changes_since)(self._versions)
            self._versions, snapshot, policy, bans = (changes.versions, changes.credentials, changes.policy,
                                                      changes.bans)
            if changes.oauth is not None:
                self.core.set_oauth(*changes.oauth, cache_seconds=settings.OAUTH_CACHE_SECONDS)
            if snapshot is not None:
                # The core looks credentials up through this dict's ``get``: update it in place.
                self.credentials.clear()
                self.credentials.update(snapshot)
            if policy is not None:
                self.core.set_policy(policy)
            if bans is not None:
                self.core.set_bans(bans)
            self.core.expire(time.time())
            if not self._orphans_ended:
                ended = await database_sync_to_async(services.end_orphaned_flows)(self.hostname)
                self._orphans_ended = True
                if ended:
                    log.info("ended %d bindings whose websockets closed with an earlier process", ended)
        finally:
            self._checked_at = time.monotonic()
            self._refreshing = None


_door = None


def door() -> WebSocketDoor:
    """The process's door, made on first use (from a coroutine on the serving loop)."""
    global _door
    loop = asyncio.get_running_loop()
    if _door is None or _door.loop is not loop:
        # A new loop (only in tests: each runs its own) needs its own door; the old loop's tasks died with it.
        _door = WebSocketDoor(realm=settings.SIP_REALM, secret=nonce_secret(), commit_batch=settings.SIP_COMMIT_BATCH,
                              max_per_source=settings.SIP_TCP_MAX_PER_SOURCE)
    return _door
