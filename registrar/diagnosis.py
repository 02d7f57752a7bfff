"""Why is this phone failing? Reasons turned into findings an admin can act on.

Read-only: it looks at an extension's recent attempts, its bindings, the bans of the
sources that tried it and the policy in force, and says — per reason — what was
expected, what was received (the attempt's detail), and the one-sentence fix, naming
the soft parameter when a policy is the cause. ``policy_notices`` finds the policies
that cause repeated rejections across all extensions, for the dashboard, and
``ua_policy_dry_run`` shows who a User-Agent policy would lock out before it is on.
"""
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Max
from django.utils import timezone

from registrar import services
from registrar.models import AuthAttempt, Ban, Binding
from registrar.sip.reasons import EXPLANATIONS, Reason

WINDOW = timedelta(hours=24)
NOTICE_THRESHOLD = 3


@dataclass(frozen=True)
class Finding:
    reason: str
    explanation: str
    count: int
    last_seen: object
    received: str
    fix: str
    soft_parameter: int | None = None


def _fix(reason: Reason, extension_number: str, policy, sample) -> tuple[str, int | None]:
    realm = settings.SIP_REALM
    fixes = {
        Reason.UNKNOWN_USER: (f"Create extension {extension_number}, or correct the user name configured on "
                              "the phone.", None),
        Reason.WRONG_PASSWORD: ("Enter the extension's password on the phone again, or set a new password here "
                                "and on the phone.", None),
        Reason.REALM_MISMATCH: (f"Set the phone's realm (authentication domain) to '{realm}', or leave it empty so "
                                "the phone takes the server's.", None),
        Reason.AUTH_USER_MISMATCH: (f"Set the phone's authentication user name to {extension_number}, the same as "
                                    "its extension.", None),
        Reason.STALE_NONCE: ("Nothing to do if it happens once: the phone retries with the new challenge. If it "
                             "repeats, check the phone's firmware, or raise soft parameter 103 (nonce lifetime).",
                             103),
        Reason.FORGED_NONCE: ("The phone answers a challenge this server never sent: check that its registrar "
                              "address points at this server, or that all Regis workers share SECRET_KEY.", None),
        Reason.REPLAYED_NONCE: ("The same answer was sent twice: a replay, or a phone bug; update its firmware or "
                                "check the network path for duplicates.", None),
        Reason.UNSUPPORTED_ALGORITHM: (f"Configure the phone for {' or '.join(policy.digest_algorithms)}, or add "
                                       "its algorithm to soft parameter 104 (digest algorithms).", 104),
        Reason.MALFORMED_CREDENTIALS: ("The phone's Authorization header is broken: update its firmware.", None),
        Reason.DISABLED_EXTENSION: ("Enable the extension if the phone should register.", None),
        Reason.INTERVAL_TOO_BRIEF: (f"Set the phone's registration interval to at least {policy.min_expires} s, or "
                                    "lower soft parameter 100 (min expires).", 100),
        Reason.TOO_MANY_CONTACTS: ("Raise the extension's max contacts, or make the phone send fewer contacts.",
                                   None),
        Reason.OUT_OF_ORDER: ("The phone reuses an old CSeq on the same Call-ID: restart it; if it repeats, update "
                              "its firmware.", None),
        Reason.BAD_REQUEST: ("The phone sent a REGISTER this server cannot accept (the detail says what): update "
                             "its firmware, or turn off the SIP ALG of the router in between, which rewrites SIP "
                             "messages.", None),
        Reason.UA_POLICY: _ua_fix(sample.user_agent if sample else "", policy),
        Reason.BANNED_SOURCE: ("Lift the ban if the address is legitimate, and add its network to soft parameter "
                               "304 (never banned).", 304),
        Reason.WATCH_NOT_ALLOWED: (f"Add {extension_number} (or *) to the may-watch list of the extension that "
                                   "subscribed (the authentication user) if it should see these registrations.",
                                   None),
        Reason.NOT_REGISTERED: ("Make the device register first (fix its REGISTER's failure above): a device may "
                                "subscribe to registration state only while it is registered from that address.",
                                None),
        Reason.TOKEN_INACTIVE: ("Get a new token from the authorization server for the phone (this one was revoked "
                                "or never issued there).", None),
        Reason.TOKEN_EXPIRED: ("The app must refresh its OAuth token before it expires and send the new one.", None),
        Reason.TOKEN_INVALID: (f"Check the OAuth server setting of extension {extension_number}: its JWKS URL, "
                               "issuer and audience must match the tokens the app gets.", None),
        Reason.TOKEN_USER_MISMATCH: (f"The token is for another user: log the app in as {extension_number}.", None),
        Reason.TOKEN_SCOPE: ("Grant the app the scope the OAuth server setting requires, or clear that "
                             "requirement.", None),
        Reason.AUTH_SERVER_FAILED: ("Check that the OAuth authorization server is up and reachable from Regis "
                                    "(its URL, client credentials and timeout on the OAuth servers page).", None),
        Reason.BEARER_NOT_ALLOWED: (f"Set extension {extension_number}'s authentication mode to bearer or either, "
                                    "with an OAuth server, or configure the app with the SIP password.", None),
        Reason.DIGEST_NOT_ALLOWED: (f"Configure the app to log in with OAuth, or set extension {extension_number}'s "
                                    "authentication mode to digest or either.", None),
    }
    return fixes[reason]


