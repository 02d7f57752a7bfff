"""The services layer on the real database (SQLite by default, PostgreSQL in CI)."""
import hashlib

import pytest
from django.core.exceptions import ValidationError

from registrar import services
from registrar.models import AuthAttempt, Binding, Extension, SoftParameter
from registrar.sip.core import Attempt, Origin, Source, StoreRegistration
from registrar.sip.policy import Policy
from registrar.sip.reasons import Reason
from registrar.sip.registrar import ContactRequest, RegisterRequest

pytestmark = pytest.mark.django_db
NOW = 1_800_000_000.0


def contact(port, expires=3600):
    return ContactRequest(f"sip:1001@192.0.2.1:{port}", "", None, "", None, expires)


def store(number, contacts, cseq=1, call_id="c1", ticket=1, max_contacts=5):
    register = RegisterRequest(number, call_id, cseq, False, tuple(contacts))
    origin = Origin("192.0.2.1", 5060, "udp", "Phone/1", "")
    return StoreRegistration(ticket, register, origin, max_contacts, Policy())


def test_it_stores_only_ha1_hashes(settings):
    extension, generated = services.create_extension("1001", "s3cret")
    assert generated is None
    expected_md5 = hashlib.md5(f"1001:{settings.SIP_REALM}:s3cret".encode()).hexdigest()
    expected_sha = hashlib.sha256(f"1001:{settings.SIP_REALM}:s3cret".encode()).hexdigest()
    row = Extension.objects.get(pk=extension.pk)
    assert (row.ha1_md5, row.ha1_sha256) == (expected_md5, expected_sha)
    assert len(row.ha1_sha512_256) == 64
    assert all("s3cret" not in str(value) for value in Extension.objects.values().get())


def test_it_generates_a_password_when_none_is_given():
    extension, generated = services.create_extension("1002")
    assert len(generated) == 16
    assert extension.ha1_md5 == services.digest.compute_ha1("1002", extension.realm, generated, "MD5")


def test_it_refuses_a_bad_number_naming_the_field():
    with pytest.raises(ValidationError) as error:
        services.create_extension("10 01", "pw")
    assert "number" in error.value.message_dict


def test_group_commit_applies_requests_for_one_aor_in_order():
    services.create_extension("1001", "pw")
    outcomes = services.store_registrations([
        store("1001", [contact(5001)], cseq=1, ticket=1),
        store("1001", [contact(5002)], cseq=2, ticket=2),
        store("1001", [contact(5001, expires=0)], cseq=3, ticket=3),
        store("9999", [contact(5003)], ticket=4),
    ], NOW)
    assert [o.status for o in outcomes] == [200, 200, 200, 404]
    assert [b.contact_uri for b in outcomes[1].bindings] == ["sip:1001@192.0.2.1:5001", "sip:1001@192.0.2.1:5002"]
    assert list(Binding.objects.values_list("contact_uri", flat=True)) == ["sip:1001@192.0.2.1:5002"]
    binding = Binding.objects.get()
    assert (binding.source_ip, binding.transport, binding.user_agent, binding.cseq) == ("192.0.2.1", "udp",
                                                                                       "Phone/1", 2)
    assert binding.expires_at.timestamp() == NOW + 3600


def test_a_refresh_updates_the_row_and_keeps_first_registered():
    services.create_extension("1001", "pw")
    services.store_registrations([store("1001", [contact(5001)], cseq=1)], NOW)
    first = Binding.objects.get()
    services.store_registrations([store("1001", [contact(5001)], cseq=2)], NOW + 100)
    again = Binding.objects.get()
    assert again.pk == first.pk
    assert again.first_registered == first.first_registered
    assert again.last_refreshed.timestamp() == NOW + 100


def test_an_expired_binding_stops_counting_and_is_removed_when_touched():
    services.create_extension("1001", "pw", max_contacts=1)
    services.store_registrations([store("1001", [contact(5001, expires=60)])], NOW)
    outcome, = services.store_registrations([store("1001", [contact(5002)], call_id="c2")], NOW + 61)
    assert [b.contact_uri for b in outcome.bindings] == ["sip:1001@192.0.2.1:5002"]
    assert Binding.objects.count() == 1


def test_it_records_attempts_with_their_reason():
    source = Source("tcp", "203.0.113.9", 40000)
    services.record_attempts([Attempt(NOW, source, "REGISTER", "sip:1001@regis.test", "1001", "1001", "UA",
                                      "challenged", Reason.WRONG_PASSWORD, 401)])
    attempt = AuthAttempt.objects.get()
    assert (attempt.reason, attempt.transport, attempt.status) == ("wrong_password", "tcp", 401)
    assert "password" in attempt.explanation


def test_soft_parameters_are_seeded_and_validated():
    assert SoftParameter.objects.get(number=286).value is False
    services.set_soft_parameter(286, "1")
    services.set_soft_parameter("digest_algorithms", "md5")
    policy = services.current_policy()
    assert policy.ua_inspection is True and policy.digest_algorithms == ("MD5",)
    with pytest.raises(ValidationError) as error:
        services.set_soft_parameter("min_expires", "soon")
    assert "value" in error.value.message_dict
    with pytest.raises(ValidationError) as error:
        services.set_soft_parameter(999, 1)
    assert "number" in error.value.message_dict


def test_the_credentials_fingerprint_changes_with_every_kind_of_change():
    services.create_extension("1000", "pw")
    seen = [services.extensions_version()]
    extension, _ = services.create_extension("1001", "pw")
    seen.append(services.extensions_version())
    services.set_password(extension, "other")
    seen.append(services.extensions_version())
    services.delete_extension(extension)
    seen.append(services.extensions_version())
    assert all(before != after for before, after in zip(seen, seen[1:]))
    services.create_extension("1002", "pw", enabled=False)
    snapshot = services.credentials_snapshot()
    assert snapshot["1002"].enabled is False and snapshot["1002"].ha1["MD5"]


def test_the_trace_keeps_within_its_bounds():
    from registrar.models import TracedMessage
    from registrar.sip.core import TraceMessage

    services.set_soft_parameter("trace_max_messages", 100)
    phone = Source("udp", "192.0.2.1", 5060)
    old = [TraceMessage(NOW - 48 * 3600, "in", phone, "1001", b"REGISTER sip:x SIP/2.0\r\nCall-ID: old\r\n\r\n")]
    recent = [TraceMessage(NOW + i, "out", phone, "1001", b"SIP/2.0 401 Unauthorized\r\ni: c%d\r\n\r\n" % i)
              for i in range(150)]
    services.record_trace(old + recent)
    assert TracedMessage.objects.filter(call_id="old").get().summary == "REGISTER sip:x SIP/2.0"
    from datetime import datetime, timezone as tz

    services.prune_trace(now=datetime.fromtimestamp(NOW + 200, tz=tz.utc))
    kept = TracedMessage.objects.order_by("captured_at")
    assert kept.count() == 100 and kept.first().call_id == "c50" and kept.last().call_id == "c149"


@pytest.mark.parametrize("field, kwargs", [("max_contacts", {"max_contacts": 0}), ("number", {"number": "new"})])
def test_it_refuses_limits_that_make_no_sense(field, kwargs):
    arguments = {"number": "1001", "password": "pw", **kwargs}
    with pytest.raises(ValidationError) as error:
        services.create_extension(**arguments)
    assert field in error.value.message_dict
    assert not Extension.objects.exists()
