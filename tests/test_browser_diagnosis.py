"""Browser tests of policy, protection and diagnosis: headless Debian chromium (Playwright)
against daphne and runsip, with the phones played by tests/e2e.py's SipClient.

(a) Seed 000 from the admin's side: 286 refuses the 3CXPhone with 403; the dashboard says
    so, the attempts page leads to the extension's diagnosis in one click, "Turn off 286"
    there, and the phone registers; the dry run then shows whom 286 would refuse again.
(b) The SIP trace: start tracing an extension in /trace/, a phone registers, the dialog
    appears live, its ladder shows REGISTER → 401 → REGISTER → 200, and an arrow opens
    its whole message.
(c) A ban appears live on /bans/ with its evidence, and is lifted in one click.

The web and SIP processes, the browser and the helpers are those of tests/test_browser.py.
"""
import itertools
import re
import time

import pytest

from registrar import services
from registrar.models import AuthAttempt, Binding, SoftParameter, SoftParameterChange, TracedMessage
from registrar.sip.core import Attempt, Source
from registrar.sip.protection import BanDecision
from registrar.sip.reasons import Reason
from tests import browser as web
from tests import e2e
from tests.e2e import eventually
from tests.test_browser import ADMIN, log_in, page, row_text, stack, wait_for, wait_live  # noqa: F401

_missing = web.missing_requirements()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(_missing is not None, reason=_missing or ""),
]

PASSWORD = "s3cret-diagnosis"
SEED_3CX = "3cxphone_register_tcp.sip"
UA_3CX = "3CXPhone 6.0.26523.0"


_branches = itertools.count(1)


def send_seed(stack):
    """The 3CXPhone's REGISTER of seed 000 over TCP, with a branch of its own (a new transaction)."""
    with e2e.SipClient((e2e.LOOPBACK, stack.runsip.port), transport="tcp") as phone:
        message = e2e.load_seed(SEED_3CX, local_port=phone.local_port)
        return phone.request(message.replace(b"branch=z9hG4bK-", f"branch=z9hG4bK-{next(_branches)}".encode()))


def errors_in_console(page) -> list[str]:
    return [line for line in page.console_messages_seen if line.startswith(("error:", "pageerror:"))]


def register_as_3cx(stack) -> bool:
    with e2e.SipClient((e2e.LOOPBACK, stack.runsip.port), transport="tcp") as phone:
        register = phone.register

        def as_3cx(*args, **kwargs):
            return register(*args, user_agent=UA_3CX, **kwargs)

        phone.register = as_3cx
        return phone.register_with_digest("660001", PASSWORD, algorithm="MD5")[1].status == 200