def _ua_fix(user_agent, policy):
    if any(pattern.lower() in user_agent.lower() for pattern in policy.denied_user_agents):
        return (f"'{user_agent}' matches the scanner deny list (soft parameter 288); remove the pattern only if "
                "this is a real phone.", 288)
    return (f"Turn off soft parameter 286 (third-party User-Agent inspection: `softparam set 286 0`), or add a "
            f"pattern matching '{user_agent}' to soft parameter 287.", 286)


def diagnose(extension_number: str, now=None) -> dict:
    """Findings for one extension over the last 24 hours, most frequent first."""
    now = now or timezone.now()
    policy = services.current_policy()
    attempts = AuthAttempt.objects.filter(extension_number=extension_number, created_at__gte=now - WINDOW)
    findings = []
    for row in attempts.values("reason").annotate(count=Count("id"), last_seen=Max("created_at")).order_by(
            "-count"):
        reason = Reason(row["reason"])
        sample = attempts.filter(reason=reason.value).order_by("-created_at").first()
        fix, parameter = _fix(reason, extension_number, policy, sample)
        findings.append(Finding(reason.value, EXPLANATIONS[reason], row["count"], row["last_seen"],
                                _received(sample), fix, parameter))
    sources = set(attempts.values_list("source_ip", flat=True))
    bans = list(Ban.objects.filter(ip__in=sources, lifted_at__isnull=True, expires_at__gt=now))
    for ban in bans:
        fix, parameter = _fix(Reason.BANNED_SOURCE, extension_number, policy, None)
        findings.insert(0, Finding(Reason.BANNED_SOURCE.value, EXPLANATIONS[Reason.BANNED_SOURCE], 1,
                                   ban.created_at, f"{ban.ip} banned since {ban.created_at:%Y-%m-%d %H:%M} UTC: "
                                   f"{ban.detail}", fix, parameter))
    return {
        "extension": extension_number,
        "registered": Binding.objects.filter(extension__number=extension_number, expires_at__gt=now).count(),
        "findings": findings,
        "bans": bans,
    }


def _received(sample) -> str:
    if sample is None:
        return ""
    parts = [f"from {sample.source_ip}:{sample.source_port} ({sample.transport})"]
    if sample.user_agent and sample.user_agent not in sample.detail:  # a UA policy's detail names it already
        parts.append(f"User-Agent '{sample.user_agent}'")
    if sample.auth_username and sample.auth_username != sample.extension_number:
        parts.append(f"auth user '{sample.auth_username}'")
    if sample.detail:
        parts.append(sample.detail)
    return "; ".join(parts)


POLICY_REASONS = {Reason.UA_POLICY: 286, Reason.INTERVAL_TOO_BRIEF: 100, Reason.UNSUPPORTED_ALGORITHM: 104}


def policy_notices(now=None) -> list[dict]:
    """Policies that rejected registrations repeatedly in the last hour, for the dashboard."""
    now = now or timezone.now()
    rows = (AuthAttempt.objects.filter(created_at__gte=now - timedelta(hours=1),
                                       reason__in=[r.value for r in POLICY_REASONS])
            .values("reason").annotate(count=Count("id"), extensions=Count("extension_number", distinct=True)))
    notices = []
    for row in rows:
        if row["count"] < NOTICE_THRESHOLD:
            continue
        reason = Reason(row["reason"])
        notices.append({"reason": reason.value, "soft_parameter": POLICY_REASONS[reason], "count": row["count"],
                        "extensions": row["extensions"],
                        "message": f"Soft parameter {POLICY_REASONS[reason]} refused {row['count']} requests from "
                                   f"{row['extensions']} extension(s) in the last hour: {EXPLANATIONS[reason]}"})
    active_bans = Ban.objects.filter(lifted_at__isnull=True, expires_at__gt=now).count()
    if active_bans:
        notices.append({"reason": Reason.BANNED_SOURCE.value, "soft_parameter": 300, "count": active_bans,
                        "extensions": 0, "message": f"{active_bans} source address(es) are banned."})
    return notices


def ua_policy_dry_run(accepted_patterns=None) -> list[Binding]:
    """The live bindings that third-party UA inspection (286) would refuse at their next
    refresh, with the given accepted patterns (default: soft parameter 287 as stored)."""
    policy = services.current_policy()
    patterns = [p.lower() for p in (policy.accepted_user_agents if accepted_patterns is None else accepted_patterns)]
    return [binding for binding in services.live_bindings().select_related("extension")
            if not any(pattern in binding.user_agent.lower() for pattern in patterns)]
