"""The live-event contract: the one group, the message type and every payload's shape.

Producers (the SIP worker after each commit, services after theirs) build events with
these functions and hand them to :mod:`registrar.live`; the browser's websocket
consumer (``webui.consumers``) forwards them as they are. Every event is a flat JSON
object with a ``type`` and an ``at`` (seconds since the epoch):

- ``registration``: action "registered" or "unregistered", extension, contact, source
  ("ip:port"), transport, user_agent, expires_at (seconds, or null when unregistered)
- ``attempt``: a rejected or re-challenged request — extension, auth_username, source,
  transport, user_agent, reason (code), explanation (a sentence), status
- ``softparam``: number, name, value, by
- ``ban``: action "banned" or "lifted", ip, until, detail
- ``qualify``: a contact's OPTIONS ping changed what is known of it — binding (id),
  extension, contact, source ("ip:port"), transport, status ("reachable",
  "unreachable", "unknown"), rtt_ms (null when unreachable)
- ``call``: action "started", "changed" (ringing, answered) or "ended" — id (the Call
  row), caller, caller_name, dialled, callee, kind ("internal", "outbound",
  "emergency"), trunk (name, "" when none), state ("setup", "ringing", "answered",
  "ended"), started_at, answered_at, ended_at (seconds, or null), status (the INVITE's
  final status, or null), reason (how it ended, in words)
- ``alert``: action "raised" or "acknowledged" — id, event (an AlertEvent value, e.g.
  "emergency_call"), target, subject, text, created_at (seconds), acknowledged (bool),
  acknowledged_by, acknowledged_at (seconds, or null)
"""
import time

from registrar.sip.reasons import EXPLANATIONS, Reason

GROUP = "regis.live"
MESSAGE_TYPE = "live.events"


def registration_changed(action, extension, contact, source_ip, source_port, transport, user_agent,
                         expires_at, at=None):
    return {
        "type": "registration", "action": action, "extension": extension, "contact": contact,
        "source": f"{source_ip}:{source_port}", "transport": transport, "user_agent": user_agent,
        "expires_at": expires_at, "at": at if at is not None else time.time(),
    }


def binding_registered(binding):
    """From a stored :class:`registrar.models.Binding` (the dashboard's first feed items)."""
    return registration_changed("registered", binding.extension.number, binding.contact_uri, binding.source_ip,
                                binding.source_port, binding.transport, binding.user_agent,
                                binding.expires_at.timestamp(), binding.last_refreshed.timestamp())


def binding_removed(binding):
    return registration_changed("unregistered", binding.extension.number, binding.contact_uri, binding.source_ip,
                                binding.source_port, binding.transport, binding.user_agent, None)


def _attempt(extension, auth_username, ip, port, transport, user_agent, reason, status, at):
    reason = Reason(reason)
    return {
        "type": "attempt", "extension": extension, "auth_username": auth_username, "source": f"{ip}:{port}",
        "transport": transport, "user_agent": user_agent, "reason": reason.value,
        "explanation": EXPLANATIONS[reason], "status": status, "at": at,
    }


def attempt_recorded(attempt):
    """From a :class:`registrar.sip.core.Attempt`."""
    return _attempt(attempt.extension_number, attempt.auth_username, attempt.source.ip, attempt.source.port,
                    attempt.source.transport, attempt.user_agent, attempt.reason, attempt.status, attempt.at)


def attempt_stored(attempt):
    """From a stored :class:`registrar.models.AuthAttempt`."""
    return _attempt(attempt.extension_number, attempt.auth_username, attempt.source_ip, attempt.source_port,
                    attempt.transport, attempt.user_agent, attempt.reason, attempt.status,
                    attempt.created_at.timestamp())


def soft_parameter_changed(parameter, by):
    return {
        "type": "softparam", "number": parameter.number, "name": parameter.name, "value": parameter.value,
        "by": getattr(by, "username", None) or str(by or ""), "at": time.time(),
    }


def ban_changed(ban, action):
    return {"type": "ban", "action": action, "ip": ban.ip, "until": ban.expires_at.timestamp(),
            "detail": ban.detail, "at": time.time()}


def contact_qualified(binding_id, extension, contact, source_ip, source_port, transport, status, rtt_ms, at=None):
    return {
        "type": "qualify", "binding": binding_id, "extension": extension, "contact": contact,
        "source": f"{source_ip}:{source_port}", "transport": transport, "status": status, "rtt_ms": rtt_ms,
        "at": at if at is not None else time.time(),
    }


def _seconds(moment):
    return moment.timestamp() if moment is not None else None


def call_changed(call, action):
    """From a stored :class:`registrar.models.Call`."""
    return {
        "type": "call", "action": action, "id": call.pk, "caller": call.caller, "caller_name": call.caller_name,
        "dialled": call.dialled, "callee": call.callee, "kind": call.kind, "trunk": call.trunk_name,
        "state": call.state, "started_at": _seconds(call.started_at), "answered_at": _seconds(call.answered_at),
        "ended_at": _seconds(call.ended_at), "status": call.status, "reason": call.reason, "at": time.time(),
    }


def alert_changed(alert, action):
    """From a stored :class:`registrar.models.Alert`."""
    return {
        "type": "alert", "action": action, "id": alert.pk, "event": alert.event, "target": alert.target,
        "subject": alert.subject, "text": alert.text, "created_at": _seconds(alert.created_at),
        "acknowledged": alert.acknowledged_at is not None, "acknowledged_by": alert.acknowledged_by,
        "acknowledged_at": _seconds(alert.acknowledged_at), "at": time.time(),
    }
