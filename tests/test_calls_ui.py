"""The dial plan, calls and emergency-alert pages through Django's test client: roles, CSRF, forms with
their errors, the "try a number" box, live and recorded calls with filters, pagination and CSV, the
dashboard's banners and count, the live partials, and an extension's call permission.

Calls are stored the way runsip stores them: ``calls.start_call``, then ``calls.record_call_progress``.
"""
import csv
import io
import time

import pytest
from django.test import Client

from registrar import calls, services, trunks
from registrar.models import Alert, Call, DialRule, Extension
from tests.test_calls_api import finished_call, place_call, progress
from tests.test_api import register

pytestmark = pytest.mark.django_db

RULE = {"name": "national", "position": "100", "pattern": r"0\d{6,15}", "strip": "1", "prefix": "+31",
        "enabled": "on"}


@pytest.fixture(autouse=True)
def fast_login_hashes(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def trunk():
    return trunks.create_trunk(name="carrier", registrar_uri="sip:pbx.example.com", aor_user="4420",
                               password="Upstream-pw-1", expected_realm="pbx.example.com")


@pytest.fixture
def extensions():
    services.create_extension("1001", "pw", display_name="Reception")
    services.create_extension("1002", "pw", display_name="Desk")
    register("1001", 5001)
    register("1002", 5002)


def text(response) -> str:
    return response.content.decode()


# -- roles and CSRF ---------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/dial-plan/", "/dial-plan/new/", "/calls/", "/calls/export.csv"])
def test_the_pages_need_a_login(client, path):
    response = client.get(path)
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_a_viewer_reads_but_cannot_write(viewer_client, trunk, extensions):
    rule = calls.create_dial_rule(pattern=r"0\d+", trunk=trunk)
    place_call("1001", "112")
    alert = Alert.objects.get()
    plan = text(viewer_client.get("/dial-plan/"))
    assert r"0\d+" in plan and "/dial-plan/new/" not in plan and f"/dial-plan/{rule.pk}/edit/" not in plan
    assert viewer_client.get("/dial-plan/new/").status_code == 403
    assert viewer_client.get(f"/dial-plan/{rule.pk}/edit/").status_code == 403
    for path in ("/dial-plan/new/", f"/dial-plan/{rule.pk}/edit/", f"/dial-plan/{rule.pk}/delete/"):
        assert viewer_client.post(path, {**RULE, "trunk": trunk.pk}).status_code == 403, path
    assert DialRule.objects.get().pattern == r"0\d+"
    dashboard = text(viewer_client.get("/"))
    assert alert.subject in dashboard and f"/alerts/{alert.pk}/acknowledge/" not in dashboard
    assert viewer_client.post(f"/alerts/{alert.pk}/acknowledge/").status_code == 403
    alert.refresh_from_db()
    assert alert.acknowledged_at is None


def test_a_user_without_a_role_sees_nothing(nobody_client):
    assert nobody_client.get("/calls/").status_code == 403
    assert nobody_client.get("/dial-plan/").status_code == 403


def test_forms_need_the_csrf_token(make_user, trunk, extensions):
    place_call("1001", "112")
    alert = Alert.objects.get()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(make_user("carol", "admin"))
    assert 'name="csrfmiddlewaretoken"' in text(browser.get("/dial-plan/new/"))
    assert browser.post("/dial-plan/new/", {**RULE, "trunk": trunk.pk}).status_code == 403
    assert browser.post(f"/alerts/{alert.pk}/acknowledge/").status_code == 403
    assert not DialRule.objects.exists()
    alert.refresh_from_db()
    assert alert.acknowledged_at is None


def test_the_nav_links_to_calls_and_the_dial_plan(viewer_client):
    page = text(viewer_client.get("/"))
    assert 'href="/calls/"' in page and 'href="/dial-plan/"' in page


# -- the dial plan ----------------------------------------------------------------------
def test_the_admin_creates_edits_and_deletes_a_rule(admin_client, trunk):
    response = admin_client.post("/dial-plan/new/", {**RULE, "trunk": trunk.pk})
    assert response.status_code == 302 and response["Location"] == "/dial-plan/"
    rule = DialRule.objects.get()
    assert (rule.pattern, rule.strip, rule.prefix, rule.trunk_id, rule.enabled) == \
        (r"0\d{6,15}", 1, "+31", trunk.pk, True)
    edit = text(admin_client.get(f"/dial-plan/{rule.pk}/edit/"))
    assert 'value="+31"' in edit and f'<option value="{trunk.pk}" selected>' in edit
    admin_client.post(f"/dial-plan/{rule.pk}/edit/", {**RULE, "trunk": trunk.pk, "position": "5", "enabled": ""})
    rule.refresh_from_db()
    assert (rule.position, rule.enabled) == (5, False)
    assert "Delete the dial rule" in text(admin_client.get(f"/dial-plan/{rule.pk}/delete/"))
    assert admin_client.post(f"/dial-plan/{rule.pk}/delete/")["Location"] == "/dial-plan/"
    assert not DialRule.objects.exists()


def test_the_rules_are_listed_in_the_order_they_are_tried(viewer_client, trunk):
    calls.create_dial_rule(pattern=r"9\d+", position=200, trunk=trunk)
    calls.create_dial_rule(pattern=r"0\d+", position=10, strip=1, prefix="+31", trunk=trunk, enabled=False)
    page = text(viewer_client.get("/dial-plan/"))
    assert page.index(r"0\d+") < page.index(r"9\d+")
    assert "+31" in page and 'class="disabled"' in page and "carrier" in page


@pytest.mark.parametrize("field, value", [("pattern", "0(\\d+"), ("strip", "40"), ("prefix", "+31x"),
                                          ("trunk", "")])
def test_a_bad_rule_is_shown_on_its_field(admin_client, trunk, field, value):
    response = admin_client.post("/dial-plan/new/", {**RULE, "trunk": trunk.pk, field: value})
    assert response.status_code == 200
    assert field in response.context["form"].errors, response.context["form"].errors
    assert 'class="field invalid"' in text(response)
    assert not DialRule.objects.exists()


def test_a_dial_plan_without_trunks_says_to_add_one(admin_client):
    page = text(admin_client.get("/dial-plan/"))
    assert "add a trunk" in page and "/dial-plan/new/" not in page


def test_try_a_number_answers_in_words(viewer_client, trunk, extensions):
    calls.create_dial_rule(name="national", pattern=r"0\d{6,15}", strip=1, prefix="+31", trunk=trunk)
    outbound = text(viewer_client.get("/dial-plan/?number=0612345678"))
    assert "0612345678 goes out through trunk carrier as +31612345678 (rule national)." in outbound
    internal = text(viewer_client.get("/dial-plan/?number=1002"))
    assert "1002 goes to extension 1002, ringing 1 phone." in internal
    refused = text(viewer_client.get("/dial-plan/?number=777"))
    assert "777 would be refused with 404 Not Found: no extension or dial rule matches 777." in refused
    Extension.objects.filter(number="1001").update(call_permission="internal")
    barred = text(viewer_client.get("/dial-plan/?number=0612345678&caller=1001"))
    assert "would be refused with 403 Forbidden: 1001 may not call outside numbers" in barred
    assert not Call.objects.exists()


# -- calls ------------------------------------------------------------------------------
def test_live_calls_and_the_log(viewer_client, extensions):
    now = time.time()
    _, call_id, tag = place_call("1001", "1002", at=now - 125)
    progress(call_id, tag, "answered", now - 65, status=200)
    finished_call("1002", "1001", started=now - 900, talk=75)
    response = viewer_client.get("/calls/")
    active = [call.pk for call in response.context["active"]]
    assert active == list(Call.objects.filter(ended_at__isnull=True).values_list("pk", flat=True))
    page = text(response)
    live = page[page.index('id="active-call-rows"'):page.index("</tbody>")]
    assert "1001" in live and "Reception" in live and "Answered" in live
    assert 'class="talk-time"' in live and "1:0" in live  # talking for a minute and some seconds
    log = page[page.index('id="call-log-rows"'):]
    log = log[:log.index("</tbody>")]
    assert "1:15" in log and "hung up by the caller" in log and "Desk" in log
    assert "1 call." in page


def test_the_log_is_filtered_and_paginated(viewer_client, extensions, trunk):
    calls.create_dial_rule(pattern=r"0\d+", trunk=trunk)
    start = time.time() - 20000
    for n in range(51):
        finished_call("1001", "1002", started=start + n, status=480, reason="Temporarily Unavailable")
    finished_call("1002", "0612345678", started=start + 100, status=486, reason="Busy Here")
    first = viewer_client.get("/calls/")
    assert len(first.context["records"]) == 50 and first.context["page"].paginator.count == 52
    assert "page=2" in text(first)
    assert len(viewer_client.get("/calls/?page=2").context["records"]) == 2
    for query in ("caller=1002", "dialled=0612", "kind=outbound", "status=486", "answered=false&caller=1002"):
        response = viewer_client.get(f"/calls/?{query}")
        assert [call.dialled for call in response.context["records"]] == ["0612345678"], query
    assert viewer_client.get("/calls/?answered=true").context["records"] == []


def test_a_bad_filter_is_shown(viewer_client):
    page = text(viewer_client.get("/calls/?since=yesterday&kind=video"))
    assert 'class="errors"' in page and "From (ISO time)" in page and "Kind" in page


def test_the_log_downloads_as_csv_with_the_page_filters(viewer_client, extensions):
    now = time.time()
    finished_call("1001", "1002", started=now - 500, talk=42)
    finished_call("1002", "1001", started=now - 400, status=487, reason="cancelled")
    page = text(viewer_client.get("/calls/?caller=1001"))
    assert 'href="/calls/export.csv?caller=1001"' in page and "Download CSV" in page
    response = viewer_client.get("/calls/export.csv?caller=1001")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 2 and dict(zip(rows[0], rows[1]))["duration_seconds"] == "42.0"
    bad = viewer_client.get("/calls/export.csv?since=yesterday")
    assert bad.status_code == 400 and "since" in text(bad)


def test_the_calls_partial_holds_the_live_parts(viewer_client, extensions):
    place_call("1001", "1002")
    start = time.time() - 1000
    for n in range(51):
        finished_call("1002", "1001", started=start + n, status=480, reason="Temporarily Unavailable")
    partial = text(viewer_client.get("/calls/?partial=1"))
    assert 'id="active-call-rows"' in partial and 'id="call-log-rows"' in partial
    assert "<h1>" not in partial
    # On a later page of the log only the live calls are refreshed.
    later = text(viewer_client.get("/calls/?partial=1&page=2"))
    assert 'id="active-call-rows"' in later and 'id="call-log-rows"' not in later


# -- the dashboard ----------------------------------------------------------------------
def test_the_dashboard_shows_an_emergency_banner_until_acknowledged(admin_client, extensions):
    place_call("1001", "112")
    alert = Alert.objects.get(event="emergency_call")
    for url in ("/", "/?partial=1"):
        page = text(admin_client.get(url))
        assert f'data-alert="{alert.pk}"' in page and alert.subject in page
        assert f'action="/alerts/{alert.pk}/acknowledge/"' in page
    response = admin_client.post(f"/alerts/{alert.pk}/acknowledge/", {"next": "/"})
    assert response.status_code == 302 and response["Location"] == "/"
    alert.refresh_from_db()
    assert alert.acknowledged_by == "alice" and alert.acknowledged_at is not None
    page = text(admin_client.get("/"))
    assert f'data-alert="{alert.pk}"' not in page and 'id="emergency-alerts"' in page
    again = admin_client.post(f"/alerts/{alert.pk}/acknowledge/", follow=True)
    assert "had already acknowledged" in text(again)
    assert admin_client.get(f"/alerts/{alert.pk}/acknowledge/").status_code == 405


def test_the_dashboard_counts_active_calls(viewer_client, extensions):
    place_call("1001", "1002")
    place_call("1002", "1001")
    finished_call("1001", "1002", started=time.time() - 100, talk=5)
    for url in ("/", "/?partial=1"):
        page = text(viewer_client.get(url))
        assert '<strong id="count-active-calls">2</strong> active calls' in page


# -- an extension's call permission -------------------------------------------------------
def test_the_extension_form_sets_the_call_permission(admin_client):
    services.create_extension("1001", "pw")
    form = text(admin_client.get("/extensions/1001/edit/"))
    assert 'name="call_permission"' in form and "Emergency numbers only" in form
    response = admin_client.post("/extensions/1001/edit/", {"display_name": "Lobby", "max_contacts": "5",
                                                            "enabled": "on", "call_permission": "emergency"})
    assert response.status_code == 302
    assert Extension.objects.get(number="1001").call_permission == "emergency"
    assert "Emergency numbers only" in text(admin_client.get("/extensions/1001/"))
    # A post without the field (an older form) leaves it as it is.
    admin_client.post("/extensions/1001/edit/", {"display_name": "Lobby", "max_contacts": "5", "enabled": "on"})
    assert Extension.objects.get(number="1001").call_permission == "emergency"
    bad = admin_client.post("/extensions/1001/edit/", {"display_name": "Lobby", "max_contacts": "5",
                                                       "call_permission": "everything"})
    assert bad.status_code == 200 and "call_permission" in bad.context["form"].errors
