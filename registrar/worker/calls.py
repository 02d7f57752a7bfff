"""runsip's side of calls: where each authenticated INVITE goes, and what is recorded of it.

For every :class:`~registrar.sip.proxy.LookupCallee` the database thread runs
:func:`registrar.calls.start_call` — extension, dial plan, emergency route or refusal,
and the call's row — and the loop turns the answer into a
:class:`~registrar.sip.proxy.CallRoute`: bindings become destinations, a trunk's host
is resolved (the loop's resolver, never blocking) and its TCP/TLS connection opened.
An emergency call also sends the alert MESSAGE to every binding of the alert extensions
and records how each was answered. :class:`~registrar.sip.proxy.CallProgress` reports
are written in batches, like authentication attempts.
"""
import asyncio
import logging
import os
import time

from registrar import calls as call_services
from registrar.sip.client import new_branch
from registrar.sip.proxy import CallProgress, CallRoute, CallTarget, TrunkLeg
from registrar.sip.uac import TrunkConfig

log = logging.getLogger("regis.sip")


def _path(binding) -> tuple:
    """The binding's Path values (stored comma separated) as Route values."""
    text = getattr(binding, "path", "") or ""
    return tuple(part.strip() for part in text.split(",") if part.strip())


class _AlertDelivery:
    """One emergency MESSAGE in flight: how it ended goes to the alert's record."""

    def __init__(self, router, alert_pk, extension, contact):
        self.router, self.alert_pk, self.extension, self.contact = router, alert_pk, extension, contact

    def answered(self, worker, answered):
        response = answered.response
        self.router.record_delivery(self, response.status, f"{response.status} {response.reason}")

    def timed_out(self, worker):
        self.router.record_delivery(self, None, "no answer")


