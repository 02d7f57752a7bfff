"""SIP messages: bytes in, :class:`Request` / :class:`Response` out, and back to bytes.

This module owns RFC 3261 §7 (message structure), the header-field bookkeeping of §20
(compact forms, list headers, case-insensitive names) and the UAS's first look at a
request (§8.2.1-8.2.3, §8.2.6.2 for answering). The grammar of individual values lives
in :mod:`registrar.sip.uri`; stream framing in :mod:`registrar.sip.framing`.

Parsing is two-speed, because the REGISTER hot path needs only a handful of fields:

* :func:`parse_message` splits the start line and header lines once (undoing line
  folding), keeps raw ``(name, value)`` pairs, and checks only what decides whether the
  message is acceptable at all: start line, mandatory headers present, no conflicting
  duplicates, CSeq method, Content-Length.
* Structured headers (Via, From/To, Contact, CSeq, Expires, ...) are parsed on first
  access and cached (edit ``headers`` before reading them, not after). A malformed one
  raises :class:`SipError` (400 for a request, drop for a response) at that moment;
  :func:`check_request` touches the essentials so those errors surface before the
  registrar acts.

Every datagram is treated per RFC 3261 §18.3: bytes past Content-Length are discarded,
a body shorter than Content-Length is an error, and without Content-Length the body is
the rest of the datagram. On a stream, :class:`~registrar.sip.framing.StreamFramer`
hands over one message at a time, so the same rules hold.

Header fields are UTF-8 (RFC 3261 §25: TEXT-UTF8); bytes that are not become U+FFFD,
so every value can be stored and encoded again without a second thought. The body is
left as bytes. Nothing here reads the clock or touches a socket.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from registrar.sip.errors import SipError
from registrar.sip.uri import (
    NameAddr,
    Uri,
    Via,
    is_token,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_comma_list,
)

COMPACT_FORMS: dict[str, str] = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "f": "From",
    "t": "To",
    "v": "Via",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "s": "Subject",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
    "n": "Identity-Info",
}

_LIST_HEADERS = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Call-Info", "Contact", "Content-Encoding", "Content-Language", "Error-Info",
    "History-Info", "In-Reply-To", "P-Asserted-Identity", "P-Associated-URI",
    "P-Preferred-Identity", "Path", "Proxy-Require", "Reason", "Record-Route", "Reject-Contact",
    "Request-Disposition", "Require", "Route", "Security-Client", "Security-Server",
    "Security-Verify", "Service-Route", "Supported", "Unsupported", "Via", "Warning",
)  # fmt: skip
_OTHER_KNOWN_HEADERS = (
    "Accept-Resource-Priority", "Authentication-Info", "Authorization", "Call-ID", "Content-Disposition",
    "Content-Length", "Content-Transfer-Encoding", "Content-Type", "CSeq", "Date", "Event", "Expires",
    "Flow-Timer", "From", "Identity", "Identity-Info", "Max-Forwards", "MIME-Version", "Min-Expires",
    "Min-SE", "Organization", "P-Access-Network-Info", "Priority", "Privacy", "Proxy-Authenticate",
    "Proxy-Authorization", "RAck", "Refer-To", "Referred-By", "Replaces", "Reply-To", "Retry-After",
    "RSeq", "Server", "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject", "Subscription-State",
    "Timestamp", "To", "User-Agent", "WWW-Authenticate",
)  # fmt: skip

# lowercased name as it may appear on the wire -> (lookup key, canonical spelling)
_NAMES: dict[str, tuple[str, str]] = {
    name.lower(): (name.lower(), name) for name in _LIST_HEADERS + _OTHER_KNOWN_HEADERS
}
_NAMES.update((letter, (name.lower(), name)) for letter, name in COMPACT_FORMS.items())
_KEYS_OF_CANONICAL_NAMES = {canonical: key for key, canonical in _NAMES.values()}
_LIST_KEYS = frozenset(name.lower() for name in _LIST_HEADERS)
_MANDATORY = (("to", "To"), ("from", "From"), ("call-id", "Call-ID"), ("cseq", "CSeq"), ("via", "Via"))
# Headers that may appear once; repeats that agree are tolerated, repeats that differ
# leave no way to know which one the sender meant (RFC 4475 multi01, mcl01).
_SINGLE_VALUED = (
    ("call-id", "Call-ID"), ("cseq", "CSeq"), ("from", "From"), ("to", "To"),
    ("content-length", "Content-Length"), ("max-forwards", "Max-Forwards"), ("expires", "Expires"),
)  # fmt: skip

_COPIED_INTO_RESPONSES = (
    ("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq"), ("timestamp", "Timestamp"),
)  # fmt: skip

_WHITESPACE = " \t"
_MAX_DELTA_SECONDS = 2**32 - 1
_is_sip_version = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE).fullmatch


_T = TypeVar("_T")


class _parsed_on_first_use(Generic[_T]):
    """functools.cached_property without the per-access lock Python 3.11 still takes.

    On first access the value is computed and stored in the instance's ``__dict__``,
    which then shadows this (non-data) descriptor. A raised SipError is not cached.
    """

    def __init__(self, compute: Callable[[Any], _T]) -> None:
        self.compute = compute
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> _T:
        if instance is None:
            return self  # type: ignore[return-value]
        value = instance.__dict__[self.name] = self.compute(instance)
        return value


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _bounded_int(digits: str, limit: int) -> int | None:
    """The value of a digit string, or None above ``limit``.

    Long strings are refused before int() sees them: a 100-digit CSeq should cost
    nothing, and int() refuses strings over 4300 digits anyway.
    """
    if len(digits.lstrip("0")) > len(str(limit)):
        return None
    value = int(digits)
    return value if value <= limit else None


def _lookup_key(name: str) -> str:
    key = _KEYS_OF_CANONICAL_NAMES.get(name)
    if key is not None:
        return key
    lowered = name.lower()
    known = _NAMES.get(lowered)
    return known[0] if known else lowered


def _canonical(name: str) -> tuple[str, str]:
    known = _NAMES.get(name.lower())
    return known if known else (name.lower(), name)


class Headers:
    """Header fields in order, as ``(canonical name, value)`` pairs.

    Canonical means compact forms expanded and well-known names spelled the usual way;
    unknown names stay as written. Lookups ignore case and understand compact forms.
    """

    __slots__ = ("_items", "_index")

    def __init__(self, items: Iterable[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = []
        self._index: dict[str, list[str]] | None = None
        for name, value in items or ():
            self.add(name, value)

    @classmethod
    def _from_parsed(cls, items: list[tuple[str, str]], index: dict[str, list[str]] | None) -> Headers:
        headers = cls.__new__(cls)
        headers._items = items
        headers._index = index
        return headers

    def _values(self, key: str) -> list[str]:
        index = self._index
        if index is None:
            index = self._index = {}
            for name, value in self._items:
                index.setdefault(_lookup_key(name), []).append(value)
        return index.get(key, [])

    def get(self, name: str) -> str | None:
        values = self._values(_lookup_key(name))
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        key = _lookup_key(name)
        values = self._values(key)
        if key not in _LIST_KEYS:
            return list(values)
        return [element for value in values for element in split_comma_list(value)]

    def add(self, name: str, value: str) -> None:
        self._items.append((_canonical(name)[1], value))
        self._index = None

    def remove(self, name: str) -> None:
        key = _lookup_key(name)
        self._items = [(item_name, value) for item_name, value in self._items if _lookup_key(item_name) != key]
        self._index = None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self._values(_lookup_key(name)))

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class _Message:
    """What requests and responses share: header access and lazily parsed fields."""

    # A malformed request is answered with 400; a malformed response is dropped
    # (RFC 3261 §18.1.2: nothing can be sent back for it).
    _error_status: int | None = 400
    version: str
    headers: Headers
    body: bytes

    def _error(self, reason: str) -> SipError:
        return SipError(self._error_status, reason)

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise self._error(f"Missing {name} header")
        return value

    def _malformed(self, name: str, error: SipError) -> SipError:
        detail = error.reason if error.reason[1:2].isupper() else error.reason[:1].lower() + error.reason[1:]
        return self._error(f"Malformed {name} header: {detail}")

    def _name_addr(self, name: str, value: str) -> NameAddr:
        try:
            return parse_name_addr(value)
        except SipError as error:
            raise self._malformed(name, error) from None

    @_parsed_on_first_use
    def call_id(self) -> str:
        call_id = self._required("Call-ID")
        if not call_id or any(char in call_id for char in " \t"):
            raise self._error("Malformed Call-ID header")
        return call_id

    @_parsed_on_first_use
    def cseq(self) -> tuple[int, str]:
        parts = self._required("CSeq").split()
        if len(parts) != 2 or not _is_digits(parts[0]) or not is_token(parts[1]):
            raise self._error("Malformed CSeq header")
        # RFC 3261 §8.1.1.5: the number must be below 2**31 (RFC 4475 scalar02).
        number = _bounded_int(parts[0], 2**31 - 1)
        if number is None:
            raise self._error("CSeq number too large")
        return number, parts[1]

    @_parsed_on_first_use
    def from_(self) -> NameAddr:
        return self._name_addr("From", self._required("From"))

    @_parsed_on_first_use
    def to(self) -> NameAddr:
        return self._name_addr("To", self._required("To"))

    @_parsed_on_first_use
    def vias(self) -> list[Via]:
        elements = self.headers.get_all("Via")
        if not elements:
            raise self._error("Missing Via header")
        try:
            return [parse_via(element) for element in elements]
        except SipError as error:
            raise self._malformed("Via", error) from None

    @_parsed_on_first_use
    def top_via(self) -> Via:
        if "vias" in self.__dict__:
            return self.vias[0]
        elements = split_comma_list(self._required("Via"))
        if not elements:
            raise self._error("Missing Via header")
        try:
            return parse_via(elements[0])
        except SipError as error:
            raise self._malformed("Via", error) from None

    @_parsed_on_first_use
    def contacts(self) -> list[NameAddr]:
        """The Contact values, ``[]`` when there are none or the value is ``*``."""
        elements = self.headers.get_all("Contact")
        if "*" in elements:
            if len(elements) > 1:
                raise self._error("Contact * must be the only contact")
            return []
        return [self._name_addr("Contact", element) for element in elements]

    @_parsed_on_first_use
    def contact_star(self) -> bool:
        return "*" in self.headers.get_all("Contact")

    @_parsed_on_first_use
    def expires(self) -> int | None:
        value = self.headers.get("Expires")
        if value is None:
            return None
        if not _is_digits(value):
            raise self._error("Malformed Expires header")
        # Too large for 32 bits means "as long as possible" (RFC 4475 scalar02): the
        # registrar clamps it to its own maximum anyway.
        seconds = _bounded_int(value, _MAX_DELTA_SECONDS)
        return _MAX_DELTA_SECONDS if seconds is None else seconds

    @_parsed_on_first_use
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        if not _is_digits(value):
            raise self._error("Malformed Max-Forwards header")
        # Out of range reads as absent, as RFC 4475 §3.1.2.4 suggests for Max-Forwards.
        return _bounded_int(value, 255)

    @property
    def user_agent(self) -> str | None:
        return self.headers.get("User-Agent")

    def _header_block(self, start_line: str) -> bytes:
        lines = [start_line]
        lines += [f"{name}: {value}" for name, value in self.headers._items if name != "Content-Length"]
        lines.append(f"Content-Length: {len(self.body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode()


class Request(_Message):
    def __init__(
        self,
        method: str,
        uri: Uri,
        version: str = "SIP/2.0",
        headers: Headers | None = None,
        body: bytes = b"",
    ) -> None:
        self.method = method
        self.uri = uri
        self.version = version
        self.headers = headers if headers is not None else Headers()
        self.body = body

    def to_bytes(self) -> bytes:
        """The request on the wire, with a Content-Length that matches the body."""
        return self._header_block(f"{self.method} {self.uri} {self.version}") + self.body

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(_Message):
    _error_status = None

    def __init__(
        self,
        status: int,
        reason: str,
        version: str = "SIP/2.0",
        headers: Headers | None = None,
        body: bytes = b"",
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers if headers is not None else Headers()
        self.body = body

    def to_bytes(self) -> bytes:
        """The response on the wire, with a Content-Length that matches the body."""
        return self._header_block(f"{self.version} {self.status} {self.reason}") + self.body

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def parse_message(data: bytes) -> Request | Response:
    """Parse one datagram (or one message cut by the stream framer).

    Raises :class:`SipError`: 400 naming the problem or 505 for a request we should
    answer (``error.request`` then holds what could be read, for :func:`response_to`),
    ``status=None`` for garbage and for any broken response.
    """
    start = 0
    # RFC 3261 §7.5: CRLFs before the start line are ignored; a keep-alive is only that.
    while data.startswith(b"\r\n", start):
        start += 2
    if start >= len(data):
        raise SipError(None, "Empty message")
    newline = "\r\n"
    end = data.find(b"\r\n\r\n", start)
    if end >= 0:
        body_start = end + 4
    else:
        end = data.find(b"\n\n", start)
        if end >= 0:
            # Bare LF line ends: not what RFC 3261 says, but unambiguous.
            newline = "\n"
            body_start = end + 2
        else:
            # No empty line: the header section runs to the end of the datagram (the
            # copy of RFC 4475's baddn.dat in circulation lost its final CRLF).
            end = body_start = len(data)
    text = data[start:end].decode("utf-8", "replace").rstrip("\r\n")
    if newline == "\n":
        text = text.replace("\r\n", "\n")
    line_breaks = text.count(newline)
    # A CR or LF that does not end a line would be echoed into our answers (From, To
    # and Via are copied back): such a line is malformed.
    stray_breaks = text.count("\n") != line_breaks or text.count("\r") != (line_breaks if newline == "\r\n" else 0)
    lines = text.split(newline)
    if "\n " in text or "\n\t" in text:
        lines = _unfold(lines)
    start_line = lines[0]
    if start_line[:4].upper() == "SIP/":
        return _parse_response(start_line, lines, data, body_start, stray_breaks)
    return _parse_request(start_line, lines, data, body_start, stray_breaks)


def _unfold(lines: list[str]) -> list[str]:
    # RFC 3261 §7.3.1: a line starting with whitespace continues the previous header
    # line, and the fold reads as a single space. The start line cannot be continued.
    logical_lines = [[lines[0]]]
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and len(logical_lines) > 1:
            logical_lines[-1].append(line.strip(_WHITESPACE))
        else:
            logical_lines.append([line])
    return [pieces[0] if len(pieces) == 1 else _join_folded(pieces) for pieces in logical_lines]


def _join_folded(pieces: list[str]) -> str:
    return " ".join([pieces[0].rstrip(_WHITESPACE)] + [piece for piece in pieces[1:] if piece])


def _split_header_lines(lines: list[str], stray_breaks: bool) -> tuple[Headers, str | None]:
    """Header lines (after the start line) to Headers; also the first unreadable line."""
    items: list[tuple[str, str]] = []
    index: dict[str, list[str]] = {}
    bad_line = None
    for line in lines[1:]:
        if stray_breaks and ("\r" in line or "\n" in line):
            bad_line = bad_line or line
            continue
        name, colon, value = line.partition(":")
        known = _NAMES.get(name.lower())
        if known is None or not colon:
            name = name.rstrip(_WHITESPACE)
            if not colon or not is_token(name):
                bad_line = bad_line or line
                continue
            known = _NAMES.get(name.lower()) or (name.lower(), name)
        key, name = known
        value = value.strip(_WHITESPACE)
        items.append((name, value))
        values = index.get(key)
        if values is None:
            index[key] = [value]
        else:
            values.append(value)
    return Headers._from_parsed(items, index), bad_line


def _parse_request(start_line: str, lines: list[str], data: bytes, body_start: int, stray_breaks: bool) -> Request:
    method = start_line.split(" ", 1)[0]
    version = start_line.rstrip(_WHITESPACE).rpartition(" ")[2]
    if not is_token(method) or version[:4].upper() != "SIP/":
        raise SipError(None, "Not a SIP message")
    headers, bad_line = _split_header_lines(lines, stray_breaks)
    parts = start_line.split(" ")
    if len(parts) != 3 or not all(parts):
        # RFC 4475 lwsstart, trws, lwsruri: one SP between elements, none elsewhere.
        raise _start_line_error("Malformed Request-Line", method, start_line[len(method) :].strip(), headers)
    method, uri_text, version = parts
    if not _is_sip_version(version):
        raise _start_line_error("Malformed SIP-Version", method, uri_text, headers)
    try:
        uri = parse_uri(uri_text)
    except SipError:
        # RFC 4475 ltgtruri: no <> around the Request-URI.
        raise _start_line_error("Malformed Request-URI", method, uri_text, headers) from None
    request = Request(method, uri, version.upper(), headers)
    try:
        if request.version != "SIP/2.0":
            raise SipError(505, "Version Not Supported")
        if bad_line is not None:
            raise SipError(400, "Malformed header line")
        _check_headers(headers, 400)
        if request.cseq[1] != method:
            raise SipError(400, "CSeq method does not match the request method")
        request.body = _body(headers, data, body_start, 400)
    except SipError as error:
        error.request = request
        raise
    return request


def _start_line_error(reason: str, method: str, uri_text: str, headers: Headers) -> SipError:
    # The header fields are still good for an answer; the URI holds the raw text.
    stand_in = Request(method, Uri("", None, None, "", None, (), "", uri_text), "SIP/2.0", headers)
    return SipError(400, reason, request=stand_in)


def _parse_response(start_line: str, lines: list[str], data: bytes, body_start: int, stray_breaks: bool) -> Response:
    version, _, rest = start_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version.upper() != "SIP/2.0":
        raise SipError(None, "Response with unsupported SIP version")
    if not (len(code) == 3 and code.isascii() and code.isdigit() and "1" <= code[0] <= "6"):
        # RFC 4475 bigcode: a status code is three digits, 100-699.
        raise SipError(None, "Malformed Status-Line")
    headers, bad_line = _split_header_lines(lines, stray_breaks)
    if bad_line is not None:
        raise SipError(None, "Malformed header line")
    response = Response(int(code), reason, "SIP/2.0", headers)
    _check_headers(headers, None)
    # Parsed now, not lazily: a response whose CSeq cannot be read matches no
    # transaction and is dropped here (RFC 4475 scalarlg).
    response.cseq
    response.body = _body(headers, data, body_start, None)
    return response


def _check_headers(headers: Headers, status: int | None) -> None:
    index = headers._index or {}
    missing = [name for key, name in _MANDATORY if key not in index]
    if missing:
        noun = "header" if len(missing) == 1 else "headers"
        raise SipError(status, f"Missing {', '.join(missing)} {noun}")
    for key, name in _SINGLE_VALUED:
        values = index.get(key)
        if values and len(values) > 1 and any(value != values[0] for value in values):
            raise SipError(status, f"Conflicting {name} headers")


def _body(headers: Headers, data: bytes, body_start: int, status: int | None) -> bytes:
    length_text = headers.get("Content-Length")
    if length_text is None:
        return data[body_start:]
    if not _is_digits(length_text):
        raise SipError(status, "Malformed Content-Length")
    length = _bounded_int(length_text, len(data) - body_start)
    if length is None:
        # RFC 4475 clerr: on a datagram the rest of the body is not coming.
        raise SipError(status, "Body shorter than Content-Length")
    return data[body_start : body_start + length]


def check_request(request: Request, supported: frozenset[str] = frozenset({"path", "outbound", "gruu"})) -> None:
    """The checks a UAS makes before acting on a request (RFC 3261 §8.2.1-8.2.2).

    Parses the fields any request handler relies on, so a malformed one is answered
    with 400 here rather than halfway through; then 416 for a Request-URI that is not
    SIP or SIPS, 420 (with ``Unsupported``) for a Require we do not know. Proxy-Require
    is for proxies and Max-Forwards for forwarding; a registrar ignores both.
    """
    request.call_id
    request.cseq
    request.from_
    to = request.to
    request.vias
    request.contacts
    request.expires
    if request.uri.scheme not in ("sip", "sips"):
        raise SipError(416, "Unsupported URI Scheme")
    if request.uri.headers:
        # RFC 3261 §19.1.1, RFC 4475 escruri: headers are not allowed in a Request-URI.
        raise SipError(400, "Request-URI must not contain headers")
    if request.method == "REGISTER" and to.uri.scheme not in ("sip", "sips"):
        # RFC 4475 unksm2: an address-of-record is a SIP or SIPS URI.
        raise SipError(400, "Address-of-record must be a SIP or SIPS URI")
    if request.method in ("ACK", "CANCEL") or "Require" not in request.headers:
        return
    known = {option.lower() for option in supported}
    unsupported = [option for option in request.headers.get_all("Require") if option.lower() not in known]
    if unsupported:
        raise SipError(420, "Bad Extension", (("Unsupported", ", ".join(unsupported)),))


def response_to(
    request: Request,
    status: int,
    reason: str,
    headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
    *,
    to_tag: str | None = None,
) -> Response:
    """A response to ``request`` as RFC 3261 §8.2.6.2 builds it.

    Via (all, in order), From, To, Call-ID and CSeq are copied as received, Timestamp
    too when present (§8.2.6.1); ``;tag=to_tag`` is added to To when it has no tag yet.
    ``headers`` follow in order; Content-Length is written by :meth:`Response.to_bytes`.
    """
    received = request.headers
    items: list[tuple[str, str]] = [("Via", via) for via in received._values("via")]
    for key, name in _COPIED_INTO_RESPONSES:
        values = received._values(key)
        if not values:
            continue
        value = values[0]
        if key == "to" and to_tag is not None and not _has_tag(request, value):
            value = f"{value};tag={to_tag}"
        items.append((name, value))
    response = Response(status, reason, "SIP/2.0", Headers._from_parsed(items, None))
    for name, value in headers:
        response.headers.add(name, value)
    return response


def _has_tag(request: Request, to_value: str) -> bool:
    try:
        return request.to.tag is not None
    except SipError:
        # Answering a request whose To we could not parse: look for the tag by eye.
        return ";tag=" in "".join(to_value.split()).lower()


if __name__ == "__main__":
    import timeit

    sample = (
        b"REGISTER sip:10.4.1.12 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.4.1.23:5060;branch=z9hG4bK744cf86f;rport\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: <sip:660001@10.4.1.12>;tag=as47e49ca7\r\n"
        b"To: <sip:660001@10.4.1.12>\r\n"
        b"Call-ID: 545c634747c8718f14d321e87880db49@0.0.0.0\r\n"
        b"CSeq: 102 REGISTER\r\n"
        b"User-Agent: VoxStack Analog Gateway\r\n"
        b'Authorization: Digest username="660001", realm="10.4.1.12", nonce="abc", '
        b'uri="sip:10.4.1.12", response="0123456789abcdef0123456789abcdef", algorithm=MD5\r\n'
        b"Expires: 120\r\n"
        b'Contact: <sip:660001@10.4.1.23:5060>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000000000001>"\r\n'
        b"Content-Length: 0\r\n\r\n"
    )

    def parse_hot_path() -> None:
        request = parse_message(sample)
        check_request(request)
        request.top_via.branch, request.from_.tag, request.to.uri.address_of_record()
        request.contacts[0].uri, request.headers.get("Authorization"), request.user_agent

    runs = 20000
    seconds = timeit.timeit(parse_hot_path, number=runs)
    print(f"parse + check + hot headers of a REGISTER: {seconds / runs * 1e6:.1f} µs")
