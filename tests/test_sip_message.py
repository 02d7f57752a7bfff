"""The SIP message layer: URIs, header values, messages, answers and stream framing.

No Django, no sockets: bytes in, objects out. RFC 4475's torture corpus has its own
file (test_rfc4475.py); these are the rules one at a time, plus the REGISTERs of the
field seeds.
"""

from __future__ import annotations

import random

import pytest

from registrar.sip.errors import SipError
from registrar.sip.framing import KeepAlive, StreamFramer
from registrar.sip.message import (
    COMPACT_FORMS,
    Headers,
    Request,
    Response,
    check_request,
    parse_message,
    response_to,
)
from registrar.sip.uri import NameAddr, Uri, parse_name_addr, parse_uri, parse_via, split_comma_list


def crlf(text: str) -> bytes:
    """A message written with one header per line, as it travels: CRLF line ends."""
    return "\r\n".join(text.strip("\n").split("\n")).encode() + b"\r\n\r\n"


def request_bytes(*extra_headers: str, method: str = "REGISTER", uri: str = "sip:example.com",
                  body: bytes = b"") -> bytes:  # fmt: skip
    lines = [
        f"{method} {uri} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=1928301774",
        "To: <sip:alice@example.com>",
        "Call-ID: a84b4c76e66710@pc33.example.com",
        f"CSeq: 314159 {method}",
        *extra_headers,
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def rejection(data: bytes) -> SipError:
    with pytest.raises(SipError) as raised:
        check_request(parse_request(data))
    return raised.value


# -- the field seeds (../shared/seeds/000_*): third-party phones registering --------------

THREECX_REGISTER = crlf("""
REGISTER sip:10.4.1.12:5060 SIP/2.0
Via: SIP/2.0/TCP 10.1.1.47:63500;branch=z9hG4bK-d8754z-fc1137444f6c1252-1---d8754z-;rport
Max-Forwards: 70
Contact: <sip:660001@10.1.1.47:63500;rinstance=1f5b90cffdd4c5ab;transport=TCP>
To: "660001"<sip:660001@10.4.1.12:5060>
From: "660001"<sip:660001@10.4.1.12:5060>;tag=411db40e
Call-ID: Y***ZWQwYzJlMTQwZTE3M2E0NjlkMWI3MjZkMmQ2ZGQ.
CSeq: 1 REGISTER
Expires: 120
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REGISTER, SUBSCRIBE, NOTIFY, REFER, INFO, MESSAGE
Supported: replaces
User-Agent: 3CXPhone 6.0.26523.0
Content-Length: 0
""")

VOXSTACK_REGISTER = crlf("""
REGISTER sip:10.4.1.12 SIP/2.0
Via: SIP/2.0/UDP 10.4.1.23:5060;branch=z9hG4bK744cf86f;rport
Max-Forwards: 70
From: <sip:660001@10.4.1.12>;tag=as47e49ca7
To: <sip:660001@10.4.1.12>
Call-ID: 545c634747c8718f14d321e87880db49@0.0.0.0
CSeq: 102 REGISTER
User-Agent: VoxStack Analog Gateway
Expires: 120
Contact: <sip:660001@10.4.1.23:5060>
Content-Length: 0
""")

HUAWEI_403 = crlf("""
SIP/2.0 403 Forbidden
Via: SIP/2.0/UDP 10.4.1.23:5060;branch=z9hG4bK744cf86f;rport=5060
Call-ID: 545c634747c8718f14d321e87880db49@0.0.0.0
From: <sip:660001@10.4.1.12>;tag=as47e49ca7
To: <sip:660001@10.4.1.12>;tag=3xzxs165
CSeq: 102 REGISTER
Content-Length: 0
""")


def test_it_parses_the_3cxphone_register_sent_over_tcp() -> None:
    [frame] = StreamFramer().feed(THREECX_REGISTER)
    request = parse_request(frame)
    check_request(request)
    assert request.method == "REGISTER"
    assert (request.uri.host, request.uri.port) == ("10.4.1.12", 5060)
    via = request.top_via
    assert (via.transport, via.host, via.port) == ("TCP", "10.1.1.47", 63500)
    assert via.branch == "z9hG4bK-d8754z-fc1137444f6c1252-1---d8754z-"
    assert via.has_param("rport") and via.param("rport") is None
    assert request.to.display_name == "660001"
    assert request.to.uri.address_of_record() == "sip:660001@10.4.1.12"
    assert request.to.tag is None
    assert request.from_.tag == "411db40e"
    assert request.call_id == "Y***ZWQwYzJlMTQwZTE3M2E0NjlkMWI3MjZkMmQ2ZGQ."
    assert request.cseq == (1, "REGISTER")
    assert request.expires == 120
    [contact] = request.contacts
    assert contact.uri.transport == "tcp"
    assert contact.uri.param("rinstance") == "1f5b90cffdd4c5ab"
    assert str(contact.uri) == "sip:660001@10.1.1.47:63500;rinstance=1f5b90cffdd4c5ab;transport=TCP"
    assert request.headers.get_all("Allow")[:3] == ["INVITE", "ACK", "CANCEL"]
    assert request.headers.get_all("Supported") == ["replaces"]
    assert request.user_agent == "3CXPhone 6.0.26523.0"
    assert request.headers.get("Authorization") is None


def test_it_parses_the_voxstack_register_sent_over_udp() -> None:
    request = parse_request(VOXSTACK_REGISTER)
    check_request(request)
    assert request.uri == parse_uri("sip:10.4.1.12")
    assert (request.top_via.transport, request.top_via.sent_by) == ("UDP", "10.4.1.23:5060")
    assert request.from_.uri.address_of_record() == "sip:660001@10.4.1.12"
    assert request.from_.tag == "as47e49ca7"
    assert request.cseq == (102, "REGISTER")
    assert request.user_agent == "VoxStack Analog Gateway"
    assert request.expires == 120
    assert [str(contact) for contact in request.contacts] == ["<sip:660001@10.4.1.23:5060>"]
    assert request.max_forwards == 70


def test_an_answer_to_the_voxstack_register_has_what_the_gateways_403_had() -> None:
    request = parse_request(VOXSTACK_REGISTER)
    answer = parse_message(response_to(request, 403, "Forbidden", to_tag="3xzxs165").to_bytes())
    huawei = parse_message(HUAWEI_403)
    assert isinstance(answer, Response) and isinstance(huawei, Response)
    assert (answer.status, answer.reason) == (huawei.status, huawei.reason)
    for field in ("call_id", "cseq", "from_", "to"):
        assert getattr(answer, field) == getattr(huawei, field)
    assert answer.top_via.branch == huawei.top_via.branch


# -- headers -------------------------------------------------------------------------------


@pytest.mark.parametrize(("letter", "name"), sorted(COMPACT_FORMS.items()))
def test_compact_forms_read_as_their_long_names(letter: str, name: str) -> None:
    if name in ("From", "To", "Call-ID", "Via", "Content-Length"):
        return  # already in every message: see test_a_message_in_compact_form_reads_like_the_long_one
    request = parse_request(request_bytes(f"{letter}: value-of-{letter}"))
    assert request.headers.get(name) == f"value-of-{letter}"
    assert request.headers.get(letter.upper()) == f"value-of-{letter}"
    assert (name, f"value-of-{letter}") in request.headers.items()


def test_a_message_in_compact_form_reads_like_the_long_one() -> None:
    data = crlf("""
REGISTER sip:example.com SIP/2.0
v: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKcompact
f: <sip:alice@example.com>;tag=88
t: sip:alice@example.com
i: compact@192.0.2.10
CSeq: 7 REGISTER
m: <sip:alice@192.0.2.10>
k: path, gruu
l: 0
""")
    request = parse_request(data)
    assert request.top_via.branch == "z9hG4bKcompact"
    assert request.from_.tag == "88"
    assert request.to.uri.user == "alice"
    assert request.call_id == "compact@192.0.2.10"
    assert request.contacts[0].uri.host == "192.0.2.10"
    assert request.headers.get_all("Supported") == ["path", "gruu"]
    assert [name for name, _ in request.headers.items()] == [
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Supported", "Content-Length",
    ]  # fmt: skip


def test_header_names_are_case_insensitive_and_spelled_canonically() -> None:
    request = parse_request(request_bytes("user-agent: Phone/1", "WWW-AUTHENTICATE: x", "X-Custom-THING: y"))
    assert request.user_agent == "Phone/1"
    assert request.headers.get("USER-AGENT") == "Phone/1"
    assert "www-authenticate" in request.headers
    assert "x-custom-thing" in request.headers
    names = [name for name, _ in request.headers.items()]
    assert "User-Agent" in names and "WWW-Authenticate" in names
    assert "X-Custom-THING" in names  # unknown names stay as written
    assert "Call-ID" in names and "CSeq" in names and "Max-Forwards" in names


def test_folded_lines_are_joined_with_one_space() -> None:
    data = request_bytes("Subject: first part\r\n second part\r\n\tthird part", "X-Empty:\r\n  folded-only")
    request = parse_request(data)
    assert request.headers.get("Subject") == "first part second part third part"
    assert request.headers.get("X-Empty") == "folded-only"


def test_whitespace_around_the_colon_is_allowed() -> None:
    request = parse_request(request_bytes("Expires  :   60  "))
    assert request.expires == 60


def test_headers_can_be_built_and_edited() -> None:
    headers = Headers([("v", "SIP/2.0/UDP a"), ("call-id", "x")])
    headers.add("Via", "SIP/2.0/UDP b")
    headers.add("m", "<sip:a@b>, <sip:c@d>")
    assert headers.items() == [
        ("Via", "SIP/2.0/UDP a"), ("Call-ID", "x"), ("Via", "SIP/2.0/UDP b"), ("Contact", "<sip:a@b>, <sip:c@d>"),
    ]  # fmt: skip
    assert headers.get("VIA") == "SIP/2.0/UDP a"
    assert headers.get_all("v") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b"]
    assert headers.get_all("Contact") == ["<sip:a@b>", "<sip:c@d>"]
    headers.remove("via")
    assert "Via" not in headers and "v" not in headers
    assert headers.get("Via") is None and headers.get_all("Via") == []
    assert len(headers) == 2


def test_list_headers_split_on_commas_outside_quotes_and_angle_brackets() -> None:
    request = parse_request(request_bytes(
        'Contact: "Bell, Alexander" <sip:bell,alexander@example.com;x=1>;q=0.5, <sip:b@example.com>',
        "Contact: sip:c@example.com",
        "Supported: path, outbound,gruu",
        "Route: <sip:p1.example.com;lr>,<sip:p2.example.com;lr>",
    ))  # fmt: skip
    assert request.headers.get_all("Contact") == [
        '"Bell, Alexander" <sip:bell,alexander@example.com;x=1>;q=0.5',
        "<sip:b@example.com>",
        "sip:c@example.com",
    ]
    assert [contact.display_name for contact in request.contacts] == ["Bell, Alexander", None, None]
    assert request.contacts[0].uri.user == "bell,alexander"
    assert request.contacts[0].param("q") == "0.5"
    assert request.headers.get_all("Supported") == ["path", "outbound", "gruu"]
    assert request.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]