class CallRouter:
    def __init__(self, worker):
        self.worker = worker
        self.name = f"{worker.hostname}:{os.getpid()}"
        self._progress = []
        self._writing = False

    async def start(self) -> None:
        ended = await self.worker.loop.run_in_executor(self.worker.db, _db_job, call_services.end_orphaned_calls,
                                                       self.name)
        if ended:
            log.info("ended %d calls left open by an earlier process", ended)

    # -- a new call ------------------------------------------------------------------------
    def lookup(self, action) -> None:
        source = action.source
        future = self.worker.loop.run_in_executor(
            self.worker.db, _db_job, _start_call, action, source.ip, source.port, source.transport, self.name)
        future.add_done_callback(lambda done: asyncio.ensure_future(self._planned(action, done)))

    async def _planned(self, action, future) -> None:
        worker = self.worker
        try:
            if future.exception() is not None:
                log.error("routing the call of %s to %s failed: %r", action.caller, action.user, future.exception())
                worker._perform(worker.core.callee_lookup_failed(action.ticket, time.time()))
                return
            planned = future.result()
            try:
                route = await self._route(planned, action)
            except Exception as error:  # the caller still gets an answer, and the record says why
                log.exception("routing the call of %s to %s failed", action.caller, action.user)
                route = CallRoute(refusal=(500, "Server Internal Error", f"routing failed: {error}"))
                self.progress(CallProgress(action.call_id, (action.caller_tag,), "ended", time.time(), 500,
                                           f"routing failed: {error}"))
            worker._perform(worker.core.callee_found(action.ticket, route, time.time()))
            if planned.alert_bindings:
                try:
                    self._send_alerts(planned)
                except Exception:
                    log.exception("sending the emergency alert of %s failed", action.caller)
        except Exception:
            log.exception("forwarding a call to %s failed", action.user)
        finally:
            worker._schedule_tick()

    async def _route(self, planned, action) -> CallRoute:
        if planned.refusal is not None:
            return CallRoute(refusal=planned.refusal)
        if planned.trunk is not None:
            try:
                return CallRoute(trunk=await self._trunk_leg(planned.trunk, planned.callee))
            except Exception as error:  # the trunk cannot be reached: this call fails, saying why
                from registrar.worker.trunks import _transport_detail
                why = f"trunk '{planned.trunk.name}': {_transport_detail(planned.trunk.destination, error)}"
                # The database stored the call as going out: its record must say why it did not.
                self.progress(CallProgress(action.call_id, (action.caller_tag,), "ended", time.time(), 503, why))
                return CallRoute(refusal=(503, "Service Unavailable", why))
        targets = tuple(self.target(binding) for binding in planned.bindings)
        return CallRoute(targets=targets)

    def target(self, binding) -> CallTarget:
        return CallTarget(binding.contact_uri,
                          self.worker._destination(binding.transport, binding.source_ip, binding.source_port),
                          binding.q, binding.transport, _path(binding))

    async def _trunk_leg(self, config: TrunkConfig, number: str) -> TrunkLeg:
        registrar = config.registrar
        destination = await self.worker.trunks.destination_for(config.destination)
        host = f"[{registrar.host}]" if ":" in registrar.host else registrar.host
        port = f":{registrar.port}" if registrar.port else ""
        transport = "" if registrar.transport == "udp" or registrar.scheme == "sips" else \
            f";transport={registrar.transport}"
        request_uri = f"{registrar.scheme}:{number}@{host}{port}{transport}"
        from_uri = f"{registrar.scheme}:{config.aor_user}@{config.aor_domain}"
        route = ""
        if config.proxy is not None:
            proxy = config.proxy
            proxy_host = f"[{proxy.host}]" if ":" in proxy.host else proxy.host
            proxy_port = f":{proxy.port}" if proxy.port else ""
            proxy_transport = "" if proxy.transport == "udp" else f";transport={proxy.transport}"
            route = f"<{proxy.scheme}:{proxy_host}{proxy_port}{proxy_transport};lr>"
        return TrunkLeg(config.name, request_uri, from_uri, destination, config.auth_username,
                        config.password or "", config.expected_realm, route)

    # -- the emergency MESSAGE ---------------------------------------------------------------
    def _send_alerts(self, planned) -> None:
        for binding in planned.alert_bindings:
            target = self.target(binding)
            extension = getattr(binding, "extension", "") or _user_of(binding.contact_uri)
            delivery = _AlertDelivery(self, planned.alert_pk, extension, binding.contact_uri)
            if target.destination is None:
                self.record_delivery(delivery, None, f"cannot reach a {binding.transport.upper()} phone from runsip")
                continue
            branch = new_branch()
            data = self.worker.core.proxy.instant_message(target, planned.alert_text, branch)
            self.worker.send_request(data=data, destination=target.destination, branch=branch, method="MESSAGE",
                                     context=delivery)

    def record_delivery(self, delivery: _AlertDelivery, status, detail: str) -> None:
        if delivery.alert_pk is None:
            return
        future = self.worker.loop.run_in_executor(
            self.worker.db, _db_job, _record_delivery, delivery.alert_pk, delivery.extension, delivery.contact,
            status, detail)
        future.add_done_callback(_log_failure("recording an emergency MESSAGE's delivery"))

    # -- what happened to calls ---------------------------------------------------------------
    def progress(self, report) -> None:
        self._progress.append(report)
        if not self._writing:
            self._flush()

    def _flush(self) -> None:
        batch, self._progress = self._progress, []
        self._writing = True
        future = self.worker.loop.run_in_executor(self.worker.db, _db_job, call_services.record_call_progress, batch)
        future.add_done_callback(self._flushed)

    def _flushed(self, future) -> None:
        self._writing = False
        if future.exception() is not None:
            log.error("recording call progress failed: %r", future.exception())
        if self._progress:
            self._flush()

    @property
    def busy(self) -> bool:
        return self._writing or bool(self._progress)


def _db_job(function, *args):
    from registrar.worker.server import _db_job as run
    return run(function, *args)


def _start_call(action, source_ip, source_port, transport, worker_name):
    return call_services.start_call(call_id=action.call_id, caller_tag=action.caller_tag, caller=action.caller,
                                    dialled=action.user, source_ip=source_ip, source_port=source_port,
                                    transport=transport, worker=worker_name, at=time.time())


def _record_delivery(alert_pk, extension, contact, status, detail):
    call_services.record_alert_delivery(alert_pk, extension=extension, contact=contact, status=status, detail=detail)


def _user_of(contact_uri: str) -> str:
    scheme, _, rest = contact_uri.partition(":")
    return rest.partition("@")[0] if "@" in rest else ""


def _log_failure(what: str):
    def check(future):
        if future.exception() is not None:
            log.error("%s failed: %r", what, future.exception())
    return check

