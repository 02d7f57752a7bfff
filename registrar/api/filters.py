"""Filter sets of bans and the SIP trace, shared by the API and the web UI (like those of
``registrar.filters``, where they belong once that module is free to change).

Address filters parse the address, so that a mistyped one is a 400 naming the filter
rather than a database error (PostgreSQL stores addresses as ``inet``).
"""
import django_filters
from django import forms
from django.db.models import Q
from django.utils import timezone

from registrar.models import Ban, TracedMessage


class AddressFilter(django_filters.Filter):
    field_class = forms.GenericIPAddressField


class BanFilterSet(django_filters.FilterSet):
    ip = AddressFilter(field_name="ip", label="Address")
    active = django_filters.BooleanFilter(method="filter_active", label="In force",
                                          help_text="true: bans in force now; false: lifted or expired ones.")

    class Meta:
        model = Ban
        fields = ["ip", "active"]

    def filter_active(self, queryset, name, value):
        in_force = Q(lifted_at__isnull=True, expires_at__gt=timezone.now())
        return queryset.filter(in_force if value else ~in_force)


class TraceFilterSet(django_filters.FilterSet):
    extension = django_filters.CharFilter(field_name="extension_number", label="Extension")
    ip = AddressFilter(field_name="peer_ip", label="Phone address")
    call_id = django_filters.CharFilter(field_name="call_id", label="Call-ID")

    class Meta:
        model = TracedMessage
        fields = ["extension", "ip", "call_id"]
