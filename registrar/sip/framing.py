"""Cutting a byte stream (TCP, TLS) into SIP messages.

This module owns RFC 3261 §18.3 for streams: a message ends Content-Length bytes after
the empty line that closes its header section, so Content-Length is mandatory. It also
owns the keep-alive of RFC 5626 §4.4.1: a CRLFCRLF "ping" between messages comes out as
a :class:`KeepAlive`, which the adapter answers with a single CRLF "pong". Lone CRLFs
before a start line are skipped (RFC 3261 §7.5).

Limits are enforced while bytes arrive, not after, so a peer cannot make us buffer more
than ``max_message_bytes`` or scan a header section of unbounded line count. After a
:class:`~registrar.sip.errors.SipError` the stream is out of step: close the connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from registrar.sip.errors import SipError


@dataclass(frozen=True)
class KeepAlive:
    """A CRLFCRLF ping seen between messages; answer it with CRLF."""


_HEADER_END = b"\r\n\r\n"
# Content-Length, long or compact form, with its value and any folded continuation.
_find_content_lengths = re.compile(
    rb"\r\n(?:content-length|l)[ \t]*:((?:[^\r\n]|\r\n[ \t])*)", re.IGNORECASE
).findall


class StreamFramer:
    """One per connection: feed it what the socket read, get back whole messages.

    Each message comes out exactly as received (start line to the last body byte), ready
    for :func:`~registrar.sip.message.parse_message`; the rest stays buffered.
    """

    def __init__(self, max_message_bytes: int = 65535, max_header_lines: int = 256) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_header_lines = max_header_lines
        self._buffer = bytearray()
        # For the message at the front of the buffer: how far we have looked for the end
        # of its header section, the line breaks seen so far, and its total length once known.
        self._scanned = 0
        self._line_breaks = 0
        self._message_length: int | None = None

    @property
    def partial(self) -> bool:
        """Whether part of a message is buffered, waiting for the rest."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[bytes | KeepAlive]:
        """Add bytes from the stream; return the messages and keep-alives now complete."""
        self._buffer += data
        framed: list[bytes | KeepAlive] = []
        while (item := self._next()) is not None:
            framed.append(item)
        return framed

    def _next(self) -> bytes | KeepAlive | None:
        buffer = self._buffer
        if self._message_length is None:
            if not self._skip_to_start_line():
                if buffer.startswith(_HEADER_END):
                    del buffer[:4]
                    return KeepAlive()
                return None
            header_end = buffer.find(_HEADER_END, max(0, self._scanned - 3))
            if header_end < 0:
                self._check_partial_header()
                return None
            self._line_breaks += buffer.count(b"\n", self._scanned, header_end)
            if self._line_breaks + 1 > self.max_header_lines:
                raise SipError(400, "Too many header lines")
            self._message_length = header_end + 4 + self._content_length(bytes(buffer[:header_end]))
            if self._message_length > self.max_message_bytes:
                raise SipError(413, "Message Too Large")
        if len(buffer) < self._message_length:
            return None
        message = bytes(buffer[: self._message_length])
        del buffer[: self._message_length]
        self._scanned = self._line_breaks = 0
        self._message_length = None
        return message

    def _skip_to_start_line(self) -> bool:
        """Drop stray CRLFs; False while the front may still be (or is) a ping."""
        buffer = self._buffer
        while buffer.startswith(b"\r\n"):
            if buffer.startswith(_HEADER_END) or len(buffer) < 4 and _HEADER_END.startswith(buffer):
                return False
            del buffer[:2]
        return bool(buffer) and buffer != b"\r"

    def _check_partial_header(self) -> None:
        buffer = self._buffer
        self._line_breaks += buffer.count(b"\n", self._scanned)
        self._scanned = len(buffer)
        if len(buffer) > self.max_message_bytes:
            raise SipError(413, "Message Too Large")
        if self._line_breaks + 1 > self.max_header_lines:
            raise SipError(400, "Too many header lines")

    def _content_length(self, header: bytes) -> int:
        values = {b" ".join(value.split()) for value in _find_content_lengths(header)}
        if not values:
            raise SipError(400, "Missing Content-Length on stream")
        if len(values) > 1:
            raise SipError(400, "Conflicting Content-Length headers")
        value = values.pop()
        if not value.isdigit():
            raise SipError(400, "Malformed Content-Length")
        if len(value.lstrip(b"0")) > len(str(self.max_message_bytes)):
            raise SipError(413, "Message Too Large")
        return int(value)
