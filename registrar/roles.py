"""The two roles of Regis users: admins write, viewers read.

Roles are Django groups (created by a migration), so they are managed with Django's
own user admin; a superuser is always an admin.
"""
ADMIN_GROUP = "admin"
VIEWER_GROUP = "viewer"


def _groups(user):
    cached = getattr(user, "_regis_groups", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True)) if user.is_authenticated else set()
        user._regis_groups = cached
    return cached


def can_write(user) -> bool:
    if not (user.is_authenticated and user.is_active):
        return False
    return user.is_superuser or ADMIN_GROUP in _groups(user)


def can_read(user) -> bool:
    if not (user.is_authenticated and user.is_active):
        return False
    return user.is_superuser or bool({ADMIN_GROUP, VIEWER_GROUP} & _groups(user))


def ensure_groups() -> None:
    """Create the role groups if missing (a migration creates them; a flushed test
    database or a hand-made one may not have them)."""
    from django.contrib.auth.models import Group

    for name in (ADMIN_GROUP, VIEWER_GROUP):
        Group.objects.get_or_create(name=name)
