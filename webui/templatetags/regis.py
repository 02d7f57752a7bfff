"""Template helpers of the web UI: roles, times, durations, countdowns, the nav and the 24-hour chart.

The chart is an inline SVG drawn here, on the server, so the dashboard needs no
JavaScript chart library and no CDN.
"""
import math
from datetime import datetime, timezone as dt_timezone

from django import template
from django.conf import settings
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from registrar import roles
from webui.forms import shown_value

register = template.Library()


@register.filter
def can_read(user):
    return roles.can_read(user)


@register.filter
def can_write(user):
    return roles.can_write(user)


@register.filter
def epoch(moment):
    return int(moment.timestamp()) if moment else ""


@register.filter
def from_epoch(seconds):
    return datetime.fromtimestamp(seconds, tz=dt_timezone.utc) if seconds is not None else None


@register.filter
def countdown(moment):
    """Time left until ``moment``, as live.js writes it while counting down."""
    seconds = int(moment.timestamp() - timezone.now().timestamp())
    if seconds <= 0:
        return "expired"
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {seconds:02d} s"
    return f"{seconds} s"


@register.filter
def seconds(value):
    """A duration or an interval for people: 12 ms, 1.5 s, 30 s, 5 min, 1 h, 1 day."""
    if value is None or value == "":
        return ""
    value = float(value)
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.0f} s" if value == int(value) else f"{value:.1f} s"
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if value >= size:
            amount = value / size
            shown = f"{amount:.0f}" if amount == int(amount) or amount >= 10 else f"{amount:.1f}"
            return f"{shown} {unit}{'s' if unit == 'day' and shown != '1' else ''}"
    return f"{value:.0f} s"


@register.filter
def ms_time(moment):
    """A time of day to the millisecond, in the current time zone (the SIP trace's resolution)."""
    if not moment:
        return ""
    local = timezone.localtime(moment)
    return f"{local:%H:%M:%S}.{local.microsecond // 1000:03d}"


@register.filter
def param_value(value):
    return shown_value(value)


@register.simple_tag(takes_context=True)
def nav_link(context, href, label):
    path = context["request"].path
    current = path == href if href == "/" else path.startswith(href)
    return format_html('<a href="{}"{}>{}</a>', href, mark_safe(' aria-current="page"') if current else "", label)


# -- the 24-hour chart -------------------------------------------------------------------
WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 12, 44
HOUR_LABEL_EVERY = 3


def _nice_step(largest: int) -> int:
    """A step of 1, 2 or 5 times a power of ten giving at most about four ticks."""
    rough = max(largest / 4, 1)
    power = 10 ** math.floor(math.log10(rough))
    return next(factor * power for factor in (1, 2, 5, 10) if factor * power >= rough)


def chart_geometry(series):
    """Bars, ticks and labels for ``stats.hourly_series``, in SVG user units."""
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    largest = max([1] + [max(hour["registrations"], hour["failures"]) for hour in series])
    step = _nice_step(largest)
    top = step * math.ceil(largest / step)
    slot = plot_width / max(len(series), 1)
    bar_width = slot * 0.4
    baseline = TOP + plot_height

    def y(count):
        return baseline - plot_height * count / top

    bars, labels = [], []
    for index, hour in enumerate(series):
        start = timezone.localtime(hour["hour"])
        x = LEFT + index * slot
        for offset, kind in ((0.1, "registrations"), (0.5, "failures")):
            count = hour[kind]
            bars.append({
                "kind": kind, "x": round(x + slot * offset, 1), "y": round(y(count), 1),
                "height": round(baseline - y(count), 1), "width": round(bar_width, 1),
                "title": f"{start:%H:%M}: {count} {kind if count != 1 else kind[:-1]}",
                "count": count,
            })
        if index % HOUR_LABEL_EVERY == 0:
            labels.append({"x": round(x + slot / 2, 1), "text": f"{start:%H:%M}"})
    ticks = [{"y": round(y(value), 1), "value": value} for value in range(0, top + 1, step)]
    zone = timezone.get_current_timezone_name()
    return {
        "width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT, "top": TOP, "baseline": baseline,
        "bars": [bar for bar in bars if bar["count"]], "labels": labels, "ticks": ticks,
        "label_y": baseline + 16, "axis_title_y": HEIGHT - 6, "middle_x": LEFT + plot_width / 2,
        "middle_y": TOP + plot_height / 2, "zone": zone,
        "registrations": sum(hour["registrations"] for hour in series),
        "failures": sum(hour["failures"] for hour in series),
    }


@register.inclusion_tag("webui/_chart.html")
def hourly_chart(series):
    return {"chart": chart_geometry(series)}


@register.simple_tag
def sip_domain():
    return settings.SIP_DOMAIN
