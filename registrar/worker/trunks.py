"""runsip's side of outbound trunks: keeps every enabled trunk registered upstream.

Owns the loop-side life of :class:`~registrar.sip.uac.TrunkClient`s: reading the trunks
from the database when their version changes (in the worker's database thread),
starting, re-registering ("register now"), reconfiguring and unregistering clients,
resolving the upstream host (the event loop's resolver, never blocking), opening
TCP/TLS connections to it, sending through the core's client transactions, and writing
each :class:`~registrar.sip.uac.TrunkReport` through :mod:`registrar.trunks`.
"""
import asyncio
import ipaddress
import logging
import socket
import ssl
import time

from django.conf import settings

from registrar import trunks as trunk_services
from registrar.sip.core import Source
from registrar.sip.uac import SendRegister, TrunkClient, TrunkReport
from registrar.worker import background

log = logging.getLogger("regis.trunks")

TICK = 0.25
REFRESH_INTERVAL = 1.0
CONNECT_TIMEOUT = 10.0


class _Exchange:
    """The context of one REGISTER in the core's client transactions. It holds the client
    itself: after a reconfiguration the old client's un-REGISTER is still its own."""

    def __init__(self, manager, client, branch):
        self.manager, self.client, self.branch = manager, client, branch

    def answered(self, worker, answered):
        self.manager.handle(self.client, self.client.answered(self.branch, answered.response, time.time()))

    def timed_out(self, worker):
        self.manager.handle(self.client, self.client.timed_out(self.branch, time.time()))


