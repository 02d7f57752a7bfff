"""Reg-event notifications from runsip (RFC 3680, RFC 6665): who is told what, and when.

:class:`RegEventNotifier` runs beside the worker's poll loop. It owns two halves:

* :class:`Tracker`, touched only in the worker's single database thread: the
  subscriptions this process serves, and per watched extension the bindings it last
  told their subscribers about. Every 0.5 s — and at once after each of runsip's own
  REGISTER batches — it reads the live bindings of the watched extensions and turns the
  difference into partial NOTIFYs (registered, refreshed, expired, unregistered,
  deactivated). Reading the database rather than listening to events means every change
  counts, whoever made it: runsip's REGISTERs, the websocket door in the web process, an
  admin's delete, Celery's purge, or time passing an expiry. With no subscription the
  poll does nothing at all.
* the loop side: answering SUBSCRIBEs once the database has decided, and sending
  NOTIFYs as client transactions (``SipWorker.send_request``), one at a time per
  subscription so that versions arrive in order.

Where NOTIFYs go: back where the SUBSCRIBE came from, like a response — over UDP from
the listening socket to the source address and port, over TCP/TLS on the subscriber's
own connection (behind NAT nothing else reaches it). A stream subscription whose
connection is gone cannot be told anything: it ends silently.

A NOTIFY answered with anything but 2xx (481 above all), or not answered at all (Timer
F), ends its subscription (RFC 6665 §4.2.2).

Restart: subscriptions are rows (:mod:`registrar.subscriptions`), so they survive.
At start, each UDP subscription still in force gets a NOTIFY with the full state
(version and CSeq counted up from the last ones stored), whatever changed while runsip
was down; those that expired meanwhile get their final ``terminated;reason=timeout``
NOTIFY; TCP/TLS ones end silently, since their connections closed with the old process.
Websocket subscriptions are not runsip's (the web process holds those connections).

One process serves reg-event: with several runsip processes on shared ports
(``--workers``) each would reload every subscription at start; run reg-event
subscribers against a single worker.
"""
import asyncio
import collections
import logging
import time
from dataclasses import replace

from django.conf import settings

from registrar import subscriptions
from registrar.sip import regevent
from registrar.sip.client import new_branch
from registrar.sip.core import SERVER_NAME, Source
from registrar.sip.reasons import Reason
# As a module: the server module imports this one, and only needs it once both are loaded.
from registrar.worker import background, server

log = logging.getLogger("regis.sip.regevent")

POLL_INTERVAL = 0.5
STREAM_TRANSPORTS = frozenset({"tcp", "tls"})
RUNSIP_TRANSPORTS = ("udp", "tcp", "tls")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def _counted(dialog: regevent.Dialog) -> regevent.Dialog:
    """The dialog with one more NOTIFY counted in memory only (its row is gone)."""
    return replace(dialog, local_cseq=dialog.local_cseq + 1, version=dialog.version + 1)


