"""The REST API under /api/v1/: roles, token auth, every endpoint, validation, schema and docs."""
import base64
import json
import re
import time
from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from rest_framework.test import APIClient

from registrar import services
from registrar.models import AuthAttempt, Binding, Extension, SoftParameter, SoftParameterChange
from registrar.sip.core import Attempt, Origin, Source, StoreRegistration
from registrar.sip.policy import Policy
from registrar.sip.reasons import Reason
from registrar.sip.registrar import ContactRequest, RegisterRequest

pytestmark = pytest.mark.django_db

LIST_URLS = ["/api/v1/", "/api/v1/extensions/", "/api/v1/registrations/", "/api/v1/auth-attempts/",
             "/api/v1/soft-parameters/", "/api/v1/soft-parameter-changes/", "/api/v1/summary/"]


# -- set-up ----------------------------------------------------------------------------
def user_in(django_user_model, name, group=None):
    user = django_user_model.objects.create_user(name, password=f"{name}-pw")
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def admin(django_user_model):
    return user_in(django_user_model, "alice", "admin")


@pytest.fixture
def viewer(django_user_model):
    return user_in(django_user_model, "victor", "viewer")


@pytest.fixture
def anonymous():
    return APIClient()


@pytest.fixture
def as_admin(admin):
    client = APIClient()
    client.force_authenticate(admin)
    return client


@pytest.fixture
def as_viewer(viewer):
    client = APIClient()
    client.force_authenticate(viewer)
    return client


def register(number, port, *, ip="192.0.2.1", transport="udp", user_agent="Yealink T46", expires=3600, at=None):
    contact = ContactRequest(f"sip:{number}@{ip}:{port}", "", None, "", None, expires)
    request = RegisterRequest(number, f"call-{number}-{port}", 1, False, (contact,))
    origin = Origin(ip, port, transport, user_agent, "")
    outcome, = services.store_registrations([StoreRegistration(1, request, origin, 5, Policy())],
                                            time.time() if at is None else at)
    assert outcome.status == 200
    return Binding.objects.get(contact_uri=contact.uri)


def fail(number, *, at=None, ip="203.0.113.9", reason=Reason.WRONG_PASSWORD):
    services.record_attempts([Attempt(time.time() if at is None else at, Source("tcp", ip, 40000), "REGISTER",
                                      f"sip:{number}@regis.test", number, number, "SipVicious", "challenged",
                                      reason, 401)])


def snapshot(model):
    return list(model.objects.order_by("pk").values())


def column(client, url, name):
    response = client.get(url)
    assert response.status_code == 200, response.json()
    return [row[name] for row in response.json()["results"]]


