"""The grammar of SIP header field values: URIs, name-addr, Via, parameters and lists.

This module owns RFC 3261 §19.1 (SIP and SIPS URIs, with tel: and any other
absoluteURI scheme kept opaque), §20.10's name-addr / addr-spec distinction, §20.42's
Via, and the generic-param and comma-list rules of §25 that those share. Everything is
a small frozen dataclass built from text by a ``parse_*`` function that raises
:class:`~registrar.sip.errors.SipError` (400) with a reason phrase naming the problem.

Decisions worth knowing:

* Folding has already been undone by the message layer, so values here are one line.
* Strict where RFC 4475 asks for a 400 (LWS inside ``<>``, unquoted display names with
  non-token characters, empty parameters, unbalanced quotes, an addr-spec carrying URI
  headers), liberal about unquoted parameter values, which phones get wrong in the wild.
* URI parameter names are lowercased and %-decoded and their values %-decoded, so
  ``;%6C%72`` is the ``lr`` parameter; ``str()`` re-escapes them. The user part is kept
  as written; :meth:`Uri.address_of_record` gives the canonical key bindings are filed
  under.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from registrar.sip.errors import SipError

Params = tuple[tuple[str, str | None], ...]

is_token = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+").fullmatch
_is_scheme = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*").fullmatch
# The userinfo part is matched separately from the rest, and only when an '@' is
# present: one regex with an optional userinfo group would backtrack quadratically on a
# long URI without '@'.
_match_userinfo = re.compile(
    r"(?P<user>[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+)"
    r"(?::(?P<password>[A-Za-z0-9\-_.!~*'()&=+$,%]*))?"
).fullmatch
_URI_PARAMS = r"(?:;[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]+(?:=[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]+)?)*"
_match_hostport_rest = re.compile(
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+)"
    r"(?::(?P<port>[0-9]{1,5}))?"
    rf"(?P<params>{_URI_PARAMS})"
    r"(?:\?(?P<headers>[A-Za-z0-9\-_.!~*'()\[\]/?:+$%=&]*))?"
).fullmatch
_is_uri_params = re.compile(_URI_PARAMS).fullmatch
_is_opaque_uri = re.compile(r"[A-Za-z0-9\-_.!~*'()%;/?:@&=+$,\[\]#]+").fullmatch
_is_tel_number = re.compile(r"[A-Za-z0-9\-_.!~*'()%/:&+$\[\]#]+").fullmatch
_has_bad_escape = re.compile(r"%(?![0-9A-Fa-f]{2})").search
_match_quoted = re.compile(r'"((?:[^"\\]|\\[\s\S])*+)"').match
_unescape_pairs = re.compile(r"\\([\s\S])").sub

_USER_SAFE = "!*'()&=+$,;?/"  # unreserved + user-unreserved, beyond quote()'s own
_PARAM_SAFE = "!*'()[]/:&+$"  # unreserved + param-unreserved
_TEL_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")


def _bad(reason: str) -> SipError:
    return SipError(400, reason)


def _decode(text: str) -> str:
    return unquote(text, errors="replace") if "%" in text else text


class _WithParams:
    """Case-insensitive access to a ``params`` tuple of (lowercased name, value)."""

    __slots__ = ()

    def param(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.params:
            if key == name:
                return value
        return None

    def has_param(self, name: str) -> bool:
        name = name.lower()
        return any(key == name for key, _ in self.params)


def _format_params(params: Params) -> str:
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)


# An unterminated quote or angle bracket runs to the end of the text (so a string of
# stray quotes costs one pass, not one per quote); the element left holding it then
# fails to parse.
_find_commas_outside_quotes_and_angles = re.compile(
    r'"(?:[^"\\]|\\[\s\S]?)*+(?:"|\Z)|<[^>]*+(?:>|\Z)|,'
).finditer


def split_comma_list(value: str) -> list[str]:
    """Split a list header value into its elements (RFC 3261 §7.3.1).

    Commas inside quoted strings and inside ``<...>`` do not separate elements; empty
    elements are dropped, which is what a liberal reader of ``a, , b`` wants.
    """
    if "," not in value:
        value = value.strip()
        return [value] if value else []
    if '"' in value or "<" in value:
        parts = []
        start = 0
        for match in _find_commas_outside_quotes_and_angles(value):
            if match.group() == ",":
                parts.append(value[start : match.start()])
                start = match.end()
        parts.append(value[start:])
    else:
        parts = value.split(",")
    return [element for element in (part.strip() for part in parts) if element]


# One generic-param and the ';' (or end) after it: ``name``, ``name=value`` or
# ``name="quoted"``, with the LWS RFC 3261 allows around '=' and ';'. Unquoted values
# should be token / host; phones send worse (``<urn:...>`` without quotes), so anything
# that cannot be confused with a delimiter is accepted.
_match_param = re.compile(
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*"
    r'(?:=[ \t]*("(?:[^"\\]|\\[\s\S])*+"|[^\s;,"]+)[ \t]*)?'
    r"(;|\Z)"
).match


def parse_params(text: str) -> Params:
    """Parse the generic-params after the first ``;`` of a header value.

    Names are lowercased; values are kept as written, quotes included; a valueless
    parameter has the value ``None``.
    """
    params: list[tuple[str, str | None]] = []
    position = 0
    while True:
        param = _match_param(text, position)
        if param is None:
            rest = text[position:].strip(" \t")
            if not rest or rest.startswith(";"):
                raise _bad("Empty parameter")
            raise _bad(f"Invalid parameter {rest.partition(';')[0]!r}")
        name, value, separator = param.groups()
        params.append((name.lower(), value))
        if not separator:
            return tuple(params)
        position = param.end()


@dataclass(frozen=True)
class Uri(_WithParams):
    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    params: Params
    headers: str
    raw: str = field(compare=False)

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else _decode(self.user)

    @property
    def transport(self) -> str | None:
        transport = self.param("transport")
        return transport.lower() if transport else None

    def address_of_record(self) -> str:
        """The key bindings are filed under: ``sip:user@host`` or ``tel:+number``.

        SIPS folds into SIP and the port and parameters go, as RFC 3261 §10.3 step 5
        canonicalises. The user part is %-decoded and then re-escaped where the
        grammar requires it (``%75se%72`` and ``user`` are one key; a NUL stays
        ``%00`` so the key is safe to store as text).
        """
        if self.scheme in ("sip", "sips"):
            if self.user is None:
                return f"sip:{self.host}"
            user = self.user
            if "%" in user:
                user = quote(_decode(user), safe=_USER_SAFE)
            return f"sip:{user}@{self.host}"
        if self.scheme == "tel":
            return f"tel:{(self.user or '').translate(_TEL_VISUAL_SEPARATORS)}"
        return f"{self.scheme}:{self.raw.partition(':')[2]}"

    def __str__(self) -> str:
        if self.scheme not in ("sip", "sips", "tel"):
            return self.raw
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts += (":", self.password)
            if self.scheme != "tel":
                parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts.append(f":{self.port}")
        for name, value in self.params:
            parts += (";", quote(name, safe=_PARAM_SAFE))
            if value is not None:
                parts += ("=", quote(value, safe=_PARAM_SAFE))
        if self.headers:
            parts += ("?", self.headers)
        return "".join(parts)


def parse_uri(text: str) -> Uri:
    scheme, colon, rest = text.partition(":")
    if not colon or not _is_scheme(scheme):
        raise _bad("Malformed URI")
    scheme = scheme.lower()
    if scheme in ("sip", "sips"):
        return _parse_sip_uri(text, scheme, rest)
    if scheme == "tel":
        return _parse_tel_uri(text, rest)
    if not _is_opaque_uri(rest) or _has_bad_escape(rest):
        raise _bad(f"Malformed {scheme} URI")
    return Uri(scheme, None, None, "", None, (), "", text)


def _parse_sip_uri(text: str, scheme: str, rest: str) -> Uri:
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo = _match_userinfo(rest, 0, at)
        if userinfo is None:
            raise _bad("Malformed user part in SIP URI")
        user, password = userinfo.group("user", "password")
        rest = rest[at + 1 :]
    match = _match_hostport_rest(rest)
    if match is None:
        raise _bad("Malformed SIP URI")
    host, port_text, params_text, headers = match.group("host", "port", "params", "headers")
    if "%" in text and _has_bad_escape(text):
        raise _bad("Malformed escape in SIP URI")
    port = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            raise _bad("Port out of range in SIP URI")
    params = _decode_uri_params(params_text) if params_text else ()
    return Uri(scheme, user, password, host.lower(), port, params, headers or "", text)


def _parse_tel_uri(text: str, rest: str) -> Uri:
    # RFC 3966: the number, then parameters with the same characters as SIP URI ones.
    number, semicolon, params_text = rest.partition(";")
    params_text = semicolon + params_text
    if not _is_tel_number(number) or not _is_uri_params(params_text) or _has_bad_escape(rest):
        raise _bad("Malformed tel URI")
    params = _decode_uri_params(params_text) if params_text else ()
    return Uri("tel", number, None, "", None, params, "", text)


def _decode_uri_params(text: str) -> Params:
    """``;name[=value]...`` as validated by _URI_PARAMS, %-decoded, names lowercased."""
    return tuple(
        (_decode(name).lower(), _decode(value) if equals else None)
        for name, equals, value in (part.partition("=") for part in text[1:].split(";"))
    )


@dataclass(frozen=True)
class NameAddr(_WithParams):
    display_name: str | None
    uri: Uri
    params: Params
    raw: str = field(compare=False)

    @property
    def tag(self) -> str | None:
        return self.param("tag")

    def __str__(self) -> str:
        uri = f"<{self.uri}>{_format_params(self.params)}"
        if self.display_name is None:
            return uri
        display = self.display_name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{display}" {uri}'


def parse_name_addr(text: str) -> NameAddr:
    """Parse a name-addr (``"Name" <uri>;params``) or an addr-spec (``uri;params``).

    Without angle brackets everything after the first ``;`` is a header parameter, not
    a URI parameter (RFC 3261 §20.10), and the URI may not carry ``?headers``.
    """
    value = text.strip(" \t")
    display_name: str | None = None
    if value.startswith('"'):
        quoted = _match_quoted(value)
        if quoted is None:
            raise _bad("Unterminated quoted string in display name")
        display_name = quoted.group(1)
        if "\\" in display_name:
            display_name = _unescape_pairs(r"\1", display_name)
        rest = value[quoted.end() :].lstrip(" \t")
        if not rest.startswith("<"):
            raise _bad("Display name not followed by <URI>")
    else:
        less_than = value.find("<")
        if less_than < 0:
            return _parse_addr_spec(value, text)
        words = value[:less_than].split()
        if words:
            if not all(is_token(word) for word in words):
                raise _bad("Display name with special characters must be quoted")
            display_name = " ".join(words)
        rest = value[less_than:]
    greater_than = rest.find(">")
    if greater_than < 0:
        raise _bad("Missing > after URI")
    uri = parse_uri(rest[1:greater_than])
    after = rest[greater_than + 1 :].strip(" \t")
    if not after:
        return NameAddr(display_name, uri, (), text)
    if after[0] != ";":
        raise _bad("Unexpected text after >")
    return NameAddr(display_name, uri, parse_params(after[1:]), text)


def _parse_addr_spec(value: str, text: str) -> NameAddr:
    uri_text, semicolon, params_text = value.partition(";")
    uri_text = uri_text.rstrip(" \t")
    if "?" in uri_text:
        raise _bad("URI with headers must be enclosed in <>")
    uri = parse_uri(uri_text)
    return NameAddr(None, uri, parse_params(params_text) if semicolon else (), text)


@dataclass(frozen=True)
class Via(_WithParams):
    protocol: str
    transport: str
    host: str
    port: int | None
    params: Params
    raw: str = field(compare=False)

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{_format_params(self.params)}"


# sent-protocol LWS sent-by [; params], with the SWS RFC 3261 allows around '/' and ':'.
_match_via = re.compile(
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/"
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+)(?:[ \t]*:[ \t]*([0-9]{1,5}))?[ \t]*(?:;(.*))?",
    re.DOTALL,
).fullmatch


def parse_via(text: str) -> Via:
    """Parse one via-parm: ``SIP/2.0/UDP host[:port];params``."""
    via = _match_via(text)
    if via is None:
        raise _bad("Malformed sent-protocol or sent-by")
    name, version, transport, host, port, params = via.groups()
    if port is not None and int(port) > 65535:
        raise _bad("Port out of range")
    return Via(
        f"{name.upper()}/{version}",
        transport.upper(),
        host.lower(),
        None if port is None else int(port),
        () if params is None else parse_params(params),
        text,
    )