def test_a_phone_refused_by_286_is_diagnosed_and_fixed_in_the_browser(page, stack, tmp_path):
    services.create_extension("660001", PASSWORD)
    services.set_soft_parameter(287, "Huawei,eSpace", actor="test set-up")
    services.set_soft_parameter(286, True, actor="test set-up")
    assert eventually(lambda: send_seed(stack).status == 403), stack.logs()  # the worker has 286 on now
    for _ in range(2):
        answer = send_seed(stack)
        assert answer.status == 403 and not answer.get_all("WWW-Authenticate"), stack.logs()
    assert eventually(lambda: AuthAttempt.objects.filter(reason="ua_policy").count() == 3), stack.logs()

    # The dashboard says 286 refuses phones, and where to change it.
    log_in(page, stack)
    notice = wait_for(page.locator("#policy-notices li[data-soft-parameter='286']"), page, stack,
                      "the policy notice about 286")
    assert "refused 3 requests" in row_text(notice)
    assert notice.locator("a").get_attribute("href") == "/settings/#param-286"
    web.screenshot(page, tmp_path, "dashboard-policy-notice.png")

    # From the failed attempt, one click to why.
    page.goto("/attempts/")
    row = page.locator('table#attempts tr[data-reason="ua_policy"]').first
    assert UA_3CX in row_text(row)
    with page.expect_navigation():
        row.locator("a.why").click()
    assert page.url.endswith("/extensions/660001/diagnosis/"), page.url
    finding = page.locator('article.finding[data-reason="ua_policy"]')
    text = row_text(finding)
    assert "3 times" in text and UA_3CX in text and "matches no accepted pattern" in text, text
    assert "Turn off soft parameter 286" in text, text
    assert finding.locator("a.soft-parameter").get_attribute("href") == "/settings/#param-286"
    web.screenshot(page, tmp_path, "diagnosis-ua-policy.png")

    # Turn off 286 right there; back on the diagnosis page.
    with page.expect_navigation():
        finding.locator("#turn-off-286 button").click()
    assert page.url.endswith("/extensions/660001/diagnosis/"), page.url
    assert "286 third_party_ua_inspection saved" in row_text(page.locator(".messages"))
    assert "286 is off now" in row_text(page.locator('article.finding[data-reason="ua_policy"]'))
    assert SoftParameter.objects.get(number=286).value is False
    change = SoftParameterChange.objects.filter(parameter_id=286).first()
    assert (change.actor, change.via, change.new_value) == (ADMIN, "web", False)
    web.screenshot(page, tmp_path, "diagnosis-286-turned-off.png")

    # The same phone registers now (the worker applies 286 within half a second).
    assert eventually(lambda: register_as_3cx(stack)), stack.logs()
    binding = Binding.objects.get(extension__number="660001")
    assert binding.user_agent == UA_3CX and binding.transport == "tcp"

    # Before turning 286 on again: who would it refuse? 287's patterns are filled in.
    page.goto("/settings/#dry-run")
    assert page.input_value("#dry-run-patterns") == "Huawei, eSpace"
    with page.expect_navigation():
        page.locator("#dry-run-form button[type=submit]").click()
    refused = page.locator("#dry-run-refused li")
    assert refused.count() == 1 and UA_3CX in row_text(refused.first), row_text(page.locator("#dry-run"))
    assert refused.first.get_attribute("data-extension") == "660001"
    page.locator("#dry-run").scroll_into_view_if_needed()
    web.screenshot(page, tmp_path, "settings-dry-run.png")
    page.fill("#dry-run-patterns", "Huawei, eSpace, 3CXPhone")
    with page.expect_navigation():
        page.locator("#dry-run-form button[type=submit]").click()
    assert "No registered device would be refused" in row_text(page.locator("#dry-run-summary"))
    assert SoftParameter.objects.get(number=286).value is False  # a dry run writes nothing
    assert not errors_in_console(page), page.console_messages_seen


def test_a_ban_appears_live_and_is_lifted_in_one_click(page, stack, tmp_path):
    services.record_attempts([scanner_attempt(index) for index in range(12)])
    log_in(page, stack)
    page.goto("/bans/")
    wait_live(page, stack)
    assert page.locator("#active-bans tbody.ban").count() == 0
    web.mark_no_reload(page)

    [ban] = services.ban_sources([BanDecision("203.0.113.66", time.time() + 3600, 12,
                                              "12 failed authentications in 60 s")])

    row = wait_for(page.locator(f'#active-bans tbody.ban[data-ban="{ban.pk}"]'), page, stack, "the new ban")
    assert web.still_not_reloaded(page), "the bans page reloaded instead of updating live"
    text = row_text(row)
    assert "203.0.113.66" in text and "12 failed authentications in 60 s" in text, text
    assert "Evidence: 12 failed attempts from 203.0.113.66" in text, text
    assert row.locator("tr.evidence tbody tr").count() == 12
    web.screenshot(page, tmp_path, "bans.png")

    with page.expect_navigation():
        row.locator("form.lift button").click()
    wait_for(page.locator(f'#past-bans tbody.ban[data-ban="{ban.pk}"]'), page, stack, "the lifted ban")
    assert page.locator(f'#active-bans tbody.ban[data-ban="{ban.pk}"]').count() == 0
    ban.refresh_from_db()
    assert not ban.active and ban.lifted_by == ADMIN
    assert f"by {ADMIN}" in row_text(page.locator(f'#past-bans tbody.ban[data-ban="{ban.pk}"]'))
    assert not errors_in_console(page), page.console_messages_seen


