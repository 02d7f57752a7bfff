"""Delivering live events to the browsers' websocket consumers, from any process.

With REDIS_URL the channel layer (channels_redis) spans processes, and producers
``group_send`` to it. In the embedded default the channel layer is in-memory, private
to the web process, so producers in other processes (the SIP worker, the CLI) send the
events as datagrams to a Unix socket that the web process relays into its layer
(``webui.relay``). Either way delivery is best effort: a page that misses an event
catches up on its next refresh, and a producer never blocks or fails because nobody is
watching.

Call these only after the transaction that made the change has committed.
"""
import asyncio
import json
import logging
import socket

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from registrar.events import GROUP, MESSAGE_TYPE

log = logging.getLogger("regis.live")

EVENTS_PER_DATAGRAM = 40
_datagram_socket = None
# Browsers connected to this web process's live websocket (for /metrics).
connected_clients = 0


def client_connected() -> None:
    global connected_clients
    connected_clients += 1


def client_disconnected() -> None:
    global connected_clients
    connected_clients = max(0, connected_clients - 1)


def _relay_path():
    return settings.LIVE_RELAY_SOCKET


def _chunks(events):
    for start in range(0, len(events), EVENTS_PER_DATAGRAM):
        yield events[start:start + EVENTS_PER_DATAGRAM]


def _send_datagrams(events) -> None:
    global _datagram_socket
    if _datagram_socket is None:
        _datagram_socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        _datagram_socket.setblocking(False)
    for chunk in _chunks(events):
        try:
            _datagram_socket.sendto(json.dumps(chunk).encode(), _relay_path())
        except OSError:
            return  # no web process listening, or it is behind: the pages refresh anyway


def publish(events) -> None:
    """From synchronous code (services, views, commands)."""
    if not events:
        return
    if _relay_path():
        _send_datagrams(events)
        return
    try:
        async_to_sync(get_channel_layer().group_send)(GROUP, {"type": MESSAGE_TYPE, "events": events})
    except Exception:
        log.warning("publishing %d live events failed", len(events), exc_info=True)


def publish_from_loop(events) -> None:
    """From code running on an asyncio loop (the SIP worker); never blocks the loop."""
    if not events:
        return
    if _relay_path():
        _send_datagrams(events)
        return
    layer = get_channel_layer()
    for chunk in _chunks(events):
        task = asyncio.ensure_future(layer.group_send(GROUP, {"type": MESSAGE_TYPE, "events": chunk}))
        task.add_done_callback(_log_failure)


def _log_failure(task):
    if not task.cancelled() and task.exception() is not None:
        log.warning("publishing live events failed: %r", task.exception())