class Tracker:
    """The notifier's state; every method runs in the database thread."""

    def __init__(self):
        self.dialogs: dict[int, regevent.Dialog] = {}
        self.baseline: dict[int, dict[str, regevent.ContactState]] = {}

    # -- documents ---------------------------------------------------------------------
    @staticmethod
    def _full(dialog, contacts, now, terminated_reason=None) -> regevent.Notification:
        body = regevent.reginfo(dialog.aor, dialog.version, regevent.full_state(contacts.values()), now, full=True)
        return regevent.Notification(dialog, regevent.subscription_state(dialog, now, terminated_reason), body,
                                     terminal=terminated_reason is not None)

    def _partial(self, targets, found, remaining, now) -> list:
        counters = subscriptions.advance([dialog.id for dialog in targets])
        notes = []
        for dialog in targets:
            if dialog.id not in counters:
                # The row went with its extension: the last word is that the resource is gone.
                self.dialogs.pop(dialog.id, None)
                notes.append(self._full(_counted(dialog), {}, now, "noresource"))
                continue
            cseq, version = counters[dialog.id]
            dialog = self.dialogs[dialog.id] = replace(dialog, local_cseq=cseq, version=version)
            body = regevent.reginfo(dialog.aor, version, found, now, full=False, remaining=remaining)
            notes.append(regevent.Notification(dialog, regevent.subscription_state(dialog, now), body))
        return notes

    def _observe(self, extension_id, current, now, unregistered=frozenset(), exclude=None) -> list:
        """Partial NOTIFYs for what changed in one AOR since it was last observed."""
        before = self.baseline.get(extension_id)
        self.baseline[extension_id] = current
        if before is None:
            return []
        found = regevent.changes(before, current, now, unregistered)
        targets = [d for d in self.dialogs.values() if d.watched_id == extension_id and d.id != exclude]
        if not found or not targets:
            return []
        return self._partial(targets, found, len(current), now)

    # -- the jobs ----------------------------------------------------------------------
    def load(self, now: float):
        """At start: (notifications, subscriptions in force)."""
        notes = []
        stored = subscriptions.dialogs(RUNSIP_TRANSPORTS)
        subscriptions.end([d.id for d in stored if d.transport in STREAM_TRANSPORTS or d.expires_at <= now])
        expired = [d for d in stored if d.transport not in STREAM_TRANSPORTS and d.expires_at <= now]
        kept = [d for d in stored if d.transport not in STREAM_TRANSPORTS and d.expires_at > now]
        current = subscriptions.contact_states({d.watched_id for d in expired + kept}, now)
        notes += [self._full(_counted(d), current[d.watched_id], now, "timeout") for d in expired]
        counters = subscriptions.advance([d.id for d in kept])
        for dialog in kept:
            if dialog.id in counters:
                cseq, version = counters[dialog.id]
                dialog = self.dialogs[dialog.id] = replace(dialog, local_cseq=cseq, version=version)
                self.baseline[dialog.watched_id] = current[dialog.watched_id]
                notes.append(self._full(dialog, current[dialog.watched_id], now))
        return notes, len(self.dialogs)

    def store(self, action: regevent.StoreSubscription, now: float):
        """A SUBSCRIBE that passed the core: (SubscribeOutcome, notifications, subscriptions in force)."""
        outcome, notes = self._store(action, now)
        return outcome, notes, len(self.dialogs)

    def _store(self, action, now):
        subscribe = action.subscribe
        if subscribe.in_dialog:
            return self._in_dialog(action, now)
        watched_id = subscriptions.extension_id(subscribe.watched)
        if watched_id is None:
            return regevent.SubscribeOutcome(404, "Not Found"), []
        if not subscriptions.registered_from(action.subscriber, action.source_ip, now):
            return regevent.SubscribeOutcome(
                403, "Forbidden", reason=Reason.NOT_REGISTERED,
                detail=f"extension {action.subscriber} has no live registration from {action.source_ip}"), []
        current = subscriptions.contact_states([watched_id], now)[watched_id]
        notes = self._observe(watched_id, current, now)
        if subscribe.expires == 0:
            # A fetch (RFC 6665 §4.4.3): the state once, and no subscription.
            # Not stored: a negative id of its own keeps its NOTIFY apart from every subscription's.
            fetched = regevent.Dialog(
                -action.ticket, watched_id, subscribe.watched, action.subscriber, subscribe.call_id, subscribe.remote_tag,
                subscribe.local_tag, subscribe.event_id, subscribe.remote_target, subscribe.route_set,
                subscribe.remote_uri, subscribe.local_uri, subscribe.remote_cseq, 1, 0, action.transport,
                action.source_ip, action.source_port, action.flow, now)
            notes.append(self._full(fetched, current, now, "timeout"))
            return regevent.SubscribeOutcome(200, "OK", expires=0), notes
        dialog = subscriptions.create(action, watched_id, now + subscribe.expires)
        self.dialogs[dialog.id] = dialog
        notes.append(self._full(dialog, current, now))
        return regevent.SubscribeOutcome(200, "OK", expires=subscribe.expires), notes

    def _in_dialog(self, action, now):
        subscribe = action.subscribe
        dialog = subscriptions.find(subscribe.call_id, subscribe.remote_tag, subscribe.local_tag)
        if dialog is None or (dialog.id not in self.dialogs and dialog.transport not in RUNSIP_TRANSPORTS):
            return regevent.SubscribeOutcome(481, "Call/Transaction Does Not Exist"), []
        if dialog.subscriber != action.subscriber:
            return regevent.SubscribeOutcome(
                403, "Forbidden", reason=Reason.WATCH_NOT_ALLOWED,
                detail=f"the subscription belongs to {dialog.subscriber}, not {action.subscriber}"), []
        if subscribe.remote_cseq <= dialog.remote_cseq:
            # RFC 3261 §12.2.2: a lower CSeq in a dialog is answered 500.
            return regevent.SubscribeOutcome(500, "Server Internal Error"), []
        current = subscriptions.contact_states([dialog.watched_id], now)[dialog.watched_id]
        notes = self._observe(dialog.watched_id, current, now, exclude=dialog.id)
        if subscribe.expires == 0:
            subscriptions.end([dialog.id])
            self.dialogs.pop(dialog.id, None)
            notes.append(self._full(_counted(dialog), current, now, "timeout"))
            return regevent.SubscribeOutcome(200, "OK", expires=0), notes
        refreshed = subscriptions.refresh(dialog, action, now + subscribe.expires)
        if refreshed is None:
            self.dialogs.pop(dialog.id, None)
            return regevent.SubscribeOutcome(481, "Call/Transaction Does Not Exist"), notes
        self.dialogs[refreshed.id] = refreshed
        notes.append(self._full(refreshed, current, now))
        return regevent.SubscribeOutcome(200, "OK", expires=subscribe.expires), notes

    def poll(self, now: float, live_flows, unregistered):
        """Every change since the last poll: (notifications, subscriptions in force).
        ``unregistered``: {(extension number, contact URI)} removed by runsip's REGISTERs."""
        if not self.dialogs:
            self.baseline.clear()
            return [], 0
        lost = [d for d in self.dialogs.values() if d.transport in STREAM_TRANSPORTS and d.flow not in live_flows]
        lost_ids = {d.id for d in lost}
        expired = [d for d in self.dialogs.values() if d.expires_at <= now and d.id not in lost_ids]
        subscriptions.end([d.id for d in lost + expired])
        for dialog in lost + expired:
            del self.dialogs[dialog.id]
        if lost:
            log.info("ended %d subscriptions whose connections closed", len(lost))
        watched = {d.watched_id for d in self.dialogs.values()}
        current = subscriptions.contact_states(watched | {d.watched_id for d in expired}, now)
        notes = [self._full(_counted(d), current[d.watched_id], now, "timeout") for d in expired]
        numbers = {d.watched_id: d.watched for d in self.dialogs.values()}
        for extension_id in watched:
            gone = frozenset(uri for number, uri in unregistered if number == numbers[extension_id])
            notes += self._observe(extension_id, current[extension_id], now, gone)
        for extension_id in set(self.baseline) - watched:
            del self.baseline[extension_id]
        return notes, len(self.dialogs)

    def end(self, ids) -> int:
        """Subscriptions whose NOTIFY failed."""
        subscriptions.end(ids)
        for subscription_id in ids:
            self.dialogs.pop(subscription_id, None)
        return len(self.dialogs)


