"""What the SIP doors (runsip and the websocket door) keep in memory, read from the
database only when it changed: credentials, policy, bans and the OAuth setup.

Each part has a cheap version fingerprint; :func:`changes_since` (run in a database
thread) returns fresh snapshots of the parts whose fingerprint moved.
"""
from dataclasses import dataclass

from django.db.models import Count, Max

from registrar import oauth, services
from registrar.models import OAuthServer


@dataclass(frozen=True)
class Changes:
    versions: tuple
    credentials: dict | None = None
    policy: object = None
    bans: dict | None = None
    oauth: tuple | None = None  # (servers by id, extension auth by number)


def oauth_servers_version() -> tuple:
    row = OAuthServer.objects.aggregate(count=Count("id"), changed=Max("updated_at"))
    return row["count"], row["changed"]


def changes_since(versions) -> Changes:
    old = versions or (None, None, None, None)
    new = (services.extensions_version(), services.soft_parameters_version(), services.bans_version(),
           oauth_servers_version())
    extensions_changed = new[0] != old[0]
    return Changes(
        versions=new,
        credentials=services.credentials_snapshot() if extensions_changed else None,
        policy=services.current_policy() if new[1] != old[1] else None,
        bans=services.active_bans() if new[2] != old[2] else None,
        # Extensions carry their auth mode, so either change reloads the OAuth setup.
        oauth=oauth.oauth_snapshot() if extensions_changed or new[3] != old[3] else None,
    )
