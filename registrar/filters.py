"""Filter sets shared by the REST API and the web UI, so both filter the same way."""
import django_filters
from django.db.models import Q
from django.utils import timezone

from registrar.choices import ReasonCode, Transport
from registrar.models import AuthAttempt, Binding, Extension


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
    source_ip = django_filters.CharFilter(field_name="source_ip", lookup_expr="exact", label="Source IP")
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
    source_ip = django_filters.CharFilter(field_name="source_ip", label="Source IP")
    reason = django_filters.ChoiceFilter(choices=ReasonCode.choices)
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte", label="From (ISO time)")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt", label="Until (ISO time)")

    class Meta:
        model = AuthAttempt
        fields = ["extension", "source_ip", "reason", "since", "until"]