# -- roles and authentication ----------------------------------------------------------
@pytest.mark.parametrize("url", LIST_URLS)
def test_anonymous_callers_are_refused_with_401(anonymous, url):
    response = anonymous.get(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert "detail" in response.json()


@pytest.mark.parametrize("url", LIST_URLS)
def test_a_user_without_a_role_is_refused(django_user_model, url):
    client = APIClient()
    client.force_authenticate(user_in(django_user_model, "nobody"))
    assert client.get(url).status_code == 403


@pytest.mark.parametrize("url", LIST_URLS)
def test_viewers_and_admins_read_everything(as_viewer, as_admin, url):
    assert as_viewer.get(url).status_code == 200
    assert as_admin.get(url).status_code == 200


def test_viewers_cannot_write_and_their_attempts_change_nothing(as_viewer):
    extension, _ = services.create_extension("1001", "pw")
    binding = register("1001", 5001)
    before = snapshot(Extension), snapshot(Binding), snapshot(SoftParameter)
    attempts = [
        as_viewer.post("/api/v1/extensions/", {"number": "1002"}, format="json"),
        as_viewer.patch("/api/v1/extensions/1001/", {"display_name": "x"}, format="json"),
        as_viewer.put("/api/v1/extensions/1001/", {"number": "1001", "display_name": "x"}, format="json"),
        as_viewer.delete("/api/v1/extensions/1001/"),
        as_viewer.post("/api/v1/extensions/1001/set-password/", {"generate": True}, format="json"),
        as_viewer.delete(f"/api/v1/registrations/{binding.pk}/"),
        as_viewer.patch("/api/v1/soft-parameters/286/", {"value": True}, format="json"),
    ]
    assert [response.status_code for response in attempts] == [403] * len(attempts)
    assert all("detail" in response.json() for response in attempts)
    assert (snapshot(Extension), snapshot(Binding), snapshot(SoftParameter)) == before


def test_a_browser_session_must_send_the_csrf_token_to_write(admin):
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(admin)
    assert browser.get("/api/v1/extensions/").status_code == 200
    response = browser.post("/api/v1/extensions/", {"number": "1001"}, format="json")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    assert not Extension.objects.exists()


def test_a_token_authenticates_until_it_is_revoked(admin):
    browser = APIClient()
    browser.force_login(admin)
    response = browser.post("/api/v1/token/")
    assert response.status_code == 201
    key = response.json()["token"]

    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert script.get("/api/v1/extensions/").status_code == 200
    assert script.post("/api/v1/extensions/", {"number": "1001", "password": "pw"}, format="json").status_code == 201

    assert script.delete("/api/v1/token/").status_code == 204
    response = script.get("/api/v1/extensions/")
    assert response.status_code == 401 and response.json()["detail"] == "Invalid token."


def test_issuing_a_new_token_replaces_the_old_one(as_admin):
    old = as_admin.post("/api/v1/token/").json()["token"]
    new = as_admin.post("/api/v1/token/").json()["token"]
    assert old != new
    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Token {old}")
    assert script.get("/api/v1/summary/").status_code == 401
    script.credentials(HTTP_AUTHORIZATION=f"Token {new}")
    assert script.get("/api/v1/summary/").status_code == 200


def test_a_script_gets_its_first_token_with_basic_credentials(viewer):
    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"victor:victor-pw").decode())
    response = script.post("/api/v1/token/")
    assert response.status_code == 201
    script.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"victor:wrong").decode())
    assert script.post("/api/v1/token/").status_code == 401
    # A viewer's token reads but does not write.
    script.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert script.get("/api/v1/extensions/").status_code == 200
    assert script.post("/api/v1/extensions/", {"number": "1001"}, format="json").status_code == 403


def test_basic_credentials_are_accepted_only_for_getting_a_token(viewer):
    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"victor:victor-pw").decode())
    assert script.get("/api/v1/extensions/").status_code == 401


def test_tokens_need_a_role(django_user_model, anonymous):
    assert anonymous.post("/api/v1/token/").status_code == 401
    client = APIClient()
    client.force_authenticate(user_in(django_user_model, "nobody"))
    assert client.post("/api/v1/token/").status_code == 403


# -- extensions ------------------------------------------------------------------------
def test_creating_an_extension_without_a_password_shows_the_generated_one_once(as_admin):
    response = as_admin.post("/api/v1/extensions/", {"number": "1001", "display_name": "Reception",
                                                     "max_contacts": 2}, format="json")
    assert response.status_code == 201
    body = response.json()
    generated = body["generated_password"]
    assert len(generated) == 16
    extension = Extension.objects.get(number="1001")
    assert (extension.display_name, extension.max_contacts, extension.enabled) == ("Reception", 2, True)
    assert extension.ha1_sha256 == services.digest.compute_ha1("1001", extension.realm, generated, "SHA-256")
    assert all(generated not in str(value) for value in Extension.objects.values().get().values())
    assert not any(key.startswith("ha1") or key == "password" for key in body)

    again = as_admin.get("/api/v1/extensions/1001/").json()
    assert generated not in json.dumps(again) and "generated_password" not in again
    assert generated not in as_admin.get("/api/v1/extensions/").content.decode()


