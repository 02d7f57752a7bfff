"""RFC 4475 torture tests: every message of the corpus gets the answer the RFC recommends.

The corpus (tests/data/rfc4475, see SOURCE.txt) is parsed as datagrams. For each file
EXPECTED says where the verdict falls: ``parse_message`` itself, ``check_request`` (the
UAS's first look), or neither (the message is acceptable to this layer; what a handler
then answers, such as 501 for an unknown method or 401 for an unknown auth scheme, is
not the parser's business). Valid messages are also checked field by field.

These tests do not need Django.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from registrar.sip.errors import SipError
from registrar.sip.message import Request, Response, check_request, parse_message, response_to

CORPUS = Path(__file__).parent / "data" / "rfc4475"

OK = "ok"  # parses, and a request passes check_request
PARSE = "parse"  # parse_message raises
CHECK = "check"  # parse_message accepts, check_request raises
DROP = None

# file -> (RFC 4475 section, stage, status)
EXPECTED: dict[str, tuple[str, str, int | None]] = {
    # 3.1.1 Valid messages
    "wsinv": ("3.1.1.1 A Short Tortuous INVITE", OK, None),
    "intmeth": ("3.1.1.2 Wide Range of Valid Characters", OK, None),
    "esc01": ("3.1.1.3 Valid Use of the % Escaping Mechanism", OK, None),
    "escnull": ("3.1.1.4 Escaped Nulls in URIs", OK, None),
    "esc02": ("3.1.1.5 Use of % When It Is Not an Escape", OK, None),
    "lwsdisp": ("3.1.1.6 Message with No LWS between Display Name and <", OK, None),
    "longreq": ("3.1.1.7 Long Values in Header Fields", OK, None),
    "dblreq": ("3.1.1.8 Extra Trailing Octets in a UDP Datagram", OK, None),
    "semiuri": ("3.1.1.9 Semicolon-Separated Parameters in URI User Part", OK, None),
    "transports": ("3.1.1.10 Varied and Unknown Transport Types", OK, None),
    "mpart01": ("3.1.1.11 Multipart MIME Message", OK, None),
    "unreason": ("3.1.1.12 Unusual Reason Phrase", OK, None),
    "noreason": ("3.1.1.13 Empty Reason Phrase", OK, None),
    # 3.1.2 Invalid messages
    "badinv01": ("3.1.2.1 Extraneous Header Field Separators", CHECK, 400),
    "clerr": ("3.1.2.2 Content Length Larger Than Message", PARSE, 400),
    "ncl": ("3.1.2.3 Negative Content-Length", PARSE, 400),
    "scalar02": ("3.1.2.4 Request Scalar Fields with Overlarge Values", PARSE, 400),
    "scalarlg": ("3.1.2.5 Response Scalar Fields with Overlarge Values", PARSE, DROP),
    "quotbal": ("3.1.2.6 Unterminated Quoted String in Display Name", CHECK, 400),
    "ltgtruri": ("3.1.2.7 <> Enclosing Request-URI", PARSE, 400),
    "lwsruri": ("3.1.2.8 Malformed SIP Request-URI (embedded LWS)", PARSE, 400),
    "lwsstart": ("3.1.2.9 Multiple SP Separating Request-Line Elements", PARSE, 400),
    "trws": ("3.1.2.10 SP Characters at End of Request-Line", PARSE, 400),
    "escruri": ("3.1.2.11 Escaped Headers in SIP Request-URI", CHECK, 400),
    # Rejecting is allowed only if the Date matters; a registrar never reads it.
    "baddate": ("3.1.2.12 Invalid Time Zone in Date Header Field", OK, None),
    "regbadct": ("3.1.2.13 Failure to Enclose name-addr URI in <>", CHECK, 400),
    "badaspec": ("3.1.2.14 Spaces within addr-spec", CHECK, 400),
    "baddn": ("3.1.2.15 Non-token Characters in Display Name", CHECK, 400),
    "badvers": ("3.1.2.16 Unknown Protocol Version", PARSE, 505),
    "mismatch01": ("3.1.2.17 Start Line and CSeq Method Mismatch", PARSE, 400),
    "mismatch02": ("3.1.2.18 Unknown Method with CSeq Method Mismatch", PARSE, 400),
    "bigcode": ("3.1.2.19 Overlarge Response Code", PARSE, DROP),
    # 3.2 Transaction layer semantics
    "badbranch": ("3.2.1 Missing Transaction Identifier", OK, None),
    # 3.3 Application-layer semantics
    "insuf": ("3.3.1 Missing Required Header Fields", PARSE, 400),
    "unkscm": ("3.3.2 Request-URI with Unknown Scheme", CHECK, 416),
    "novelsc": ("3.3.3 Request-URI with Known but Atypical Scheme", CHECK, 416),
    # Well-formed, but a registrar rejects it: To must hold a SIP or SIPS AOR.
    "unksm2": ("3.3.4 Unknown URI Schemes in Header Fields", CHECK, 400),
    "bext01": ("3.3.5 Proxy-Require and Require", CHECK, 420),
    "invut": ("3.3.6 Unknown Content-Type (415 is the INVITE handler's)", OK, None),
    "regaut01": ("3.3.7 Unknown Authorization Scheme (401 is the registrar's)", OK, None),
    "multi01": ("3.3.8 Multiple Values in Single Value Required Fields", PARSE, 400),
    "mcl01": ("3.3.9 Multiple Content-Length Values", PARSE, 400),
    "bcast": ("3.3.10 200 OK Response with Broadcast Via Header Field Value", OK, None),
    "zeromf": ("3.3.11 Max-Forwards of Zero", OK, None),
    "cparam01": ("3.3.12 REGISTER with a Contact Header Parameter", OK, None),
    "cparam02": ("3.3.13 REGISTER with a URL Parameter", OK, None),
    "regescrt": ("3.3.14 REGISTER with a URL Escaped Header", OK, None),
    "sdp01": ("3.3.15 Unacceptable Accept Offering (406 is the INVITE handler's)", OK, None),
    # 3.4 Backward compatibility
    "inv2543": ("3.4.1 INVITE with RFC 2543 Syntax", OK, None),
    # Not in RFC 4475: a request line without SIP-Version is not recognisably SIP.
    "test": ("(no section) malformed request", PARSE, DROP),
}


def load(name: str) -> bytes:
    return (CORPUS / f"{name}.dat").read_bytes()


def parse(name: str) -> Request | Response:
    return parse_message(load(name))


def parse_request(name: str) -> Request:
    message = parse(name)
    assert isinstance(message, Request)
    return message


def test_the_corpus_is_the_one_described_in_source_txt() -> None:
    for line in (CORPUS / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((CORPUS / name).read_bytes()).hexdigest() == digest, name


def test_every_corpus_file_has_an_expectation() -> None:
    assert sorted(path.stem for path in CORPUS.glob("*.dat")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_verdict(name: str) -> None:
    section, stage, status = EXPECTED[name]
    if stage == PARSE:
        with pytest.raises(SipError) as raised:
            parse(name)
        assert raised.value.status == status, raised.value.reason
        if status is not None:
            # The adapter answers from what could be read.
            assert raised.value.request is not None
            assert response_to(raised.value.request, status, raised.value.reason).to_bytes()
        return
    message = parse(name)
    if stage == OK:
        if isinstance(message, Request):
            check_request(message)
        return
    assert isinstance(message, Request)
    with pytest.raises(SipError) as raised:
        check_request(message)
    assert raised.value.status == status, raised.value.reason


# -- 3.1.1 valid messages, field by field ------------------------------------------------


def test_wsinv() -> None:
    request = parse_request("wsinv")
    assert request.method == "INVITE"
    assert request.uri.user == "vivekg"
    assert request.uri.host == "chair-dnrc.example.com"
    assert request.uri.params == (("unknownparam", None),)
    assert request.to.uri.host == "chair-dnrc.example.com"
    assert request.to.display_name is None
    assert request.to.tag == "1918181833n"
    assert request.from_.display_name == 'J Rosenberg \\"'
    assert request.from_.tag == "98asjd8"
    assert request.max_forwards == 68
    assert request.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert request.cseq == (9, "INVITE")
    assert [(via.protocol, via.transport, via.host, via.branch) for via in request.vias] == [
        ("SIP/2.0", "UDP", "192.0.2.2", "390skdjuw"),
        ("SIP/2.0", "TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("SIP/2.0", "UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert request.headers.get("Subject") == ""
    assert request.headers.get("s") == ""
    assert request.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert request.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    route = request.headers.get_all("Route")
    assert route == ["<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"]
    [contact] = request.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.uri.user == "jdrosen"
    assert contact.params == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))
    assert request.headers.get("Content-Type") == "application/sdp"
    assert len(request.body) == 150 and request.body.startswith(b"v=0\r\n")


def test_intmeth() -> None:
    request = parse_request("intmeth")
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert request.method == method
    assert request.cseq == (139122385, method)
    assert request.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert request.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert request.uri.host == "example.com"
    assert request.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert request.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert request.to.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert request.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert request.from_.param("fromParam''~+*_!.-%") == '"работающий"'
    assert request.from_.tag == "_token~1'+`*%!-."
    assert request.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert request.max_forwards == 255
    assert request.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01() -> None:
    request = parse_request("esc01")
    assert request.uri.user == "sips%3Auser%40example.com"
    assert request.uri.user_unescaped == "sips:user@example.com"
    assert request.uri.host == "example.net"
    assert request.to.uri.user == "%75se%72"
    assert request.to.uri.address_of_record() == "sip:user@example.com"
    assert request.from_.uri.user_unescaped == "I have spaces"
    [contact] = request.contacts
    assert contact.uri.user_unescaped == "caller"
    # ;%6C%72 is lr and n%61me=v%61lue%25%34%31 is name=value%41.
    assert contact.uri.params == (("lr", None), ("name", "value%41"))
    assert contact.uri.has_param("LR")
    assert request.headers.get("Content-Type") == "application/sdp"


def test_escnull() -> None:
    request = parse_request("escnull")
    assert request.method == "REGISTER"
    assert request.to.uri.user_unescaped == "null-\x00-null"
    # The AOR keeps the NUL escaped, so it can be stored as text.
    assert request.to.uri.address_of_record() == "sip:null-%00-null@example.com"
    assert [contact.uri.user_unescaped for contact in request.contacts] == ["\x00", "\x00\x00"]
    assert request.headers.get("Content-Length") == "0"


def test_esc02() -> None:
    request = parse_request("esc02")
    assert request.method == "RE%47IST%45R"  # an unknown method, not REGISTER
    assert request.cseq == (29344, "RE%47IST%45R")
    assert request.to.display_name == "%Z%45"
    assert request.from_.display_name == "%Z%45"
    assert request.top_via.branch == "z9hG4bK209%fzsnel234"
    # C%6Fntact is an extension header, not a third Contact.
    assert [contact.uri.user for contact in request.contacts] == ["alias1", "alias3"]
    assert request.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp() -> None:
    request = parse_request("lwsdisp")
    assert request.from_.display_name == "caller"
    assert request.from_.uri.user == "caller"
    assert request.from_.tag == "323"


def test_longreq() -> None:
    request = parse_request("longreq")
    assert request.to.display_name.startswith("I have a user name of extremeextreme")
    assert request.to.display_name.endswith("extreme proportion")
    assert request.to.uri.port == 6000
    assert [name for name, _ in request.to.uri.params][0] == "unknownparam1"
    assert request.to.uri.params[-1][1] is None
    assert request.from_.tag.startswith("12982982982982982")
    assert request.from_.params[-1][1] is None
    assert len(request.vias) == 34
    assert [via.host for via in request.vias[:3]] == ["sip33.example.com", "sip32.example.com", "sip31.example.com"]
    assert request.vias[-1].host == "host.example.com"
    assert request.vias[-1].param("received") == "192.0.2.5"
    assert request.vias[-1].branch.startswith("verylonglong")
    assert request.call_id.endswith("reallylongcallid")
    assert request.contacts[0].uri.user.startswith("amazinglylongcallername")
    assert len(request.body) == 150


def test_dblreq_keeps_only_the_first_message_of_the_datagram() -> None:
    request = parse_request("dblreq")
    assert request.method == "REGISTER"
    assert request.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    assert request.body == b""
    assert request.contacts[0].uri.address_of_record() == "sip:j.user@host.example.com"


def test_semiuri() -> None:
    request = parse_request("semiuri")
    assert request.uri.user == "user;par=u%40example.net"
    assert request.uri.host == "example.com"
    assert request.uri.params == ()
    assert request.headers.get_all("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_transports() -> None:
    request = parse_request("transports")
    assert [via.transport for via in request.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert request.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_mpart01() -> None:
    request = parse_request("mpart01")
    assert request.method == "MESSAGE"
    assert request.headers.get("Content-Type") == "multipart/mixed;boundary=7a9cbec02ceef655"
    assert request.headers.get("Identity").startswith("r5mwreLuyDRYBi")
    assert request.user_agent == "SIPimp.org/0.2.5 (curses)"
    assert request.top_via.port == 5070 and request.top_via.has_param("rport")
    assert len(request.body) == 553
    assert request.body.startswith(b"--7a9cbec02ceef655\r\n")
    assert request.body.endswith(b"--7a9cbec02ceef655--\r\n")


def test_unreason() -> None:
    response = parse("unreason")
    assert isinstance(response, Response)
    assert response.status == 200
    assert response.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert response.cseq == (35, "INVITE")
    assert len(response.body) == 154


def test_noreason() -> None:
    response = parse("noreason")
    assert isinstance(response, Response)
    assert response.status == 100
    assert response.reason == ""
    assert response.to.tag == "902jndnke3"


# -- 3.1.2 - 3.4: what the verdicts rest on -----------------------------------------------


def test_scalar02_expiry_values_would_be_clamped_were_cseq_valid() -> None:
    data = load("scalar02").replace(b"36893488147419103232 REGISTER", b"1 REGISTER")
    request = parse_message(data)
    check_request(request)
    assert request.expires == 2**32 - 1
    assert request.max_forwards is None  # 300 is out of range: read as absent
    assert request.contacts[0].param("expires") == "280297596632815"


def test_bext01_lists_every_unsupported_option_tag() -> None:
    with pytest.raises(SipError) as raised:
        check_request(parse_request("bext01"))
    assert raised.value.status == 420
    assert raised.value.headers == (("Unsupported", "nothingSupportsThis, nothingSupportsThisEither"),)


def test_unksm2_parses_every_unknown_scheme() -> None:
    request = parse_request("unksm2")
    assert request.to.uri.scheme == "isbn"
    assert request.from_.uri.scheme == "http"
    assert request.contacts[0].uri.scheme == "name"
    assert str(request.contacts[0].uri) == "name:John_Smith"


def test_unkscm_and_novelsc_parse_their_request_uri() -> None:
    assert parse_request("unkscm").uri.scheme == "nobodyknowsthisscheme"
    assert str(parse_request("novelsc").uri) == "soap.beep://192.0.2.103:3002"


def test_regaut01_keeps_the_unknown_credentials_for_the_registrar() -> None:
    request = parse_request("regaut01")
    assert request.headers.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"


def test_cparam01_parameter_belongs_to_the_contact() -> None:
    [contact] = parse_request("cparam01").contacts
    assert contact.params == (("unknownparam", None),)
    assert contact.uri.params == ()
    assert contact.uri.user == "+19725552222"


def test_cparam02_parameter_belongs_to_the_uri() -> None:
    [contact] = parse_request("cparam02").contacts
    assert contact.params == ()
    assert contact.uri.params == (("unknownparam", None),)


def test_regescrt_keeps_the_escaped_header_of_the_contact_uri() -> None:
    [contact] = parse_request("regescrt").contacts
    assert contact.uri.headers == "Route=%3Csip:sip.example.com%3E"
    assert str(contact.uri) == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"


def test_zeromf() -> None:
    assert parse_request("zeromf").max_forwards == 0


def test_badbranch() -> None:
    assert parse_request("badbranch").top_via.branch == "z9hG4bK"


def test_inv2543_needs_no_max_forwards_branch_or_content_length() -> None:
    request = parse_request("inv2543")
    assert request.max_forwards is None
    assert request.top_via.branch is None
    assert request.from_.tag is None
    assert request.body.startswith(b"v=0\r\n") and request.body.endswith(b"RTP/AVP 0\r\n")


def test_bcast_parses_its_broadcast_via() -> None:
    response = parse("bcast")
    assert [via.host for via in response.vias] == ["192.0.2.198", "255.255.255.255"]


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("badinv01", "Via"),
        ("clerr", "Content-Length"),
        ("ncl", "Content-Length"),
        ("scalar02", "CSeq"),
        ("quotbal", "To"),
        ("ltgtruri", "Request-URI"),
        ("lwsruri", "Request-Line"),
        ("lwsstart", "Request-Line"),
        ("trws", "Request-Line"),
        ("escruri", "Request-URI"),
        ("regbadct", "Contact"),
        ("badaspec", "To"),
        ("baddn", "From"),
        ("mismatch01", "CSeq"),
        ("mismatch02", "CSeq"),
        ("insuf", "Missing To, From, Call-ID"),
        ("multi01", "Conflicting"),
        ("mcl01", "Content-Length"),
        ("unksm2", "SIP or SIPS"),
    ],
)
def test_the_reason_phrase_names_the_problem(name: str, words: str) -> None:
    with pytest.raises(SipError) as raised:
        check_request(parse_request(name))
    assert words in raised.value.reason


def test_baddn_would_fail_on_its_display_names_even_with_the_empty_line() -> None:
    request = parse_message(load("baddn") + b"\r\n")
    with pytest.raises(SipError, match="display name"):
        request.from_
    with pytest.raises(SipError, match="display name"):
        request.to


# -- round trip and robustness ------------------------------------------------------------

VALID = [name for name, (_, stage, _) in EXPECTED.items() if stage == OK]


@pytest.mark.parametrize("name", VALID)
def test_valid_messages_survive_a_round_trip(name: str) -> None:
    message = parse(name)
    again = parse_message(message.to_bytes())
    assert type(again) is type(message)
    without_length = [item for item in message.headers.items() if item[0] != "Content-Length"]
    assert [item for item in again.headers.items() if item[0] != "Content-Length"] == without_length
    assert again.headers.get("Content-Length") == str(len(message.body))
    assert again.body == message.body
    if isinstance(message, Request):
        assert (again.method, again.uri) == (message.method, message.uri)


def exercise(data: bytes) -> None:
    """Everything a caller may do with a datagram; only SipError may come out."""
    try:
        message = parse_message(data)
    except SipError as error:
        if error.request is not None:
            response_to(error.request, error.status or 400, error.reason, to_tag="t").to_bytes()
        return
    for field in ("call_id", "cseq", "from_", "to", "vias", "top_via", "contacts", "contact_star",
                  "expires", "max_forwards", "user_agent"):  # fmt: skip
        try:
            value = getattr(message, field)
        except SipError:
            continue
        for item in value if isinstance(value, list) else [value]:
            str(item)
            if hasattr(item, "uri"):
                item.uri.address_of_record()
    message.to_bytes()
    if isinstance(message, Request):
        try:
            check_request(message)
        except SipError:
            pass
        response_to(message, 200, "OK", to_tag="t").to_bytes()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_truncation_parses_or_raises_sip_error(name: str) -> None:
    data = load(name)
    for length in range(len(data) + 1):
        exercise(data[:length])
        exercise(data[length:])


def test_random_byte_flips_parse_or_raise_sip_error() -> None:
    rng = random.Random(4475)
    corpus = [load(name) for name in sorted(EXPECTED)]
    interesting = b'\r\n \t:;,<>"\\%@=?/*\x00\xff'
    for _ in range(3000):
        data = bytearray(rng.choice(corpus))
        for _ in range(rng.randint(1, 6)):
            position = rng.randrange(len(data))
            data[position] = rng.choice(interesting) if rng.random() < 0.6 else rng.randrange(256)
        exercise(bytes(data))