def test_credentials_dates_and_product_names_are_not_split() -> None:
    authorization = 'Digest username="alice", realm="example.com", nonce="n", uri="sip:example.com", response="r"'
    request = parse_request(request_bytes(
        f"Authorization: {authorization}",
        "Date: Sat, 13 Nov 2010 23:29:00 GMT",
        "User-Agent: Phone, model 7",
    ))  # fmt: skip
    assert request.headers.get_all("Authorization") == [authorization]
    assert request.headers.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert request.headers.get_all("User-Agent") == ["Phone, model 7"]


def test_split_comma_list_drops_empty_elements_and_survives_stray_quotes() -> None:
    assert split_comma_list(" a , , b ,") == ["a", "b"]
    assert split_comma_list("") == []
    assert split_comma_list('"unterminated, still one') == ['"unterminated, still one']
    assert split_comma_list("<sip:a, b") == ["<sip:a, b"]


# -- URIs ----------------------------------------------------------------------------------


def test_a_sip_uri_in_full() -> None:
    uri = parse_uri(
        "SIP:Alice:secret@Atlanta.EXAMPLE.com:5061;Transport=TCP;lr;maddr=239.255.255.1?Subject=x&Priority=y"
    )
    assert uri.scheme == "sip"
    assert (uri.user, uri.password) == ("Alice", "secret")
    assert (uri.host, uri.port) == ("atlanta.example.com", 5061)
    assert uri.params == (("transport", "TCP"), ("lr", None), ("maddr", "239.255.255.1"))
    assert uri.transport == "tcp"
    assert uri.param("TRANSPORT") == "TCP" and uri.param("lr") is None and uri.has_param("LR")
    assert uri.param("ttl") is None and not uri.has_param("ttl")
    assert uri.headers == "Subject=x&Priority=y"
    assert uri.raw.startswith("SIP:Alice")
    assert uri.address_of_record() == "sip:Alice@atlanta.example.com"


