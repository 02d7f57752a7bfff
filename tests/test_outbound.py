"""RFC 5626 (outbound), RFC 3327 (Path) and RFC 5627 (GRUU) at the registrar, in the core.

The REGISTERs follow what real clients send: JsSIP's Contact with +sip.instance and
reg-id=1 and ``Supported: path, gruu, outbound`` (seed 003), and a REGISTER relayed by
an edge proxy with a Path header.
"""
from registrar.sip.core import Source
from registrar.sip.policy import Policy
from tests.test_core import REALM, Harness, answer, challenges, register

INSTANCE = '"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"'
BROWSER = Source("ws", "203.0.113.50", 51234, object(), "host:1:ws:1")


def registered(harness, source=None, **kwargs):
    """Register through the challenge; returns the final response."""
    source = source or BROWSER
    (challenge, _), = harness.send(register(**kwargs), source=source)
    assert challenge.status == 401
    credentials = answer(challenges(challenge)[-1], kwargs.get("user", "1001"), "secret")
    (response, _), = harness.send(register(authorization=credentials, cseq=kwargs.pop("cseq", 1) + 1, **kwargs),
                                  source=source)
    return response


def outbound_contact(uri="sip:k1x9@df7jal23ls0d.invalid;transport=ws", reg_id=1, instance=INSTANCE):
    return f"<{uri}>;+sip.ice;reg-id={reg_id};+sip.instance={instance};expires=600"


def test_outbound_registration_gets_require_outbound_and_flow_timer():
    harness = Harness(policy=Policy(flow_timer=95))
    response = registered(harness, contact=outbound_contact(), expires=None,
                          extra="Supported: path, gruu, outbound")
    assert response.status == 200
    assert response.headers.get_all("Require") == ["outbound"]
    assert response.headers.get("Flow-Timer") == "95"
    contact = response.headers.get("Contact")
    assert "reg-id=1" in contact and "+sip.instance=" in contact


def test_without_supported_outbound_there_is_no_flow_timer():
    response = registered(Harness(), contact=outbound_contact(), expires=None)
    assert response.status == 200
    assert response.headers.get("Flow-Timer") is None
    assert response.headers.get("Require") is None


def test_reg_id_without_instance_is_ignored():
    harness = Harness()
    response = registered(harness, contact="<sip:1001@192.0.2.10:5062>;reg-id=1", extra="Supported: outbound")
    assert response.status == 200
    assert response.headers.get("Flow-Timer") is None
    assert harness.store["1001"][0].reg_id is None


def test_two_contacts_with_reg_id_are_refused():
    harness = Harness()
    contacts = outbound_contact(reg_id=1) + ", " + outbound_contact("sip:other@x.invalid;transport=ws", reg_id=2)
    (response, _), = harness.send(register(contact=contacts, expires=None, extra="Supported: outbound"),
                                  source=BROWSER)
    assert (response.status, response.reason) == (400, "More Than One Contact With reg-id")


def test_edge_proxy_without_ob_gets_439():
    harness = Harness()
    (response, _), = harness.send(register(contact=outbound_contact(), expires=None,
                                           extra="Supported: outbound, path\r\nPath: <sip:edge.example.com;lr>"),
                                  source=BROWSER)
    assert (response.status, response.reason) == (439, "First Hop Lacks Outbound Support")


def test_edge_proxy_with_ob_is_accepted_and_path_echoed():
    harness = Harness()
    response = registered(harness, contact=outbound_contact(), expires=None,
                          extra="Supported: outbound, path\r\nPath: <sip:edge.example.com;lr;ob>")
    assert response.status == 200
    assert response.headers.get_all("Path") == ["<sip:edge.example.com;lr;ob>"]


def test_path_is_echoed_only_to_phones_that_support_it():
    response = registered(Harness(), source=Source("udp", "192.0.2.10", 5062),
                          extra="Path: <sip:edge.example.com;lr>")
    assert response.status == 200
    assert response.headers.get_all("Path") == []


