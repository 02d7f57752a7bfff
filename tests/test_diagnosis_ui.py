"""Policy, protection and diagnosis for the admin and the integrator: the bans page and API,
"Why is it failing?", the dashboard's policy notices and the User-Agent policy dry run.

Named users as in test_webui.py: ``admin_client``/``as_admin`` (admin group),
``viewer_client``/``as_viewer`` (viewer group), ``nobody_client`` (no role). Attempts,
bans and bindings are made through the services, the way the SIP worker makes them.
"""
import re
import time

import pytest
from django.utils.html import escape
from rest_framework.test import APIClient

from registrar import services
from registrar.models import Ban, SoftParameter, SoftParameterChange
from registrar.sip.core import Attempt, Origin, Source, StoreRegistration
from registrar.sip.policy import Policy
from registrar.sip.protection import BanDecision
from registrar.sip.reasons import EXPLANATIONS, Reason
from registrar.sip.registrar import ContactRequest, RegisterRequest

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_login_hashes")]

UA_3CX = "3CXPhone 6.0.26523.0"
PAGES = ["/bans/", "/extensions/1001/diagnosis/", "/extensions/9999/diagnosis/", "/settings/?patterns=yealink"]
API_URLS = ["/api/v1/bans/", "/api/v1/extensions/1001/diagnosis/", "/api/v1/soft-parameters/286/dry-run/"]


# -- fixtures and helpers ---------------------------------------------------------------
@pytest.fixture
def extension():
    return services.create_extension("1001", "s3cret")[0]


def fail(number, reason=Reason.WRONG_PASSWORD, *, ip="203.0.113.9", port=40000, at=None, user_agent="UA/1",
         detail="", status=401, count=1):
    at = time.time() if at is None else at
    services.record_attempts([Attempt(at - index * 0.001, Source("udp", ip, port), "REGISTER",
                                      f"sip:{number}@regis.local", number, number, user_agent, "rejected", reason,
                                      status, detail) for index in range(count)])


def refuse_by_ua_policy(number="1001", count=3):
    fail(number, Reason.UA_POLICY, ip="192.0.2.50", port=5062, user_agent=UA_3CX, status=403, count=count,
         detail=f"User-Agent {UA_3CX!r} matches no accepted pattern")


def ban(ip="203.0.113.9", *, seconds=3600, failures=10, detail="10 failed authentications in 60 s"):
    [made] = services.ban_sources([BanDecision(ip, time.time() + seconds, failures, detail)])
    return made


def register(number, port, *, user_agent, ip="192.0.2.5"):
    contact = ContactRequest(f"sip:{number}@{ip}:{port}", "", None, "", None, 3600)
    store = StoreRegistration(1, RegisterRequest(number, f"call-{number}-{port}", 1, False, (contact,)),
                              Origin(ip, port, "udp", user_agent, ""), 5, Policy())
    [outcome] = services.store_registrations([store], time.time())
    assert outcome.ok, outcome


def html(response) -> str:
    return response.content.decode()


