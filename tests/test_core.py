"""The registrar engine without sockets or a database: bytes in, actions out.

A tiny in-memory store plays the services layer (apply_register on a dict), so these
tests cover the core's decisions: challenges, verdicts and their recorded reasons,
the registrar rules, transactions and response routing.
"""
import hashlib
import re

import pytest

from registrar.sip import digest
from registrar.sip.core import (
    Credentials,
    RecordAttempt,
    RegistrarCore,
    SendMessage,
    Source,
    StoreRegistration,
)
from registrar.sip.message import parse_message
from registrar.sip.policy import Policy
from registrar.sip.reasons import Reason
from registrar.sip.registrar import apply_register

REALM = "regis.test"
NOW = 1_800_000_000.0
PHONE = Source("udp", "192.0.2.10", 5062)


def ha1s(user, password):
    return {alg: digest.compute_ha1(user, REALM, password, alg) for alg in ("MD5", "SHA-256", "SHA-512-256")}


class Harness:
    """A core wired to an in-memory credential dict and binding store."""

    def __init__(self, policy=Policy(), extensions=None):
        self.extensions = extensions if extensions is not None else {
            "1001": Credentials("1001", True, ha1s("1001", "secret"), 3),
            "1002": Credentials("1002", False, ha1s("1002", "secret"), 3),
        }
        self.store = {}
        self.attempts = []
        self.stored = 0
        self.core = RegistrarCore(realm=REALM, secret=b"k" * 32, credentials=self.extensions.get, policy=policy)

    def send(self, text, source=PHONE, now=NOW):
        data = text.replace("\n", "\r\n").encode() if "\r\n" not in text else text.encode()
        return self.run(self.core.receive(data, source, now), now)

    def run(self, actions, now):
        sent = []
        while actions:
            action = actions.pop(0)
            if isinstance(action, SendMessage):
                sent.append((parse_message(action.data), action.destination))
            elif isinstance(action, RecordAttempt):
                self.attempts.append(action.attempt)
            elif isinstance(action, StoreRegistration):
                self.stored += 1
                user = action.register.user
                outcome = apply_register(self.store.get(user, []), action.register, now, action.policy,
                                         action.max_contacts)
                if outcome.ok:
                    self.store[user] = list(outcome.bindings)
                actions.extend(self.core.registration_stored(action.ticket, outcome, now))
        return sent


