"""The embedded default's bridge into the web process's in-memory channel layer.

Producers in other processes send live events as datagrams to a Unix socket
(:mod:`registrar.live`); this relay, started by the first websocket consumer of the
web process, forwards them to the consumers' group. With Redis it is not needed and
never starts.
"""
import asyncio
import json
import logging
import os
import socket

from channels.layers import get_channel_layer
from django.conf import settings

from registrar.events import GROUP, MESSAGE_TYPE

log = logging.getLogger("regis.live")
_relay = None


class _RelayProtocol(asyncio.DatagramProtocol):
    def __init__(self):
        self.layer = get_channel_layer()

    def datagram_received(self, data, addr):
        try:
            events = json.loads(data)
        except ValueError:
            return
        if isinstance(events, list):
            asyncio.ensure_future(self.layer.group_send(GROUP, {"type": MESSAGE_TYPE, "events": events}))


async def ensure_started() -> None:
    """Listen on LIVE_RELAY_SOCKET from the running loop, once per loop and path."""
    global _relay
    path = settings.LIVE_RELAY_SOCKET
    loop = asyncio.get_running_loop()
    if not path or (_relay is not None and _relay[:2] == (loop, path)):
        return
    if _relay is not None and not _relay[0].is_closed():
        _relay[2].close()
    _relay = (loop, path, None)
    try:
        if os.path.exists(path):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        os.chmod(path, 0o600)
        transport, _ = await loop.create_datagram_endpoint(_RelayProtocol, sock=sock)
        _relay = (loop, path, transport)
    except OSError:
        log.exception("cannot listen for live events on %s", path)
        _relay = None