def test_new_flow_for_same_instance_and_reg_id_replaces_the_old():
    harness = Harness()
    first = registered(harness, contact=outbound_contact("sip:a@one.invalid;transport=ws"), expires=None,
                       extra="Supported: outbound", call_id="c1")
    assert first.status == 200
    second_source = Source("ws", "203.0.113.50", 51300, object(), "host:1:ws:2")
    second = registered(harness, source=second_source, contact=outbound_contact("sip:b@two.invalid;transport=ws"),
                        expires=None, extra="Supported: outbound", call_id="c2")
    assert second.status == 200
    assert [b.contact_uri for b in harness.store["1001"]] == ["sip:b@two.invalid;transport=ws"]


def test_gruus_are_assigned_to_instances_when_supported():
    harness = Harness()
    response = registered(harness, contact=outbound_contact(), expires=None, extra="Supported: gruu, outbound")
    contact = response.headers.get("Contact")
    assert f'pub-gruu="sip:1001@{REALM};gr=urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"' in contact
    temp = contact.split('temp-gruu="', 1)[1].split('"', 1)[0]
    assert temp.startswith("sip:tgruu.") and temp.endswith(f"@{REALM};gr")
    assert "1001" not in temp  # a temporary GRUU must not reveal the AOR


def test_temp_gruu_changes_with_a_new_call_id_and_is_stable_within_one():
    harness = Harness()

    def temp_gruu(call_id, cseq=1):
        response = registered(harness, contact=outbound_contact(), expires=None, extra="Supported: gruu",
                              call_id=call_id, cseq=cseq)
        return response.headers.get("Contact").split('temp-gruu="', 1)[1].split('"', 1)[0]

    first = temp_gruu("call-a")
    assert temp_gruu("call-a", cseq=10) == first
    assert temp_gruu("call-b") != first


def test_no_gruu_without_supported_gruu_or_without_instance():
    response = registered(Harness(), contact=outbound_contact(), expires=None, extra="Supported: outbound")
    assert "gruu" not in response.headers.get("Contact")
    response = registered(Harness(), source=Source("udp", "192.0.2.10", 5062), extra="Supported: gruu")
    assert "gruu" not in response.headers.get("Contact")


def test_require_outbound_from_the_phone_is_understood():
    response = registered(Harness(), contact=outbound_contact(), expires=None,
                          extra="Supported: outbound\r\nRequire: outbound")
    assert response.status == 200


def test_websocket_registration_is_tied_to_its_flow_udp_is_not():
    harness = Harness()
    actions = []
    original = harness.run

    def capture(pending, now):
        actions.extend(pending)
        return original(list(pending), now)

    harness.run = capture
    registered(harness, contact="<sip:ws1@x.invalid;transport=ws>", expires=None)
    stores = [a for a in actions if type(a).__name__ == "StoreRegistration"]
    assert stores[-1].origin.flow == BROWSER.flow
    actions.clear()
    udp_flowless = Source("udp", "192.0.2.10", 5062)
    registered(harness, source=udp_flowless, call_id="udp-call")
    stores = [a for a in actions if type(a).__name__ == "StoreRegistration"]
    assert stores[-1].origin.flow == ""


def test_tcp_binding_is_tied_to_its_connection_only_for_outbound():
    harness = Harness()
    tcp = Source("tcp", "192.0.2.10", 40000, object(), "host:1:tcp:7")
    actions = []
    original = harness.run

    def capture(pending, now):
        actions.extend(pending)
        return original(list(pending), now)

    harness.run = capture
    registered(harness, source=tcp, call_id="plain-tcp")
    assert [a.origin.flow for a in actions if type(a).__name__ == "StoreRegistration"] == [""]
    actions.clear()
    registered(harness, source=tcp, contact=outbound_contact("sip:1001@192.0.2.10:40000;transport=tcp"),
               expires=None, extra="Supported: outbound", call_id="outbound-tcp")
    assert [a.origin.flow for a in actions if type(a).__name__ == "StoreRegistration"] == ["host:1:tcp:7"]

