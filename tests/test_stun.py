"""STUN keep-alive on the SIP UDP port (RFC 5626 §4.4.2, §8.4; RFC 5389).

The unit tests build requests and read answers with this file's own encoder and
decoder, written from RFC 5389 §6, §15.2 and §15.5 rather than imported from
registrar.sip.stun; the last tests send Binding requests to a real runsip over UDP.
"""
import ipaddress
import os
import socket
import struct
import zlib

import pytest
from django.conf import settings as django_settings

from registrar import services
from registrar.sip import stun
from tests import e2e

COOKIE = 0x2112A442


# -- an independent STUN client --------------------------------------------------------
def binding_request(transaction_id=None, attributes=b"", *, fingerprint=False, kind=0x0001, cookie=COOKIE):
    transaction_id = transaction_id or os.urandom(12)
    length = len(attributes) + (8 if fingerprint else 0)
    message = struct.pack("!HHI", kind, length, cookie) + transaction_id + attributes
    if fingerprint:
        crc = (zlib.crc32(message) ^ 0x5354554E) & 0xFFFFFFFF
        message += struct.pack("!HHI", 0x8028, 4, crc)
    return message


def flip_last_byte(message):
    # Replacing the byte with a constant would leave the fingerprint right one time in 256.
    return message[:-1] + bytes([message[-1] ^ 0xFF])


def attribute(kind, value):
    padding = b"\0" * (-len(value) % 4)
    return struct.pack("!HH", kind, len(value)) + value + padding


def parse(message):
    kind, length, cookie = struct.unpack("!HHI", message[:8])
    assert cookie == COOKIE and length == len(message) - 20
    attributes, offset = [], 20
    while offset < len(message):
        attribute_kind, attribute_length = struct.unpack("!HH", message[offset:offset + 4])
        attributes.append((attribute_kind, message[offset + 4:offset + 4 + attribute_length]))
        offset += 4 + attribute_length + (-attribute_length % 4)
    return kind, message[8:20], attributes


def xor_mapped_address(value, transaction_id):
    family, xport = struct.unpack("!xBH", value[:4])
    port = xport ^ (COOKIE >> 16)
    key = struct.pack("!I", COOKIE) + transaction_id
    raw = bytes(a ^ b for a, b in zip(value[4:], key))
    assert family == (1 if len(raw) == 4 else 2)
    return str(ipaddress.ip_address(raw)), port


# -- the sans-IO answer ----------------------------------------------------------------
def test_it_answers_an_ipv4_binding_request_with_the_source_address():
    transaction_id = os.urandom(12)

    answer = stun.binding_response(binding_request(transaction_id), "203.0.113.7", 40321)

    kind, echoed, attributes = parse(answer)
    assert kind == 0x0101
    assert echoed == transaction_id
    [(attribute_kind, value)] = attributes
    assert attribute_kind == 0x0020
    assert xor_mapped_address(value, transaction_id) == ("203.0.113.7", 40321)


def test_it_answers_an_ipv6_binding_request_xored_with_the_transaction_id():
    transaction_id = os.urandom(12)

    answer = stun.binding_response(binding_request(transaction_id), "2001:db8::1:2", 5062)

    kind, echoed, [(attribute_kind, value)] = parse(answer)
    assert (kind, echoed, attribute_kind, len(value)) == (0x0101, transaction_id, 0x0020, 20)
    assert xor_mapped_address(value, transaction_id) == ("2001:db8::1:2", 5062)


def test_an_ipv4_peer_seen_on_a_dual_stack_socket_is_reported_as_ipv4():
    transaction_id = os.urandom(12)

    answer = stun.binding_response(binding_request(transaction_id), "::ffff:198.51.100.4", 5060)

    assert xor_mapped_address(parse(answer)[2][0][1], transaction_id) == ("198.51.100.4", 5060)


def test_a_request_with_a_fingerprint_is_checked_and_answered_with_one():
    transaction_id = os.urandom(12)

    answer = stun.binding_response(binding_request(transaction_id, fingerprint=True), "192.0.2.1", 1)

    kind, _, attributes = parse(answer)
    assert kind == 0x0101
    assert [kind for kind, _ in attributes] == [0x0020, 0x8028]
    expected = (zlib.crc32(answer[:-8]) ^ 0x5354554E) & 0xFFFFFFFF
    assert attributes[-1][1] == struct.pack("!I", expected)


def test_credentials_are_ignored_because_the_keep_alive_is_unauthenticated():
    request = binding_request(attributes=attribute(0x0006, b"alice") + attribute(0x0008, b"\0" * 20))

    assert parse(stun.binding_response(request, "192.0.2.1", 1))[0] == 0x0101