class TrunkManager:
    def __init__(self, worker, *, backoff_first: float | None = None):
        self.worker = worker
        self.clients: dict[int, TrunkClient] = {}
        self.backoff_first = backoff_first if backoff_first is not None else getattr(
            settings, "TRUNK_BACKOFF_FIRST", 30.0)
        self._version = None
        self._reports: list[TrunkReport] = []
        self._writing = False
        self._task = None
        self._outbound_connections: dict = {}
        self._register_now_seen: dict[int, float] = {}
        self._client_tls = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        await background.cancel(self._task)
        if self._reports and not self._writing:
            self._flush()

    async def _run(self) -> None:
        next_refresh = 0.0
        while True:
            try:
                if time.monotonic() >= next_refresh:
                    next_refresh = time.monotonic() + REFRESH_INTERVAL
                    await self._refresh()
                now = time.time()
                for client in list(self.clients.values()):
                    self.handle(client, client.due(now))
                finished = [i for i, c in self.clients.items() if c.finished]
                for trunk_id in finished:
                    del self.clients[trunk_id]
                if finished:
                    # Read the trunks again: one may have been enabled again meanwhile.
                    self._version = None
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("trunk registration loop failed; continuing")
            await asyncio.sleep(TICK)

    async def _refresh(self) -> None:
        worker = self.worker
        version, snapshot = await worker.loop.run_in_executor(worker.db, _db_read, self._version)
        if snapshot is None:
            return
        self._version = version
        now = time.time()
        for trunk_id, client in list(self.clients.items()):
            config = snapshot.get(trunk_id)
            if config is None or not config.registers:
                calls_only = config is not None and config.enabled
                self.handle(client, client.stop(now, "calls_only" if calls_only else "disabled"))
            elif not client.config.same_registration(config):
                # Another upstream or identity: let the old registration go, start afresh.
                self.handle(client, client.stop(now))
                self.clients[trunk_id] = self._new_client(config, now)
            else:
                client.config = config
        for trunk_id, config in snapshot.items():
            if not config.registers:
                continue
            client = self.clients.get(trunk_id)
            if client is None or client.finished or client._unregistering:
                if client is None or client.finished:
                    self.clients[trunk_id] = client = self._new_client(config, now)
            seen = self._register_now_seen.get(trunk_id)
            if config.register_now_at and seen is not None and config.register_now_at > seen:
                self.handle(client, client.register_now(now))
            self._register_now_seen[trunk_id] = config.register_now_at

    def _new_client(self, config, now) -> TrunkClient:
        return TrunkClient(config, local=self._local_address(config.destination.transport, config.destination.host),
                           now=now, backoff_first=self.backoff_first)

    # -- actions ---------------------------------------------------------------------------
    def handle(self, client, actions) -> None:
        for action in actions:
            if isinstance(action, SendRegister):
                asyncio.ensure_future(self._send(client, action))
            elif isinstance(action, TrunkReport):
                self._reports.append(action)
        if self._reports and not self._writing:
            self._flush()

    async def destination_for(self, target) -> Source:
        """Where to send to ``target`` (a trunk's registrar or outbound proxy): its address
        resolved, over our UDP listener or a TCP/TLS connection of ours (reused). Raises
        what went wrong (see :func:`_transport_detail`)."""
        infos = await asyncio.wait_for(self.worker.loop.getaddrinfo(
            target.host, target.effective_port, type=socket.SOCK_DGRAM if target.transport == "udp"
            else socket.SOCK_STREAM), CONNECT_TIMEOUT)
        family, _, _, _, address = infos[0]
        ip, port = address[0], address[1]
        if target.transport == "udp":
            endpoint = self.worker.udp_endpoint_for(family)
            if endpoint is None:
                raise OSError(f"runsip has no UDP listener for {'IPv6' if family == socket.AF_INET6 else 'IPv4'}")
            return Source("udp", ip, port, endpoint)
        connection = await self._connection(target, ip, port)
        return connection.source

    async def _send(self, client, action: SendRegister) -> None:
        target = action.destination
        try:
            destination = await self.destination_for(target)
        except Exception as error:  # any failure to send is this trunk's transport error, shown as such
            detail = _transport_detail(target, error)
            self.handle(client, client.transport_failed(action.branch, detail, time.time()))
            return
        self.worker.send_request(data=action.data, destination=destination, branch=action.branch,
                                 method="REGISTER", context=_Exchange(self, client, action.branch))

    async def _connection(self, target, ip, port):
        key = (target.transport, ip, port)
        connection = self._outbound_connections.get(key)
        if connection is not None and connection.transport is not None and not connection.transport.is_closing():
            return connection
        from registrar.worker.server import _TcpConnection, _TlsConnection

        protocol = _TlsConnection if target.transport == "tls" else _TcpConnection
        tls = {}
        if target.transport == "tls":
            tls = {"ssl": self._tls_context(), "server_hostname": target.host}
        _, connection = await asyncio.wait_for(self.worker.loop.create_connection(
            lambda: protocol(self.worker), ip, port, **tls), CONNECT_TIMEOUT)
        if connection.transport is None:
            raise OSError("the connection was refused by runsip's own connection limits")
        self._outbound_connections[key] = connection
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        """Built once: reading the CA bundle is file I/O, not for every connect on the loop."""
        if self._client_tls is None:
            context = ssl.create_default_context()
            if not getattr(settings, "TRUNK_TLS_VERIFY", True):
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._client_tls = context
        return self._client_tls

    def _local_address(self, transport: str, remote_host: str) -> tuple[str, int]:
        """Our address as the upstream should see it in Via and Contact."""
        listener = next((item for item in self.worker.listeners if item.transport == transport), None) or \
            next((item for item in self.worker.listeners if item.transport == "udp"), None)
        port = listener.port if listener is not None else 5060
        host = listener.host if listener is not None else "0.0.0.0"
        if host in ("0.0.0.0", "::"):
            host = getattr(settings, "SIP_ADVERTISED_HOST", "") or _route_source(remote_host) or "127.0.0.1"
        return host, port

    # -- reports to the database -----------------------------------------------------------
    def _flush(self) -> None:
        reports, self._reports = self._reports, []
        self._writing = True
        worker = self.worker
        from registrar.worker.server import _db_job

        future = worker.loop.run_in_executor(worker.db, _db_job, trunk_services.record_trunk_reports, reports)
        future.add_done_callback(self._flushed)

    def _flushed(self, future) -> None:
        self._writing = False
        if future.exception() is not None:
            log.error("recording trunk status failed: %r", future.exception())
        if self._reports:
            self._flush()


def _db_read(version):
    from registrar.worker.server import _db_job

    def read():
        current = trunk_services.trunks_version()
        if current == version:
            return version, None
        return current, trunk_services.trunk_snapshot()

    return _db_job(read)


def _route_source(remote_host: str) -> str:
    """The local address the kernel would use towards ``remote_host`` (a UDP connect
    sends nothing). Only for literal addresses: no DNS here."""
    try:
        ipaddress.ip_address(remote_host)
    except ValueError:
        return ""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((remote_host, 9))
                return probe.getsockname()[0]
        except OSError:
            continue
    return ""


def _transport_detail(target, error) -> str:
    if isinstance(error, socket.gaierror):
        return f"cannot resolve {target.host}: {error.strerror or error}"
    if isinstance(error, asyncio.TimeoutError):
        return f"could not reach {target.host}:{target.effective_port} over {target.transport.upper()} in time"
    if isinstance(error, ConnectionRefusedError):
        return f"{target.host}:{target.effective_port} refused the {target.transport.upper()} connection"
    return f"{target.transport.upper()} to {target.host}:{target.effective_port} failed: {error}"