class _NotifyInFlight:
    """The context the worker hands back with a NOTIFY's answer or timeout."""

    def __init__(self, notifier, notification: regevent.Notification):
        self.notifier = notifier
        self.notification = notification

    def answered(self, worker, answered) -> None:
        self.notifier.finished(self.notification, 200 <= answered.response.status < 300,
                               f"{answered.response.status} {answered.response.reason}")

    def timed_out(self, worker) -> None:
        self.notifier.finished(self.notification, False, "no answer")


def _advertised(host: str) -> str:
    return (settings.SIP_ADVERTISED_HOST or "127.0.0.1") if host in WILDCARD_HOSTS else host


class RegEventNotifier:
    def __init__(self, worker):
        self.worker = worker
        self.tracker = Tracker()
        self.count = 0
        self._polling = False
        self._poll_again = False
        self._unregistered = set()
        self._jobs = 0
        self._queues: dict[int, collections.deque] = {}
        self._in_flight: dict[int, regevent.Notification] = {}
        self._task = None

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        notes, self.count = await self.worker.loop.run_in_executor(
            self.worker.db, server._db_job, self.tracker.load, time.time())
        if notes:
            log.info("reloaded %d reg-event subscriptions", self.count)
        self._deliver(notes)
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        await background.cancel(self._task)
        deadline = time.monotonic() + 5
        while (self._polling or self._jobs) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            self.poll_soon()

    # -- SUBSCRIBE ---------------------------------------------------------------------
    def store(self, action: regevent.StoreSubscription) -> None:
        """Called by the worker for a StoreSubscription action (loop thread)."""
        self._jobs += 1
        future = self.worker.loop.run_in_executor(self.worker.db, server._db_job, self.tracker.store, action,
                                                  time.time())
        future.add_done_callback(lambda f: self._stored(action, f))

    def _stored(self, action, future) -> None:
        self._jobs -= 1
        now = time.time()
        if future.exception() is not None:
            log.error("storing a subscription failed: %r", future.exception())
            self.worker._perform(self.worker.core.subscription_failed(action.ticket, now))
            return
        outcome, notes, self.count = future.result()
        if outcome.ok:
            outcome = replace(outcome, contact=self._contact(action))
        self.worker._perform(self.worker.core.subscription_stored(action.ticket, outcome, now))
        self._deliver(notes)

    def _contact(self, action) -> str:
        """Our Contact for the dialog: the address the SUBSCRIBE reached."""
        if action.transport == "udp":
            endpoint = self._udp_endpoint(action.source_ip)
            sockname = endpoint.get_extra_info("sockname") if endpoint is not None else None
        else:
            connection = self._connection(action.flow)
            sockname = connection.transport.get_extra_info("sockname") if connection is not None else None
        if not sockname:
            return ""
        return regevent.local_contact(action.transport, _advertised(sockname[0]), sockname[1])

    # -- changes -----------------------------------------------------------------------
    def nudge(self, batch, outcomes) -> None:
        """After one of runsip's REGISTER batches committed: tell its changes now."""
        if not self.count:
            return
        for item, outcome in zip(batch, outcomes):
            if outcome.ok:
                self._unregistered.update((item.register.user, uri) for uri in outcome.removals)
        self.poll_soon()

    def poll_soon(self) -> None:
        if not self.count:
            self._unregistered.clear()
            return
        if self._polling:
            self._poll_again = True
            return
        self._polling = True
        self._poll_again = False
        unregistered, self._unregistered = frozenset(self._unregistered), set()
        live_flows = frozenset(c.source.flow for c in self.worker.connections if c.source is not None)
        future = self.worker.loop.run_in_executor(self.worker.db, server._db_job, self.tracker.poll, time.time(),
                                                  live_flows, unregistered)
        future.add_done_callback(self._polled)

    def _polled(self, future) -> None:
        self._polling = False
        if future.exception() is not None:
            log.error("reading registration changes for subscribers failed: %r", future.exception())
        else:
            notes, self.count = future.result()
            self._deliver(notes)
        if self._poll_again:
            self.poll_soon()

    # -- NOTIFY ------------------------------------------------------------------------
    def _deliver(self, notes) -> None:
        for note in notes:
            self._queues.setdefault(note.dialog.id, collections.deque()).append(note)
            if note.dialog.id not in self._in_flight:
                self._send_next(note.dialog.id)

    def _send_next(self, subscription_id) -> None:
        queue = self._queues.get(subscription_id)
        while queue:
            note = queue.popleft()
            try:
                sent = self._send(note)
            except Exception:
                log.exception("sending a NOTIFY to %s:%s failed", note.dialog.source_ip, note.dialog.source_port)
                sent = False
            if sent:
                self._in_flight[subscription_id] = note
                return
            self._failed(note, "no way to reach the subscriber")
            return
        self._queues.pop(subscription_id, None)

    def _send(self, note) -> bool:
        dialog = note.dialog
        if dialog.transport == "udp":
            endpoint = self._udp_endpoint(dialog.source_ip)
            if endpoint is None:
                return False
            destination = Source("udp", dialog.source_ip, dialog.source_port, endpoint.get_protocol())
            sockname = endpoint.get_extra_info("sockname")
        else:
            connection = self._connection(dialog.flow)
            if connection is None:
                return False
            destination = connection.source
            sockname = connection.transport.get_extra_info("sockname")
        branch = new_branch()
        data = regevent.notify_request(note, branch=branch, local_host=_advertised(sockname[0]),
                                       local_port=sockname[1], user_agent=SERVER_NAME)
        self.worker.send_request(data=data, destination=destination, branch=branch, method="NOTIFY",
                                 context=_NotifyInFlight(self, note))
        return True

    def finished(self, note, ok: bool, how: str) -> None:
        subscription_id = note.dialog.id
        if self._in_flight.get(subscription_id) is note:
            del self._in_flight[subscription_id]
        if ok:
            self._send_next(subscription_id)
        else:
            self._failed(note, how)

    def _failed(self, note, how: str) -> None:
        subscription_id = note.dialog.id
        self._queues.pop(subscription_id, None)
        if note.terminal or subscription_id <= 0:
            return
        log.info("subscription %s of %s to %s ended: NOTIFY got %s", subscription_id, note.dialog.subscriber,
                 note.dialog.watched, how)
        self._jobs += 1
        future = self.worker.loop.run_in_executor(self.worker.db, server._db_job, self.tracker.end,
                                                  [subscription_id])
        future.add_done_callback(self._ended)

    def _ended(self, future) -> None:
        self._jobs -= 1
        if future.exception() is not None:
            log.error("ending a subscription failed: %r", future.exception())
        else:
            self.count = future.result()

    # -- where NOTIFYs leave from ------------------------------------------------------
    def _udp_endpoint(self, ip: str):
        want_v6 = ":" in ip
        for listening in self.worker._servers:
            if not hasattr(listening, "sendto") or listening.is_closing():
                continue
            sockname = listening.get_extra_info("sockname")
            if sockname is not None and (":" in sockname[0]) == want_v6:
                return listening
        return None

    def _connection(self, flow: str):
        for connection in self.worker.connections:
            if (connection.source is not None and connection.source.flow == flow
                    and connection.transport is not None and not connection.transport.is_closing()):
                return connection
        return None