def test_an_unknown_comprehension_required_attribute_gets_420():
    transaction_id = os.urandom(12)
    request = binding_request(transaction_id, attribute(0x0003, b"\0\0\0\0") + attribute(0x8022, b"phone"))

    kind, echoed, attributes = parse(stun.binding_response(request, "192.0.2.1", 1))

    assert (kind, echoed) == (0x0111, transaction_id)
    error = dict(attributes)[0x0009]
    assert (error[2] * 100 + error[3], error[4:]) == (420, b"Unknown Attribute")
    assert dict(attributes)[0x000A] == struct.pack("!H", 0x0003)


@pytest.mark.parametrize("datagram", [
    b"",
    b"\x00\x01\x00\x00\x21\x12\xa4\x42",                                      # shorter than a header
    binding_request(cookie=0x12345678),                                        # RFC 3489, no magic cookie
    binding_request()[:2] + b"\x00\x04" + binding_request()[4:],               # length beyond the datagram
    binding_request(attributes=attribute(0x8022, b"x"))[:-1],                  # length not a multiple of 4
    binding_request(attributes=struct.pack("!HH", 0x8022, 40) + b"abcd"),      # attribute overruns
    flip_last_byte(binding_request(fingerprint=True)),                         # wrong fingerprint
    binding_request(attributes=attribute(0x8028, b"\0\0\0\0") + attribute(0x8022, b"late")),  # fingerprint not last
    binding_request(kind=0x0011),                                              # a Binding indication
    binding_request(kind=0x0101),                                              # a response
    binding_request(kind=0x0002),                                              # another method
    b"\xc0" + binding_request()[1:],                                           # first two bits not zero
])
def test_anything_but_a_well_formed_binding_request_is_dropped(datagram):
    assert stun.binding_response(datagram, "192.0.2.1", 1) is None


def test_stun_is_told_from_sip_by_the_first_byte():
    assert stun.might_be_stun(binding_request())
    assert stun.might_be_stun(b"\x01\x01")
    assert not stun.might_be_stun(b"REGISTER sip:x SIP/2.0\r\n")
    assert not stun.might_be_stun(b"\r\n\r\n")
    assert not stun.might_be_stun(b"")


# -- against a real runsip -------------------------------------------------------------
def free_ipv6_udp_port():
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def runsip(transactional_db, settings):
    settings.SIP_DOMAIN = settings.SIP_REALM = e2e.SIP_DOMAIN
    ipv6_port = free_ipv6_udp_port()
    server = e2e.RunSip(e2e.database_url(django_settings.DATABASES["default"]),
                        extra_args=("--listen", f"udp:[::1]:{ipv6_port}"))
    server.ipv6_port = ipv6_port
    with server:
        yield server
        assert not server.died, server.output


def exchange(family, destination, datagram, timeout=3.0):
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.bind((destination[0], 0))
        sock.sendto(datagram, destination)
        try:
            return sock.recvfrom(65535)[0], sock.getsockname()[:2]
        except TimeoutError:
            return None, sock.getsockname()[:2]


@pytest.mark.e2e
def test_runsip_answers_a_binding_request_on_its_udp_port(runsip):
    transaction_id = os.urandom(12)

    answer, (ip, port) = exchange(socket.AF_INET, (e2e.LOOPBACK, runsip.port), binding_request(transaction_id))

    assert answer is not None, runsip.output
    kind, echoed, [(_, value)] = parse(answer)
    assert (kind, echoed) == (0x0101, transaction_id)
    assert xor_mapped_address(value, transaction_id) == (ip, port)


@pytest.mark.e2e
def test_runsip_answers_a_binding_request_over_ipv6(runsip):
    transaction_id = os.urandom(12)

    answer, (ip, port) = exchange(socket.AF_INET6, ("::1", runsip.ipv6_port), binding_request(transaction_id))

    assert answer is not None, runsip.output
    assert xor_mapped_address(parse(answer)[2][0][1], transaction_id) == ("::1", port)


@pytest.mark.e2e
def test_runsip_drops_malformed_stun_and_still_registers(runsip):
    services.create_extension("1001", "pw-stun-1")

    for datagram in (b"\x00\x01garbage", binding_request(cookie=1), b"\x01" * 40):
        answer, _ = exchange(socket.AF_INET, (e2e.LOOPBACK, runsip.port), datagram, timeout=0.5)
        assert answer is None

    with e2e.SipClient((e2e.LOOPBACK, runsip.port)) as phone:
        _, final = phone.register_with_digest("1001", "pw-stun-1", algorithm="SHA-256")
    assert final.status == 200
    assert "unhandled error" not in runsip.output