def test_sips_and_sip_share_an_address_of_record() -> None:
    assert parse_uri("sips:bob@biloxi.example.com:5061").address_of_record() == "sip:bob@biloxi.example.com"
    assert parse_uri("sip:bob@BILOXI.example.com;user=phone").address_of_record() == "sip:bob@biloxi.example.com"
    assert parse_uri("sip:b%6Fb@biloxi.example.com").address_of_record() == "sip:bob@biloxi.example.com"
    assert parse_uri("sip:biloxi.example.com").address_of_record() == "sip:biloxi.example.com"


def test_user_unescaped_decodes_percent_escapes() -> None:
    uri = parse_uri("sip:%2B1%20555@example.com")
    assert uri.user == "%2B1%20555"
    assert uri.user_unescaped == "+1 555"
    assert uri.address_of_record() == "sip:+1%20555@example.com"
    assert parse_uri("sip:example.com").user_unescaped is None


def test_ipv6_hosts_keep_their_brackets() -> None:
    uri = parse_uri("sip:alice@[2001:DB8::10]:5070;transport=udp")
    assert (uri.host, uri.port) == ("[2001:db8::10]", 5070)
    assert uri.address_of_record() == "sip:alice@[2001:db8::10]"
    assert str(uri) == "sip:alice@[2001:db8::10]:5070;transport=udp"
    via = parse_via("SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bK1")
    assert (via.host, via.port, via.sent_by) == ("[2001:db8::9]", 5061, "[2001:db8::9]:5061")


def test_tel_uris() -> None:
    uri = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert (uri.scheme, uri.user, uri.host, uri.port) == ("tel", "+1-201-555-0123", "", None)
    assert uri.param("phone-context") == "example.com"
    assert uri.address_of_record() == "tel:+12015550123"
    assert str(uri) == "tel:+1-201-555-0123;phone-context=example.com"


