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

Nothing here calls the ORM on the loop: database work goes through
``database_sync_to_async``, in one FIFO job queue, so a connection's bindings end
(``services.end_flows``) only after every REGISTER it sent before closing is stored.
REGISTERs queued together share one transaction (group commit), and each is answered
when its batch has committed. Credentials, policy and bans are re-read when their
version fingerprints change, checked at most every ``REFRESH_INTERVAL`` seconds before
a message is handled.
"""
import asyncio
import hashlib
import itertools
import logging
import os
import socket
import time

from channels.db import database_sync_to_async
from django.conf import settings

from registrar import events, live, services, sipconfig
from registrar.oauth_client import TokenVerifier
from registrar.sip.bearer_auth import VerifyToken
from registrar.sip.core import (BanSource, RecordAttempt, RegistrarCore, SendMessage, Source, StoreRegistration,
                                TraceMessage)
from registrar.sip.proxy import LookupCallee, LookupContact
from registrar.sip.regevent import StoreSubscription, SubscribeOutcome
from registrar.worker.server import _record_failures, _registration_events

log = logging.getLogger("regis.sip.ws")

REFRESH_INTERVAL = 0.5
WEBSOCKET_SUBSCRIBE_REFUSAL = SubscribeOutcome(403, "Reg Event Subscriptions Need UDP, TCP or TLS")
# A flow of ours, ending: queued behind the REGISTERs that came before its close.
_END_FLOW = "end-flow"


def nonce_secret() -> bytes:
    """The secret runsip signs nonces with, so a nonce from one door is good at the other."""
    return hashlib.sha256(b"regis-sip-nonce:" + settings.SECRET_KEY.encode()).digest()


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
        return Source(transport, ip, port, connection, flow)

    async def receive(self, data: bytes, source: Source) -> None:
        """One SIP message from a websocket; answers go to ``source.connection.send_sip``."""
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
        self._perform(self.core.connection_lost(source.connection))
        if source.flow:
            self._jobs.append((_END_FLOW, source.flow))
            self._start_draining()

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
                # Calls are relayed by runsip, not by this door yet: nobody is reachable from here.
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
