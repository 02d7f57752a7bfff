"""Browser tests: headless chromium (Playwright, sync API) against daphne and runsip.

Each test starts the web process (daphne) and the SIP worker (runsip) as subprocesses
on loopback, both on the committed test database (transactional_db) and the same
live relay socket, then drives the pages like an administrator would while SIPp plays
the phone.
"""
import re

import pytest
from django.conf import settings as django_settings
from django.urls import Resolver404, resolve

from registrar import services
from registrar.models import Extension, SoftParameter, SoftParameterChange
from tests import browser as web
from tests import e2e

_missing = web.missing_requirements()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(_missing is not None, reason=_missing or ""),
]

ADMIN = "boss"
ADMIN_PASSWORD = "browser-pw-1"
PASSWORD = "s3cret-browser"
SIPP_USER_AGENT = "SIPp regis-e2e"
WRONG_PASSWORD_SENTENCE = "The password configured on the phone does not match the extension's password."


@pytest.fixture
def stack(transactional_db, settings, django_user_model):
    """Admin user, MD5-only digest (SIPp), then daphne and runsip on one relay socket."""
    settings.SIP_DOMAIN = e2e.SIP_DOMAIN
    settings.SIP_REALM = e2e.SIP_DOMAIN
    relay = web.relay_socket_path()
    # Events this process publishes (services) go to the web process under test too.
    settings.LIVE_RELAY_SOCKET = relay
    services.ensure_soft_parameters()
    services.set_soft_parameter("digest_algorithms", "MD5", actor="test set-up")  # SIPp does MD5 only
    django_user_model.objects.create_superuser(ADMIN, "", ADMIN_PASSWORD)

    env = web.process_environment(e2e.database_url(django_settings.DATABASES["default"]), relay)
    daphne = web.Daphne(env)
    runsip = e2e.RunSip(env["DATABASE_URL"], env={"LIVE_RELAY_SOCKET": relay})
    try:
        daphne.start()
        runsip.start()
        yield Stack(daphne, runsip)
    finally:
        died = [(name, p) for name, p in (("daphne", daphne), ("runsip", runsip)) if p.died]
        runsip.stop()
        daphne.stop()
        web.remove_relay_socket(relay)
    if died:
        pytest.fail("\n".join(f"{name} died during the test:\n{p.output[-4000:]}" for name, p in died))


class Stack:
    def __init__(self, daphne, runsip):
        self.daphne = daphne
        self.runsip = runsip

    def logs(self) -> str:
        return f"--- daphne\n{self.daphne.output[-4000:]}\n--- runsip\n{self.runsip.output[-4000:]}"


@pytest.fixture
def page(chromium, stack):
    page = web.new_page(chromium, stack.daphne.url)
    yield page
    page.context.close()


# -- helpers ---------------------------------------------------------------------------
def needs_pages(*paths):
    """Skip (before starting anything), naming what is missing, when the web UI does not
    route these paths."""
    missing = []
    for path in paths:
        try:
            resolve(path)
        except Resolver404:
            missing.append(path)
    return pytest.mark.skipif(bool(missing), reason=f"the web UI has no {', '.join(missing)} page yet")


def log_in(page, stack):
    web.login(page, ADMIN, ADMIN_PASSWORD)
    assert page.url == stack.daphne.url + "/", f"after login at {page.url}\n{stack.logs()}"


def sipp(stack, scenario, tmp_path, number, password, **kwargs):
    workdir = tmp_path / scenario.removesuffix(".xml")
    users_csv = e2e.write_users_csv(tmp_path / f"{scenario}.users.csv", [(number, password)])
    result = e2e.run_sipp(scenario, stack.runsip.address, workdir, users_csv=users_csv, **kwargs)
    assert result.returncode == 0, f"{result.report()}\n{stack.logs()}"
    return result


def row_text(locator) -> str:
    return " ".join(locator.inner_text().split())


def diagnostics(page, stack) -> str:
    """What to print when a wait fails: the page's console, its HTML, the servers' output."""
    console = "\n".join(page.console_messages_seen[-30:])
    return (f"--- page {page.url}, data-live={page.evaluate('document.body.dataset.live')!r}\n"
            f"--- console\n{console}\n--- html\n{page.content()[:6000]}\n{stack.logs()}")


