"""Viewers read, admins write — the same roles as the web UI (registrar.roles)."""
from rest_framework.permissions import SAFE_METHODS, BasePermission

from registrar.roles import can_read, can_write


class ReadOrAdminWrite(BasePermission):
    message = "Your role does not allow this: viewers read, admins write."

    def has_permission(self, request, view):
        if request.method in SAFE_METHODS:
            return can_read(request.user)
        return can_write(request.user)


class HasRole(BasePermission):
    """Any method, for any user with a role: for what concerns users themselves (their API token)."""

    message = "You need the viewer or admin role."

    def has_permission(self, request, view):
        return can_read(request.user)
