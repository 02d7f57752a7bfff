"""Browser test of the calls pages: headless Debian chromium (Playwright) against daphne.

The test process plays runsip's part: it starts calls with ``calls.start_call`` and moves them on with
``calls.record_call_progress``, which publish the "call" and "alert" live events after commit through
the same relay socket runsip uses; the open pages must change without a reload.
"""
import time

import pytest

from registrar import services
from registrar.models import Alert
from tests import browser as web
from tests.conftest import BROWSER_ADMIN, BROWSER_ADMIN_PASSWORD
from tests.test_api import register
from tests.test_calls_api import place_call, progress

_missing = web.missing_requirements()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(_missing is not None, reason=_missing or ""),
]

ADMIN, ADMIN_PASSWORD = BROWSER_ADMIN, BROWSER_ADMIN_PASSWORD


@pytest.fixture
def page(relay_page):
    return relay_page


@pytest.fixture
def extensions(transactional_db):
    services.create_extension("1001", "pw", display_name="Reception")
    services.create_extension("1002", "pw", display_name="Desk")
    register("1001", 5001)
    register("1002", 5002)


def no_console_errors(page):
    assert not [line for line in page.console_messages_seen if line.startswith(("error", "pageerror"))], \
        page.console_messages_seen


def test_the_dashboard_shows_calls_and_emergency_alerts_live(page, extensions, tmp_path):
    web.login(page, ADMIN, ADMIN_PASSWORD)
    page.goto("/")
    assert page.locator("#count-active-calls").inner_text() == "0"
    assert page.locator("#emergency-alerts section").count() == 0
    web.wait_live(page)
    web.mark_no_reload(page)

    place_call("1001", "1002")
    page.wait_for_function("document.getElementById('count-active-calls').textContent === '1'",
                           timeout=web.TIMEOUT_MS)
    place_call("1001", "112")
    alert = Alert.objects.get(event="emergency_call")
    banner = page.locator(f'#emergency-alerts [data-alert="{alert.pk}"]')
    banner.wait_for(timeout=web.TIMEOUT_MS)
    assert "Emergency call from 1001 (Reception)" in banner.inner_text() and "112" in banner.inner_text()
    assert web.still_not_reloaded(page)
    web.screenshot(page, tmp_path, "dashboard-emergency-live.png")

    # It stays until someone acknowledges it, reload or not.
    page.reload()
    banner.wait_for(timeout=web.TIMEOUT_MS)
    with page.expect_navigation():
        banner.get_by_role("button", name="Acknowledge").click()
    assert page.locator("#emergency-alerts section").count() == 0
    alert.refresh_from_db()
    assert alert.acknowledged_by == ADMIN and alert.acknowledged_at is not None
    page.reload()
    assert page.locator("#emergency-alerts section").count() == 0
    no_console_errors(page)


def test_the_calls_page_follows_a_call_live(page, extensions, tmp_path):
    web.login(page, ADMIN, ADMIN_PASSWORD)
    page.goto("/calls/")
    assert page.locator("#active-call-rows tr[data-call]").count() == 0
    web.wait_live(page)
    web.mark_no_reload(page)

    planned, call_id, tag = place_call("1001", "1002", at=time.time() - 120)
    row = page.locator(f'#active-call-rows tr[data-call="{planned.call_pk}"]')
    row.wait_for(timeout=web.TIMEOUT_MS)
    assert "Reception" in row.inner_text() and "1002" in row.inner_text()

    progress(call_id, tag, "answered", time.time() - 61, status=200)
    page.locator(f'#active-call-rows tr[data-call="{planned.call_pk}"][data-state="answered"]').wait_for(
        timeout=web.TIMEOUT_MS)
    talk_time = row.locator(".talk-time")
    first = talk_time.inner_text()
    assert first.startswith("1:0"), first
    page.wait_for_function(f"document.querySelector('.talk-time').textContent !== {first!r}",
                           timeout=web.TIMEOUT_MS)  # it counts up by itself
    web.screenshot(page, tmp_path, "calls-live.png")

    progress(call_id, tag, "ended", time.time(), bye_from_tag=tag)
    page.locator(f'#call-log-rows tr[data-call="{planned.call_pk}"]').wait_for(timeout=web.TIMEOUT_MS)
    assert row.count() == 0
    assert "hung up by the caller" in page.locator("#call-log-rows").inner_text()
    assert web.still_not_reloaded(page)
    no_console_errors(page)
