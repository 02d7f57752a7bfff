"""SIP over WebSocket (RFC 7118) at ``/ws/sip``: one websocket is one SIP flow.

The consumer only moves frames: each text or binary frame is one whole SIP message
(RFC 7118 §5.2), handed to the web process's :mod:`registrar.wsdoor`, whose
registrar core answers through :meth:`SipConsumer.send_sip` — and which passes call
signalling to runsip through the websocket's tunnel, whose messages come back through
:meth:`SipConsumer.send_sip` too. When the websocket closes, its tunnel closes and the
bindings registered over it end at once (nobody can reach a browser through a closed
socket).

No web login is asked for: phones authenticate every REGISTER with digest.
"""
import collections
import logging

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from registrar import wsdoor

log = logging.getLogger("regis.sip.ws")

SUBPROTOCOL = "sip"
# The largest SIP message taken, as on TCP (registrar.sip.framing).
MAX_MESSAGE_BYTES = 65535
# Answers waiting for a slow reader; beyond it the socket is closed.
MAX_OUTBOX = 256
MESSAGE_TOO_BIG = 1009
# RFC 5626 §3.5.1 keep-alive: a double CRLF ping is answered with one CRLF pong.
PING = b"\r\n\r\n"
PONG = "\r\n"


class SipConsumer(AsyncWebsocketConsumer):
    source = None

    async def connect(self):
        # RFC 7118 §4: the client must ask for the "sip" subprotocol; anything else is refused.
        if SUBPROTOCOL not in self.scope.get("subprotocols", ()):
            await self.close()
            return
        ip, port = (self.scope.get("client") or ("", 0))[:2]
        self.door = wsdoor.door()
        if not await self.door.admits(ip):
            await self.close()
            return
        transport = "wss" if self._secure() else "ws"
        self._outbox = collections.deque()
        self._writing = False
        self.source = self.door.new_source(transport, ip, port or 0, self)
        await self.accept(subprotocol=SUBPROTOCOL)

    def _secure(self) -> bool:
        """Daphne leaves "scheme" out of websocket scopes: a connection to its TLS endpoint
        (WEB_TLS_PORT) is wss too."""
        if self.scope.get("scheme") == "wss":
            return True
        server = self.scope.get("server") or ()
        return bool(settings.WEB_TLS_PORT) and len(server) > 1 and server[1] == settings.WEB_TLS_PORT

    async def receive(self, text_data=None, bytes_data=None):
        if self.source is None:
            return
        data = text_data.encode() if text_data is not None else bytes_data or b""
        if len(data) > MAX_MESSAGE_BYTES:
            log.info("closing ws %s:%s: a %d-byte message", self.source.ip, self.source.port, len(data))
            await self.close(code=MESSAGE_TOO_BIG)
            return
        if not data.strip(b"\r\n"):
            if data == PING:
                await self.send(text_data=PONG)
            return
        await self.door.receive(data, self.source)

    def send_sip(self, data: bytes) -> None:
        """Called by the door (on the loop): queue one SIP message; sent in order."""
        if self.source is None:
            return
        if len(self._outbox) >= MAX_OUTBOX:
            # A peer that reads nothing cannot make us hold its answers without bound.
            log.info("closing ws %s:%s: %d answers unsent", self.source.ip, self.source.port, len(self._outbox))
            self._outbox.clear()
            self.door.loop.create_task(self.close())
            return
        self._outbox.append(data)
        if not self._writing:
            self._writing = True
            self.door.loop.create_task(self._write())

    async def _write(self):
        try:
            while self._outbox and self.source is not None:
                data = self._outbox.popleft()
                try:
                    # RFC 7118 §5.2: UTF-8 messages go in text frames.
                    await self.send(text_data=data.decode())
                except UnicodeDecodeError:
                    await self.send(bytes_data=data)
        except Exception:
            source = self.source
            log.info("could not send on ws %s:%s", source.ip if source else "?", source.port if source else "?",
                     exc_info=True)
        finally:
            self._writing = False

    async def disconnect(self, code):
        source, self.source = self.source, None
        if source is not None:
            self.door.connection_closed(source)
