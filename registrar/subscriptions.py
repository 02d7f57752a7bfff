"""Reg-event subscriptions (RFC 3680): the only code that writes the Subscription table.

runsip's notifier (:mod:`registrar.worker.subscriptions`) calls these from its database
thread: a SUBSCRIBE creates, refreshes or ends a row; every NOTIFY sent advances the
row's local CSeq and reginfo version first, so that after a restart the next NOTIFY
still counts up from the last one sent. Rows come back as
:class:`registrar.sip.regevent.Dialog` values, the shape the sans-IO code works with.
The reads of bindings the notifier needs (an AOR's live contacts, whether a device is
registered) are here too, next to the writes they decide.
"""
from datetime import datetime, timezone as dt_timezone

from django.db import transaction
from django.db.models import F

from registrar.models import Binding, Extension, Subscription
from registrar.sip.regevent import ContactState, Dialog, StoreSubscription

ROUTE_SEPARATOR = "\n"


def _from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=dt_timezone.utc)


def _dialog(row: Subscription, watched_number: str) -> Dialog:
    return Dialog(
        id=row.pk, watched_id=row.watched_id, watched=watched_number, subscriber=row.subscriber,
        call_id=row.call_id, remote_tag=row.remote_tag, local_tag=row.local_tag, event_id=row.event_id,
        remote_target=row.remote_target,
        route_set=tuple(route for route in row.route_set.split(ROUTE_SEPARATOR) if route),
        remote_uri=row.remote_uri, local_uri=row.local_uri, remote_cseq=row.remote_cseq, local_cseq=row.local_cseq,
        version=row.version, transport=row.transport, source_ip=row.source_ip, source_port=row.source_port,
        flow=row.flow, expires_at=row.expires_at.timestamp())


# -- reads -------------------------------------------------------------------------------
def extension_id(number: str) -> int | None:
    return Extension.objects.filter(number=number).values_list("pk", flat=True).first()


def registered_from(number: str, ip: str, now: float) -> bool:
    """Whether extension ``number`` has a live binding whose REGISTER came from ``ip``."""
    return Binding.objects.filter(extension__number=number, source_ip=ip, expires_at__gt=_from_epoch(now)).exists()


def contact_states(extension_ids, now: float) -> dict[int, dict[str, ContactState]]:
    """{extension id: {contact URI: ContactState}} of the live bindings; every id is a key."""
    states = {extension_id: {} for extension_id in extension_ids}
    rows = Binding.objects.filter(extension_id__in=states, expires_at__gt=_from_epoch(now)).values_list(
        "extension_id", "contact_uri", "q", "call_id", "cseq", "expires_at", "first_registered", "last_refreshed",
        "flow")
    for extension_id, uri, q, call_id, cseq, expires_at, first_registered, last_refreshed, flow in rows:
        states[extension_id][uri] = ContactState(uri, q, call_id, cseq, expires_at.timestamp(),
                                                 first_registered.timestamp(), last_refreshed.timestamp(), flow)
    return states


def find(call_id: str, remote_tag: str, local_tag: str) -> Dialog | None:
    row = (Subscription.objects.select_related("watched")
           .filter(call_id=call_id, remote_tag=remote_tag, local_tag=local_tag).first())
    return _dialog(row, row.watched.number) if row is not None else None


def dialogs(transports=None) -> list[Dialog]:
    rows = Subscription.objects.select_related("watched").order_by("pk")
    if transports is not None:
        rows = rows.filter(transport__in=transports)
    return [_dialog(row, row.watched.number) for row in rows]


def listing():
    """For the admin and the API: every subscription, watched extension included."""
    return Subscription.objects.select_related("watched").order_by("watched__number", "created_at")


# -- writes ------------------------------------------------------------------------------
def create(action: StoreSubscription, watched_id: int, expires_at: float) -> Dialog:
    """A new subscription, its first NOTIFY (CSeq 1, version 0) already counted."""
    subscribe = action.subscribe
    row = Subscription.objects.create(
        watched_id=watched_id, subscriber=action.subscriber, call_id=subscribe.call_id,
        remote_tag=subscribe.remote_tag, local_tag=subscribe.local_tag, event_id=subscribe.event_id[:128],
        remote_target=subscribe.remote_target[:1024], route_set=ROUTE_SEPARATOR.join(subscribe.route_set),
        remote_uri=subscribe.remote_uri[:1024], local_uri=subscribe.local_uri[:1024],
        remote_cseq=subscribe.remote_cseq, local_cseq=1, version=0, transport=action.transport,
        source_ip=action.source_ip, source_port=action.source_port, flow=action.flow,
        expires_at=_from_epoch(expires_at), created_at=_from_epoch(action.now))
    return _dialog(row, subscribe.watched)


def refresh(dialog: Dialog, action: StoreSubscription, expires_at: float) -> Dialog | None:
    """A refresh in the dialog: new expiry, remote target and source; the NOTIFY it
    triggers counted. None when the row is gone meanwhile."""
    subscribe = action.subscribe
    fields = {"remote_cseq": subscribe.remote_cseq, "expires_at": _from_epoch(expires_at),
              "transport": action.transport, "source_ip": action.source_ip, "source_port": action.source_port,
              "flow": action.flow, "local_cseq": F("local_cseq") + 1, "version": F("version") + 1}
    if subscribe.remote_target:
        fields["remote_target"] = subscribe.remote_target[:1024]
    with transaction.atomic():
        if not Subscription.objects.filter(pk=dialog.id).update(**fields):
            return None
        row = Subscription.objects.get(pk=dialog.id)
    return _dialog(row, dialog.watched)


def advance(ids) -> dict[int, tuple[int, int]]:
    """Count one more NOTIFY for each subscription: {id: (local CSeq, version)} of the rows
    that still exist (a deleted extension takes its subscriptions with it)."""
    ids = list(ids)
    if not ids:
        return {}
    with transaction.atomic():
        Subscription.objects.filter(pk__in=ids).update(local_cseq=F("local_cseq") + 1, version=F("version") + 1)
        return {pk: (cseq, version) for pk, cseq, version in
                Subscription.objects.filter(pk__in=ids).values_list("pk", "local_cseq", "version")}


def end(ids) -> int:
    ids = list(ids)
    if not ids:
        return 0
    deleted, _ = Subscription.objects.filter(pk__in=ids).delete()
    return deleted