def test_other_schemes_are_kept_opaque() -> None:
    uri = parse_uri("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
    assert (uri.scheme, uri.user, uri.host, uri.params, uri.headers) == ("urn", None, "", (), "")
    assert str(uri) == uri.raw


def test_serialising_a_uri_re_escapes_its_parameters() -> None:
    uri = parse_uri("sip:host;n%61me=v%61lue%25%34%31")
    assert uri.params == (("name", "value%41"),)
    assert str(uri) == "sip:host;name=value%2541"
    assert parse_uri(str(uri)) == uri


def test_uris_compare_by_content() -> None:
    assert parse_uri("sip:alice@EXAMPLE.com;Transport=udp") == parse_uri("SIP:alice@example.com;transport=udp")
    assert parse_uri("sip:alice@example.com") != parse_uri("sip:Alice@example.com")


@pytest.mark.parametrize(
    "text",
    [
        "", "alice@example.com", "sip:", "sip:alice@", "sip:@example.com", "sip:alice@exa mple.com",
        " sip:alice@example.com", "sip:alice@example.com ", "sip:alice@example.com:99999",
        "sip:alice@example.com:port", "sip:alice@example.com;=x", "sip:alice@example.com;a=",
        "sip:al%ZZice@example.com", "sip:alice@[::1", "sip:a@b@c", "<sip:alice@example.com>",
        "tel:", "tel:+1 555", "1sip:alice@example.com", "foo:", "foo:bar baz",
    ],
)  # fmt: skip
def test_malformed_uris_are_400(text: str) -> None:
    with pytest.raises(SipError) as raised:
        parse_uri(text)
    assert raised.value.status == 400


# -- name-addr and addr-spec ----------------------------------------------------------------


def test_quoted_display_names_are_unescaped() -> None:
    name_addr = parse_name_addr(r'"Bob \"the builder\" \\o/" <sip:bob@example.com>;tag=x')
    assert name_addr.display_name == 'Bob "the builder" \\o/'
    assert name_addr.tag == "x"
    assert str(name_addr) == r'"Bob \"the builder\" \\o/" <sip:bob@example.com>;tag=x'
    assert parse_name_addr(str(name_addr)) == name_addr


def test_unquoted_display_names_are_tokens_joined_by_one_space() -> None:
    assert parse_name_addr("Alice   Smith<sip:a@example.com>").display_name == "Alice Smith"
    assert parse_name_addr('"" <sip:a@example.com>').display_name == ""
    assert parse_name_addr("<sip:a@example.com>").display_name is None


def test_parameters_after_angle_brackets_belong_to_the_header() -> None:
    name_addr = parse_name_addr("<sip:alice@example.com;transport=tcp>;expires=60;q=0.7")
    assert name_addr.uri.params == (("transport", "tcp"),)
    assert name_addr.params == (("expires", "60"), ("q", "0.7"))


def test_parameters_of_an_addr_spec_belong_to_the_header() -> None:
    # RFC 3261 §20.10: without <>, everything after the first ';' is a header parameter.
    name_addr = parse_name_addr("sip:alice@example.com;transport=tcp;expires=60")
    assert name_addr.uri.params == ()
    assert name_addr.params == (("transport", "tcp"), ("expires", "60"))
    assert str(name_addr) == "<sip:alice@example.com>;transport=tcp;expires=60"


def test_outbound_contact_parameters_keep_their_quotes() -> None:
    contact = parse_name_addr(
        '<sip:line1@192.0.2.2;transport=tcp>;reg-id=1;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
    )
    assert contact.param("+SIP.INSTANCE") == '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
    assert contact.param("reg-id") == "1"
    assert contact.has_param("+sip.instance")


def test_quoted_parameter_values_may_hold_separators() -> None:
    contact = parse_name_addr('<sip:a@b>;x="semi;colon, comma";y')
    assert contact.params == (("x", '"semi;colon, comma"'), ("y", None))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('"Mr. J. User <sip:j.user@example.com>', "Unterminated quoted string"),
        ("Bell, Alexander <sip:a.g.bell@example.com>", "must be quoted"),
        ("< sip:t.watson@example.org >", "Malformed URI"),
        ("<sip:alice@example.com", "Missing >"),
        ("<sip:alice@example.com> junk", "Unexpected text"),
        ("<sip:alice@example.com>;;", "Empty parameter"),
        ('<sip:alice@example.com>;x="open', "Invalid parameter"),
        ("sip:user@example.com?Route=%3Csip:sip.example.com%3E", "must be enclosed in <>"),
        ('"Alice" sip:alice@example.com', "not followed by <URI>"),
    ],
)
def test_malformed_name_addrs_are_400_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(SipError) as raised:
        parse_name_addr(text)
    assert raised.value.status == 400
    assert reason in raised.value.reason


def test_name_addrs_compare_by_content() -> None:
    expected = NameAddr(None, parse_uri("sip:a@example.com"), (("tag", "1"),), raw="")
    assert parse_name_addr("sip:a@example.com;tag=1") == expected


# -- Via ---------------------------------------------------------------------------------


def test_via_with_lws_everywhere_rfc_3261_allows_it() -> None:
    via = parse_via("SIP / 2.0 / udp  pc33.Atlanta.com : 5066 ;branch = z9hG4bK776 ; received=192.0.2.1;rport")
    assert (via.protocol, via.transport, via.host, via.port) == ("SIP/2.0", "UDP", "pc33.atlanta.com", 5066)
    assert via.branch == "z9hG4bK776"
    assert via.param("RECEIVED") == "192.0.2.1"
    assert via.has_param("rport") and via.param("rport") is None
    assert str(via) == "SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776;received=192.0.2.1;rport"
    assert parse_via("SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK56sdasks").transport == "WSS"


@pytest.mark.parametrize(
    "text",
    ["SIP/2.0/UDP", "SIP/2.0 host", "SIP/2.0/UDP host;", "SIP/2.0/UDP host;;x", "SIP/2.0/UDP host:70000",
     "SIP/2.0/UDP ho st", "SIP/2.0/UDP host;branch=", "SIP/2.0/UDP [::1", ""],
)  # fmt: skip
def test_malformed_vias_are_400(text: str) -> None:
    with pytest.raises(SipError) as raised:
        parse_via(text)
    assert raised.value.status == 400


# -- requests: what parse_message decides ------------------------------------------------


