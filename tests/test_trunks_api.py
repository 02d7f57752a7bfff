"""/api/v1/trunks/: CRUD with a write-only password, the nested status, register-now and the history.

Status and history rows are written the way runsip writes them: ``uac.TrunkReport``s
handed to ``trunks.record_trunk_reports``.
"""
import json
import time

import pytest

from registrar import trunks
from registrar.models import Trunk, TrunkAttempt
from registrar.sip.uac import TrunkReport

pytestmark = pytest.mark.django_db

SECRET = "Upstream-pw-93517"
NEW = {"name": "carrier", "registrar_uri": "sip:pbx.example.com:5070;transport=tcp", "aor_user": "4420",
       "password": SECRET, "expected_realm": "pbx.example.com"}


def make_trunk(**fields):
    return trunks.create_trunk(**{**NEW, **fields})


def failed_report(trunk, at=None, **fields):
    at = at or time.time()
    return TrunkReport(trunk_id=trunk.pk, state="failed", at=at, status=401, phrase="Unauthorized",
                       cause="realm_mismatch", detail="realms do not match: server asked for 'asterisk', trunk "
                       "expects 'pbx.example.com'", next_attempt_at=at + 60, finished_exchange=True, **fields)


def registered_report(trunk, at=None):
    at = at or time.time()
    return TrunkReport(trunk_id=trunk.pk, state="registered", at=at, registered_until=at + 3600, status=200,
                       phrase="OK", next_attempt_at=at + 3300, finished_exchange=True, granted=3600)