def wait_for(locator, page, stack, what: str):
    """``locator.wait_for()`` (bounded) with the page and servers' state on failure."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        locator.wait_for(timeout=web.TIMEOUT_MS)
    except PlaywrightTimeout:
        pytest.fail(f"{what} did not show within {web.TIMEOUT_MS // 1000} s\n{diagnostics(page, stack)}")
    return locator


def wait_live(page, stack):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        web.wait_live(page)
    except PlaywrightTimeout:
        pytest.fail(f"the page never set body[data-live=connected]\n{diagnostics(page, stack)}")


# -- the harness itself (no new UI needed) ---------------------------------------------
def test_the_harness_logs_into_the_django_admin(page, stack, tmp_path):
    web.login(page, ADMIN, ADMIN_PASSWORD, path="/admin/login/", submit="input[type=submit]")
    assert page.url.rstrip("/").endswith("/admin"), stack.logs()
    assert page.locator("#site-name").is_visible()


def test_the_live_websocket_carries_the_sip_workers_events(page, stack, tmp_path):
    """The relay chain (runsip -> Unix socket -> daphne -> /ws/live/) with a bare websocket."""
    services.create_extension("1001", PASSWORD)
    web.login(page, ADMIN, ADMIN_PASSWORD, path="/admin/login/", submit="input[type=submit]")
    page.evaluate("""() => new Promise((resolve, reject) => {
        window.__events = [];
        const ws = new WebSocket(`ws://${location.host}/ws/live/`);
        ws.onmessage = (message) => window.__events.push(...JSON.parse(message.data).events);
        ws.onopen = () => resolve();
        ws.onclose = (event) => reject(new Error(`closed ${event.code}`));
    })""")

    result = sipp(stack, "register.xml", tmp_path, "1001", PASSWORD)

    page.wait_for_function("window.__events.some(e => e.type === 'registration' && e.extension === '1001')",
                           timeout=web.TIMEOUT_MS)
    events = page.evaluate("window.__events")
    [registered] = [e for e in events if e["type"] == "registration"]
    assert registered["source"] == f"127.0.0.1:{result.local_port}"
    assert registered["user_agent"] == SIPP_USER_AGENT


# -- the scenarios -------------------------------------------------------------
@needs_pages("/login/", "/extensions/new/", "/extensions/", "/registrations/")
def test_an_extension_made_in_the_form_shows_its_phone_registering_live(page, stack, tmp_path):
    log_in(page, stack)

    # An extension with a typed password (SIPp uses it) ...
    page.goto("/extensions/new/")
    page.fill("#id_number", "1001")
    page.fill("#id_display_name", "Front desk")
    page.fill("#id_password", PASSWORD)
    page.fill("#id_max_contacts", "3")
    page.check("#id_enabled")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url.endswith("/extensions/1001/"), f"{page.url}\n{page.content()[:3000]}"
    extension = Extension.objects.get(number="1001")
    assert extension.display_name == "Front desk" and extension.max_contacts == 3 and extension.enabled

    # ... and one with a generated password, shown once.
    page.goto("/extensions/new/")
    page.fill("#id_number", "1002")
    page.fill("#id_password", "")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url.endswith("/extensions/1002/"), f"{page.url}\n{page.content()[:3000]}"
    shown = page.locator("#generated-password")
    generated = shown.inner_text().strip()
    assert len(generated) >= 8, generated
    second = Extension.objects.get(number="1002")
    assert second.ha1_md5 == services.digest.compute_ha1("1002", second.realm, generated, "MD5")
    web.screenshot(page, tmp_path, "extension-created.png")
    page.reload()
    assert page.locator("#generated-password").count() == 0
    assert generated not in page.content()

    # The registrations page, open before the phone registers, shows it without a reload.
    page.goto("/registrations/")
    wait_live(page, stack)
    assert page.locator('table#registrations tr[data-extension="1001"]').count() == 0
    web.mark_no_reload(page)

    result = sipp(stack, "register.xml", tmp_path, "1001", PASSWORD)

    row = wait_for(page.locator('table#registrations tr[data-extension="1001"]'), page, stack,
                   "the registration row of 1001")
    text = row_text(row)
    assert f"127.0.0.1:{result.local_port}" in text, text
    assert f"sip:1001@127.0.0.1:{result.local_port}" in text, text
    assert re.search(r"\budp\b", text, re.IGNORECASE), text
    assert SIPP_USER_AGENT in text, text
    expires = row.locator(".expires-in[data-expires-at]")
    assert expires.count() == 1, text
    assert web.still_not_reloaded(page), "the registrations page reloaded instead of updating live"
    web.screenshot(page, tmp_path, "registrations-live.png")

    # The extension list tells which extension is online.
    page.goto("/extensions/")
    assert row_text(page.locator('tr[data-extension="1001"] .state')).lower() == "online"
    assert row_text(page.locator('tr[data-extension="1002"] .state')).lower() == "offline"


@needs_pages("/login/")
def test_the_dashboard_counts_and_feeds_a_registration_live(page, stack, tmp_path):
    services.create_extension("1001", PASSWORD)
    log_in(page, stack)
    page.wait_for_selector("svg#chart-24h", state="attached")
    wait_live(page, stack)
    for counter in ("#count-extensions", "#count-registered", "#count-devices", "#count-failed-hour",
                    "#count-failed-day"):
        assert page.locator(counter).count() == 1, counter
    assert page.locator("#count-extensions").inner_text().strip() == "1"
    assert page.locator("#count-registered").inner_text().strip() == "0"
    web.mark_no_reload(page)

    sipp(stack, "register.xml", tmp_path, "1001", PASSWORD)

    wait_for(page.locator("#live-feed li", has_text="1001").first, page, stack, "a live feed item about 1001")
    page.wait_for_function("document.querySelector('#count-registered').textContent.trim() === '1'",
                           timeout=web.TIMEOUT_MS)
    assert page.locator("#count-devices").inner_text().strip() == "1"
    assert web.still_not_reloaded(page), "the dashboard reloaded instead of updating live"
    web.screenshot(page, tmp_path, "dashboard.png")


@needs_pages("/login/", "/settings/")
def test_toggling_a_soft_parameter_is_audited(page, stack, tmp_path):
    assert SoftParameter.objects.get(number=286).value is False
    log_in(page, stack)
    page.goto("/settings/")
    form = page.locator("form#param-286")
    toggle = form.locator("input[name=value]")
    assert not toggle.is_checked()
    toggle.check()
    with page.expect_navigation():
        form.locator("button[type=submit]").click()

    row = wait_for(page.locator("table#audit tr", has_text=ADMIN).first, page, stack, "the audit row")
    text = row_text(row)
    assert "286" in text, text
    assert re.search(r"\b(false|0|off|no)\s*(→|->|to)\s*(true|1|on|yes)\b", text, re.IGNORECASE), text
    assert SoftParameter.objects.get(number=286).value is True
    [change] = SoftParameterChange.objects.filter(parameter_id=286)
    assert (change.actor, change.old_value, change.new_value) == (ADMIN, False, True)
    assert page.locator("form#param-286 input[name=value]").is_checked()
    web.screenshot(page, tmp_path, "settings-audit.png")


@needs_pages("/login/", "/attempts/")
def test_a_failed_attempt_appears_live_with_its_reason(page, stack, tmp_path):
    services.create_extension("1001", PASSWORD)
    log_in(page, stack)
    page.goto("/attempts/")
    wait_live(page, stack)
    web.mark_no_reload(page)

    result = sipp(stack, "register_rejected.xml", tmp_path, "1001", "not-the-password")

    row = wait_for(page.locator('table#attempts tr[data-reason="wrong_password"]').first, page, stack,
                   "the wrong_password attempt row")
    text = row_text(row)
    assert WRONG_PASSWORD_SENTENCE in text, text
    assert "1001" in text and f"127.0.0.1:{result.local_port}" in text, text
    assert web.still_not_reloaded(page), "the attempts page reloaded instead of updating live"
    web.screenshot(page, tmp_path, "attempts.png")