def test_parse_message_checks_only_the_essentials_and_leaves_the_rest_for_later() -> None:
    request = parse_request(request_bytes("Contact: <sip:broken@", "Expires: soon"))
    with pytest.raises(SipError, match="Malformed Contact header"):
        request.contacts
    with pytest.raises(SipError, match="Malformed Expires header"):
        request.expires
    assert rejection(request_bytes("Contact: <sip:broken@")).status == 400


@pytest.mark.parametrize(
    ("missing", "reason"),
    [("To", "Missing To header"), ("From", "Missing From header"), ("Call-ID", "Missing Call-ID header"),
     ("CSeq", "Missing CSeq header"), ("Via", "Missing Via header")],
)  # fmt: skip
def test_a_missing_mandatory_header_is_400_naming_it(missing: str, reason: str) -> None:
    lines = [line for line in request_bytes().split(b"\r\n") if not line.startswith(missing.encode() + b":")]
    with pytest.raises(SipError) as raised:
        parse_message(b"\r\n".join(lines))
    assert (raised.value.status, raised.value.reason) == (400, reason)
    assert raised.value.request is not None


def test_max_forwards_is_not_required_on_receipt() -> None:
    lines = [line for line in request_bytes().split(b"\r\n") if not line.startswith(b"Max-Forwards")]
    assert parse_request(b"\r\n".join(lines)).max_forwards is None


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("Call-ID: another@pc33.example.com", "Conflicting Call-ID headers"),
        ("CSeq: 1 REGISTER", "Conflicting CSeq headers"),
        ("To: <sip:bob@example.com>", "Conflicting To headers"),
        ("f: <sip:eve@example.com>;tag=2", "Conflicting From headers"),
    ],
)
def test_disagreeing_single_value_headers_are_400(extra: str, reason: str) -> None:
    with pytest.raises(SipError) as raised:
        parse_message(request_bytes(extra))
    assert (raised.value.status, raised.value.reason) == (400, reason)


def test_a_repeated_single_value_header_that_agrees_is_tolerated() -> None:
    assert parse_request(request_bytes("Call-ID: a84b4c76e66710@pc33.example.com")).call_id.startswith("a84b")


def test_the_cseq_method_must_match_the_request_method() -> None:
    data = request_bytes().replace(b"CSeq: 314159 REGISTER", b"CSeq: 314159 INVITE")
    with pytest.raises(SipError) as raised:
        parse_message(data)
    assert raised.value.status == 400 and "CSeq method" in raised.value.reason


@pytest.mark.parametrize(
    ("cseq", "reason"),
    [("x REGISTER", "Malformed CSeq"), ("1", "Malformed CSeq"), ("2147483648 REGISTER", "CSeq number too large"),
     ("-1 REGISTER", "Malformed CSeq")],
)  # fmt: skip
def test_malformed_cseq_is_400(cseq: str, reason: str) -> None:
    data = request_bytes().replace(b"CSeq: 314159 REGISTER", f"CSeq: {cseq}".encode())
    with pytest.raises(SipError) as raised:
        parse_message(data)
    assert raised.value.status == 400 and reason in raised.value.reason


def test_the_largest_cseq_is_2_to_the_31_minus_1() -> None:
    data = request_bytes().replace(b"CSeq: 314159", b"CSeq: 0002147483647")
    assert parse_request(data).cseq == (2**31 - 1, "REGISTER")


def test_other_versions_are_505() -> None:
    with pytest.raises(SipError) as raised:
        parse_message(request_bytes().replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1))
    assert (raised.value.status, raised.value.reason) == (505, "Version Not Supported")


def test_the_version_is_case_insensitive() -> None:
    assert parse_request(request_bytes().replace(b"SIP/2.0\r\n", b"sip/2.0\r\n", 1)).version == "SIP/2.0"


@pytest.mark.parametrize(
    "data",
    [b"", b"\r\n\r\n", b"\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
     b"hello", b"SIP/2.0 200 OK"],
)  # fmt: skip
def test_garbage_is_dropped(data: bytes) -> None:
    with pytest.raises(SipError) as raised:
        parse_message(data)
    assert raised.value.drop and raised.value.status is None


def test_a_malformed_request_line_is_400_but_the_headers_are_kept_for_the_answer() -> None:
    data = request_bytes().replace(b"REGISTER sip:example.com SIP/2.0", b"REGISTER  sip:example.com SIP/2.0")
    with pytest.raises(SipError) as raised:
        parse_message(data)
    assert (raised.value.status, raised.value.reason) == (400, "Malformed Request-Line")
    answer = response_to(raised.value.request, 400, raised.value.reason, to_tag="x")
    assert answer.call_id == "a84b4c76e66710@pc33.example.com"
    assert answer.to.tag == "x"


def test_a_header_line_without_colon_is_400() -> None:
    with pytest.raises(SipError) as raised:
        parse_message(request_bytes("this line has no colon"))
    assert (raised.value.status, raised.value.reason) == (400, "Malformed header line")


@pytest.mark.parametrize("line", ["X-Note: a\nInjected: b", "X-Note: a\rb", "From: <sip:alice@example.com>;tag=1\n"])
def test_a_lone_cr_or_lf_inside_a_header_line_is_400(line: str) -> None:
    # They would otherwise travel back in the From/To/Via we copy into the answer.
    with pytest.raises(SipError) as raised:
        parse_message(request_bytes(line))
    assert (raised.value.status, raised.value.reason) == (400, "Malformed header line")