def scanner_attempt(index):
    return Attempt(time.time() - 60 + index, Source("udp", "203.0.113.66", 5060 + index), "REGISTER",
                   "sip:1001@regis.test", "1001", "1001", "friendly-scanner", "challenged", Reason.WRONG_PASSWORD,
                   401)


def test_a_traced_registration_is_drawn_as_a_ladder(page, stack, tmp_path):
    services.create_extension("1001", PASSWORD)
    log_in(page, stack)

    page.goto("/trace/")
    page.fill("#trace-extension", "1001")
    with page.expect_navigation():
        page.locator("#trace-start-extension button[type=submit]").click()
    wait_for(page.locator('#trace-targets li[data-kind="extension"][data-value="1001"]'), page, stack,
             "1001 in the list of traced targets")
    assert SoftParameter.objects.get(number=310).value == ["1001"]
    wait_live(page, stack)

    # A phone registers once the worker traces 1001 (it re-reads soft parameters every 0.5 s).
    def traced_registration():
        with e2e.SipClient((e2e.LOOPBACK, stack.runsip.port)) as phone:
            challenge, final = phone.register_with_digest("1001", PASSWORD, algorithm="MD5")
            assert (challenge.status, final.status) == (401, 200), stack.logs()
            return eventually(lambda: TracedMessage.objects.filter(call_id=phone.call_id).count() == 4,
                              timeout=2.0) and phone.call_id

    call_id = eventually(traced_registration)
    assert call_id, f"no traced registration\n{stack.logs()}"

    # The dialog shows up on the open trace page without a reload.
    row = wait_for(page.locator(f'table#trace-dialogs tr[data-call-id="{call_id}"]'), page, stack,
                   "the traced dialog's row")
    text = row_text(row)
    assert "1001" in text and "127.0.0.1:" in text and re.search(r"\b4\b", text), text
    web.screenshot(page, tmp_path, "trace-dialogs.png")

    with page.expect_navigation():
        row.locator("td.call-id a").click()
    assert page.locator("#call-id").inner_text() == call_id
    arrows = page.locator("#ladder a.arrow")
    assert arrows.count() == 4
    labels = [arrows.nth(index).locator("text.label").text_content() for index in range(4)]
    assert labels == ["REGISTER sip:regis.test", "401 Unauthorized", "REGISTER sip:regis.test", "200 OK"], labels
    directions = [arrows.nth(index).get_attribute("data-direction") for index in range(4)]
    assert directions == ["in", "out", "in", "out"]
    times = [arrows.nth(index).locator("text.time").text_content() for index in range(4)]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", value) for value in times), times
    assert page.locator("#ladder text.party-label").all_text_contents()[-1] == "Regis"
    web.screenshot(page, tmp_path, "trace-ladder.png")

    # Clicking the authenticated REGISTER opens its whole message.
    message_id = arrows.nth(2).get_attribute("data-message")
    details = page.locator(f"details#msg-{message_id}")
    assert details.get_attribute("open") is None
    arrows.nth(2).click()
    page.wait_for_function(f"document.getElementById('msg-{message_id}').open", timeout=web.TIMEOUT_MS)
    shown = details.locator("pre").inner_text()
    assert shown.startswith("REGISTER sip:regis.test SIP/2.0") and "Authorization: Digest" in shown, shown
    assert PASSWORD not in shown and PASSWORD not in page.content()
    assert "selected" in (arrows.nth(2).get_attribute("class") or "")
    web.screenshot(page, tmp_path, "trace-ladder-message.png")
    assert not errors_in_console(page), page.console_messages_seen
