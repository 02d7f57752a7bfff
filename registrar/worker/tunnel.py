"""Tunnels: how browser phones' calls reach runsip through the web process.

A browser's websocket ends in the web process (:mod:`registrar.wsdoor`), which handles
its REGISTERs itself but has no proxy to relay calls. For each websocket the door opens a
TCP (or TLS) connection to runsip, the *tunnel*, and passes the call signalling of that
websocket through it unchanged, in both directions. This module owns the tunnel's
contract and runsip's side of it.

The first frame on a tunnel is a hello, one SIP-framed message::

    TUNNEL sip:runsip SIP/2.0
    Flow: <the websocket's flow name>
    Peer: <ws|wss> <browser ip> <browser port>
    Timestamp: <unix seconds>
    Signature: <hex HMAC-SHA256 over "flow|transport|ip|port|timestamp">
    Content-Length: 0

signed with a key derived from SECRET_KEY, which both processes share. runsip accepts a
hello signed within ``MAX_CLOCK_SKEW`` seconds, for a ws or wss peer, as the first frame of
a connection; anything else closes the connection. An accepted connection's ``source``
becomes the browser's (transport, address, port and flow), so every message after the
hello is handled as if the browser had sent it straight to runsip: bans and rate limits
apply to the browser's address, answers go back on the tunnel (the source is a stream),
and :meth:`~registrar.worker.server.SipWorker._destination` finds the tunnel for a
binding registered over that websocket, so calls are forked to it.

The websocket's bindings belong to the web process: they end when the websocket closes,
never when its tunnel does (runsip may restart; the door opens a new tunnel).
"""
import hashlib
import hmac
import ipaddress
import logging
import time
from dataclasses import dataclass

from django.conf import settings

from registrar.sip.core import Source

log = logging.getLogger("regis.sip")

HELLO_START = b"TUNNEL "
HELLO_LINE = "TUNNEL sip:runsip SIP/2.0"
MAX_CLOCK_SKEW = 30
TUNNEL_TRANSPORTS = frozenset({"ws", "wss"})
MAX_FLOW_LENGTH = 128  # Binding.flow's width


class HelloRefused(Exception):
    """A hello that does not open a tunnel; the message says why (for the log)."""


@dataclass(frozen=True)
class Peer:
    """The browser at the far end of a tunnel, as the web process saw it."""

    flow: str
    transport: str
    ip: str
    port: int


def tunnel_key(secret_key: str | None = None) -> bytes:
    """The key hellos are signed with: derived from SECRET_KEY with a label of its own, so it
    is never the key of anything else (nonces use another label)."""
    secret = settings.SECRET_KEY if secret_key is None else secret_key
    return hashlib.sha256(b"regis-sip-tunnel:" + secret.encode()).digest()


def signature(key: bytes, peer: Peer, timestamp: int) -> str:
    text = f"{peer.flow}|{peer.transport}|{peer.ip}|{peer.port}|{timestamp}"
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def hello(key: bytes, peer: Peer, now: float) -> bytes:
    """The first bytes the web process writes on a tunnel."""
    timestamp = int(now)
    lines = [HELLO_LINE, f"Flow: {peer.flow}", f"Peer: {peer.transport} {peer.ip} {peer.port}",
             f"Timestamp: {timestamp}", f"Signature: {signature(key, peer, timestamp)}", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_hello(frame: bytes, key: bytes, now: float) -> Peer:
    """The peer a hello names, once its signature and age are checked; else HelloRefused."""
    try:
        text = frame.decode("ascii")
    except UnicodeDecodeError:
        raise HelloRefused("not ASCII") from None
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    if lines[0] != HELLO_LINE or body:
        raise HelloRefused("not a hello")
    fields = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or name in fields:
            raise HelloRefused(f"malformed or repeated header {name!r}")
        fields[name] = value.strip()
    try:
        flow = fields["flow"]
        transport, ip, port_text = fields["peer"].split()
        timestamp = int(fields["timestamp"])
        port = int(port_text)
        given = fields["signature"]
    except (KeyError, ValueError):
        raise HelloRefused("missing or malformed Flow, Peer, Timestamp or Signature") from None
    if not flow or len(flow) > MAX_FLOW_LENGTH or any(ch.isspace() for ch in flow) or "|" in flow:
        raise HelloRefused("bad flow name")
    try:
        ip = str(ipaddress.ip_address(ip))
    except ValueError:
        raise HelloRefused(f"bad peer address {ip!r}") from None
    if not 0 <= port <= 65535:
        raise HelloRefused(f"bad peer port {port}")
    peer = Peer(flow, transport, ip, port)
    if not hmac.compare_digest(given, signature(key, peer, timestamp)):
        raise HelloRefused("bad signature")
    if abs(now - timestamp) > MAX_CLOCK_SKEW:
        raise HelloRefused(f"timestamp {timestamp} is {now - timestamp:+.0f} s off")
    if transport not in TUNNEL_TRANSPORTS:
        raise HelloRefused(f"peer transport {transport!r} is not ws or wss")
    return peer


def open_tunnel(worker, connection, frame: bytes) -> bool:
    """A hello arrived on ``connection`` (a runsip TCP/TLS flow): make the connection that
    websocket's tunnel, or say False (logged) and let the caller close it."""
    where = f"{connection.source.transport} {connection.source.ip}:{connection.source.port}"
    if connection.carried:
        log.info("closing %s: a tunnel hello after other traffic", where)
        return False
    try:
        peer = read_hello(frame, worker.tunnel_key, time.time())
    except HelloRefused as refusal:
        log.info("closing %s: tunnel hello refused: %s", where, refusal)
        return False
    # A websocket has one tunnel: an older one for the same flow (the door reconnected) goes.
    for other in list(worker.connections):
        if other is not connection and other.tunnelled and other.source.flow == peer.flow:
            other.close()
    # The connection now counts against the browser's address, not the web process's; the
    # door already bounds websockets per address, so nothing is refused here.
    old = connection.source
    remaining = worker.connections_per_source.get(old.ip, 1) - 1
    if remaining:
        worker.connections_per_source[old.ip] = remaining
    else:
        worker.connections_per_source.pop(old.ip, None)
    worker.connections_per_source[peer.ip] = worker.connections_per_source.get(peer.ip, 0) + 1
    # The flow is the web process's: runsip never ends its bindings.
    worker._open_flows.discard(old.flow)
    connection.source = Source(peer.transport, peer.ip, peer.port, connection, peer.flow)
    connection.tunnelled = True
    connection.carried = True
    log.info("tunnel for %s %s:%s (%s) opened from %s", peer.transport, peer.ip, peer.port, peer.flow, where)
    return True
