"""The trunk pages through Django's test client: roles, CSRF, forms with their errors, the status in
words, the history, register now, the dashboard summary and the live partials.

Status and history are written as runsip writes them: ``uac.TrunkReport``s handed to
``trunks.record_trunk_reports``.
"""
import time
from datetime import datetime

import pytest
from django.test import Client
from django.utils import timezone

from registrar import trunks
from registrar.models import Trunk
from registrar.sip.uac import TrunkReport

pytestmark = pytest.mark.django_db

SECRET = "Upstream-pw-42611"
FORM = {"name": "carrier", "registrar_uri": "sip:pbx.example.com;transport=tcp", "aor_user": "4420",
        "aor_domain": "", "auth_username": "", "password": SECRET, "expected_realm": "pbx.example.com",
        "expires": "3600", "outbound_proxy": "", "contact_user": "", "enabled": "on"}
REALM_DETAIL = "realms do not match: server asked for 'asterisk', trunk expects 'pbx.example.com'"


@pytest.fixture(autouse=True)
def fast_login_hashes(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def trunk():
    return trunks.create_trunk(name="carrier", registrar_uri="sip:pbx.example.com", aor_user="4420",
                               password=SECRET, expected_realm="pbx.example.com")


def text(response) -> str:
    return response.content.decode()


def local_clock(epoch: float, pattern: str = "%H:%M") -> str:
    return timezone.localtime(datetime.fromtimestamp(epoch, tz=timezone.get_current_timezone())).strftime(pattern)


def report_failure(trunk, at=None):
    at = at or time.time()
    trunks.record_trunk_reports([TrunkReport(
        trunk_id=trunk.pk, state="failed", at=at, status=401, phrase="Unauthorized", cause="realm_mismatch",
        detail=REALM_DETAIL, next_attempt_at=at + 120, finished_exchange=True)])
    return at


def report_registered(trunk, at=None):
    at = at or time.time()
    trunks.record_trunk_reports([TrunkReport(
        trunk_id=trunk.pk, state="registered", at=at, registered_until=at + 3600, status=200, phrase="OK",
        next_attempt_at=at + 3300, finished_exchange=True, granted=3600)])
    return at


# -- roles and CSRF ---------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/trunks/", "/trunks/{pk}/", "/trunks/new/", "/trunks/{pk}/edit/"])
def test_the_pages_need_a_login(client, trunk, path):
    response = client.get(path.format(pk=trunk.pk))
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_a_viewer_reads_but_cannot_write(viewer_client, trunk):
    listing, detail = text(viewer_client.get("/trunks/")), text(viewer_client.get(f"/trunks/{trunk.pk}/"))
    assert "carrier" in listing and "/trunks/new/" not in listing
    for action in ("edit/", "delete/", "register-now/", "disable/"):
        assert f"/trunks/{trunk.pk}/{action}" not in detail
    assert viewer_client.get("/trunks/new/").status_code == 403
    assert viewer_client.get(f"/trunks/{trunk.pk}/edit/").status_code == 403
    posts = {"/trunks/new/": {**FORM, "name": "other"}, f"/trunks/{trunk.pk}/edit/": {**FORM, "expires": "600"},
             f"/trunks/{trunk.pk}/register-now/": {}, f"/trunks/{trunk.pk}/disable/": {},
             f"/trunks/{trunk.pk}/delete/": {}}
    for path, data in posts.items():
        assert viewer_client.post(path, data).status_code == 403, path
    assert list(Trunk.objects.values_list("name", "expires", "enabled", "register_now_at")) == [
        ("carrier", 3600, True, None)]


def test_a_user_without_a_role_sees_nothing(nobody_client, trunk):
    assert nobody_client.get("/trunks/").status_code == 403


def test_forms_need_the_csrf_token(make_user, trunk):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(make_user("carol", "admin"))
    page = text(browser.get("/trunks/new/"))
    assert 'name="csrfmiddlewaretoken"' in page
    assert browser.post("/trunks/new/", {**FORM, "name": "other"}).status_code == 403
    assert browser.post(f"/trunks/{trunk.pk}/register-now/").status_code == 403
    assert not Trunk.objects.filter(name="other").exists()


# -- forms ------------------------------------------------------------------------------
def test_the_admin_creates_a_trunk(admin_client):
    response = admin_client.post("/trunks/new/", FORM)
    trunk = Trunk.objects.get(name="carrier")
    assert response.status_code == 302 and response["Location"] == f"/trunks/{trunk.pk}/"
    assert SECRET not in trunk.password_encrypted
    assert trunks.trunk_snapshot()[trunk.pk].password == SECRET
    page = text(admin_client.get(response["Location"]))
    assert "carrier" in page and "sip:pbx.example.com;transport=tcp" in page and SECRET not in page


def test_a_bad_uri_is_shown_on_its_field(admin_client):
    response = admin_client.post("/trunks/new/", {**FORM, "registrar_uri": "http://pbx.example.com/"})
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "registrar_uri" in errors and "not a usable SIP URI" in " ".join(errors["registrar_uri"])
    page = text(response)
    assert 'class="field invalid"' in page and "not a usable SIP URI" in page
    assert SECRET not in page  # the typed password is not rendered back
    assert not Trunk.objects.exists()


def test_a_missing_password_is_shown_on_its_field(admin_client):
    response = admin_client.post("/trunks/new/", {**FORM, "password": ""})
    assert response.status_code == 200
    assert "password" in response.context["form"].errors
    assert not Trunk.objects.exists()


def test_editing_with_a_blank_password_keeps_it(admin_client, trunk):
    page = text(admin_client.get(f"/trunks/{trunk.pk}/edit/"))
    assert "Leave empty to keep" in page and SECRET not in page
    response = admin_client.post(f"/trunks/{trunk.pk}/edit/", {**FORM, "password": "", "expires": "600",
                                                                "outbound_proxy": "sip:edge.example.com:5080"})
    assert response.status_code == 302
    trunk.refresh_from_db()
    assert trunk.expires == 600 and trunk.outbound_proxy == "sip:edge.example.com:5080"
    assert trunks.trunk_snapshot()[trunk.pk].password == SECRET
    admin_client.post(f"/trunks/{trunk.pk}/edit/", {**FORM, "password": "new-pw-77"})
    assert trunks.trunk_snapshot()[trunk.pk].password == "new-pw-77"


def test_an_edit_error_names_the_field_and_changes_nothing(admin_client, trunk):
    response = admin_client.post(f"/trunks/{trunk.pk}/edit/", {**FORM, "outbound_proxy": "edge:5080:x"})
    assert response.status_code == 200 and "outbound_proxy" in response.context["form"].errors
    trunk.refresh_from_db()
    assert trunk.outbound_proxy == ""


def test_disable_enable_and_delete(admin_client, trunk):
    admin_client.post(f"/trunks/{trunk.pk}/disable/")
    trunk.refresh_from_db()
    assert not trunk.enabled and trunk.status.state == "disabled"
    assert 'class="state disabled"' in text(admin_client.get("/trunks/"))
    admin_client.post(f"/trunks/{trunk.pk}/enable/")
    trunk.refresh_from_db()
    assert trunk.enabled
    assert "Delete trunk carrier?" in text(admin_client.get(f"/trunks/{trunk.pk}/delete/"))
    assert admin_client.post(f"/trunks/{trunk.pk}/delete/")["Location"] == "/trunks/"
    assert not Trunk.objects.exists()


def test_register_now_sets_the_request(admin_client, trunk):
    page = text(admin_client.get(f"/trunks/{trunk.pk}/"))
    assert f'action="/trunks/{trunk.pk}/register-now/"' in page and "Register now" in page
    response = admin_client.post(f"/trunks/{trunk.pk}/register-now/", follow=True)
    trunk.refresh_from_db()
    assert trunk.register_now_at is not None
    assert "registers carrier again" in text(response)
    assert admin_client.get(f"/trunks/{trunk.pk}/register-now/").status_code == 405


def test_register_now_refuses_a_disabled_trunk(admin_client, trunk):
    trunks.update_trunk(trunk, enabled=False)
    response = admin_client.post(f"/trunks/{trunk.pk}/register-now/", follow=True)
    assert "is disabled" in text(response)
    trunk.refresh_from_db()
    assert trunk.register_now_at is None


# -- status in words --------------------------------------------------------------------
def test_a_new_trunk_is_registering(viewer_client, trunk):
    assert 'class="state registering"' in text(viewer_client.get("/trunks/"))


def test_a_registered_trunk_shows_until_when(viewer_client, trunk):
    at = report_registered(trunk)
    listing = text(viewer_client.get("/trunks/"))
    assert 'class="state registered"' in listing
    assert "until <time" in listing and local_clock(at + 3600) in listing
    assert "200 OK" in listing


def test_a_failed_trunk_shows_its_cause_answer_and_next_retry(viewer_client, trunk):
    at = report_failure(trunk)
    for path in ("/trunks/", f"/trunks/{trunk.pk}/"):
        page = text(viewer_client.get(path))
        assert 'class="state failed"' in page
        assert "The server&#x27;s realm differs from the expected one" in page
        assert "realms do not match: server asked for &#x27;asterisk&#x27;" in page
        assert "401 Unauthorized" in page
        assert local_clock(at + 120, "%H:%M:%S") in page


def test_the_detail_page_shows_the_history(viewer_client, trunk):
    start = time.time() - 300
    report_failure(trunk, at=start)
    report_registered(trunk, at=start + 60)
    page = text(viewer_client.get(f"/trunks/{trunk.pk}/"))
    history = page.split('id="trunk-attempts"')[1].split("</tbody>")[0]
    assert history.count("<tr") == 2
    assert history.index("200 OK") < history.index("401 Unauthorized")  # newest first
    assert "registered for 3600 s" in history and "realms do not match" in history
    assert SECRET not in page


def test_the_live_partials(viewer_client, trunk):
    report_failure(trunk)
    rows = text(viewer_client.get("/trunks/?partial=1"))
    assert rows.strip().startswith('<tbody id="trunk-rows">') and "<html" not in rows
    assert 'class="state failed"' in rows
    live = text(viewer_client.get(f"/trunks/{trunk.pk}/?partial=1"))
    assert 'id="trunk-status"' in live and 'id="trunk-attempts"' in live and "<html" not in live


def test_the_pages_subscribe_to_live_updates(viewer_client, trunk):
    assert 'data-live-page="trunks"' in text(viewer_client.get("/trunks/"))
    assert f'data-live-page="trunk" data-trunk="{trunk.pk}"' in text(viewer_client.get(f"/trunks/{trunk.pk}/"))


def test_the_navigation_links_the_trunks_page(viewer_client):
    assert 'href="/trunks/"' in text(viewer_client.get("/"))


def test_the_dashboard_counts_registered_and_failed_trunks(viewer_client, trunk):
    assert "count-trunks" not in text(viewer_client.get("/extensions/"))
    other = trunks.create_trunk(name="backup", registrar_uri="sip:backup.example.com", aor_user="1", password="x")
    report_registered(trunk)
    report_failure(other)
    dashboard = text(viewer_client.get("/?partial=1"))
    assert '<strong id="count-trunks-registered">1</strong> of 2 trunks registered' in dashboard
    assert '<strong id="count-trunks-failed">1</strong> trunk failed' in dashboard


def test_the_dashboard_says_nothing_of_trunks_without_any(viewer_client):
    assert "count-trunks" not in text(viewer_client.get("/"))


# -- the Django admin ---------------------------------------------------------------------
def test_the_django_admin_writes_through_the_service(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "", "pw"))
    # The admin's "register" checkbox is ticked by default, as a browser would post it.
    admin_form = {**FORM, "register": "on", "status-TOTAL_FORMS": "0", "status-INITIAL_FORMS": "0",
                  "attempts-TOTAL_FORMS": "0", "attempts-INITIAL_FORMS": "0"}
    refused = client.post("/admin/registrar/trunk/add/", {**admin_form, "registrar_uri": "http://x/"})
    assert refused.status_code == 200 and "not a usable SIP URI" in text(refused)
    assert client.post("/admin/registrar/trunk/add/", {**admin_form, "password": ""}).status_code == 200
    assert not Trunk.objects.exists()
    created = client.post("/admin/registrar/trunk/add/", admin_form)
    assert created.status_code == 302, text(created)[:3000]
    trunk = Trunk.objects.get()
    assert trunk.status.state == "registering" and trunks.trunk_snapshot()[trunk.pk].password == SECRET
    change_page = text(client.get(f"/admin/registrar/trunk/{trunk.pk}/change/"))
    assert SECRET not in change_page and trunk.password_encrypted not in change_page
    changed = client.post(f"/admin/registrar/trunk/{trunk.pk}/change/",
                          {**admin_form, "password": "", "expires": "900"})
    assert changed.status_code == 302
    trunk.refresh_from_db()
    assert trunk.expires == 900 and trunks.trunk_snapshot()[trunk.pk].password == SECRET