def test_crlfs_before_the_start_line_are_ignored() -> None:
    assert parse_request(b"\r\n\r\n\r\n" + request_bytes()).method == "REGISTER"


def test_bare_lf_line_ends_are_understood() -> None:
    request = parse_request(request_bytes(body=b"v=0\n").replace(b"\r\n", b"\n"))
    assert request.call_id == "a84b4c76e66710@pc33.example.com"
    assert request.body == b"v=0\n"


def test_a_datagram_without_the_empty_line_ends_its_headers_at_the_end() -> None:
    assert parse_request(request_bytes()[:-2]).headers.get("Content-Length") == "0"


class TestDatagramBodies:
    def test_the_body_is_content_length_bytes(self) -> None:
        assert parse_request(request_bytes(body=b"hello")).body == b"hello"

    def test_bytes_past_content_length_are_discarded(self) -> None:
        assert parse_request(request_bytes(body=b"hello") + b"trailing junk").body == b"hello"

    def test_without_content_length_the_body_is_the_rest_of_the_datagram(self) -> None:
        data = request_bytes(body=b"hello").replace(b"Content-Length: 5\r\n", b"")
        assert parse_request(data).body == b"hello"

    @pytest.mark.parametrize(
        ("length", "reason"),
        [("6", "Body shorter than Content-Length"), ("99999999999999999999", "Body shorter than Content-Length"),
         ("-1", "Malformed Content-Length"), ("five", "Malformed Content-Length")],
    )  # fmt: skip
    def test_a_bad_content_length_is_400(self, length: str, reason: str) -> None:
        data = request_bytes(body=b"hello").replace(b"Content-Length: 5", f"Content-Length: {length}".encode())
        with pytest.raises(SipError) as raised:
            parse_message(data)
        assert (raised.value.status, raised.value.reason) == (400, reason)

    def test_two_content_lengths_that_disagree_are_400(self) -> None:
        with pytest.raises(SipError, match="Conflicting Content-Length"):
            parse_message(request_bytes("l: 4", body=b"hello"))


# -- lazily parsed fields ------------------------------------------------------------------


def test_expires_is_delta_seconds_clamped_to_32_bits() -> None:
    assert parse_request(request_bytes("Expires: 0")).expires == 0
    assert parse_request(request_bytes("Expires: 4294967295")).expires == 2**32 - 1
    assert parse_request(request_bytes("Expires: 4294967296")).expires == 2**32 - 1
    assert parse_request(request_bytes("Expires: " + "9" * 5000)).expires == 2**32 - 1
    assert parse_request(request_bytes()).expires is None
    assert rejection(request_bytes("Expires: Thu, 01 Dec 1994 16:00:00 GMT")).reason == "Malformed Expires header"


def test_max_forwards_out_of_range_reads_as_absent() -> None:
    assert parse_request(request_bytes().replace(b"Max-Forwards: 70", b"Max-Forwards: 256")).max_forwards is None
    with pytest.raises(SipError):
        parse_request(request_bytes().replace(b"Max-Forwards: 70", b"Max-Forwards: x")).max_forwards


def test_contact_star() -> None:
    request = parse_request(request_bytes("Contact: *", "Expires: 0"))
    assert request.contact_star
    assert request.contacts == []
    assert rejection(request_bytes("Contact: *, <sip:a@b>")).reason == "Contact * must be the only contact"
    assert not parse_request(request_bytes()).contact_star


def test_no_contact_is_an_empty_list() -> None:
    assert parse_request(request_bytes()).contacts == []


def test_top_via_is_the_first_of_all_vias() -> None:
    request = parse_request(
        request_bytes("Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bK2, SIP/2.0/TLS p2.example.com;branch=z9hG4bK3")
    )
    assert request.top_via.host == "192.0.2.10"
    assert [via.host for via in request.vias] == ["192.0.2.10", "proxy.example.com", "p2.example.com"]


def test_responses_that_turn_out_malformed_are_dropped_not_answered() -> None:
    response = parse_message(HUAWEI_403.replace(b"To: <sip:660001@10.4.1.12>", b"To: <sip:660001@"))
    with pytest.raises(SipError) as raised:
        response.to
    assert raised.value.drop


@pytest.mark.parametrize(
    "status_line",
    [b"SIP/2.0 4294967301 better not break", b"SIP/2.0 099 Low", b"SIP/2.0 700 High", b"SIP/2.1 200 OK",
     b"SIP/2.0 2xx OK"],
)
def test_broken_status_lines_are_dropped(status_line: bytes) -> None:
    with pytest.raises(SipError) as raised:
        parse_message(HUAWEI_403.replace(b"SIP/2.0 403 Forbidden", status_line))
    assert raised.value.drop


# -- check_request ---------------------------------------------------------------------------


def test_check_request_accepts_a_plain_register() -> None:
    check_request(parse_request(request_bytes("Contact: <sip:alice@192.0.2.10>", "Expires: 3600")))


def test_a_request_uri_that_is_not_sip_is_416() -> None:
    error = rejection(request_bytes(uri="tel:+15551234"))
    assert (error.status, error.reason) == (416, "Unsupported URI Scheme")


def test_an_unknown_require_is_420_listing_it() -> None:
    error = rejection(request_bytes("Require: path, foo", "Require: bar"))
    assert (error.status, error.reason, error.headers) == (420, "Bad Extension", (("Unsupported", "foo, bar"),))


