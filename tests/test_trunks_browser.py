"""Browser test of the trunk pages: headless Debian chromium (Playwright) against daphne.

The test process plays runsip's part: it records ``uac.TrunkReport``s with
``trunks.record_trunk_reports``, which publishes the "trunk" live events after commit
through the same relay socket runsip uses, and the open pages must change without a reload.
"""
import time

import pytest

from registrar import trunks
from registrar.sip.uac import TrunkReport
from tests import browser as web
from tests.conftest import BROWSER_ADMIN, BROWSER_ADMIN_PASSWORD

_missing = web.missing_requirements()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(_missing is not None, reason=_missing or ""),
]

ADMIN, ADMIN_PASSWORD = BROWSER_ADMIN, BROWSER_ADMIN_PASSWORD
REALM_DETAIL = "realms do not match: server asked for 'asterisk', trunk expects 'pbx.example.com'"


@pytest.fixture
def page(relay_page):
    return relay_page


def test_the_trunk_pages_follow_runsips_reports_live(page, tmp_path):
    trunk = trunks.create_trunk(name="carrier", registrar_uri="sip:pbx.example.com;transport=tcp",
                                aor_user="4420", password="Upstream-pw-1", expected_realm="pbx.example.com")
    web.login(page, ADMIN, ADMIN_PASSWORD)
    page.goto("/trunks/")
    row = page.locator(f'#trunk-rows tr[data-trunk="{trunk.pk}"]')
    assert row.get_attribute("data-state") == "registering"
    web.wait_live(page)
    web.mark_no_reload(page)

    now = time.time()
    trunks.record_trunk_reports([TrunkReport(
        trunk_id=trunk.pk, state="failed", at=now, status=401, phrase="Unauthorized", cause="realm_mismatch",
        detail=REALM_DETAIL, next_attempt_at=now + 60, finished_exchange=True)])
    page.locator(f'#trunk-rows tr[data-trunk="{trunk.pk}"][data-state="failed"]').wait_for(timeout=web.TIMEOUT_MS)
    assert "The server's realm differs from the expected one" in row.inner_text()
    assert REALM_DETAIL in row.inner_text() and "401 Unauthorized" in row.inner_text()
    assert web.still_not_reloaded(page)
    web.screenshot(page, tmp_path, "trunks-failed-live.png")

    page.goto(f"/trunks/{trunk.pk}/")
    web.wait_live(page)
    web.mark_no_reload(page)
    assert page.locator("#trunk-attempts tr[data-cause]").count() == 1
    later = time.time()
    trunks.record_trunk_reports([TrunkReport(
        trunk_id=trunk.pk, state="registered", at=later, registered_until=later + 3600, status=200, phrase="OK",
        next_attempt_at=later + 3300, finished_exchange=True, granted=3600)])
    page.locator("#trunk-status .state.registered").wait_for(timeout=web.TIMEOUT_MS)
    assert page.locator("#trunk-attempts tr[data-cause]").count() == 2
    assert "registered for 3600 s" in page.locator("#trunk-attempts tr").first.inner_text()
    assert web.still_not_reloaded(page)
    web.screenshot(page, tmp_path, "trunk-registered-live.png")
    assert not [line for line in page.console_messages_seen if line.startswith(("error", "pageerror"))], \
        page.console_messages_seen
