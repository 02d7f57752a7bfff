"""Filter sets shared by the REST API and the web UI, so both filter the same way.

Address filters parse the address, so that a mistyped one is a 400 naming the filter
rather than a database error (PostgreSQL stores addresses as ``inet``).
"""
import django_filters
from django import forms
from django.db.models import Q
from django.utils import timezone

from registrar.choices import ReasonCode, Transport
from registrar.models import AuthAttempt, Ban, Binding, Extension, TracedMessage


class AddressFilter(django_filters.Filter):
    field_class = forms.GenericIPAddressField


class ExtensionFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Number or name contains")
    enabled = django_filters.BooleanFilter()

    class Meta:
        model = Extension
        fields = ["q", "enabled"]

    def search(self, queryset, name, value):
        return queryset.filter(Q(number__icontains=value) | Q(display_name__icontains=value))


class BindingFilterSet(django_filters.FilterSet):
    extension = django_filters.CharFilter(field_name="extension__number", label="Extension number")
    source_ip = AddressFilter(field_name="source_ip", label="Source IP")
    transport = django_filters.ChoiceFilter(choices=Transport.choices)
    user_agent = django_filters.CharFilter(lookup_expr="icontains", label="User-Agent contains")

    class Meta:
        model = Binding
        fields = ["extension", "source_ip", "transport", "user_agent"]

    @property
    def qs(self):
        # Only live bindings: an expired one stopped counting at its expiry moment.
        return super().qs.filter(expires_at__gt=timezone.now())


class AuthAttemptFilterSet(django_filters.FilterSet):
    extension = django_filters.CharFilter(field_name="extension_number", label="Extension tried")
    source_ip = AddressFilter(field_name="source_ip", label="Source IP")
    reason = django_filters.ChoiceFilter(choices=ReasonCode.choices)
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte", label="From (ISO time)")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt", label="Until (ISO time)")

    class Meta:
        model = AuthAttempt
        fields = ["extension", "source_ip", "reason", "since", "until"]


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


# -- outbound trunks -------------------------------------------------------------------------
from registrar.choices import TrunkState  # noqa: E402
from registrar.models import Trunk  # noqa: E402


class TrunkFilterSet(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(field_name="status__state", choices=TrunkState.choices, label="State")

    class Meta:
        model = Trunk
        fields = ["enabled", "state"]


# -- calls ---------------------------------------------------------------------------------
from django.core.exceptions import ValidationError  # noqa: E402

from registrar.choices import CallKind  # noqa: E402
from registrar.models import Alert, Call  # noqa: E402


class StrictBooleanField(forms.NullBooleanField):
    """true/false (or 1/0); anything else is an error naming the filter rather than a filter quietly left out."""

    widget = forms.Select(choices=[("", "Any"), ("true", "Yes"), ("false", "No")])

    def to_python(self, value):
        if value in (None, ""):
            return None
        text = str(value).lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise ValidationError("Give true or false.", code="invalid")

    def validate(self, value):
        pass


class BooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class CallFilterSet(django_filters.FilterSet):
    """The call log's filters. This set parses and checks them; the query itself is
    ``registrar.calls.call_records`` (or ``active_calls`` with active=true), which the CLI
    shares too."""

    active = BooleanFilter(method="keep", label="Going on now",
                           help_text="true: only the calls going on now (the other filters are then ignored).")
    caller = django_filters.CharFilter(field_name="caller", label="Caller")
    dialled = django_filters.CharFilter(field_name="dialled", label="Number")
    kind = django_filters.ChoiceFilter(choices=CallKind.choices, label="Kind", empty_label="Any")
    status = django_filters.NumberFilter(field_name="status", label="Final status",
                                         help_text="The final SIP status of the INVITE (200, 486, 487...).")
    answered = BooleanFilter(method="keep", label="Answered")
    since = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="gte", label="From (ISO time)")
    until = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="lt", label="Until (ISO time)")

    class Meta:
        model = Call
        fields = ["caller", "dialled", "kind", "status", "answered", "since", "until", "active"]

    def keep(self, queryset, name, value):
        return queryset

    def filter_queryset(self, queryset):
        from registrar import calls  # it builds on the services, which build on nothing here

        given = {name: value for name, value in self.form.cleaned_data.items() if value not in (None, "")}
        if given.pop("active", False):
            return calls.active_calls()
        if "status" in given:
            given["status"] = int(given["status"])
        return calls.call_records(**given)


class AlertFilterSet(django_filters.FilterSet):
    unacknowledged = BooleanFilter(method="filter_unacknowledged", label="Waiting for acknowledgement",
                                   help_text="true: the emergency-call alerts nobody has acknowledged yet.")

    class Meta:
        model = Alert
        fields = ["event", "unacknowledged"]

    def filter_unacknowledged(self, queryset, name, value):
        from registrar import calls

        waiting = calls.unacknowledged_emergency_alerts()
        return queryset.filter(pk__in=waiting.values("pk")) if value else queryset.exclude(pk__in=waiting.values("pk"))