def test_known_require_proxy_require_and_max_forwards_0_pass() -> None:
    data = request_bytes("Require: Path, outbound", "Proxy-Require: foo")
    data = data.replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    check_request(parse_request(data))
    check_request(parse_request(request_bytes("Require: foo")), supported=frozenset({"foo"}))


def test_require_is_not_checked_on_ack_and_cancel() -> None:
    check_request(parse_request(request_bytes("Require: foo", method="CANCEL")))


def test_a_register_for_a_non_sip_address_of_record_is_400() -> None:
    error = rejection(request_bytes().replace(b"To: <sip:alice@example.com>", b"To: <tel:+15551234>"))
    assert (error.status, error.reason) == (400, "Address-of-record must be a SIP or SIPS URI")


def test_an_unparseable_to_is_400() -> None:
    error = rejection(request_bytes().replace(b"To: <sip:alice@example.com>", b"To: <sip:alice@exa mple.com>"))
    assert error.status == 400 and error.reason.startswith("Malformed To header")


# -- answering and writing -------------------------------------------------------------------


def test_response_to_copies_what_rfc_3261_8_2_6_2_says_and_adds_the_to_tag() -> None:
    request = parse_request(request_bytes(
        "Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bK2", "Timestamp: 54", "User-Agent: Phone/1",
    ))  # fmt: skip
    response = response_to(request, 401, "Unauthorized", [("WWW-Authenticate", 'Digest realm="x", nonce="y"')],
                           to_tag="abc123")  # fmt: skip
    assert (response.status, response.reason) == (401, "Unauthorized")
    assert response.headers.items() == [
        ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport"),
        ("Via", "SIP/2.0/TCP proxy.example.com;branch=z9hG4bK2"),
        ("From", "<sip:alice@example.com>;tag=1928301774"),
        ("To", "<sip:alice@example.com>;tag=abc123"),
        ("Call-ID", "a84b4c76e66710@pc33.example.com"),
        ("CSeq", "314159 REGISTER"),
        ("Timestamp", "54"),
        ("WWW-Authenticate", 'Digest realm="x", nonce="y"'),
    ]
    assert response.to_bytes().endswith(b"\r\nContent-Length: 0\r\n\r\n")


def test_response_to_keeps_an_existing_to_tag() -> None:
    data = request_bytes().replace(b"To: <sip:alice@example.com>", b"To: <sip:alice@example.com> ; TAG = old")
    request = parse_request(data)
    assert response_to(request, 200, "OK", to_tag="new").to.tag == "old"
    assert response_to(request, 200, "OK").headers.get("To") == "<sip:alice@example.com> ; TAG = old"


def test_response_to_without_a_tag_leaves_to_alone() -> None:
    assert response_to(parse_request(request_bytes()), 100, "Trying").to.tag is None


def test_to_bytes_round_trips_and_writes_the_right_content_length() -> None:
    request = parse_request(request_bytes("l: 5", body=b"hello").replace(b"Content-Length: 5\r\n", b""))
    request.body = b"a longer body"
    data = request.to_bytes()
    assert data.count(b"Content-Length") == 1 and b"\r\nl:" not in data
    again = parse_request(data)
    assert again.body == b"a longer body"
    assert again.headers.get("Content-Length") == "13"
    assert again.headers.items()[:-1] == [item for item in request.headers.items() if item[0] != "Content-Length"]
    assert again.uri == request.uri


def test_messages_can_be_built_from_scratch() -> None:
    request = Request("OPTIONS", parse_uri("sip:example.com"), headers=Headers([("Call-ID", "x")]))
    assert request.to_bytes() == b"OPTIONS sip:example.com SIP/2.0\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n"
    response = Response(200, "OK", body=b"{}")
    assert response.to_bytes() == b"SIP/2.0 200 OK\r\nContent-Length: 2\r\n\r\n{}"


def test_bytes_that_are_not_utf8_become_replacement_characters() -> None:
    data = request_bytes().replace(b"To: <sip:alice@example.com>", b'To: "M\xfcller" <sip:alice@example.com>')
    request = parse_request(data)
    assert request.to.display_name == "M\ufffdller"
    request.to_bytes()


def test_sip_error_says_whether_to_drop() -> None:
    assert SipError(None, "garbage").drop
    error = SipError(420, "Bad Extension", (("Unsupported", "foo"),))
    assert not error.drop and error.headers == (("Unsupported", "foo"),) and str(error) == "420 Bad Extension"


# -- stream framing --------------------------------------------------------------------------

FIRST = request_bytes("Contact: <sip:alice@192.0.2.10>", body=b"v=0\r\n\r\nbody with an empty line\r\n")
SECOND = THREECX_REGISTER


def feed_in_pieces(framer: StreamFramer, data: bytes, cuts: list[int]) -> list[bytes | KeepAlive]:
    framed: list[bytes | KeepAlive] = []
    previous = 0
    for cut in [*cuts, len(data)]:
        framed += framer.feed(data[previous:cut])
        previous = cut
    return framed


def test_two_messages_in_one_chunk() -> None:
    assert StreamFramer().feed(FIRST + SECOND) == [FIRST, SECOND]


def test_every_split_point_gives_the_same_messages() -> None:
    stream = FIRST + SECOND
    for cut in range(len(stream) + 1):
        assert feed_in_pieces(StreamFramer(), stream, [cut]) == [FIRST, SECOND], cut