def test_creating_an_extension_with_a_password_stores_only_its_hashes(as_admin):
    response = as_admin.post("/api/v1/extensions/", {"number": "1001", "password": " s3cret "}, format="json")
    assert response.status_code == 201
    assert response.json()["generated_password"] is None
    extension = Extension.objects.get()
    assert extension.ha1_md5 == services.digest.compute_ha1("1001", extension.realm, " s3cret ", "MD5")
    assert (extension.max_contacts, extension.enabled) == (5, True)


@pytest.mark.parametrize("payload, field", [
    ({"number": "10 01"}, "number"),
    ({"number": ""}, "number"),
    ({"display_name": "no number"}, "number"),
    ({"number": "1001", "max_contacts": -1}, "max_contacts"),
    ({"number": "1001", "max_contacts": "many"}, "max_contacts"),
    ({"number": "1001", "password": ""}, "password"),
    ({"number": "1001", "enabled": "perhaps"}, "enabled"),
    ({"number": "1001", "numbr": "1002"}, "numbr"),
])
def test_an_invalid_extension_is_refused_naming_the_field(as_admin, payload, field):
    response = as_admin.post("/api/v1/extensions/", payload, format="json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    errors = response.json()
    assert list(errors) == [field] and errors[field][0]
    assert not Extension.objects.exists()


def test_a_duplicate_number_is_refused(as_admin):
    services.create_extension("1001", "pw")
    before = snapshot(Extension)
    response = as_admin.post("/api/v1/extensions/", {"number": "1001", "password": "other"}, format="json")
    assert response.status_code == 400 and "already exists" in response.json()["number"][0]
    assert snapshot(Extension) == before


def test_an_error_raised_by_a_service_becomes_a_400_naming_the_field(as_admin, monkeypatch):
    from django.core.exceptions import ValidationError

    def refuse(**fields):
        raise ValidationError({"display_name": "Refused by the service."})

    monkeypatch.setattr(services, "create_extension", refuse)
    response = as_admin.post("/api/v1/extensions/", {"number": "1001"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"display_name": ["Refused by the service."]}


def test_extensions_list_with_their_state_and_live_registrations(as_admin):
    services.create_extension("1001", "pw", display_name="Reception")
    services.create_extension("1002", "pw", display_name="Lobby")
    services.create_extension("1003", "pw", enabled=False)
    register("1001", 5001)
    register("1001", 5002)
    register("1003", 5003, expires=60, at=time.time() - 3600)  # expired long ago
    fail("1002")
    rows = {row["number"]: row for row in as_admin.get("/api/v1/extensions/").json()["results"]}
    assert {number: (row["state"], row["devices_online"]) for number, row in rows.items()} == {
        "1001": ("online", 2), "1002": ("failing", 0), "1003": ("offline", 0)}
    assert rows["1001"]["display_name"] == "Reception"
    assert rows["1001"]["url"].endswith("/api/v1/extensions/1001/")
    assert as_admin.get("/api/v1/extensions/1001/").json()["devices_online"] == 2


def test_extensions_filter_by_text_and_enabled(as_viewer):
    services.create_extension("1001", "pw", display_name="Reception")
    services.create_extension("1002", "pw", display_name="Lobby", enabled=False)
    assert column(as_viewer, "/api/v1/extensions/?q=lob", "number") == ["1002"]
    assert column(as_viewer, "/api/v1/extensions/?q=100", "number") == ["1001", "1002"]
    assert column(as_viewer, "/api/v1/extensions/?enabled=true", "number") == ["1001"]


def test_an_extension_is_found_by_a_number_with_dots_and_pluses(as_admin):
    services.create_extension("alice.desk+1", "pw")
    response = as_admin.get("/api/v1/extensions/alice.desk+1/")
    assert response.status_code == 200 and response.json()["number"] == "alice.desk+1"
    assert as_admin.get("/api/v1/extensions/nobody/").status_code == 404


def test_an_extension_is_updated(as_admin):
    extension, _ = services.create_extension("1001", "pw")
    response = as_admin.patch("/api/v1/extensions/1001/", {"display_name": "Desk", "enabled": False,
                                                           "max_contacts": 1}, format="json")
    assert response.status_code == 200 and response.json()["display_name"] == "Desk"
    extension.refresh_from_db()
    assert (extension.display_name, extension.enabled, extension.max_contacts) == ("Desk", False, 1)

    response = as_admin.put("/api/v1/extensions/1001/", {"number": "1001", "display_name": "Hall"}, format="json")
    assert response.status_code == 200
    extension.refresh_from_db()
    assert extension.display_name == "Hall"


def test_a_representation_can_be_sent_back_as_it_was_read(as_admin):
    services.create_extension("1001", "pw")
    body = as_admin.get("/api/v1/extensions/1001/").json()
    response = as_admin.put("/api/v1/extensions/1001/", {**body, "display_name": "Desk"}, format="json")
    assert response.status_code == 200 and response.json()["display_name"] == "Desk"


@pytest.mark.parametrize("payload, field", [
    ({"number": "2002"}, "number"),
    ({"password": "new"}, "password"),
    ({"max_contacts": -5}, "max_contacts"),
    ({"max_contacts": 40000}, "max_contacts"),
    ({"display_name": "x" * 129}, "display_name"),
    ({"display_name": "Desk", "max_contacts": -1}, "max_contacts"),
    ({"enabeld": False}, "enabeld"),
])
def test_an_invalid_update_changes_nothing(as_admin, payload, field):
    services.create_extension("1001", "pw", display_name="Reception")
    before = snapshot(Extension)
    response = as_admin.patch("/api/v1/extensions/1001/", payload, format="json")
    assert response.status_code == 400 and list(response.json()) == [field]
    assert snapshot(Extension) == before


def test_an_extension_is_deleted_with_its_registrations(as_admin):
    services.create_extension("1001", "pw")
    register("1001", 5001)
    assert as_admin.delete("/api/v1/extensions/1001/").status_code == 204
    assert not Extension.objects.exists() and not Binding.objects.exists()
    assert as_admin.delete("/api/v1/extensions/1001/").status_code == 404


def test_set_password_stores_the_new_hashes(as_admin):
    extension, _ = services.create_extension("1001", "old")
    response = as_admin.post("/api/v1/extensions/1001/set-password/", {"password": "new"}, format="json")
    assert response.status_code == 200
    assert response.json() == {"number": "1001", "generated_password": None}
    extension.refresh_from_db()
    assert extension.ha1_md5 == services.digest.compute_ha1("1001", extension.realm, "new", "MD5")


def test_set_password_generates_one_and_shows_it_once(as_admin):
    extension, _ = services.create_extension("1001", "old")
    response = as_admin.post("/api/v1/extensions/1001/set-password/", {"generate": True}, format="json")
    generated = response.json()["generated_password"]
    assert response.status_code == 200 and len(generated) == 16
    extension.refresh_from_db()
    assert extension.ha1_sha256 == services.digest.compute_ha1("1001", extension.realm, generated, "SHA-256")
    assert generated not in as_admin.get("/api/v1/extensions/1001/").content.decode()


@pytest.mark.parametrize("payload, field", [
    ({}, "password"),
    ({"generate": False}, "password"),
    ({"password": "new", "generate": True}, "password"),
    ({"password": ""}, "password"),
    ({"generate": "please"}, "generate"),
    ({"pasword": "new"}, "pasword"),
])
def test_a_bad_set_password_request_changes_nothing(as_admin, payload, field):
    services.create_extension("1001", "old")
    before = snapshot(Extension)
    response = as_admin.post("/api/v1/extensions/1001/set-password/", payload, format="json")
    assert response.status_code == 400 and list(response.json()) == [field]
    assert snapshot(Extension) == before


# -- registrations ---------------------------------------------------------------------
def test_registrations_list_live_bindings_only(as_viewer):
    services.create_extension("1001", "pw")
    binding = register("1001", 5001, transport="tcp", user_agent="Grandstream GXP2170")
    register("1001", 5002, expires=60, at=time.time() - 3600)
    body = as_viewer.get("/api/v1/registrations/").json()
    assert body["count"] == 1
    row, = body["results"]
    assert row["id"] == binding.pk and row["extension"] == "1001"
    assert (row["contact"], row["source_ip"], row["source_port"], row["transport"], row["user_agent"]) == (
        "sip:1001@192.0.2.1:5001", "192.0.2.1", 5001, "tcp", "Grandstream GXP2170")
    assert 3590 <= row["expires_in"] <= 3600
    assert datetime.fromisoformat(row["expires_at"]) == binding.expires_at
    assert datetime.fromisoformat(row["registered_at"]) == binding.first_registered
    assert datetime.fromisoformat(row["last_refreshed"]) == binding.last_refreshed
    assert as_viewer.get(f"/api/v1/registrations/{binding.pk}/").json() == row


def test_an_expired_registration_is_not_found(as_admin):
    services.create_extension("1001", "pw")
    expired = register("1001", 5002, expires=60, at=time.time() - 3600)
    assert as_admin.get(f"/api/v1/registrations/{expired.pk}/").status_code == 404
    assert as_admin.delete(f"/api/v1/registrations/{expired.pk}/").status_code == 404


def test_registrations_filter_by_extension_ip_transport_and_user_agent(as_viewer):
    services.create_extension("1001", "pw")
    services.create_extension("1002", "pw")
    register("1001", 5001, ip="192.0.2.1", transport="udp", user_agent="Yealink T46")
    register("1002", 5002, ip="192.0.2.2", transport="tls", user_agent="Linphone")
    url = "/api/v1/registrations/?"
    assert column(as_viewer, url + "extension=1002", "contact") == ["sip:1002@192.0.2.2:5002"]
    assert column(as_viewer, url + "source_ip=192.0.2.1", "contact") == ["sip:1001@192.0.2.1:5001"]
    assert column(as_viewer, url + "transport=tls", "contact") == ["sip:1002@192.0.2.2:5002"]
    assert column(as_viewer, url + "user_agent=yealink", "contact") == ["sip:1001@192.0.2.1:5001"]
    response = as_viewer.get("/api/v1/registrations/?transport=carrier-pigeon")
    assert response.status_code == 400 and list(response.json()) == ["transport"]
    # A mistyped address is the client's error, not the database's (PostgreSQL's inet).
    for url in ("/api/v1/registrations/?source_ip=192.0.2", "/api/v1/auth-attempts/?source_ip=x"):
        response = as_viewer.get(url)
        assert response.status_code == 400 and list(response.json()) == ["source_ip"], url


def test_deleting_a_registration_force_unregisters_it(as_admin):
    services.create_extension("1001", "pw")
    kept = register("1001", 5001)
    removed = register("1001", 5002)
    assert as_admin.delete(f"/api/v1/registrations/{removed.pk}/").status_code == 204
    assert list(Binding.objects.values_list("pk", flat=True)) == [kept.pk]
    assert as_admin.get("/api/v1/registrations/").json()["count"] == 1


# -- authentication attempts -----------------------------------------------------------
def test_attempts_show_the_reason_code_and_its_explanation_newest_first(as_viewer):
    now = time.time()
    fail("1001", at=now - 60, reason=Reason.UNKNOWN_USER)
    fail("1002", at=now, reason=Reason.WRONG_PASSWORD)
    rows = as_viewer.get("/api/v1/auth-attempts/").json()["results"]
    assert [(row["extension"], row["reason"]) for row in rows] == [("1002", "wrong_password"),
                                                                  ("1001", "unknown_user")]
    assert rows[0]["explanation"] == AuthAttempt.objects.get(reason="wrong_password").explanation
    assert "password" in rows[0]["explanation"]
    assert (rows[0]["source_ip"], rows[0]["transport"], rows[0]["status"], rows[0]["user_agent"]) == (
        "203.0.113.9", "tcp", 401, "SipVicious")
    assert as_viewer.get(f"/api/v1/auth-attempts/{rows[1]['id']}/").json() == rows[1]


def test_attempts_filter_by_extension_ip_reason_and_time(as_viewer):
    base = datetime(2030, 1, 1, 12, tzinfo=dt_timezone.utc).timestamp()
    fail("1001", at=base, ip="203.0.113.1", reason=Reason.WRONG_PASSWORD)
    fail("1002", at=base + 3600, ip="203.0.113.2", reason=Reason.UNKNOWN_USER)
    fail("1002", at=base + 7200, ip="203.0.113.1", reason=Reason.UA_POLICY)

    def found(query):
        response = as_viewer.get("/api/v1/auth-attempts/", query)
        assert response.status_code == 200, response.json()
        return [(row["extension"], row["reason"]) for row in response.json()["results"]]

    assert found({"extension": "1001"}) == [("1001", "wrong_password")]
    assert found({"source_ip": "203.0.113.1"}) == [("1002", "ua_policy"), ("1001", "wrong_password")]
    assert found({"reason": "unknown_user"}) == [("1002", "unknown_user")]
    assert found({"since": "2030-01-01T13:00:00Z"}) == [("1002", "ua_policy"), ("1002", "unknown_user")]
    assert found({"until": "2030-01-01T13:00:00Z"}) == [("1001", "wrong_password")]
    assert found({"since": "2030-01-01T12:30:00Z", "until": "2030-01-01T13:30:00Z"}) == [
        ("1002", "unknown_user")]
    assert found({"extension": "1002", "source_ip": "203.0.113.1"}) == [("1002", "ua_policy")]


@pytest.mark.parametrize("query, field", [({"reason": "bad_luck"}, "reason"), ({"since": "yesterday"}, "since")])
def test_a_bad_filter_is_a_400_naming_it(as_viewer, query, field):
    response = as_viewer.get("/api/v1/auth-attempts/", query)
    assert response.status_code == 400 and list(response.json()) == [field]


def test_attempts_cannot_be_written(as_admin):
    fail("1001")
    attempt = AuthAttempt.objects.get()
    assert as_admin.post("/api/v1/auth-attempts/", {}, format="json").status_code == 405
    assert as_admin.delete(f"/api/v1/auth-attempts/{attempt.pk}/").status_code == 405
    assert AuthAttempt.objects.count() == 1


# -- soft parameters -------------------------------------------------------------------
def test_soft_parameters_are_listed_and_retrieved(as_viewer):
    rows = as_viewer.get("/api/v1/soft-parameters/").json()["results"]
    assert 286 in [row["number"] for row in rows]
    row = as_viewer.get("/api/v1/soft-parameters/286/").json()
    assert (row["name"], row["kind"], row["value"], row["default"]) == ("third_party_ua_inspection", "bool",
                                                                        False, False)
    algorithms = as_viewer.get("/api/v1/soft-parameters/104/").json()
    assert algorithms["choices"] == ["SHA-256", "MD5", "SHA-512-256"]


def test_changing_a_soft_parameter_takes_effect_and_is_audited(as_admin, admin):
    response = as_admin.patch("/api/v1/soft-parameters/286/", {"value": True}, format="json")
    assert response.status_code == 200 and response.json()["value"] is True
    assert services.current_policy().ua_inspection is True
    change = SoftParameterChange.objects.get()
    assert (change.parameter_id, change.via, change.changed_by, change.actor, change.old_value,
            change.new_value) == (286, "api", admin, "alice", False, True)

    response = as_admin.put("/api/v1/soft-parameters/104/", {"value": ["md5", "sha-256"]}, format="json")
    assert response.status_code == 200 and response.json()["value"] == ["MD5", "SHA-256"]

    rows = as_admin.get("/api/v1/soft-parameter-changes/").json()["results"]
    assert [(row["parameter"], row["via"], row["actor"]) for row in rows] == [(104, "api", "alice"),
                                                                              (286, "api", "alice")]
    rows = as_admin.get("/api/v1/soft-parameter-changes/?parameter=286").json()["results"]
    assert [(row["old_value"], row["new_value"]) for row in rows] == [(False, True)]


@pytest.mark.parametrize("number, payload, field", [
    (100, {"value": "soon"}, "value"),
    (100, {"value": 0}, "value"),
    (100, {"value": None}, "value"),
    (104, {"value": ["ROT13"]}, "value"),
    (104, {"value": []}, "value"),
    (286, {"value": "maybe"}, "value"),
    (286, {}, "value"),
    (286, {"valeu": True}, "valeu"),
])
def test_a_bad_soft_parameter_value_changes_nothing(as_admin, number, payload, field):
    before = snapshot(SoftParameter)
    response = as_admin.put(f"/api/v1/soft-parameters/{number}/", payload, format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field] and response.json()[field][0]
    assert snapshot(SoftParameter) == before and not SoftParameterChange.objects.exists()


def test_an_unknown_soft_parameter_is_not_found(as_admin):
    before = snapshot(SoftParameter)
    response = as_admin.patch("/api/v1/soft-parameters/999/", {"value": 1}, format="json")
    assert response.status_code == 404 and "detail" in response.json()
    assert as_admin.get("/api/v1/soft-parameters/min_expires/").status_code == 404
    assert snapshot(SoftParameter) == before and not SoftParameterChange.objects.exists()


# -- summary, pagination, root ---------------------------------------------------------
def test_the_summary_has_the_dashboard_counts_and_the_hourly_series(as_viewer):
    services.create_extension("1001", "pw")
    services.create_extension("1002", "pw")
    register("1001", 5001)
    register("1001", 5002)
    fail("1002")
    fail("1003", at=time.time() - 5 * 3600)
    body = as_viewer.get("/api/v1/summary/").json()
    hourly = body.pop("hourly")
    assert body == {"extensions": 2, "extensions_registered": 1, "devices_online": 2,
                    "failed_attempts_last_hour": 1, "failed_attempts_last_24h": 2}
    assert len(hourly) == 24
    assert hourly[-1]["registrations"] == 2 and hourly[-1]["failures"] == 1
    assert sum(hour["failures"] for hour in hourly) == 2
    assert datetime.fromisoformat(hourly[0]["hour"]) == datetime.fromisoformat(hourly[-1]["hour"]) - timedelta(hours=23)


def test_lists_are_paginated(as_viewer):
    for n in range(51):
        services.create_extension(f"{1000 + n}", "pw")
    first = as_viewer.get("/api/v1/extensions/").json()
    assert (first["count"], len(first["results"]), first["previous"]) == (51, 50, None)
    assert first["next"].endswith("/api/v1/extensions/?page=2")
    second = as_viewer.get(first["next"]).json()
    assert [row["number"] for row in second["results"]] == ["1050"] and second["next"] is None
    assert as_viewer.get("/api/v1/extensions/?page=3").status_code == 404


def test_the_root_lists_every_endpoint(as_viewer):
    body = as_viewer.get("/api/v1/").json()
    assert set(body) == {"extensions", "registrations", "auth-attempts", "soft-parameters",
                         "soft-parameter-changes", "summary", "token", "bans", "trace", "ua-policy-dry-run",
                         "jobs", "job-runs", "workers", "alert-routes", "webhooks", "webhook-deliveries",
                         "subscriptions", "oauth-servers", "trunks", "dial-rules", "calls", "alerts"}
    assert body["summary"].endswith("/api/v1/summary/")


def test_the_browsable_api_renders_for_a_browser_session(admin):
    services.create_extension("1001", "pw")
    register("1001", 5001)
    fail("1001")
    browser = APIClient()
    browser.force_login(admin)
    for url in LIST_URLS + ["/api/v1/extensions/1001/", "/api/v1/soft-parameters/286/"]:
        response = browser.get(url, HTTP_ACCEPT="text/html")
        assert response.status_code == 200 and response["Content-Type"].startswith("text/html"), url


def test_the_browsable_api_form_creates_an_extension(as_admin):
    response = as_admin.post("/api/v1/extensions/", {"number": "1001", "display_name": "Desk", "enabled": "on",
                                                     "max_contacts": "2", "password": "pw",
                                                     "csrfmiddlewaretoken": "ignored-here"})
    assert response.status_code == 201, response.json()
    assert Extension.objects.get().display_name == "Desk"


# -- schema and docs -------------------------------------------------------------------
def test_the_schema_is_openapi_3_and_documents_every_endpoint(anonymous):
    response = anonymous.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    assert set(schema["paths"]) == {
        "/api/v1/extensions/", "/api/v1/extensions/{number}/", "/api/v1/extensions/{number}/set-password/",
        "/api/v1/registrations/", "/api/v1/registrations/{id}/", "/api/v1/auth-attempts/",
        "/api/v1/auth-attempts/{id}/", "/api/v1/soft-parameters/", "/api/v1/soft-parameters/{number}/",
        "/api/v1/soft-parameter-changes/", "/api/v1/soft-parameter-changes/{id}/", "/api/v1/summary/",
        "/api/v1/token/", "/api/v1/extensions/{number}/diagnosis/", "/api/v1/soft-parameters/286/dry-run/",
        "/api/v1/bans/", "/api/v1/bans/{id}/", "/api/v1/trace/", "/api/v1/trace/{id}/", "/api/v1/trace/pcap/",
        "/api/v1/jobs/", "/api/v1/jobs/{name}/", "/api/v1/jobs/{name}/run/", "/api/v1/job-runs/",
        "/api/v1/job-runs/{id}/", "/api/v1/workers/", "/api/v1/workers/{id}/", "/api/v1/alert-routes/",
        "/api/v1/alert-routes/{id}/", "/api/v1/webhooks/", "/api/v1/webhooks/{id}/",
        "/api/v1/webhooks/{id}/set-secret/", "/api/v1/webhook-deliveries/", "/api/v1/webhook-deliveries/{id}/",
        "/api/v1/subscriptions/", "/api/v1/subscriptions/{id}/",
        "/api/v1/oauth-servers/", "/api/v1/oauth-servers/{id}/",
        "/api/v1/trunks/", "/api/v1/trunks/{id}/", "/api/v1/trunks/{id}/register-now/", "/api/v1/trunks/{id}/attempts/",
        "/api/v1/dial-rules/", "/api/v1/dial-rules/{id}/", "/api/v1/dial-rules/preview/", "/api/v1/calls/",
        "/api/v1/calls/{id}/", "/api/v1/calls/export.csv", "/api/v1/alerts/", "/api/v1/alerts/{id}/",
        "/api/v1/alerts/{id}/acknowledge/",
    }
    assert {"tokenAuth", "cookieAuth"} <= set(schema["components"]["securitySchemes"])
    assert "ha1" not in response.content.decode().lower()


def test_the_schema_generates_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))


def test_the_docs_page_renders_without_any_cdn(anonymous):
    response = anonymous.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "/api/schema/" in page
    for cdn in ("cdn", "jsdelivr", "unpkg"):
        assert cdn not in page.lower(), cdn
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets)
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), asset
        served = anonymous.get(asset)
        assert served.status_code == 200, asset
        served.close()
