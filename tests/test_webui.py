"""The web UI through Django's test client: roles, forms, lists, filters, exports, live partials.

Named users, as in healthchecks' base test case: ``admin_client`` (the admin group),
``viewer_client`` (the viewer group), ``nobody_client`` (logged in, no role). Bindings
and attempts are made through the services, the way the SIP worker makes them.
"""
import csv
import io
import re
import time
from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.html import escape
from rest_framework.authtoken.models import Token

from registrar import services
from registrar.models import Binding, Extension, SoftParameter, SoftParameterChange
from registrar.sip.core import Attempt, Origin, Source, StoreRegistration
from registrar.sip.policy import Policy
from registrar.sip.reasons import EXPLANATIONS, Reason
from registrar.sip.registrar import ContactRequest, RegisterRequest
from webui.templatetags.regis import chart_geometry, countdown

pytestmark = pytest.mark.django_db

PAGES = ["/", "/extensions/", "/extensions/1001/", "/registrations/", "/attempts/", "/attempts/export.csv",
         "/settings/", "/token/"]
ADMIN_PAGES = ["/extensions/new/", "/extensions/1001/edit/", "/extensions/1001/password/",
               "/extensions/1001/delete/"]


# -- fixtures and helpers ---------------------------------------------------------------
@pytest.fixture(autouse=True)
def fast_login_hashes(settings):
    # Web logins are not what these tests are about; PBKDF2 would dominate their time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _client_for(client, django_user_model, username, group=None):
    user = django_user_model.objects.create_user(username, "", "pw")
    if group:
        user.groups.add(Group.objects.get(name=group))
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def admin_client(client, django_user_model):
    return _client_for(client, django_user_model, "alice", "admin")


@pytest.fixture
def viewer_client(client, django_user_model):
    return _client_for(client, django_user_model, "victor", "viewer")


@pytest.fixture
def nobody_client(client, django_user_model):
    return _client_for(client, django_user_model, "nora")


@pytest.fixture
def extension():
    return services.create_extension("1001", "s3cret", display_name="Front desk")[0]


def register(number, port, *, now=None, expires=3600, transport="udp", user_agent="Yealink T46",
             ip="192.0.2.5"):
    contact = ContactRequest(f"sip:{number}@{ip}:{port}", "", None, "", None, expires)
    store = StoreRegistration(1, RegisterRequest(number, f"call-{number}-{port}", 1, False, (contact,)),
                              Origin(ip, port, transport, user_agent, ""), 5, Policy())
    [outcome] = services.store_registrations([store], time.time() if now is None else now)
    assert outcome.ok, outcome


def fail(number, reason=Reason.WRONG_PASSWORD, *, ip="203.0.113.9", port=40000, at=None, user_agent="UA/1",
         status=401):
    services.record_attempts([Attempt(time.time() if at is None else at, Source("udp", ip, port), "REGISTER",
                                      f"sip:{number}@regis.local", number, number, user_agent, "challenged",
                                      reason, status)])


def html(response) -> str:
    return response.content.decode()


def text(markup: str) -> str:
    """What a reader sees: tags removed, spaces collapsed."""
    return " ".join(re.sub(r"<[^>]+>", "", markup).split())


def rows(page: str, selector_attribute: str) -> list[str]:
    return re.findall(rf'<tr {selector_attribute}="([^"]*)"', page)


def field_errors(response, form="form"):
    return response.context[form].errors