def test_random_chunking_gives_the_same_messages() -> None:
    rng = random.Random(5626)
    stream = b"\r\n\r\n" + FIRST + b"\r\n\r\n" + SECOND + FIRST
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 40)))
        assert feed_in_pieces(StreamFramer(), stream, cuts) == [KeepAlive(), FIRST, KeepAlive(), SECOND, FIRST]


def test_one_byte_at_a_time() -> None:
    stream = FIRST + SECOND
    assert feed_in_pieces(StreamFramer(), stream, list(range(1, len(stream)))) == [FIRST, SECOND]


def test_a_partial_message_stays_buffered() -> None:
    framer = StreamFramer()
    assert framer.feed(FIRST[:-1]) == []
    assert framer.feed(FIRST[-1:] + SECOND[:10]) == [FIRST]
    assert framer.feed(SECOND[10:]) == [SECOND]


def test_keep_alive_pings_between_messages() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [KeepAlive()]
    assert framer.feed(b"\r\n") == []  # may be the first half of a ping
    assert framer.feed(b"\r\n") == [KeepAlive()]
    assert framer.feed(b"\r\n\r\n\r\n\r\n" + FIRST) == [KeepAlive(), KeepAlive(), FIRST]


def test_lone_crlfs_before_a_message_are_skipped() -> None:
    assert StreamFramer().feed(b"\r\n" + FIRST + b"\r\n" + SECOND) == [FIRST, SECOND]


def test_compact_and_spaced_content_length_frame_too() -> None:
    message = request_bytes(body=b"12345").replace(b"Content-Length: 5", b"l  :  5")
    assert StreamFramer().feed(message + message) == [message, message]


def test_a_message_on_a_stream_needs_content_length() -> None:
    with pytest.raises(SipError) as raised:
        StreamFramer().feed(request_bytes().replace(b"Content-Length: 0\r\n", b""))
    assert (raised.value.status, raised.value.reason) == (400, "Missing Content-Length on stream")


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"Content-Length: -5", "Malformed Content-Length"),
        (b"Content-Length: 5\r\nl: 6", "Conflicting Content-Length headers"),
        (b"Content-Length: five", "Malformed Content-Length"),
    ],
)  # fmt: skip
def test_a_bad_content_length_on_a_stream_is_400(header: bytes, reason: str) -> None:
    with pytest.raises(SipError) as raised:
        StreamFramer().feed(request_bytes().replace(b"Content-Length: 0", header))
    assert (raised.value.status, raised.value.reason) == (400, reason)


def test_an_oversize_body_is_413_before_it_arrives() -> None:
    framer = StreamFramer(max_message_bytes=1000)
    with pytest.raises(SipError) as raised:
        framer.feed(request_bytes().replace(b"Content-Length: 0", b"Content-Length: 5000"))
    assert (raised.value.status, raised.value.reason) == (413, "Message Too Large")
    with pytest.raises(SipError):
        StreamFramer().feed(request_bytes().replace(b"Content-Length: 0", b"Content-Length: " + b"9" * 50))


def test_an_endless_header_section_is_413_once_past_the_limit() -> None:
    framer = StreamFramer(max_message_bytes=2000)
    framer.feed(b"REGISTER sip:example.com SIP/2.0\r\nX-Filler: ")
    with pytest.raises(SipError) as raised:
        for _ in range(100):
            framer.feed(b"x" * 100)
    assert raised.value.status == 413


def test_too_many_header_lines_is_400() -> None:
    framer = StreamFramer(max_header_lines=20)
    with pytest.raises(SipError) as raised:
        framer.feed(b"REGISTER sip:example.com SIP/2.0\r\n" + b"X: y\r\n" * 25)
    assert (raised.value.status, raised.value.reason) == (400, "Too many header lines")
    with pytest.raises(SipError):
        StreamFramer(max_header_lines=20).feed(b"REGISTER sip:example.com SIP/2.0\r\n" + b"X: y\r\n" * 25 + b"\r\n")


def test_random_bytes_in_random_chunks_frame_or_raise_sip_error() -> None:
    rng = random.Random(3261)
    pieces = [FIRST, SECOND, b"\r\n", b"\r\n\r\n", b"l: 3\r\n", b"Content-Length: -1\r\n", b"\x00\xff", b"\r\n\r\nabc"]
    for _ in range(300):
        stream = b"".join(rng.choice(pieces)[: rng.randint(0, 400)] for _ in range(rng.randint(1, 8)))
        framer = StreamFramer(max_message_bytes=rng.choice([200, 65535]), max_header_lines=rng.choice([4, 256]))
        cuts = sorted(rng.sample(range(1, len(stream)), max(0, min(len(stream) - 1, rng.randint(0, 10)))))
        try:
            framed = feed_in_pieces(framer, stream, cuts)
        except SipError:
            continue
        assert sum(len(frame) if isinstance(frame, bytes) else 4 for frame in framed) <= len(stream)


def test_framed_messages_parse() -> None:
    first, second = StreamFramer().feed(FIRST + SECOND)
    assert parse_request(first).body == b"v=0\r\n\r\nbody with an empty line\r\n"
    assert parse_request(second).user_agent == "3CXPhone 6.0.26523.0"


def test_uri_dataclass_can_be_constructed_directly() -> None:
    uri = Uri("sip", "bob", None, "example.com", 5070, (("transport", "tcp"),), "", raw="")
    assert str(uri) == "sip:bob@example.com:5070;transport=tcp"