def text(markup: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", "", markup).split())


def element(page: str, element_id: str) -> str:
    """The markup from the opening tag with this id to the end of the page (enough to search in)."""
    start = page.index(f'id="{element_id}"')
    return page[page.rindex("<", 0, start):]


def finding_of(page: str, reason: str) -> str:
    """The (first) finding of the diagnosis page about this reason."""
    start = page.index('<article class="finding" id="finding-')
    start = page.index(f'data-reason="{reason}"', start)
    return page[page.rindex("<", 0, start):page.index("</article>", start)]


# -- roles ------------------------------------------------------------------------------
@pytest.mark.parametrize("url", PAGES)
def test_the_pages_need_a_login(client, extension, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("url", PAGES)
def test_a_user_without_a_role_gets_403(nobody_client, extension, url):
    assert nobody_client.get(url).status_code == 403


@pytest.mark.parametrize("url", PAGES)
def test_viewers_read_the_pages(viewer_client, extension, url):
    assert viewer_client.get(url).status_code == 200


@pytest.mark.parametrize("url", API_URLS)
def test_the_api_refuses_anonymous_callers_and_lets_viewers_read(as_viewer, url):
    assert APIClient().get(url).status_code == 401
    assert as_viewer.get(url).status_code == 200


def test_the_nav_links_to_bans_and_the_trace(viewer_client):
    page = html(viewer_client.get("/"))
    assert 'href="/bans/"' in page and 'href="/trace/"' in page


# -- bans -------------------------------------------------------------------------------
def test_the_bans_page_lists_bans_in_force_first_with_their_evidence(viewer_client):
    fail("1001", ip="203.0.113.9", count=25)
    fail("1002", Reason.UNKNOWN_USER, ip="203.0.113.9")
    current = ban("203.0.113.9")
    ended = ban("198.51.100.7", detail="old one")
    services.lift_ban(ended, by="carol")
    page = html(viewer_client.get("/bans/"))
    assert 'data-live-page="bans"' in page
    active = element(page, "active-bans")
    active = active[:active.index('id="past-bans"')]
    assert f'data-ban="{current.pk}"' in active and f'data-ban="{ended.pk}"' not in active
    assert "203.0.113.9" in active and "10 failed authentications in 60 s" in active
    assert "Evidence: 26 failed attempts from 203.0.113.9, the latest 20 shown" in text(active)
    assert active.count('<tr data-reason="') == 20
    assert escape(EXPLANATIONS[Reason.UNKNOWN_USER]) in active and escape(EXPLANATIONS[Reason.WRONG_PASSWORD]) in active
    assert 'class="expires-in"' in active
    past = element(page, "past-bans")
    assert f'data-ban="{ended.pk}"' in past and "lifted" in text(past) and "by carol" in text(past)
    assert "/lift/" not in page  # viewers get no Lift button


def test_an_admin_lifts_a_ban_in_one_click(admin_client):
    current = ban()
    page = html(admin_client.get("/bans/"))
    assert f'action="/bans/{current.pk}/lift/"' in page
    response = admin_client.post(f"/bans/{current.pk}/lift/", follow=True)
    assert response.redirect_chain[-1][0] == "/bans/"
    current.refresh_from_db()
    assert not current.active and current.lifted_by == "alice" and current.lifted_at is not None
    assert "Ban of 203.0.113.9 lifted" in html(response)
    active = element(html(response), "active-bans")
    assert f'data-ban="{current.pk}"' not in active[:active.index('id="past-bans"')]
    assert services.active_bans() == {}


def test_lifting_an_ended_ban_changes_nothing(admin_client):
    current = ban()
    services.lift_ban(current, by="carol")
    admin_client.post(f"/bans/{current.pk}/lift/")
    current.refresh_from_db()
    assert current.lifted_by == "carol"


def test_a_viewer_cannot_lift_a_ban(viewer_client):
    current = ban()
    assert viewer_client.post(f"/bans/{current.pk}/lift/").status_code == 403
    current.refresh_from_db()
    assert current.active


def test_the_bans_partial_has_only_the_tables(viewer_client):
    ban()
    fragment = html(viewer_client.get("/bans/?partial=1")).strip()
    assert fragment.startswith('<section id="bans-live">') and "<nav" not in fragment


def test_the_api_lists_bans_with_filters(as_viewer):
    current = ban("203.0.113.9")
    ended = ban("198.51.100.7")
    services.lift_ban(ended, by="carol")
    listed = as_viewer.get("/api/v1/bans/").json()["results"]
    assert [row["ip"] for row in listed] == ["198.51.100.7", "203.0.113.9"]
    assert [row["id"] for row in as_viewer.get("/api/v1/bans/?active=true").json()["results"]] == [current.pk]
    assert [row["id"] for row in as_viewer.get("/api/v1/bans/?active=false").json()["results"]] == [ended.pk]
    assert [row["id"] for row in as_viewer.get("/api/v1/bans/?ip=198.51.100.7").json()["results"]] == [ended.pk]
    bad = as_viewer.get("/api/v1/bans/?ip=not-an-address")
    assert bad.status_code == 400 and "ip" in bad.json()
    row = next(row for row in listed if row["id"] == ended.pk)
    assert row["active"] is False and row["lifted_by"] == "carol" and row["url"].endswith(f"/api/v1/bans/{ended.pk}/")


def test_the_api_shows_a_bans_evidence(as_viewer):
    fail("1001", count=3)
    current = ban()
    body = as_viewer.get(f"/api/v1/bans/{current.pk}/").json()
    assert body["active"] is True and body["failures"] == 10 and body["evidence_count"] == 3
    assert [row["reason"] for row in body["evidence"]] == ["wrong_password"] * 3
    assert body["evidence"][0]["explanation"] == EXPLANATIONS[Reason.WRONG_PASSWORD]


def test_deleting_a_ban_through_the_api_lifts_it(as_admin, as_viewer):
    current = ban()
    assert as_viewer.delete(f"/api/v1/bans/{current.pk}/").status_code == 403
    assert Ban.objects.get(pk=current.pk).active
    assert as_admin.delete(f"/api/v1/bans/{current.pk}/").status_code == 204
    current.refresh_from_db()
    assert not current.active and current.lifted_by == "ada"
    assert as_admin.get(f"/api/v1/bans/{current.pk}/").json()["active"] is False
    assert as_admin.post("/api/v1/bans/", {"ip": "192.0.2.1"}).status_code == 405


# -- why is it failing? -----------------------------------------------------------------
def test_the_extension_page_and_the_attempts_rows_link_to_the_diagnosis(viewer_client, extension):
    fail("1001")
    fail("9999", Reason.UNKNOWN_USER)
    assert 'id="why-failing" href="/extensions/1001/diagnosis/"' in html(viewer_client.get("/extensions/1001/"))
    attempts = html(viewer_client.get("/attempts/"))
    assert 'class="why" href="/extensions/1001/diagnosis/"' in attempts
    assert 'href="/extensions/9999/diagnosis/"' in attempts


def test_a_ua_policy_finding_shows_the_fix_and_links_soft_parameter_286(admin_client, extension):
    services.set_soft_parameter(286, True, actor="test")
    refuse_by_ua_policy(count=3)
    page = html(admin_client.get("/extensions/1001/diagnosis/"))
    finding = finding_of(page, "ua_policy")
    assert escape(EXPLANATIONS[Reason.UA_POLICY]) in finding
    assert "3 times, last at" in text(finding)
    assert UA_3CX in text(finding) and "matches no accepted pattern" in text(finding)
    assert "Turn off soft parameter 286" in text(finding)
    assert 'href="/settings/#param-286"' in finding and "third_party_ua_inspection (now on)" in text(finding)
    assert 'id="turn-off-286"' in finding and 'action="/settings/286/"' in finding


def test_turn_off_286_from_the_diagnosis_comes_back_to_it(admin_client, extension):
    services.set_soft_parameter(286, True, actor="test")
    refuse_by_ua_policy()
    response = admin_client.post("/settings/286/", {"value": "false", "next": "/extensions/1001/diagnosis/"},
                                 follow=True)
    assert response.redirect_chain[-1][0] == "/extensions/1001/diagnosis/"
    assert SoftParameter.objects.get(number=286).value is False
    change = SoftParameterChange.objects.filter(parameter_id=286).first()
    assert (change.actor, change.via, change.old_value, change.new_value) == ("alice", "web", True, False)
    page = html(response)
    assert "286 is off now" in page and 'id="turn-off-286"' not in page


def test_viewers_see_the_diagnosis_without_the_button(viewer_client, extension):
    services.set_soft_parameter(286, True, actor="test")
    refuse_by_ua_policy()
    page = html(viewer_client.get("/extensions/1001/diagnosis/"))
    assert 'href="/settings/#param-286"' in page and 'id="turn-off-286"' not in page


def test_a_diagnosis_of_a_number_without_an_extension_says_so(viewer_client):
    fail("9999", Reason.UNKNOWN_USER, count=2)
    page = html(viewer_client.get("/extensions/9999/diagnosis/"))
    assert "No extension 9999 exists." in text(page)
    assert "Create extension 9999" in text(finding_of(page, "unknown_user"))


def test_a_diagnosis_without_failures_suggests_a_trace(admin_client, extension):
    page = html(admin_client.get("/extensions/1001/diagnosis/"))
    assert "No failed attempt named 1001" in text(page)
    assert 'id="trace-this"' in page
    admin_client.post("/trace/", {"action": "start", "kind": "extension", "value": "1001",
                                  "next": "/trace/?extension=1001"})
    assert SoftParameter.objects.get(number=310).value == ["1001"]


def test_every_reason_has_a_fix(viewer_client):
    for reason in Reason:
        if reason != Reason.BANNED_SOURCE:  # a ban, not an attempt: dropped requests are not recorded
            fail("1001", reason)
    ban()
    page = html(viewer_client.get("/extensions/1001/diagnosis/"))
    assert page.count('class="finding"') == len(Reason)
    assert page.count('class="fix"') == len(Reason)


def test_a_ban_finding_links_to_the_bans(viewer_client):
    fail("1001", ip="203.0.113.9")
    ban("203.0.113.9")
    finding = finding_of(html(viewer_client.get("/extensions/1001/diagnosis/")), "banned_source")
    assert 'href="/bans/"' in finding and 'href="/settings/#param-304"' in finding


def test_the_api_gives_the_diagnosis_as_json(as_viewer, extension):
    services.set_soft_parameter(286, True, actor="test")
    refuse_by_ua_policy(count=2)
    fail("1001", Reason.REALM_MISMATCH, detail="credentials are for realm 'asterisk'")
    body = as_viewer.get("/api/v1/extensions/1001/diagnosis/").json()
    assert body["extension"] == "1001" and body["exists"] is True and body["registered"] == 0
    first, second = body["findings"]
    assert first["reason"] == "ua_policy" and first["count"] == 2 and first["soft_parameter"] == 286
    assert first["explanation"] == EXPLANATIONS[Reason.UA_POLICY] and "softparam set 286 0" in first["fix"]
    assert UA_3CX in first["received"] and first["last_seen"]
    assert second["reason"] == "realm_mismatch" and second["soft_parameter"] is None
    assert "'asterisk'" in second["received"]
    unknown = as_viewer.get("/api/v1/extensions/9999/diagnosis/").json()
    assert unknown["exists"] is False and unknown["findings"] == []


# -- dashboard notices ------------------------------------------------------------------
def test_the_dashboard_shows_each_policy_notice_with_its_link(viewer_client, extension):
    services.set_soft_parameter(286, True, actor="test")
    refuse_by_ua_policy(count=3)
    ban()
    page = html(viewer_client.get("/"))
    notices = element(page, "policy-notices")
    notices = notices[:notices.index("</ul>")]
    items = re.findall(r"<li[^>]*>(.*?)</li>", notices, re.S)
    assert len(items) == 2
    assert 'href="/settings/#param-286"' in items[0] and "third_party_ua_inspection (now on)" in items[0]
    assert "refused 3 requests" in items[0]
    assert 'href="/bans/"' in items[1] and "1 source address(es) are banned." in items[1]
    assert 'id="policy-notices"' in html(viewer_client.get("/?partial=1"))


def test_the_dashboard_has_no_notices_when_all_is_well(viewer_client, extension):
    fail("1001")
    page = html(viewer_client.get("/"))
    assert 'id="policy-notices-box"' in page and 'id="policy-notices"' not in page


# -- the dry run ------------------------------------------------------------------------
@pytest.fixture
def phones(extension):
    services.create_extension("1002", "pw")
    register("1001", 5001, user_agent="Yealink SIP-T46S 66.86")
    register("1001", 5002, user_agent=UA_3CX)
    register("1002", 5003, user_agent="VoxStack Analog Gateway")
    register("1002", 5004, user_agent="")


def refused_contacts(page):
    return sorted(re.findall(r"<li data-extension=\"[^\"]+\" data-binding=\"\d+\">.*?· ([^<]+)</small>", page))


def test_the_dry_run_lists_exactly_the_phones_the_patterns_would_refuse(viewer_client, phones):
    page = html(viewer_client.get("/settings/?patterns=yealink, voxstack"))
    assert refused_contacts(page) == ["sip:1001@192.0.2.5:5002", "sip:1002@192.0.2.5:5004"]
    assert "2 of 4" in text(element(page, "dry-run-summary"))
    assert 'value="yealink, voxstack"' in page


def test_the_dry_run_starts_with_287_and_runs_only_when_asked(viewer_client, phones):
    services.set_soft_parameter(287, "Yealink,3CX", actor="test")
    page = html(viewer_client.get("/settings/"))
    assert 'id="dry-run-patterns" name="patterns" value="Yealink, 3CX"' in page
    assert 'id="dry-run-result"' not in page
    page = html(viewer_client.get("/settings/?patterns=Yealink, 3CX"))
    assert refused_contacts(page) == ["sip:1002@192.0.2.5:5003", "sip:1002@192.0.2.5:5004"]


def test_a_dry_run_with_no_pattern_refuses_everyone_and_changes_nothing(viewer_client, phones):
    before = SoftParameterChange.objects.count()
    page = html(viewer_client.get("/settings/?patterns="))
    assert len(refused_contacts(page)) == 4 and "with no accepted pattern" in text(page)
    assert SoftParameterChange.objects.count() == before


def test_the_api_dry_run_defaults_to_287(as_viewer, phones):
    services.set_soft_parameter(287, "yealink", actor="test")
    body = as_viewer.get("/api/v1/soft-parameters/286/dry-run/").json()
    assert body["patterns"] == ["yealink"] and body["inspection_on"] is False
    assert sorted(row["contact"] for row in body["refused"]) == [
        "sip:1001@192.0.2.5:5002", "sip:1002@192.0.2.5:5003", "sip:1002@192.0.2.5:5004"]
    row = next(row for row in body["refused"] if row["contact"] == "sip:1001@192.0.2.5:5002")
    assert row == {"extension": "1001", "contact": "sip:1001@192.0.2.5:5002", "source": "192.0.2.5:5002",
                   "transport": "udp", "user_agent": UA_3CX, "expires_at": row["expires_at"]}


def test_the_api_dry_run_takes_patterns(as_viewer, phones):
    body = as_viewer.get("/api/v1/soft-parameters/286/dry-run/?patterns=3cx,VOXSTACK").json()
    assert body["patterns"] == ["3cx", "VOXSTACK"]
    assert sorted(row["user_agent"] for row in body["refused"]) == ["", "Yealink SIP-T46S 66.86"]
    assert len(as_viewer.get("/api/v1/soft-parameters/286/dry-run/?patterns=").json()["refused"]) == 4