# -- roles ----------------------------------------------------------------------------
@pytest.mark.parametrize("url", PAGES + ADMIN_PAGES)
def test_every_page_needs_a_login(client, extension, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("url", PAGES + ADMIN_PAGES + ["/?partial=1", "/registrations/?partial=1"])
def test_a_user_without_a_role_gets_403(nobody_client, extension, url):
    response = nobody_client.get(url)
    assert response.status_code == 403
    assert "no role" in html(response)


def test_a_user_without_a_role_cannot_post(nobody_client, extension):
    assert nobody_client.post("/token/", {"action": "create"}).status_code == 403
    assert not Token.objects.exists()


@pytest.mark.parametrize("url", PAGES)
def test_a_viewer_sees_every_page(viewer_client, extension, url):
    assert viewer_client.get(url).status_code == 200


def test_a_viewer_sees_no_write_buttons(viewer_client, extension):
    register("1001", 5060)
    pages = {url: html(viewer_client.get(url)) for url in
             ("/extensions/", "/extensions/1001/", "/registrations/", "/settings/")}
    assert "/extensions/new/" not in pages["/extensions/"]
    for action in ("/edit/", "/password/", "/disable/", "/delete/"):
        assert f"/extensions/1001{action}" not in pages["/extensions/1001/"]
    assert "/unregister/" not in pages["/registrations/"] + pages["/extensions/1001/"]
    assert "Save</button>" not in pages["/settings/"]
    assert 'name="value"' in pages["/settings/"] and "disabled" in pages["/settings/"]


@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_a_viewer_cannot_open_the_forms(viewer_client, extension, url):
    assert viewer_client.get(url).status_code == 403


def test_a_viewer_cannot_write(viewer_client, extension):
    register("1001", 5060)
    binding = Binding.objects.get()
    posts = {
        "/extensions/new/": {"number": "2001", "max_contacts": "5", "enabled": "on"},
        "/extensions/1001/edit/": {"display_name": "Hacked", "max_contacts": "5"},
        "/extensions/1001/password/": {"password": "other"},
        "/extensions/1001/disable/": {},
        "/extensions/1001/delete/": {},
        f"/registrations/{binding.pk}/unregister/": {},
        "/settings/286/": {"value": "on"},
    }
    before = Extension.objects.values().get()
    for url, data in posts.items():
        assert viewer_client.post(url, data).status_code == 403, url
    assert Extension.objects.values().get() == before
    assert Binding.objects.count() == 1
    assert SoftParameter.objects.get(number=286).value is False
    assert not SoftParameterChange.objects.exists()


# -- login ----------------------------------------------------------------------------
def test_the_login_page_logs_in_and_out(client, django_user_model):
    django_user_model.objects.create_superuser("boss", "", "pw-boss-1")
    page = html(client.get("/login/"))
    assert 'id="id_username"' in page and 'id="id_password"' in page and 'type="submit"' in page
    response = client.post("/login/", {"username": "boss", "password": "pw-boss-1"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    assert client.post("/logout/")["Location"] == "/login/"
    assert client.get("/").status_code == 302


def test_a_superuser_is_an_admin(client, django_user_model, extension):
    client.force_login(django_user_model.objects.create_superuser("boss", "", "pw"))
    assert "/extensions/1001/edit/" in html(client.get("/extensions/1001/"))


# -- extensions -----------------------------------------------------------------------
def test_the_admin_creates_an_extension_with_a_typed_password(admin_client, settings):
    response = admin_client.post("/extensions/new/", {
        "number": "1001", "display_name": "Front desk", "password": "s3cret", "max_contacts": "3",
        "enabled": "on"})
    assert response.status_code == 302 and response["Location"] == "/extensions/1001/"
    extension = Extension.objects.get(number="1001")
    assert (extension.display_name, extension.max_contacts, extension.enabled) == ("Front desk", 3, True)
    assert extension.ha1_md5 == services.digest.compute_ha1("1001", settings.SIP_REALM, "s3cret", "MD5")
    assert all("s3cret" not in str(value) for value in Extension.objects.values().get().values())
    page = html(admin_client.get("/extensions/1001/"))
    assert "Extension 1001 created." in page and 'id="generated-password"' not in page


def test_a_generated_password_is_shown_once(admin_client):
    response = admin_client.post("/extensions/new/", {"number": "1002", "password": "", "max_contacts": "5",
                                                      "enabled": "on"}, follow=True)
    generated = re.search(r'<code id="generated-password">([^<]+)</code>', html(response)).group(1)
    extension = Extension.objects.get(number="1002")
    assert extension.ha1_sha256 == services.digest.compute_ha1("1002", extension.realm, generated, "SHA-256")
    assert all(generated not in str(value) for value in Extension.objects.values().get().values())
    assert "no-store" in response["Cache-Control"]
    again = html(admin_client.get("/extensions/1002/"))
    assert generated not in again and 'id="generated-password"' not in again
    assert generated not in str(dict(admin_client.session))


def test_a_live_refresh_does_not_use_up_the_generated_password(admin_client):
    admin_client.post("/extensions/new/", {"number": "1002", "max_contacts": "5", "enabled": "on"})
    assert "generated-password" not in html(admin_client.get("/extensions/1002/?partial=1"))
    assert 'id="generated-password"' in html(admin_client.get("/extensions/1002/"))


def test_a_duplicate_number_is_refused_on_the_number_field(admin_client, extension):
    response = admin_client.post("/extensions/new/", {"number": "1001", "password": "x", "max_contacts": "5"})
    assert response.status_code == 200
    assert "number" in field_errors(response) and "already exists" in str(field_errors(response)["number"])
    assert "errorlist" in html(response)
    assert Extension.objects.count() == 1 and Extension.objects.get().display_name == "Front desk"


@pytest.mark.parametrize("number", ["10 01", "-1001", "x" * 65, ""])
def test_a_bad_number_is_refused_on_the_number_field(admin_client, number):
    response = admin_client.post("/extensions/new/", {"number": number, "password": "x", "max_contacts": "5"})
    assert response.status_code == 200 and "number" in field_errors(response)
    assert not Extension.objects.exists()


def test_the_admin_edits_an_extension(admin_client, extension):
    page = html(admin_client.get("/extensions/1001/edit/"))
    assert 'value="Front desk"' in page and 'id="id_max_contacts"' in page and 'id="id_number"' not in page
    response = admin_client.post("/extensions/1001/edit/", {"display_name": "Lobby", "max_contacts": "2"})
    assert response["Location"] == "/extensions/1001/"
    extension.refresh_from_db()
    assert (extension.display_name, extension.max_contacts, extension.enabled) == ("Lobby", 2, False)


@pytest.mark.parametrize("data, field", [
    ({"display_name": "x" * 200, "max_contacts": "5"}, "display_name"),
    ({"display_name": "Lobby", "max_contacts": "-1"}, "max_contacts"),  # refused by the service
])
def test_an_edit_with_a_bad_value_changes_nothing(admin_client, extension, data, field):
    response = admin_client.post("/extensions/1001/edit/", dict(data, enabled="on"))
    assert response.status_code == 200
    assert list(field_errors(response)) == [field]
    assert "errorlist" in html(response)
    extension.refresh_from_db()
    assert (extension.display_name, extension.max_contacts) == ("Front desk", 5)


def test_the_admin_disables_and_enables_an_extension(admin_client, extension):
    assert admin_client.post("/extensions/1001/disable/")["Location"] == "/extensions/1001/"
    extension.refresh_from_db()
    assert extension.enabled is False
    page = html(admin_client.get("/extensions/1001/"))
    assert 'action="/extensions/1001/enable/"' in page
    admin_client.post("/extensions/1001/enable/")
    extension.refresh_from_db()
    assert extension.enabled is True
    assert admin_client.get("/extensions/1001/disable/").status_code == 405


def test_the_admin_deletes_an_extension_after_confirming(admin_client, extension):
    register("1001", 5060)
    page = html(admin_client.get("/extensions/1001/delete/"))
    assert "Delete extension 1001?" in page and "1 registered device" in page
    assert Extension.objects.exists()
    response = admin_client.post("/extensions/1001/delete/")
    assert response["Location"] == "/extensions/"
    assert not Extension.objects.exists() and not Binding.objects.exists()
    assert admin_client.get("/extensions/1001/").status_code == 404


def test_the_admin_sets_a_password(admin_client, extension):
    response = admin_client.post("/extensions/1001/password/", {"password": "n3w-pass"}, follow=True)
    extension.refresh_from_db()
    assert extension.ha1_md5 == services.digest.compute_ha1("1001", extension.realm, "n3w-pass", "MD5")
    assert 'id="generated-password"' not in html(response)


def test_the_admin_generates_a_password(admin_client, extension):
    old = extension.ha1_md5
    response = admin_client.post("/extensions/1001/password/", {"password": ""}, follow=True)
    generated = re.search(r'<code id="generated-password">([^<]+)</code>', html(response)).group(1)
    extension.refresh_from_db()
    assert extension.ha1_md5 != old
    assert extension.ha1_md5 == services.digest.compute_ha1("1001", extension.realm, generated, "MD5")


def test_the_list_searches_and_shows_each_state(admin_client, extension):
    services.create_extension("1002", "pw", display_name="Kitchen")
    services.create_extension("1003", "pw", enabled=False)
    register("1001", 5060)
    fail("1002")
    page = html(admin_client.get("/extensions/"))
    states = dict(re.findall(r'<tr data-extension="(\d+)".*?<span class="state \w+">(\w+)</span>', page, re.S))
    assert states == {"1001": "online", "1002": "failing", "1003": "offline"}
    assert rows(html(admin_client.get("/extensions/?q=kitch")), "data-extension") == ["1002"]
    assert rows(html(admin_client.get("/extensions/?q=100&enabled=false")), "data-extension") == ["1003"]


def test_the_extension_page_shows_its_bindings_and_timeline(admin_client, extension):
    register("1001", 5060)
    register("1001", 5062, now=time.time() - 7200)  # expired an hour ago
    fail("1001", Reason.STALE_NONCE)
    fail("1002", Reason.UNKNOWN_USER)
    page = html(admin_client.get("/extensions/1001/"))
    assert 'data-live-page="extension"' in page and 'data-extension="1001"' in page
    bindings = page.split('<table id="bindings">')[1].split("</table>")[0]
    assert "sip:1001@192.0.2.5:5060" in bindings and ":5062" not in bindings
    timeline = page.split('<table id="timeline">')[1].split("</table>")[0]
    assert rows(timeline, "data-reason") == ["stale_nonce"]
    assert escape(EXPLANATIONS[Reason.STALE_NONCE]) in timeline


# -- registrations --------------------------------------------------------------------
def test_registrations_lists_live_bindings_only(admin_client, extension):
    services.create_extension("1002", "pw")
    register("1001", 5060, transport="tcp", user_agent="Yealink T46")
    register("1002", 5070, now=time.time() - 7200)
    response = admin_client.get("/registrations/")
    page = html(response)
    assert 'data-live-page="registrations"' in page and '<table id="registrations">' in page
    assert rows(page, "data-extension") == ["1001"]
    row = page.split('<tr data-extension="1001"')[1].split("</tr>")[0]
    for shown in ("sip:1001@192.0.2.5:5060", "192.0.2.5:5060", "TCP", "Yealink T46", "/unregister/"):
        assert shown in row
    binding = Binding.objects.get(extension=extension)
    expires_at = re.search(r'class="expires-in" data-expires-at="(\d+)"', row).group(1)
    assert int(expires_at) == int(binding.expires_at.timestamp())
    assert re.search(r">(59|60) min \d\d s<", row)


def test_registrations_filters_with_the_binding_filterset(admin_client, extension):
    services.create_extension("1002", "pw")
    register("1001", 5060, transport="udp", user_agent="Yealink T46", ip="192.0.2.5")
    register("1002", 5070, transport="tcp", user_agent="Grandstream GXP", ip="192.0.2.9")
    for query, expected in (("extension=1002", ["1002"]), ("source_ip=192.0.2.5", ["1001"]),
                            ("transport=tcp", ["1002"]), ("user_agent=yealink", ["1001"]),
                            ("user_agent=nothing", [])):
        assert rows(html(admin_client.get(f"/registrations/?{query}")), "data-extension") == expected, query
    form = html(admin_client.get("/registrations/"))
    for name in ("extension", "source_ip", "transport", "user_agent"):
        assert f'name="{name}"' in form


def test_force_unregister_removes_the_binding(admin_client, extension):
    register("1001", 5060)
    binding = Binding.objects.get()
    response = admin_client.post(f"/registrations/{binding.pk}/unregister/", {"next": "/extensions/1001/"})
    assert response["Location"] == "/extensions/1001/"
    assert not Binding.objects.exists()
    again = admin_client.post(f"/registrations/{binding.pk}/unregister/", {"next": "https://evil.example/"})
    assert again["Location"] == "/registrations/"


# -- failed attempts ------------------------------------------------------------------
def test_attempts_show_the_reason_in_words(admin_client, extension):
    fail("1001", Reason.WRONG_PASSWORD, user_agent="Zoiper 5", port=40001)
    fail("9999", Reason.UNKNOWN_USER)
    page = html(admin_client.get("/attempts/"))
    assert 'href="/extensions/1001/"' in page and 'href="/extensions/9999/"' not in page
    assert 'data-live-page="attempts"' in page and '<table id="attempts">' in page
    row = text(page.split('<tr data-reason="wrong_password">')[1].split("</tr>")[0])
    for shown in (escape(EXPLANATIONS[Reason.WRONG_PASSWORD]), "203.0.113.9:40001", "1001", "Zoiper 5"):
        assert shown in row


def test_attempts_filter_by_extension_ip_reason_and_time(admin_client):
    now = time.time()
    fail("1001", Reason.WRONG_PASSWORD, at=now - 7200)
    fail("1002", Reason.UNKNOWN_USER, ip="198.51.100.7", at=now - 60)
    fail("1001", Reason.UA_POLICY, at=now - 30, status=403)

    def reasons(query):
        return rows(html(admin_client.get(f"/attempts/?{query}")), "data-reason")

    assert reasons("") == ["ua_policy", "unknown_user", "wrong_password"]
    assert reasons("extension=1001") == ["ua_policy", "wrong_password"]
    assert reasons("source_ip=198.51.100.7") == ["unknown_user"]
    assert reasons("reason=wrong_password") == ["wrong_password"]
    since = timezone.localtime(timezone.now() - timezone.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M")
    assert reasons(f"since={since}") == ["ua_policy", "unknown_user"]
    assert reasons(f"until={since}") == ["wrong_password"]
    assert reasons("extension=1001&since=" + since) == ["ua_policy"]


def test_attempts_are_paginated_by_fifty(admin_client):
    now = time.time()
    services.record_attempts([Attempt(now - index, Source("udp", "203.0.113.9", 40000 + index), "REGISTER",
                                      "sip:1001@regis.local", "1001", "1001", "UA", "challenged",
                                      Reason.WRONG_PASSWORD, 401) for index in range(60)])
    first = html(admin_client.get("/attempts/?extension=1001"))
    assert len(rows(first, "data-reason")) == 50 and "203.0.113.9:40000" in text(first)
    assert "?extension=1001&amp;page=2" in first
    second = html(admin_client.get("/attempts/?extension=1001&page=2"))
    assert len(rows(second, "data-reason")) == 10 and "203.0.113.9:40059" in text(second)


def test_the_csv_export_applies_the_filters(admin_client):
    fail("1001", Reason.WRONG_PASSWORD, user_agent="=HYPERLINK(\"x\")")
    fail("1002", Reason.UNKNOWN_USER)
    page = html(admin_client.get("/attempts/?extension=1001&page=1"))
    assert re.search(r'<a class="button" id="export-csv" href="/attempts/export.csv\?extension=1001"', page)
    response = admin_client.get("/attempts/export.csv?extension=1001")
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    table = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    header, *body = table
    assert header[:3] == ["time", "source_ip", "source_port"] and "explanation" in header
    assert len(body) == 1
    row = dict(zip(header, body[0]))
    assert (row["extension"], row["reason"], row["source_ip"]) == ("1001", "wrong_password", "203.0.113.9")
    assert row["explanation"] == EXPLANATIONS[Reason.WRONG_PASSWORD]
    # A User-Agent is whatever the sender wrote: a spreadsheet must not run it.
    assert row["user_agent"] == "'=HYPERLINK(\"x\")"
    everything = b"".join(admin_client.get("/attempts/export.csv").streaming_content).decode()
    assert len(everything.strip().splitlines()) == 3
    mistyped = admin_client.get("/attempts/export.csv?since=yesterday")
    assert mistyped.status_code == 400 and b"since" in mistyped.content


# -- soft parameters ------------------------------------------------------------------
def test_toggling_a_soft_parameter_is_audited(admin_client):
    page = html(admin_client.get("/settings/"))
    assert '<form id="param-286" method="post" action="/settings/286/"' in page
    assert re.search(r'<input type="checkbox" name="value" class="switch"[^>]*id="id_param286_value"', page)
    response = admin_client.post("/settings/286/", {"value": "on"})
    assert response.status_code == 302
    assert SoftParameter.objects.get(number=286).value is True
    change = SoftParameterChange.objects.get()
    assert (change.via, change.actor, change.changed_by, change.old_value, change.new_value) == (
        "web", "alice", admin_client.user, False, True)
    admin_client.post("/settings/286/", {})  # an unchecked box sends nothing: off
    assert SoftParameter.objects.get(number=286).value is False
    audit = html(admin_client.get("/settings/")).split('<table id="audit">')[1]
    assert re.search(r"alice</td>\s*<td>web</td>\s*<td>286 third_party_ua_inspection</td>\s*<td>off → on", audit)


def test_integer_and_list_parameters_are_typed_as_text(admin_client):
    admin_client.post("/settings/100/", {"value": "120"})
    admin_client.post("/settings/104/", {"value": "md5, sha-256"})
    assert SoftParameter.objects.get(number=100).value == 120
    assert SoftParameter.objects.get(number=104).value == ["MD5", "SHA-256"]
    assert 'value="MD5, SHA-256"' in html(admin_client.get("/settings/"))


@pytest.mark.parametrize("number, value, message", [
    (100, "soon", "whole number"), (100, "0", "at least 1"), (104, "RC4", "unknown value"),
])
def test_a_bad_soft_parameter_value_is_shown_on_its_form(admin_client, number, value, message):
    before = SoftParameter.objects.get(number=number).value
    response = admin_client.post(f"/settings/{number}/", {"value": value})
    assert response.status_code == 200
    [form] = [form for form in response.context["forms"] if form.errors]
    assert form.parameter.number == number and message in str(form.errors["value"])
    assert f'value="{value}"' in html(response)  # what was typed stays, to be corrected
    assert SoftParameter.objects.get(number=number).value == before
    assert not SoftParameterChange.objects.exists()


def test_an_unknown_soft_parameter_is_404(admin_client):
    assert admin_client.post("/settings/999/", {"value": "1"}).status_code == 404


# -- dashboard ------------------------------------------------------------------------
def test_the_dashboard_counts(admin_client, extension):
    services.create_extension("1002", "pw")
    services.create_extension("1003", "pw")
    register("1001", 5060)
    register("1001", 5061)
    register("1002", 5070)
    fail("1003", at=time.time() - 10)
    fail("1003", at=time.time() - 7200)
    page = html(admin_client.get("/"))
    counts = dict(re.findall(r'<strong id="(count-[\w-]+)">(\d+)</strong>', page))
    assert counts == {"count-extensions": "3", "count-registered": "2", "count-devices": "3",
                      "count-failed-hour": "1", "count-failed-day": "2", "count-active-calls": "0"}
    assert 'data-live-page="dashboard"' in page


def test_the_dashboard_draws_the_last_24_hours(admin_client):
    now = time.time()
    services.create_extension("1001", "pw")
    register("1001", 5060, now=now)
    for _ in range(3):
        fail("1001", at=now)
    page = html(admin_client.get("/"))
    svg = page.split('<svg id="chart-24h"')[1].split("</svg>")[0]
    assert svg.count('<rect class="bar registrations"') == 1 and svg.count('<rect class="bar failures"') == 1
    assert "1 registration<" in svg and "3 failures<" in svg
    assert "Hour starting (UTC)" in svg and "Count per hour" in svg


def test_the_chart_scales_bars_to_the_largest_hour():
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    series = [{"hour": hour - timezone.timedelta(hours=23 - index), "registrations": index, "failures": 0}
              for index in range(24)]
    chart = chart_geometry(series)
    assert [tick["value"] for tick in chart["ticks"]] == [0, 10, 20, 30]
    tallest = max(chart["bars"], key=lambda bar: bar["height"])
    assert tallest["count"] == 23 and tallest["height"] == pytest.approx(184 * 23 / 30, abs=0.1)
    assert len(chart["bars"]) == 23  # empty hours draw nothing
    assert len(chart["labels"]) == 8


def test_the_live_feed_starts_with_the_latest_events(admin_client, extension):
    register("1001", 5060, transport="udp")
    fail("1001", Reason.WRONG_PASSWORD)
    feed = html(admin_client.get("/")).split('<ol id="live-feed"')[1].split("</ol>")[0]
    assert "1001 registered from 192.0.2.5:5060 (udp)" in text(feed)
    assert f"1001: {escape(EXPLANATIONS[Reason.WRONG_PASSWORD])}" in text(feed)


def test_countdowns_read_like_live_js_writes_them():
    now = timezone.now()
    assert countdown(now + timezone.timedelta(seconds=3725.5)) == "1 h 02 min"
    assert countdown(now + timezone.timedelta(seconds=125.5)) == "2 min 05 s"
    assert countdown(now + timezone.timedelta(seconds=9.5)) == "9 s"
    assert countdown(now - timezone.timedelta(seconds=1)) == "expired"


# -- live partials --------------------------------------------------------------------
class _TopLevel(HTMLParser):
    VOID = {"input", "br", "img", "meta", "link", "hr"}

    def __init__(self):
        super().__init__()
        self.depth, self.ids = 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "template":  # a wrapper live.js looks through
            return
        if self.depth == 0:
            self.ids.append(dict(attrs).get("id"))
        if tag not in self.VOID:
            self.depth += 1

    def handle_startendtag(self, tag, attrs):
        if self.depth == 0:
            self.ids.append(dict(attrs).get("id"))

    def handle_endtag(self, tag):
        if tag != "template":
            self.depth -= 1


def top_level_ids(fragment):
    """The ids of the fragment's outermost elements: what live.js swaps in."""
    parser = _TopLevel()
    parser.feed(fragment)
    return parser.ids


def test_partials_return_only_the_changing_parts(admin_client, extension):
    register("1001", 5060)
    fail("1001")
    for url, ids in (("/registrations/?partial=1", ["registrations-rows"]),
                     ("/attempts/?partial=1", ["attempts-rows"]),
                     ("/extensions/1001/?partial=1", ["extension-state", "bindings-rows", "timeline-rows"]),
                     ("/?partial=1", ["emergency-alerts", "policy-notices-box", "dashboard-counts",
                                      "chart-figure"])):
        fragment = html(admin_client.get(url))
        assert "<html" not in fragment and "<nav" not in fragment and "<form class=\"filters\"" not in fragment
        assert top_level_ids(fragment) == ids, url
    rows_only = html(admin_client.get("/registrations/?partial=1&extension=1001")).strip()
    assert rows_only.startswith('<tbody id="registrations-rows">') and rows_only.endswith("</tbody>")
    assert '<tr data-extension="1001"' in rows_only


def test_every_live_page_loads_live_js(admin_client, extension):
    for url in PAGES[:-3]:
        assert '<script src="/static/webui/live.js" defer></script>' in html(admin_client.get(url)), url
    assert admin_client.get("/static/webui/live.js").status_code == 200


# -- API token ------------------------------------------------------------------------
def test_the_token_is_shown_once_and_can_be_revoked(admin_client):
    page = html(admin_client.get("/token/"))
    assert "You have no token." in page and 'href="/api/docs/"' in page
    response = admin_client.post("/token/", {"action": "create"}, follow=True)
    key = re.search(r'<code id="api-token">([0-9a-f]+)</code>', html(response)).group(1)
    assert Token.objects.get(user=admin_client.user).key == key
    again = html(admin_client.get("/token/"))
    assert key not in again and "You have a token" in again
    admin_client.post("/token/", {"action": "revoke"})
    assert not Token.objects.exists()


def test_a_viewer_manages_their_own_token(viewer_client):
    viewer_client.post("/token/", {"action": "create"})
    assert Token.objects.filter(user=viewer_client.user).count() == 1


# -- offline ---------------------------------------------------------------------------
EXTERNAL = re.compile(r'(?:src|href|action)\s*=\s*["\']?\s*(?:https?:)?//', re.I)


def test_no_page_loads_anything_from_another_host(admin_client, client, extension):
    register("1001", 5060)
    fail("1001")
    admin_client.post("/extensions/new/", {"number": "1002", "max_contacts": "5", "enabled": "on"})
    urls = PAGES[:-3] + ADMIN_PAGES + ["/settings/", "/token/", "/extensions/1002/", "/?partial=1"]
    for url in urls:
        page = html(admin_client.get(url))
        assert not EXTERNAL.search(page), (url, EXTERNAL.search(page))
    stylesheet = b"".join(admin_client.get("/static/webui/regis.css").streaming_content).decode()
    assert "url(" not in stylesheet and "@import" not in stylesheet
    client.logout()
    assert not EXTERNAL.search(html(client.get("/login/")))


# -- the Django admin (moved from test_web.py) -----------------------------------------
@pytest.fixture
def superuser_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("boss", "", "pw"))
    return client


def test_the_django_admin_creates_an_extension_with_a_generated_password_shown_once(superuser_client):
    response = superuser_client.post("/admin/registrar/extension/add/", {
        "number": "2001", "display_name": "Lobby", "enabled": "on", "max_contacts": "3", "password": "",
    }, follow=True)
    assert response.status_code == 200
    extension = Extension.objects.get(number="2001")
    messages = [str(m) for m in response.context["messages"]]
    generated = messages[0].split(": ")[1].split(" ")[0]
    assert extension.ha1_md5 == services.digest.compute_ha1("2001", extension.realm, generated, "MD5")


def test_the_django_admin_pages_render(superuser_client):
    for url in ("/admin/registrar/extension/", "/admin/registrar/binding/", "/admin/registrar/softparameter/",
                "/admin/registrar/authattempt/", "/admin/registrar/softparameter/286/change/"):
        assert superuser_client.get(url).status_code == 200, url


def test_services_errors_name_form_fields():
    from webui.forms import ExtensionCreateForm

    form = ExtensionCreateForm({"number": "1001", "max_contacts": "5"})
    assert form.is_valid()
    form.add_service_error(ValidationError({"number": "taken", "realm": "odd"}))
    assert form.errors == {"number": ["taken"], "__all__": ["odd"]}
