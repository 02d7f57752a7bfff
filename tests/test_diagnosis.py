"""Findings with their fixes, policy notices and the User-Agent policy dry run."""
import pytest
from django.utils import timezone

from registrar import diagnosis, services
from registrar.sip.core import Attempt, Origin, Source, StoreRegistration
from registrar.sip.policy import Policy
from registrar.sip.protection import BanDecision
from registrar.sip.reasons import Reason
from registrar.sip.registrar import ContactRequest, RegisterRequest

pytestmark = pytest.mark.django_db


def attempt(reason, user_agent="Phone", detail="", ip="192.0.2.10", number="1001"):
    return Attempt(timezone.now().timestamp(), Source("udp", ip, 5060), "REGISTER", f"sip:{number}@x", number,
                   number, user_agent, "rejected", reason, 403, detail)


def test_a_ua_policy_rejection_names_soft_parameter_286_and_the_user_agent():
    services.record_attempts([attempt(Reason.UA_POLICY, "3CXPhone 6.0", "User-Agent '3CXPhone 6.0' matches no "
                                                                       "accepted pattern")] * 3)
    finding, = diagnosis.diagnose("1001")["findings"]
    assert finding.count == 3 and finding.soft_parameter == 286
    assert "3CXPhone 6.0" in finding.received and "softparam set 286 0" in finding.fix
    notice, = diagnosis.policy_notices()
    assert notice["soft_parameter"] == 286 and notice["count"] == 3


def test_a_realm_mismatch_says_what_was_received_and_expected(settings):
    services.record_attempts([attempt(Reason.REALM_MISMATCH, detail="credentials are for realm 'asterisk', "
                                                                     f"ours is '{settings.SIP_REALM}'")])
    finding, = diagnosis.diagnose("1001")["findings"]
    assert "'asterisk'" in finding.received and settings.SIP_REALM in finding.fix


def test_a_ban_on_a_source_that_tried_the_extension_comes_first():
    services.record_attempts([attempt(Reason.WRONG_PASSWORD, ip="203.0.113.5")])
    ban, = services.ban_sources([BanDecision("203.0.113.5", timezone.now().timestamp() + 3600, 10,
                                             "10 failed attempts")])
    findings = diagnosis.diagnose("1001")["findings"]
    assert [f.reason for f in findings] == ["banned_source", "wrong_password"]
    assert "203.0.113.5" in findings[0].received
    services.lift_ban(ban, by="test")
    assert [f.reason for f in diagnosis.diagnose("1001")["findings"]] == ["wrong_password"]


def test_the_dry_run_lists_the_phones_a_ua_policy_would_lock_out():
    services.create_extension("1001", "pw")
    for port, user_agent in ((5001, "Yealink SIP-T46S"), (5002, "3CXPhone 6.0")):
        register = RegisterRequest("1001", f"c{port}", 1, False,
                                   (ContactRequest(f"sip:1001@192.0.2.1:{port}", "", None, "", None, 3600),))
        services.store_registrations([StoreRegistration(1, register, Origin("192.0.2.1", port, "udp", user_agent, ""),
                                                        5, Policy())], timezone.now().timestamp())
    locked_out = diagnosis.ua_policy_dry_run(["yealink"])
    assert [b.user_agent for b in locked_out] == ["3CXPhone 6.0"]
