"""Read models for the dashboard and the API's summary: counts and the 24-hour series."""
from datetime import timedelta

from django.db.models import Count, Q
from django.utils import timezone

from registrar.models import AuthAttempt, Binding, Extension, HourlyStat


def summary(now=None) -> dict:
    now = now or timezone.now()
    live = Binding.objects.filter(expires_at__gt=now)
    failures = AuthAttempt.objects.aggregate(
        last_hour=Count("id", filter=Q(created_at__gte=now - timedelta(hours=1))),
        last_day=Count("id", filter=Q(created_at__gte=now - timedelta(hours=24))),
    )
    return {
        "extensions": Extension.objects.count(),
        "extensions_registered": live.values("extension_id").distinct().count(),
        "devices_online": live.count(),
        "failed_attempts_last_hour": failures["last_hour"],
        "failed_attempts_last_24h": failures["last_day"],
    }


def hourly_series(hours: int = 24, now=None) -> list[dict]:
    """One entry per hour, oldest first, including the current hour; empty hours are zero."""
    now = now or timezone.now()
    current_hour = now.replace(minute=0, second=0, microsecond=0)
    start = current_hour - timedelta(hours=hours - 1)
    counted = {stat.hour: stat for stat in HourlyStat.objects.filter(hour__gte=start)}
    series = []
    for offset in range(hours):
        hour = start + timedelta(hours=offset)
        stat = counted.get(hour)
        series.append({"hour": hour, "registrations": stat.registrations if stat else 0,
                       "failures": stat.failures if stat else 0})
    return series


def extension_states(extensions, now=None) -> dict:
    """{extension id: "online" | "failing" | "offline"} — failing means failures in the
    last hour and no live binding."""
    now = now or timezone.now()
    ids = [extension.pk for extension in extensions]
    numbers = {extension.number: extension.pk for extension in extensions}
    online = set(Binding.objects.filter(extension_id__in=ids, expires_at__gt=now)
                 .values_list("extension_id", flat=True))
    failing_numbers = set(AuthAttempt.objects.filter(extension_number__in=list(numbers),
                                                     created_at__gte=now - timedelta(hours=1))
                          .values_list("extension_number", flat=True))
    failing = {numbers[number] for number in failing_numbers}
    return {pk: "online" if pk in online else "failing" if pk in failing else "offline" for pk in ids}
