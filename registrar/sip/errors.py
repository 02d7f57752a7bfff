"""The one exception of the SIP core: a message we cannot accept, and how to answer it.

Like h11's ``error_status_hint``, the error carries the answer rather than a diagnosis:
the status to send (``None`` means drop the message without a word), the reason phrase,
and any header fields the answer needs (``Unsupported`` for a 420, say). The I/O layer
turns it into bytes with :func:`registrar.sip.message.response_to`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from registrar.sip.message import Request


class SipError(Exception):
    """A message we cannot accept; carries the answer to send."""

    def __init__(
        self,
        status: int | None,
        reason: str,
        headers: tuple[tuple[str, str], ...] = (),
        *,
        request: Request | None = None,
    ) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = tuple(headers)
        # parse_message() fills this in when the header fields were readable even though
        # the request is not acceptable, so the caller can still copy Via/From/To/Call-ID/
        # CSeq into the answer. When the start line was the broken part, its method and
        # Request-URI are stand-ins (the URI holds the raw text, with an empty scheme).
        self.request = request

    @property
    def drop(self) -> bool:
        return self.status is None

    def __str__(self) -> str:
        if self.status is None:
            return f"drop: {self.reason}"
        return f"{self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"SipError({self.status!r}, {self.reason!r}, {self.headers!r})"