def test_the_admin_creates_a_trunk_and_the_password_stays_hidden(as_admin):
    response = as_admin.post("/api/v1/trunks/", NEW, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "carrier" and body["has_password"] is True
    assert "password" not in body and SECRET not in json.dumps(body)
    assert body["status"]["state"] == "registering"
    trunk = Trunk.objects.get(name="carrier")
    assert SECRET not in trunk.password_encrypted
    assert trunks.trunk_snapshot()[trunk.pk].password == SECRET
    for url in ("/api/v1/trunks/", f"/api/v1/trunks/{trunk.pk}/"):
        assert SECRET not in as_admin.get(url).content.decode()


def test_the_password_is_encrypted_in_the_database_column(as_admin):
    from django.db import connection

    as_admin.post("/api/v1/trunks/", NEW, format="json")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM registrar_trunk")
        rows = cursor.fetchall()
    assert rows and SECRET not in repr(rows)


@pytest.mark.parametrize("field, value", [("registrar_uri", "http://example.com/"),
                                          ("registrar_uri", "sip:pbx.example.com;transport=sctp"),
                                          ("outbound_proxy", "mailto:x@example.com")])
def test_a_bad_uri_is_refused_naming_the_field(as_admin, field, value):
    response = as_admin.post("/api/v1/trunks/", {**NEW, field: value}, format="json")
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not Trunk.objects.exists()


def test_a_missing_password_is_refused_naming_the_field(as_admin):
    response = as_admin.post("/api/v1/trunks/", {k: v for k, v in NEW.items() if k != "password"}, format="json")
    assert response.status_code == 400
    assert "password" in response.json()
    assert not Trunk.objects.exists()


def test_other_field_errors_name_their_field(as_admin):
    make_trunk()
    duplicate = as_admin.post("/api/v1/trunks/", NEW, format="json")
    assert duplicate.status_code == 400 and "name" in duplicate.json()
    brief = as_admin.post("/api/v1/trunks/", {**NEW, "name": "other", "expires": 10}, format="json")
    assert brief.status_code == 400 and "expires" in brief.json()
    typo = as_admin.post("/api/v1/trunks/", {**NEW, "name": "other", "realm": "x"}, format="json")
    assert typo.status_code == 400 and "realm" in typo.json()


def test_an_update_without_password_keeps_it_and_with_one_replaces_it(as_admin):
    trunk = make_trunk()
    response = as_admin.patch(f"/api/v1/trunks/{trunk.pk}/", {"expires": 600, "password": ""}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["expires"] == 600
    assert trunks.trunk_snapshot()[trunk.pk].password == SECRET
    as_admin.patch(f"/api/v1/trunks/{trunk.pk}/", {"password": "another-pw-5"}, format="json")
    assert trunks.trunk_snapshot()[trunk.pk].password == "another-pw-5"
    bad = as_admin.patch(f"/api/v1/trunks/{trunk.pk}/", {"registrar_uri": "pbx"}, format="json")
    assert bad.status_code == 400 and "registrar_uri" in bad.json()
    assert Trunk.objects.get(pk=trunk.pk).registrar_uri == NEW["registrar_uri"]


def test_disabling_shows_the_disabled_state(as_admin):
    trunk = make_trunk()
    response = as_admin.patch(f"/api/v1/trunks/{trunk.pk}/", {"enabled": False}, format="json")
    assert response.json()["status"]["state"] == "disabled"


def test_the_admin_deletes_a_trunk(as_admin):
    trunk = make_trunk()
    assert as_admin.delete(f"/api/v1/trunks/{trunk.pk}/").status_code == 204
    assert not Trunk.objects.exists()


def test_a_viewer_reads_but_cannot_write(as_viewer):
    trunk = make_trunk()
    assert as_viewer.get("/api/v1/trunks/").json()["results"][0]["name"] == "carrier"
    assert as_viewer.get(f"/api/v1/trunks/{trunk.pk}/attempts/").status_code == 200
    assert as_viewer.post("/api/v1/trunks/", {**NEW, "name": "x"}, format="json").status_code == 403
    assert as_viewer.patch(f"/api/v1/trunks/{trunk.pk}/", {"expires": 600}, format="json").status_code == 403
    assert as_viewer.delete(f"/api/v1/trunks/{trunk.pk}/").status_code == 403
    assert as_viewer.post(f"/api/v1/trunks/{trunk.pk}/register-now/").status_code == 403
    trunk.refresh_from_db()
    assert trunk.register_now_at is None and trunk.expires == 3600


def test_anonymous_gets_nothing(client):
    make_trunk()
    assert client.get("/api/v1/trunks/").status_code in (401, 403)


def test_register_now_asks_runsip(as_admin):
    trunk = make_trunk()
    response = as_admin.post(f"/api/v1/trunks/{trunk.pk}/register-now/")
    assert response.status_code == 202
    trunk.refresh_from_db()
    assert trunk.register_now_at is not None
    body = response.json()
    assert body["id"] == trunk.pk and body["register_now_at"] and body["detail"]


def test_register_now_refuses_a_disabled_trunk(as_admin):
    trunk = make_trunk(enabled=False)
    response = as_admin.post(f"/api/v1/trunks/{trunk.pk}/register-now/")
    assert response.status_code == 400 and "enabled" in response.json()
    trunk.refresh_from_db()
    assert trunk.register_now_at is None


def test_status_and_history_as_runsip_records_them(as_admin):
    trunk = make_trunk()
    start = time.time() - 120
    trunks.record_trunk_reports([failed_report(trunk, at=start)])
    trunks.record_trunk_reports([registered_report(trunk, at=start + 60)])
    status = as_admin.get(f"/api/v1/trunks/{trunk.pk}/").json()["status"]
    assert status["state"] == "registered" and status["last_status"] == 200 and status["registered_until"]
    assert status["cause"] == "" and status["cause_label"] == ""
    trunks.record_trunk_reports([failed_report(trunk)])
    status = as_admin.get(f"/api/v1/trunks/{trunk.pk}/").json()["status"]
    assert status["state"] == "failed" and status["cause"] == "realm_mismatch"
    assert status["cause_label"] == "The server's realm differs from the expected one"
    assert "server asked for 'asterisk'" in status["detail"]
    assert status["last_status"] == 401 and status["last_phrase"] == "Unauthorized" and status["next_attempt_at"]
    history = as_admin.get(f"/api/v1/trunks/{trunk.pk}/attempts/").json()
    assert history["count"] == 3 == TrunkAttempt.objects.count()
    newest, middle, _ = history["results"]
    assert newest["cause"] == "realm_mismatch" and newest["cause_label"]
    assert middle["status"] == 200 and middle["expires"] == 3600


def test_the_schema_describes_trunks(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert "/api/v1/trunks/" in schema["paths"]
    assert "post" in schema["paths"]["/api/v1/trunks/{id}/register-now/"]
    assert "get" in schema["paths"]["/api/v1/trunks/{id}/attempts/"]
    trunk = schema["components"]["schemas"]["Trunk"]["properties"]
    assert "password" not in trunk and trunk["has_password"]["readOnly"]
    assert "password" in schema["components"]["schemas"]["TrunkRequest"]["properties"]


def test_the_browsable_api_renders_without_the_password(make_user):
    from rest_framework.test import APIClient

    trunk = make_trunk()
    browser = APIClient()
    browser.force_login(make_user("bea", "admin"))
    for url in ("/api/v1/trunks/", f"/api/v1/trunks/{trunk.pk}/", f"/api/v1/trunks/{trunk.pk}/attempts/"):
        response = browser.get(url, HTTP_ACCEPT="text/html")
        assert response.status_code == 200 and response["Content-Type"].startswith("text/html"), url
        assert SECRET not in response.content.decode() and trunk.password_encrypted not in response.content.decode()


def test_the_list_filters_by_state_and_enabled(as_viewer):
    down = make_trunk(name="down")
    make_trunk(name="off", enabled=False)
    make_trunk(name="new")
    trunks.record_trunk_reports([failed_report(down)])

    def names(query):
        return [row["name"] for row in as_viewer.get(f"/api/v1/trunks/?{query}").json()["results"]]

    assert names("state=failed") == ["down"]
    assert names("state=disabled") == ["off"]
    assert names("enabled=true") == ["down", "new"]
    assert as_viewer.get("/api/v1/trunks/?state=sleepy").status_code == 400
