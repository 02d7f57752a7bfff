"""The STUN keep-alive a SIP server answers on its UDP port (RFC 5626 §4.4.2, §8.4).

A phone behind NAT keeps its UDP flow open, and learns whether its NAT mapping
changed, by sending STUN Binding requests (RFC 5389) to the port it registered
through. This module owns recognising such a datagram and building the answer: a
Binding success response carrying XOR-MAPPED-ADDRESS (the source address the server
saw) with the request's transaction id.

Decisions worth knowing:

* Demultiplexing follows RFC 5626 §5.4 / RFC 5389 §6: a SIP message never starts with
  a byte below 0x02, a STUN message always does (its first two bits are zero); the
  magic cookie and a length that matches the datagram and is a multiple of 4 confirm it.
* No authentication: §8.4 has the keep-alive work without credentials, so USERNAME and
  MESSAGE-INTEGRITY are accepted and ignored. A FINGERPRINT, when present, must be
  right, and the response then carries one too.
* Other comprehension-required attributes get the 420 error response with
  UNKNOWN-ATTRIBUTES (RFC 5389 §7.3.1). Everything malformed, every indication,
  response or method other than Binding is dropped silently, as §7.3 asks.
"""
from __future__ import annotations

import ipaddress
import struct
import zlib

MAGIC_COOKIE = 0x2112A442
HEADER_LENGTH = 20

BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111

MAPPED_ADDRESS = 0x0001
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
XOR_MAPPED_ADDRESS = 0x0020
FINGERPRINT = 0x8028

FINGERPRINT_XOR = 0x5354554E
# Attributes a Binding request may carry that we understand (by ignoring them, for the
# credentials: the keep-alive is unauthenticated).
_UNDERSTOOD = frozenset({USERNAME, MESSAGE_INTEGRITY, FINGERPRINT})

_HEADER = struct.Struct("!HHI12s")
_ATTRIBUTE = struct.Struct("!HH")


def might_be_stun(data: bytes) -> bool:
    """Whether a datagram is STUN rather than SIP, by its first byte (0x00 or 0x01)."""
    return bool(data) and data[0] < 2


def _padded(length: int) -> int:
    return (length + 3) & ~3


def _attributes(body: bytes) -> list[tuple[int, int, bytes]] | None:
    """(type, offset in the body, value) of each attribute; None if they do not fit."""
    found = []
    offset = 0
    while offset < len(body):
        if offset + 4 > len(body):
            return None
        kind, length = _ATTRIBUTE.unpack_from(body, offset)
        end = offset + 4 + length
        if end > len(body):
            return None
        found.append((kind, offset, body[offset + 4 : end]))
        offset += 4 + _padded(length)
    if offset != len(body):
        return None
    return found


def _fingerprint(message: bytes) -> int:
    return (zlib.crc32(message) ^ FINGERPRINT_XOR) & 0xFFFFFFFF


def _xor_mapped_address(ip: str, port: int, transaction_id: bytes) -> bytes:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; the phone sent from IPv4.
        address = address.ipv4_mapped
    packed = address.packed
    mask = struct.pack("!I", MAGIC_COOKIE) + (transaction_id if len(packed) == 16 else b"")
    xored = bytes(a ^ b for a, b in zip(packed, mask))
    family = 0x01 if len(packed) == 4 else 0x02
    value = struct.pack("!BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + xored
    return _ATTRIBUTE.pack(XOR_MAPPED_ADDRESS, len(value)) + value


def _message(kind: int, transaction_id: bytes, attributes: bytes, *, with_fingerprint: bool) -> bytes:
    length = len(attributes) + (8 if with_fingerprint else 0)
    message = _HEADER.pack(kind, length, MAGIC_COOKIE, transaction_id) + attributes
    if with_fingerprint:
        message += _ATTRIBUTE.pack(FINGERPRINT, 4) + struct.pack("!I", _fingerprint(message))
    return message


def binding_response(data: bytes, ip: str, port: int) -> bytes | None:
    """The answer to a STUN Binding request that came from ``ip``:``port``, or None
    when ``data`` is not a well-formed Binding request (drop it)."""
    if len(data) < HEADER_LENGTH or len(data) % 4:
        return None
    kind, length, cookie, transaction_id = _HEADER.unpack_from(data)
    if kind & 0xC000 or cookie != MAGIC_COOKIE or length != len(data) - HEADER_LENGTH:
        return None
    if kind != BINDING_REQUEST:
        return None
    attributes = _attributes(data[HEADER_LENGTH:])
    if attributes is None:
        return None
    has_fingerprint = False
    for index, (attribute, offset, value) in enumerate(attributes):
        if attribute == FINGERPRINT:
            # RFC 5389 §15.5: the last attribute, CRC-32 of everything before it.
            if index != len(attributes) - 1 or len(value) != 4:
                return None
            covered = HEADER_LENGTH + offset
            if struct.unpack("!I", value)[0] != _fingerprint(data[:covered]):
                return None
            has_fingerprint = True
    unknown = [attribute for attribute, _, _ in attributes
               if attribute < 0x8000 and attribute not in _UNDERSTOOD]
    if unknown:
        return _unknown_attributes_error(transaction_id, unknown, with_fingerprint=has_fingerprint)
    return _message(BINDING_SUCCESS, transaction_id, _xor_mapped_address(ip, port, transaction_id),
                    with_fingerprint=has_fingerprint)


def _unknown_attributes_error(transaction_id: bytes, unknown: list[int], *, with_fingerprint: bool) -> bytes:
    reason = b"Unknown Attribute"
    error = struct.pack("!HBB", 0, 4, 20) + reason
    listed = b"".join(struct.pack("!H", attribute) for attribute in unknown)
    attributes = b""
    for attribute, value in ((ERROR_CODE, error), (UNKNOWN_ATTRIBUTES, listed)):
        attributes += _ATTRIBUTE.pack(attribute, len(value)) + value + b"\0" * (_padded(len(value)) - len(value))
    return _message(BINDING_ERROR, transaction_id, attributes, with_fingerprint=with_fingerprint)