def register(user="1001", cseq=1, call_id="call-1@phone", branch=None, contact="<sip:1001@192.0.2.10:5062>",
             expires="3600", authorization=None, extra="", via_params=";rport", to_user=None):
    branch = branch or f"z9hG4bK-{call_id}-{cseq}"
    lines = [
        f"REGISTER sip:{REALM} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.10:5062;branch={branch}{via_params}",
        "Max-Forwards: 70",
        f"From: <sip:{to_user or user}@{REALM}>;tag=from-{user}",
        f"To: <sip:{to_user or user}@{REALM}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "User-Agent: TestPhone/1.0",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if authorization:
        lines.append(f"Authorization: {authorization}")
    if extra:
        lines.append(extra)
    lines.append("Content-Length: 0")
    return "\r\n".join(lines) + "\r\n\r\n"


def challenges(response):
    return response.headers.get_all("WWW-Authenticate")


def parse_challenge(value):
    return {k: quoted or bare for k, quoted, bare in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', value)}


def answer(challenge_value, user, password, algorithm=None, nc=1, uri=f"sip:{REALM}", method="REGISTER",
           realm=None):
    """An independent client-side digest computation (RFC 7616 §3.4.1)."""
    params = parse_challenge(challenge_value)
    algorithm = algorithm or params["algorithm"]
    h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256,
         "SHA-512-256": lambda data: hashlib.new("sha512_256", data)}[algorithm]
    hx = lambda text: h(text.encode()).hexdigest()  # noqa: E731
    realm = realm or params["realm"]
    cnonce, nc_text = "0a4f113b", f"{nc:08x}"
    response = hx(f"{hx(f'{user}:{realm}:{password}')}:{params['nonce']}:{nc_text}:{cnonce}:auth:"
                  f"{hx(f'{method}:{uri}')}")
    return (f'Digest username="{user}", realm="{realm}", nonce="{params["nonce"]}", uri="{uri}", '
            f'response="{response}", algorithm={algorithm}, cnonce="{cnonce}", nc={nc_text}, qop=auth, '
            f'opaque="{params["opaque"]}"')


def registered(harness, user="1001", password="secret", **kwargs):
    (first, _), = harness.send(register(user=user, **kwargs))
    assert first.status == 401
    kwargs["cseq"] = kwargs.get("cseq", 1) + 1
    (second, _), = harness.send(register(user=user, authorization=answer(challenges(first)[0], user, password),
                                         **kwargs))
    return first, second


def test_it_challenges_with_one_header_per_algorithm_sha256_first():
    (response, _), = Harness().send(register())
    assert response.status == 401
    values = challenges(response)
    assert [parse_challenge(v)["algorithm"] for v in values] == ["SHA-256", "MD5"]
    for value in values:
        params = parse_challenge(value)
        assert params["realm"] == REALM and params["qop"] == "auth" and params["opaque"]
    assert response.to.tag


def test_it_registers_with_sha256_and_lists_the_contact_with_date():
    harness = Harness()
    _, ok = registered(harness)
    assert ok.status == 200
    contacts = ok.headers.get_all("Contact")
    assert contacts == ["<sip:1001@192.0.2.10:5062>;expires=3600"]
    assert ok.headers.get("Date").endswith("GMT")
    assert harness.store["1001"][0].contact_uri == "sip:1001@192.0.2.10:5062"


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-512-256"])
def test_it_accepts_each_offered_algorithm(algorithm):
    harness = Harness(policy=Policy(digest_algorithms=("SHA-256", "MD5", "SHA-512-256")))
    (first, _), = harness.send(register())
    value = next(v for v in challenges(first) if f"algorithm={algorithm}" in v)
    (ok, _), = harness.send(register(cseq=2, authorization=answer(value, "1001", "secret")))
    assert ok.status == 200


def test_unknown_user_and_wrong_password_look_the_same_on_the_wire():
    harness = Harness()
    (first, _), = harness.send(register())
    (wrong, _), = harness.send(register(cseq=2, authorization=answer(challenges(first)[0], "1001", "nope")))
    (first_unknown, _), = harness.send(register(user="9999", call_id="c2"))
    (unknown, _), = harness.send(register(user="9999", call_id="c2", cseq=2,
                                          authorization=answer(challenges(first_unknown)[0], "9999", "nope")))
    assert wrong.status == unknown.status == 401
    assert [name for name, _ in wrong.headers.items()] == [name for name, _ in unknown.headers.items()]
    assert [a.reason for a in harness.attempts] == [Reason.WRONG_PASSWORD, Reason.UNKNOWN_USER]
    assert harness.stored == 0


def test_a_disabled_extension_is_challenged_like_a_wrong_password_but_recorded_as_disabled():
    harness = Harness()
    _, response = registered(harness, user="1002")
    assert response.status == 401
    assert harness.attempts[-1].reason == Reason.DISABLED_EXTENSION


def test_a_stale_nonce_with_the_right_password_gets_stale_true():
    harness = Harness(policy=Policy(nonce_lifetime=30))
    (first, _), = harness.send(register())
    (again, _), = harness.send(register(cseq=2, authorization=answer(challenges(first)[0], "1001", "secret")),
                               now=NOW + 60)
    assert again.status == 401
    assert all("stale=true" in v.lower() for v in challenges(again))
    assert harness.attempts[-1].reason == Reason.STALE_NONCE


def test_a_replayed_nonce_count_is_refused():
    harness = Harness()
    (first, _), = harness.send(register())
    credentials = answer(challenges(first)[0], "1001", "secret")
    (ok, _), = harness.send(register(cseq=2, authorization=credentials))
    (replay, _), = harness.send(register(cseq=3, authorization=credentials))
    assert (ok.status, replay.status) == (200, 401)
    assert harness.attempts[-1].reason == Reason.REPLAYED_NONCE


def test_a_realm_mismatch_is_recorded():
    harness = Harness()
    (first, _), = harness.send(register())
    (again, _), = harness.send(register(cseq=2, authorization=answer(challenges(first)[0], "1001", "secret",
                                                                     realm="other.example")))
    assert again.status == 401
    assert harness.attempts[-1].reason == Reason.REALM_MISMATCH


def test_the_authenticated_user_must_own_the_aor():
    harness = Harness()
    (first, _), = harness.send(register(to_user="1003"))
    (response, _), = harness.send(register(to_user="1003", cseq=2,
                                           authorization=answer(challenges(first)[0], "1001", "secret")))
    assert response.status == 403
    assert harness.attempts[-1].reason == Reason.AUTH_USER_MISMATCH


def test_malformed_credentials_get_400():
    harness = Harness()
    (response, _), = harness.send(register(authorization='Digest username="1001"'))
    assert response.status == 400
    assert harness.attempts[-1].reason == Reason.MALFORMED_CREDENTIALS


def authorized(harness, **kwargs):
    """Send a REGISTER through the 401 and return the final answer."""
    cseq = kwargs.pop("cseq", 1)
    (first, _), = harness.send(register(cseq=cseq, **kwargs))
    (final, _), = harness.send(register(cseq=cseq + 1, authorization=answer(challenges(first)[0], "1001", "secret"),
                                        **kwargs))
    return final


def test_too_brief_an_interval_gets_423_with_min_expires():
    harness = Harness()
    response = authorized(harness, expires="10")
    assert response.status == 423
    assert response.headers.get("Min-Expires") == "60"
    assert harness.attempts[-1].reason == Reason.INTERVAL_TOO_BRIEF


def test_expiry_is_clamped_to_the_maximum_and_taken_from_the_contact_first():
    harness = Harness()
    response = authorized(harness, contact="<sip:1001@192.0.2.10:5062>;expires=99999", expires="120")
    assert response.headers.get_all("Contact") == ["<sip:1001@192.0.2.10:5062>;expires=7200"]


def test_a_register_without_contact_lists_the_bindings():
    harness = Harness()
    authorized(harness)
    response = authorized(harness, contact=None, expires=None, call_id="query", cseq=1)
    assert response.status == 200
    assert response.headers.get_all("Contact") == ["<sip:1001@192.0.2.10:5062>;expires=3600"]


def test_expires_zero_removes_a_binding():
    harness = Harness()
    authorized(harness)
    response = authorized(harness, expires="0", cseq=5)
    assert response.status == 200 and response.headers.get_all("Contact") == []
    assert harness.store["1001"] == []


def test_contact_star_removes_all_and_requires_expires_zero():
    harness = Harness()
    authorized(harness)
    authorized(harness, contact="<sip:1001@192.0.2.10:5070>", cseq=5)
    assert len(harness.store["1001"]) == 2
    (bad, _), = harness.send(register(contact="*", expires="60", cseq=9))
    assert bad.status == 400
    ok = authorized(harness, contact="*", expires="0", cseq=11)
    assert ok.status == 200 and harness.store["1001"] == []


def test_an_old_cseq_on_the_same_call_id_is_refused():
    harness = Harness()
    authorized(harness, cseq=10)
    response = authorized(harness, cseq=3)
    assert response.status == 400
    assert harness.attempts[-1].reason == Reason.OUT_OF_ORDER


def test_the_oldest_contact_is_replaced_past_max_contacts():
    harness = Harness()
    for port, cseq in ((5001, 1), (5002, 3), (5003, 5), (5004, 7)):
        response = authorized(harness, contact=f"<sip:1001@192.0.2.10:{port}>", cseq=cseq)
    contacts = response.headers.get_all("Contact")
    assert len(contacts) == 3 and not any(":5001>" in c for c in contacts)


def test_a_retransmission_gets_the_same_answer_and_is_processed_once():
    harness = Harness()
    (first, _), = harness.send(register())
    request = register(cseq=2, authorization=answer(challenges(first)[0], "1001", "secret"))
    (ok, _), = harness.send(request)
    (again, _), = harness.send(request)
    assert ok.to_bytes() == again.to_bytes()
    assert harness.stored == 1


def test_a_retransmission_while_the_binding_is_being_stored_is_absorbed():
    harness = Harness()
    (first, _), = harness.send(register())
    data = register(cseq=2, authorization=answer(challenges(first)[0], "1001", "secret")).encode()
    actions = harness.core.receive(data, PHONE, NOW)
    assert [type(a) for a in actions] == [StoreRegistration]
    assert harness.core.receive(data, PHONE, NOW + 0.5) == []


def test_the_answer_goes_to_the_source_port_with_rport_and_received():
    harness = Harness()
    behind_nat = Source("udp", "198.51.100.7", 40000)
    (response, destination), = harness.send(register(), source=behind_nat)
    assert (destination.ip, destination.port) == ("198.51.100.7", 40000)
    via = response.top_via
    assert via.param("received") == "198.51.100.7" and via.param("rport") == "40000"


def test_without_rport_the_answer_goes_to_the_via_port():
    harness = Harness()
    (response, destination), = harness.send(register(via_params=""), source=Source("udp", "198.51.100.7", 40000))
    assert (destination.ip, destination.port) == ("198.51.100.7", 5062)
    assert response.top_via.param("received") == "198.51.100.7"


def test_ua_inspection_refuses_third_party_phones_without_a_challenge():
    harness = Harness(policy=Policy(ua_inspection=True, accepted_user_agents=("Huawei",)))
    (response, _), = harness.send(register())
    assert response.status == 403 and not challenges(response)
    assert harness.attempts[-1].reason == Reason.UA_POLICY


def test_options_is_answered_and_other_methods_get_405():
    harness = Harness()
    options = register().replace("REGISTER sip", "OPTIONS sip").replace("1 REGISTER", "1 OPTIONS")
    (response, _), = harness.send(options)
    assert response.status == 200 and "REGISTER" in response.headers.get("Allow")
    message = register().replace("REGISTER sip", "MESSAGE sip").replace("1 REGISTER", "1 MESSAGE")
    (response, _), = harness.send(message)
    assert response.status == 405


def test_garbage_and_responses_are_dropped():
    harness = Harness()
    assert harness.send("\x00\x01garbage") == []
    assert harness.send("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\n"
                        "To: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n") == []


def test_a_bad_request_gets_400_with_a_reason_phrase():
    harness = Harness()
    (response, _), = harness.send(register().replace("CSeq: 1 REGISTER", "CSeq: 1 INVITE"))
    assert response.status == 400 and response.reason != "Bad Request" and response.reason


def test_a_traced_extension_has_its_messages_in_and_out_captured():
    from registrar.sip.core import TraceMessage

    harness = Harness(policy=Policy(trace_extensions=frozenset({"1001"})))
    actions = harness.core.receive(register().encode(), PHONE, NOW)
    traced = [a for a in actions if isinstance(a, TraceMessage)]
    assert [(t.direction, t.extension_number) for t in traced] == [("in", "1001"), ("out", "1001")]
    assert traced[0].data == register().encode() and traced[1].data.startswith(b"SIP/2.0 401")
    other = harness.core.receive(register(user="1002", call_id="x").encode(), PHONE, NOW)
    assert not any(isinstance(a, TraceMessage) for a in other)


def test_a_traced_source_has_the_final_answer_captured_after_the_store():
    from registrar.sip.core import TraceMessage

    harness = Harness(policy=Policy(trace_sources=frozenset({PHONE.ip})))
    (first, _), = harness.send(register())
    actions = harness.core.receive(register(cseq=2, authorization=answer(challenges(first)[0], "1001", "secret"))
                                   .encode(), PHONE, NOW)
    store = next(a for a in actions if isinstance(a, StoreRegistration))
    outcome = apply_register([], store.register, NOW, store.policy, store.max_contacts)
    after = harness.core.registration_stored(store.ticket, outcome, NOW)
    assert [a.direction for a in after if isinstance(a, TraceMessage)] == ["out"]
    assert next(a for a in after if isinstance(a, TraceMessage)).data.startswith(b"SIP/2.0 200")
