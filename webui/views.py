"""The browser's pages: dashboard, extensions and why they fail, registrations, failed
attempts, bans, soft parameters (with the User-Agent policy dry run), the SIP trace,
operations (jobs, SIP workers, alerts, webhook deliveries) with alert routing, outbound
trunks, the dial plan, calls (live and their records) with the dashboard's emergency-call
banners, and the user's own API token.

A view unpacks the request, calls a service (the only write path) or a read model
(``registrar.stats``, and the filter sets of ``registrar.filters`` that the API uses
too, so a page lists exactly what the same query to the API lists), and renders.

Roles (``registrar.roles``): every page needs the reader role; every write needs the
admin role, and so do the pages that exist only to write (forms, confirmations).

Pages that update live render their changing parts from partial templates; with
``?partial=1`` a page returns only those parts (elements with ids), which live.js
swaps in after a websocket event.
"""
import csv
import itertools
from datetime import timedelta
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import Http404, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from rest_framework.authtoken.models import Token

from registrar import diagnosis, events, services, stats, trace
from registrar.filters import AuthAttemptFilterSet, BindingFilterSet, ExtensionFilterSet, TraceFilterSet
from registrar.models import (AlertEvent, AlertRoute, AuthAttempt, Ban, Binding, Extension, JobOutcome, SoftParameter,
                              SoftParameterChange, TracedMessage, Webhook)
from registrar.roles import can_read, can_write
from webui.forms import (AlertRouteForm, ExtensionCreateForm, ExtensionEditForm, PasswordForm, SoftParameterForm,
                         TraceTargetForm, WebhookCreateForm, WebhookForm, WebhookSecretForm, shown_value)

EXTENSIONS_PER_PAGE = 100
ATTEMPTS_PER_PAGE = 50
REGISTRATIONS_PER_PAGE = 100
TIMELINE_LENGTH = 50
FEED_LENGTH = 20
AUDIT_LENGTH = 100
EVIDENCE_LENGTH = 20
PAST_BANS = 50
DRY_RUN_LENGTH = 200
DIALOGS_PER_PAGE = 50
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# ExtensionFilterSet's "enabled" reads true/false; its own widget labels "any" as "Unknown".
ENABLED_CHOICES = [("", "Any"), ("true", "Enabled"), ("false", "Disabled")]


# -- roles ------------------------------------------------------------------------------
def _requires(*, to_read, to_write):
    def decorator(view):
        @login_required
        @wraps(view)
        def checked(request, *args, **kwargs):
            allowed = to_read if request.method in SAFE_METHODS else to_write
            if not allowed(request.user):
                if not can_read(request.user):
                    raise PermissionDenied("Your account has no role yet: an admin adds it to the "
                                           "“admin” or “viewer” group.")
                raise PermissionDenied("Viewers can look at everything but change nothing.")
            return view(request, *args, **kwargs)
        return checked
    return decorator


reader_required = _requires(to_read=can_read, to_write=can_write)
admin_required = _requires(to_read=can_write, to_write=can_write)
# The API token belongs to the user, not to the registrar: a viewer manages their own,
# which reads the API and nothing more.
own_account = _requires(to_read=can_read, to_write=can_read)


# -- helpers ----------------------------------------------------------------------------
def _partial(request) -> bool:
    return "partial" in request.GET


def _filtered(request, filterset) -> bool:
    return any(request.GET.get(name) for name in filterset.filters)


def _show_once(request, what: str, secret: str) -> None:
    """Keep a secret in the session until the next page shows it (and forgets it)."""
    request.session[f"shown-once:{what}"] = secret


def _take_shown_once(request, what: str):
    return request.session.pop(f"shown-once:{what}", None)


def _never_cache(response):
    # A page showing a secret must not come back from the cache on Back.
    add_never_cache_headers(response)
    return response


def _next_or(request, default: str) -> str:
    target = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                       require_https=request.is_secure()):
        return target
    return default


# -- dashboard --------------------------------------------------------------------------
def _latest_events():
    """The live feed's first items, from the tables, in the shape of registrar.events."""
    bindings = (services.live_bindings().select_related("extension")
                .order_by("-last_refreshed")[:FEED_LENGTH])
    feed = [events.binding_registered(binding) for binding in bindings]
    feed += [events.attempt_stored(attempt) for attempt in AuthAttempt.objects.all()[:FEED_LENGTH]]
    feed.sort(key=lambda event: event["at"], reverse=True)
    return feed[:FEED_LENGTH]


def _policy_notices():
    """diagnosis.policy_notices(), each with where to act: the soft parameter, or the bans page."""
    notices = diagnosis.policy_notices()
    parameters = {p.number: p for p in SoftParameter.objects.filter(
        number__in=[notice["soft_parameter"] for notice in notices])}
    for notice in notices:
        if notice["reason"] == "banned_source":
            notice["href"], notice["link"] = "/bans/", "See the bans"
        else:
            parameter = parameters.get(notice["soft_parameter"])
            notice["href"] = f"/settings/#param-{notice['soft_parameter']}"
            notice["link"] = (f"{parameter.number} {parameter.name} (now {shown_value(parameter.value)})"
                              if parameter else f"Soft parameter {notice['soft_parameter']}")
    return notices


@reader_required
def dashboard(request):
    context = {"summary": stats.summary(), "series": stats.hourly_series(24), "notices": _policy_notices(),
               "trunks": _trunk_counts(), **_call_counts()}
    if _partial(request):
        return render(request, "webui/_dashboard_live.html", context)
    context["feed"] = _latest_events()
    return render(request, "webui/dashboard.html", context)


# -- extensions -------------------------------------------------------------------------
@reader_required
def extensions(request):
    live = Q(bindings__expires_at__gt=timezone.now())
    filterset = ExtensionFilterSet(request.GET, queryset=Extension.objects.annotate(
        devices=Count("bindings", filter=live)).order_by("number"))
    page = Paginator(filterset.qs, EXTENSIONS_PER_PAGE).get_page(request.GET.get("page"))
    rows = list(page)
    states = stats.extension_states(rows)
    for extension in rows:
        extension.state = states[extension.pk]
    return render(request, "webui/extensions.html", {"filterset": filterset, "page": page, "rows": rows,
                                                     "enabled_choices": ENABLED_CHOICES})


@admin_required
def extension_create(request):
    form = ExtensionCreateForm(request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        try:
            extension, generated = services.create_extension(**form.cleaned_data)
        except ValidationError as error:
            form.add_service_error(error)
        else:
            if generated:
                _show_once(request, f"password:{extension.number}", generated)
            messages.success(request, f"Extension {extension.number} created.")
            return redirect("extension", number=extension.number)
    return render(request, "webui/extension_form.html", {"form": form, "extension": None})


def _extension_live_context(extension):
    return {
        "extension": extension,
        "state": stats.extension_states([extension])[extension.pk],
        "bindings": services.live_bindings().filter(extension=extension).select_related("extension"),
        "attempts": AuthAttempt.objects.filter(extension_number=extension.number)[:TIMELINE_LENGTH],
        "timeline_length": TIMELINE_LENGTH,
    }


@reader_required
def extension_detail(request, number):
    extension = get_object_or_404(Extension, number=number)
    context = _extension_live_context(extension)
    if _partial(request):
        return render(request, "webui/_extension_live.html", context)
    context["generated_password"] = _take_shown_once(request, f"password:{extension.number}")
    response = render(request, "webui/extension.html", context)
    return _never_cache(response) if context["generated_password"] else response


@reader_required
def extension_diagnosis(request, number):
    """Why is it failing? The findings of registrar.diagnosis for any number a phone tried,
    whether or not an extension has it."""
    result = diagnosis.diagnose(number)
    numbers = {finding.soft_parameter for finding in result["findings"]} | {286}
    parameters = {p.number: p for p in SoftParameter.objects.filter(number__in=numbers)}
    findings = [{"finding": finding, "parameter": parameters.get(finding.soft_parameter)}
                for finding in result["findings"]]
    return render(request, "webui/diagnosis.html", {
        "number": number, "extension": Extension.objects.filter(number=number).first(),
        "registered": result["registered"], "findings": findings, "bans": result["bans"],
        "inspection": parameters.get(286), "window_hours": int(diagnosis.WINDOW.total_seconds() // 3600),
        "traced": number in trace.targets()["extension"],
    })


@admin_required
def extension_edit(request, number):
    extension = get_object_or_404(Extension, number=number)
    if request.method == "POST":
        form = ExtensionEditForm(request.POST)
        if form.is_valid():
            try:
                services.update_extension(extension, **form.service_fields())
            except ValidationError as error:
                form.add_service_error(error)
            else:
                messages.success(request, f"Extension {extension.number} saved.")
                return redirect("extension", number=extension.number)
    else:
        form = ExtensionEditForm(initial={"display_name": extension.display_name, "enabled": extension.enabled,
                                          "max_contacts": extension.max_contacts, "auth_mode": extension.auth_mode,
                                          "oauth_server": extension.oauth_server,
                                          "bearer_methods": extension.bearer_methods,
                                          "call_permission": extension.call_permission})
    return render(request, "webui/extension_form.html", {"form": form, "extension": extension})


@admin_required
def extension_password(request, number):
    extension = get_object_or_404(Extension, number=number)
    form = PasswordForm(request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        try:
            generated = services.set_password(extension, form.cleaned_data["password"])
        except ValidationError as error:
            form.add_service_error(error)
        else:
            if generated:
                _show_once(request, f"password:{extension.number}", generated)
            messages.success(request, f"New password set for {extension.number}.")
            return redirect("extension", number=extension.number)
    return render(request, "webui/extension_password.html", {"form": form, "extension": extension})


def _set_enabled(request, number, enabled):
    extension = get_object_or_404(Extension, number=number)
    services.update_extension(extension, enabled=enabled)
    messages.success(request, f"Extension {extension.number} {'enabled' if enabled else 'disabled'}.")
    return redirect("extension", number=extension.number)


@admin_required
@require_POST
def extension_enable(request, number):
    return _set_enabled(request, number, True)


@admin_required
@require_POST
def extension_disable(request, number):
    return _set_enabled(request, number, False)


@admin_required
def extension_delete(request, number):
    extension = get_object_or_404(Extension, number=number)
    if request.method == "POST":
        services.delete_extension(extension)
        messages.success(request, f"Extension {number} deleted.")
        return redirect("extensions")
    return render(request, "webui/extension_delete.html", {"extension": extension,
                                                           "devices": services.live_bindings()
                                                           .filter(extension=extension).count()})


# -- registrations ----------------------------------------------------------------------
@reader_required
def registrations(request):
    filterset = BindingFilterSet(request.GET, queryset=Binding.objects.select_related("extension"))
    # Paginated: a registrar with 100,000 phones must not render them all in one page.
    page = Paginator(filterset.qs, REGISTRATIONS_PER_PAGE).get_page(request.GET.get("page"))
    context = {"filterset": filterset, "page": page, "bindings": page.object_list,
               "filtered": _filtered(request, filterset)}
    if _partial(request):
        return render(request, "webui/_registration_rows.html", context)
    return render(request, "webui/registrations.html", context)


@admin_required
@require_POST
def binding_remove(request, pk):
    binding = Binding.objects.select_related("extension").filter(pk=pk).first()
    if binding is None:
        messages.info(request, "That registration had already ended.")
    else:
        services.remove_binding(binding)
        messages.success(request, f"Unregistered {binding.contact_uri} of {binding.extension.number}; the phone "
                                  "registers again at its next refresh unless it is stopped.")
    return redirect(_next_or(request, "/registrations/"))


# -- failed authentication attempts ----------------------------------------------------
def _attempts_filterset(request):
    filterset = AuthAttemptFilterSet(request.GET, queryset=AuthAttempt.objects.all())
    for name in ("since", "until"):
        filterset.form.fields[name].widget.attrs["placeholder"] = "YYYY-MM-DD HH:MM"
    return filterset


@reader_required
def attempts(request):
    filterset = _attempts_filterset(request)
    page = Paginator(filterset.qs, ATTEMPTS_PER_PAGE).get_page(request.GET.get("page"))
    rows = list(page.object_list)
    # Attempts often name extensions that do not exist; only real ones get a link.
    known = set(Extension.objects.filter(number__in={attempt.extension_number for attempt in rows})
                .values_list("number", flat=True))
    context = {"filterset": filterset, "page": page, "attempts": rows, "known_extensions": known,
               "filtered": _filtered(request, filterset)}
    if _partial(request):
        return render(request, "webui/_attempt_rows.html", context)
    return render(request, "webui/attempts.html", context)


class _Echo:
    """A file-like sink for csv.writer that hands each row back instead of storing it."""

    def write(self, text):
        return text


CSV_HEADER = ["time", "source_ip", "source_port", "transport", "method", "extension", "aor", "auth_username",
              "user_agent", "outcome", "status", "reason", "explanation", "detail"]
# A cell starting with one of these is a formula to a spreadsheet; the User-Agent and
# usernames come from whoever sent the REGISTER, so they are defused with a quote.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _defused(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_STARTS) else text


@reader_required
def attempts_csv(request):
    filterset = _attempts_filterset(request)
    if not filterset.is_valid():
        # An export that quietly dropped a mistyped filter would hold the wrong rows.
        return HttpResponseBadRequest("; ".join(f"{field}: {' '.join(errors)}"
                                               for field, errors in filterset.errors.items()),
                                      content_type="text/plain; charset=utf-8")
    rows = (
        [attempt.created_at.isoformat(), attempt.source_ip, attempt.source_port, attempt.transport,
         _defused(attempt.method), _defused(attempt.extension_number), _defused(attempt.aor),
         _defused(attempt.auth_username), _defused(attempt.user_agent), attempt.outcome, attempt.status,
         attempt.reason, attempt.explanation, _defused(attempt.detail)]
        for attempt in filterset.qs.iterator(chunk_size=2000)
    )
    writer = csv.writer(_Echo())
    lines = (writer.writerow(row) for row in itertools.chain([CSV_HEADER], rows))
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (f'attachment; filename="failed-attempts-'
                                       f'{timezone.now():%Y%m%d-%H%M%S}.csv"')
    return response


# -- soft parameters --------------------------------------------------------------------
def _dry_run(request, parameters):
    """The "Who would be refused?" form next to 286/287: a GET, it changes nothing."""
    accepted = parameters[287].value if 287 in parameters else []
    submitted = "patterns" in request.GET
    typed = request.GET.get("patterns", "") if submitted else shown_value(accepted)
    context = {"typed": typed, "submitted": submitted, "inspection_on": bool(parameters[286].value)
               if 286 in parameters else False}
    if submitted:
        patterns = [item.strip() for item in typed.split(",") if item.strip()]
        refused = diagnosis.ua_policy_dry_run(patterns)
        context.update(patterns=patterns, refused=refused[:DRY_RUN_LENGTH], refused_count=len(refused),
                       live_count=services.live_bindings().count())
    return context


def _settings_page(request, bound_form=None):
    editable = can_write(request.user)
    parameters = list(SoftParameter.objects.all())
    forms = [bound_form if bound_form and bound_form.parameter.number == parameter.number
             else SoftParameterForm(parameter, editable=editable)
             for parameter in parameters]
    audit = SoftParameterChange.objects.select_related("parameter")[:AUDIT_LENGTH]
    dry_run = _dry_run(request, {parameter.number: parameter for parameter in parameters})
    return render(request, "webui/settings.html", {"forms": forms, "audit": audit, "dry_run": dry_run})


@reader_required
def soft_parameters(request):
    return _settings_page(request)


@admin_required
@require_POST
def soft_parameter_set(request, number):
    parameter = get_object_or_404(SoftParameter, number=number)
    form = SoftParameterForm(parameter, request.POST)
    if form.is_valid():
        try:
            services.set_soft_parameter(parameter.number, form.cleaned_data["value"], user=request.user, via="web")
        except ValidationError as error:
            form.add_service_error(error)
        else:
            messages.success(request, f"{parameter.number} {parameter.name} saved; the SIP worker applies it "
                                      "within a second.")
            # A form elsewhere (the diagnosis page's "Turn off 286") brings the admin back there.
            return redirect(_next_or(request, f"/settings/#param-{parameter.number}"))
    return _settings_page(request, bound_form=form)


# -- bans ---------------------------------------------------------------------------------
def _with_evidence(bans):
    for ban in bans:
        evidence = ban.evidence()
        ban.evidence_rows, ban.evidence_count = list(evidence[:EVIDENCE_LENGTH]), evidence.count()
    return bans


@reader_required
def bans(request):
    now = timezone.now()
    in_force = Q(lifted_at__isnull=True, expires_at__gt=now)
    context = {
        "active_bans": _with_evidence(list(Ban.objects.filter(in_force).order_by("-created_at", "-id"))),
        "past_bans": _with_evidence(list(Ban.objects.exclude(in_force).order_by("-created_at", "-id")[:PAST_BANS])),
        "past_length": PAST_BANS, "evidence_length": EVIDENCE_LENGTH,
    }
    if _partial(request):
        return render(request, "webui/_bans_live.html", context)
    return render(request, "webui/bans.html", context)


@admin_required
@require_POST
def ban_lift(request, pk):
    ban = get_object_or_404(Ban, pk=pk)
    if not ban.active:
        messages.info(request, f"The ban of {ban.ip} had already ended.")
    else:
        services.lift_ban(ban, by=request.user.get_username())
        messages.success(request, f"Ban of {ban.ip} lifted; the SIP worker serves it again within a second.")
    return redirect(_next_or(request, "/bans/"))


# -- the SIP trace ----------------------------------------------------------------------
def _trace_filterset(request):
    return TraceFilterSet(request.GET, queryset=TracedMessage.objects.all())


@reader_required
def trace_list(request):
    """Dialogs (by Call-ID) of the traced messages; admins start and stop tracing here (POST)."""
    form = None
    if request.method == "POST":
        form = TraceTargetForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            change = trace.start_tracing if data["action"] == "start" else trace.stop_tracing
            try:
                change(data["kind"], data["value"], user=request.user, via="web")
            except ValidationError as error:
                form.add_service_error(error)
            else:
                what = f"extension {data['value']}" if data["kind"] == "extension" else f"address {data['value']}"
                messages.success(request, f"Tracing {what}: the SIP worker captures its messages within a second."
                                 if data["action"] == "start" else f"Stopped tracing {what}.")
                return redirect(_next_or(request, "/trace/"))
    filterset = _trace_filterset(request)
    page = Paginator(trace.dialogs(filterset.qs), DIALOGS_PER_PAGE).get_page(request.GET.get("page"))
    context = {"filterset": filterset, "page": page, "dialogs": trace.with_ends(page.object_list),
               "targets": trace.targets(), "form": form, "filtered": _filtered(request, filterset),
               "total": TracedMessage.objects.count()}
    if _partial(request):
        return render(request, "webui/_trace_live.html", context)
    return render(request, "webui/trace.html", context)


def _dialog_messages(call_id):
    messages_of_dialog = TracedMessage.objects.filter(call_id=call_id)
    if not messages_of_dialog.exists():
        raise Http404("No traced message has this Call-ID (the trace keeps messages within soft parameters "
                      "312 and 313).")
    return messages_of_dialog


@reader_required
def trace_dialog(request, call_id):
    """The ladder diagram of one Call-ID."""
    shown, total = trace.ladder_slice(_dialog_messages(call_id))
    return render(request, "webui/trace_dialog.html", {
        "call_id": call_id, "ladder": trace.ladder(shown), "total": total, "shown": len(shown),
        "extensions": sorted({m.extension_number for m in shown if m.extension_number}),
    })


def _text_download(messages, stem):
    response = StreamingHttpResponse(trace.text_export(messages.iterator(chunk_size=2000)),
                                     content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{trace.file_name(stem, "txt")}"'
    return response


def _pcap_download(messages, stem):
    response = StreamingHttpResponse(trace.pcap_export(messages.iterator(chunk_size=2000)),
                                     content_type=trace.PCAP_MEDIA_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{trace.file_name(stem, "pcap")}"'
    return response


@reader_required
def trace_dialog_text(request, call_id):
    return _text_download(_dialog_messages(call_id).order_by("captured_at", "id"), f"call-{call_id}")


@reader_required
def trace_dialog_pcap(request, call_id):
    return _pcap_download(_dialog_messages(call_id).order_by("captured_at", "id"), f"call-{call_id}")


def _whole_trace(request, download):
    filterset = _trace_filterset(request)
    if not filterset.is_valid():
        return HttpResponseBadRequest("; ".join(f"{field}: {' '.join(errors)}"
                                               for field, errors in filterset.errors.items()),
                                      content_type="text/plain; charset=utf-8")
    return download(filterset.qs.order_by("captured_at", "id"), f"sip-trace-{timezone.now():%Y%m%d-%H%M%S}")


@reader_required
def trace_text(request):
    return _whole_trace(request, _text_download)


@reader_required
def trace_pcap(request):
    return _whole_trace(request, _pcap_download)


# -- the user's API token ---------------------------------------------------------------
@own_account
def api_token(request):
    if request.method == "POST":
        if request.POST.get("action") == "revoke":
            if services.revoke_api_token(request.user):
                messages.success(request, "Your API token is revoked; requests using it are refused from now on.")
        else:
            _show_once(request, "api-token", services.issue_api_token(request.user))
        return redirect("api-token")
    key = _take_shown_once(request, "api-token")
    token = Token.objects.filter(user=request.user).first()
    response = render(request, "webui/token.html", {"key": key, "token": token})
    return _never_cache(response) if key else response


# -- operations ---------------------------------------------------------------------------
# runsip processes that reported within this are listed; those silent for longer than
# services.LIVE_WORKER_WITHIN are flagged (a clean stop removes a process's row).
WORKERS_SHOWN_WITHIN = timedelta(hours=1)
OPERATIONS_LENGTH = 50


@reader_required
def operations(request):
    """Housekeeping jobs, runsip processes, recent alerts and the webhook delivery log."""
    now = timezone.now()
    webhook_id = request.GET.get("webhook", "")
    webhook = get_object_or_404(Webhook, pk=webhook_id) if webhook_id.isdigit() else None
    workers = services.live_worker_statuses(within=WORKERS_SHOWN_WITHIN, now=now)
    for status in workers:
        status.silent = status.last_seen < now - services.LIVE_WORKER_WITHIN
    jobs = services.job_statuses(now)
    return render(request, "webui/operations.html", {
        "jobs": jobs, "unhealthy_jobs": [job for job in jobs if not job.healthy],
        "overdue_intervals": services.OVERDUE_INTERVALS, "workers": workers,
        "silent_after": int(services.LIVE_WORKER_WITHIN.total_seconds()),
        "alerts": services.recent_alerts(OPERATIONS_LENGTH),
        "deliveries": services.recent_webhook_deliveries(OPERATIONS_LENGTH, webhook=webhook),
        "webhook": webhook, "length": OPERATIONS_LENGTH,
    })


@admin_required
@require_POST
def job_run(request, name):
    try:
        run = services.run_job_now(name)
    except ValidationError:
        raise Http404(f"There is no job {name!r}.") from None
    if run is None:
        messages.info(request, f"Job {name} queued: a Celery worker runs it now, and its run shows here when "
                               "it is done.")
    elif run.outcome == JobOutcome.OK:
        messages.success(request, f"Job {name} ran in {run.duration:.3f} s: {run.result}")
    else:
        messages.error(request, f"Job {name} failed: {run.result}")
    return redirect("operations")


def _sent_to(alert) -> str:
    """Where a sent alert went, in words."""
    if alert.emailed_to:
        said = f"e-mailed to {alert.emailed_to}" + (f" but the mail server refused it: {alert.email_error}"
                                                    if alert.email_error else "")
    else:
        said = "not e-mailed (the test event has no enabled route)"
    webhooks = {}
    for delivery in alert.deliveries.select_related("webhook"):
        webhooks[delivery.webhook] = webhooks.get(delivery.webhook, False) or delivery.succeeded
    if webhooks:
        delivered = [str(webhook) for webhook, ok in webhooks.items() if ok]
        failed = [str(webhook) for webhook, ok in webhooks.items() if not ok]
        said += "; delivered to " + (", ".join(delivered) or "no webhook")
        if failed:
            said += f", failed for {', '.join(failed)} (see the delivery log)"
    else:
        said += "; no webhook subscribes to it"
    return said


@admin_required
@require_POST
def test_alert(request):
    alert = services.send_test_alert(request.user.get_username(), via="web UI")
    if alert.dispatched_at is None:
        messages.info(request, f"Test alert #{alert.pk} raised; a Celery worker sends it now.")
    else:
        level = messages.warning if alert.email_error or alert.deliveries.filter(succeeded=False).exists() \
            else messages.success
        level(request, f"Test alert #{alert.pk} sent: {_sent_to(alert)}.")
    return redirect("operations")


# -- alert routing ------------------------------------------------------------------------
@reader_required
def alert_routing(request):
    """Which events go to which e-mail addresses and webhooks."""
    routes = list(AlertRoute.objects.all())
    webhooks = list(Webhook.objects.all())
    by_event = {route.event: route for route in routes}
    events = [{"value": value, "label": label, "route": by_event.get(value),
               "webhooks": [webhook for webhook in webhooks if value in webhook.events]}
              for value, label in AlertEvent.choices]
    shown = _take_shown_once(request, "webhook-secret")
    response = render(request, "webui/alert_routing.html", {
        "events": events, "routes": routes, "webhooks": webhooks, "labels": dict(AlertEvent.choices),
        "new_secret": shown and {"webhook": Webhook.objects.filter(pk=shown["webhook"]).first(),
                                 "secret": shown["secret"]},
    })
    return _never_cache(response) if shown else response


@admin_required
def alert_route_create(request):
    form = AlertRouteForm(request.POST if request.method == "POST" else None,
                          initial={"event": request.GET.get("event")})
    if form.is_bound and form.is_valid():
        try:
            route = services.create_alert_route(**form.cleaned_data)
        except ValidationError as error:
            form.add_service_error(error)
        else:
            messages.success(request, f"Alerts “{route.get_event_display()}” are e-mailed to "
                                      f"{', '.join(route.recipients())}.")
            return redirect("alert-routing")
    return render(request, "webui/alert_route_form.html", {"form": form, "route": None})


@admin_required
def alert_route_edit(request, pk):
    route = get_object_or_404(AlertRoute, pk=pk)
    if request.method == "POST":
        form = AlertRouteForm(request.POST)
        if form.is_valid():
            try:
                services.update_alert_route(route, **form.cleaned_data)
            except ValidationError as error:
                form.add_service_error(error)
                route.refresh_from_db()
            else:
                messages.success(request, f"Route of “{route.get_event_display()}” saved.")
                return redirect("alert-routing")
    else:
        form = AlertRouteForm(initial={"event": route.event, "emails": "\n".join(route.recipients()),
                                       "enabled": route.enabled})
    return render(request, "webui/alert_route_form.html", {"form": form, "route": route})


@admin_required
def alert_route_delete(request, pk):
    route = get_object_or_404(AlertRoute, pk=pk)
    if request.method == "POST":
        services.delete_alert_route(route)
        messages.success(request, f"Route of “{route.get_event_display()}” deleted: those alerts are no longer "
                                  "e-mailed.")
        return redirect("alert-routing")
    return render(request, "webui/ops_delete.html", {
        "title": f"Delete the route of “{route.get_event_display()}”?", "action": f"/operations/routes/{pk}/delete/",
        "consequence": f"Alerts of this event are no longer e-mailed to {', '.join(route.recipients())}. "
                       "Webhooks subscribed to it still receive them.",
        "button": "Delete the route"})


@admin_required
def webhook_create(request):
    form = WebhookCreateForm(request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        data = dict(form.cleaned_data)
        try:
            webhook, secret = services.create_webhook(data.pop("url"), data.pop("events"), **data)
        except ValidationError as error:
            form.add_service_error(error)
        else:
            if form.cleaned_data["secret"] is None:
                _show_once(request, "webhook-secret", {"webhook": webhook.pk, "secret": secret})
            messages.success(request, f"Webhook {webhook} created.")
            return redirect("alert-routing")
    return render(request, "webui/webhook_form.html", {"form": form, "webhook": None})


@admin_required
def webhook_edit(request, pk):
    webhook = get_object_or_404(Webhook, pk=pk)
    if request.method == "POST":
        form = WebhookForm(request.POST)
        if form.is_valid():
            try:
                services.update_webhook(webhook, **form.cleaned_data)
            except ValidationError as error:
                form.add_service_error(error)
                webhook.refresh_from_db()
            else:
                messages.success(request, f"Webhook {webhook} saved.")
                return redirect("alert-routing")
    else:
        form = WebhookForm(initial={"name": webhook.name, "url": webhook.url, "events": webhook.events,
                                    "enabled": webhook.enabled})
    return render(request, "webui/webhook_form.html", {"form": form, "webhook": webhook})


@admin_required
def webhook_secret(request, pk):
    webhook = get_object_or_404(Webhook, pk=pk)
    form = WebhookSecretForm(request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        try:
            generated = services.set_webhook_secret(webhook, form.cleaned_data["secret"])
        except ValidationError as error:
            form.add_service_error(error)
        else:
            if generated:
                _show_once(request, "webhook-secret", {"webhook": webhook.pk, "secret": generated})
            messages.success(request, f"New secret set for webhook {webhook}.")
            return redirect("alert-routing")
    return render(request, "webui/webhook_secret.html", {"form": form, "webhook": webhook})


@admin_required
def webhook_delete(request, pk):
    webhook = get_object_or_404(Webhook, pk=pk)
    if request.method == "POST":
        services.delete_webhook(webhook)
        messages.success(request, f"Webhook {webhook} deleted.")
        return redirect("alert-routing")
    return render(request, "webui/ops_delete.html", {
        "title": f"Delete the webhook {webhook}?", "action": f"/operations/webhooks/{pk}/delete/",
        "consequence": f"Alerts are no longer sent to {webhook.url}, and its delivery log goes with it.",
        "button": "Delete the webhook"})


# -- outbound trunks (registrar.trunks owns the writes) ---------------------------------
from registrar import trunks as trunk_service  # noqa: E402
from registrar.choices import TrunkState  # noqa: E402
from registrar.models import Trunk  # noqa: E402
from webui.forms import TrunkForm  # noqa: E402

TRUNK_HISTORY_LENGTH = 50


def _trunk_counts() -> dict:
    """The dashboard's trunk summary: how many keep a registration, registered and failed
    (a trunk that carries calls only has nothing to be registered)."""
    states = Trunk.objects.filter(register=True).values_list("status__state", flat=True)
    counts = {"total": 0, TrunkState.REGISTERED: 0, TrunkState.FAILED: 0}
    for state in states:
        counts["total"] += 1
        if state in counts:
            counts[state] += 1
    return {"total": counts["total"], "registered": counts[TrunkState.REGISTERED],
            "failed": counts[TrunkState.FAILED]}


def _trunks_with_status():
    return Trunk.objects.select_related("status").order_by("name")


@reader_required
def trunk_list(request):
    context = {"trunks": list(_trunks_with_status())}
    if _partial(request):
        return render(request, "webui/_trunk_rows.html", context)
    return render(request, "webui/trunks.html", context)


def _trunk_live_context(trunk):
    return {"trunk": trunk, "status": getattr(trunk, "status", None),
            "attempts": trunk.attempts.order_by("-at", "-id")[:TRUNK_HISTORY_LENGTH],
            "history_length": TRUNK_HISTORY_LENGTH}


@reader_required
def trunk_detail(request, pk):
    context = _trunk_live_context(get_object_or_404(_trunks_with_status(), pk=pk))
    if _partial(request):
        return render(request, "webui/_trunk_live.html", context)
    return render(request, "webui/trunk.html", context)


def _trunk_form_page(request, trunk):
    editing = trunk is not None
    if request.method == "POST":
        form = TrunkForm(request.POST, editing=editing)
        if form.is_valid():
            try:
                if editing:
                    trunk = trunk_service.update_trunk(trunk, **form.service_fields())
                else:
                    trunk = trunk_service.create_trunk(**form.service_fields())
            except ValidationError as error:
                form.add_service_error(error)
            else:
                then = "runsip registers it within seconds." if trunk.register else "it carries calls only."
                messages.success(request, f"Trunk {trunk.name} {'saved' if editing else 'created'}; {then}")
                return redirect("trunk", pk=trunk.pk)
    elif editing:
        initial = {name: getattr(trunk, name) for name in trunk_service.EDITABLE_FIELDS}
        initial["register"] = "1" if trunk.register else "0"
        form = TrunkForm(editing=True, initial=initial)
    else:
        form = TrunkForm()
    return render(request, "webui/trunk_form.html", {"form": form, "trunk": trunk})


@admin_required
def trunk_create(request):
    return _trunk_form_page(request, None)


@admin_required
def trunk_edit(request, pk):
    return _trunk_form_page(request, get_object_or_404(Trunk, pk=pk))


@admin_required
def trunk_delete(request, pk):
    trunk = get_object_or_404(Trunk, pk=pk)
    if request.method == "POST":
        trunk_service.delete_trunk(trunk)
        messages.success(request, f"Trunk {trunk.name} deleted; runsip unregisters it upstream.")
        return redirect("trunks")
    return render(request, "webui/trunk_delete.html", {"trunk": trunk})


@admin_required
@require_POST
def trunk_register_now(request, pk):
    trunk = get_object_or_404(Trunk, pk=pk)
    try:
        trunk_service.request_register_now(trunk)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"runsip registers {trunk.name} again within seconds.")
    return redirect("trunk", pk=trunk.pk)


def _set_trunk_enabled(request, pk, enabled):
    trunk = get_object_or_404(Trunk, pk=pk)
    trunk_service.update_trunk(trunk, enabled=enabled)
    messages.success(request, f"Trunk {trunk.name} {'enabled' if enabled else 'disabled'}.")
    return redirect("trunk", pk=trunk.pk)


@admin_required
@require_POST
def trunk_enable(request, pk):
    return _set_trunk_enabled(request, pk, True)


@admin_required
@require_POST
def trunk_disable(request, pk):
    return _set_trunk_enabled(request, pk, False)


# -- calls: the dial plan, live calls and the call log, emergency alerts (registrar.calls owns the writes)
from registrar import calls as call_service  # noqa: E402
from registrar.filters import CallFilterSet  # noqa: E402
from django.template.defaultfilters import pluralize  # noqa: E402

from registrar.models import Alert, Call, DialRule  # noqa: E402
from webui.forms import DialRuleForm, RoutePreviewForm  # noqa: E402

CALLS_PER_PAGE = 50
# BooleanWidget's own labels for "any" is "Unknown".
ANSWERED_CHOICES = [("", "Any"), ("true", "Answered"), ("false", "Not answered")]


def _call_counts() -> dict:
    """The dashboard's part about calls: how many go on now, and the emergency alerts nobody acknowledged."""
    return {"active_calls": call_service.active_calls().count(),
            "emergency_alerts": list(call_service.unacknowledged_emergency_alerts())}


def talk_time(seconds) -> str:
    """A call's duration as a clock shows it: 0:07, 12:30, 1:02:03 (live.js counts the same way)."""
    if seconds is None:
        return ""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def _with_talk_time(rows):
    rows = list(rows)
    for call in rows:
        call.talk_time = talk_time(call.duration)
    return rows


def route_in_words(route: dict) -> str:
    """registrar.calls.route_preview's answer as a sentence for the "try a number" box."""
    number, callee, trunk, refusal = route["dialled"], route["callee"], route["trunk"], route["refusal"]
    if refusal:
        return f"{number} would be refused with {refusal['status']} {refusal['phrase']}: {refusal['reason']}."
    if trunk:
        where = f"out through trunk {trunk} as {callee}"
        if route["rule"]:
            where += f" (rule {route['rule']['name'] or route['rule']['pattern']})"
    else:
        phones = route["bindings"]
        where = f"to extension {callee}, ringing {phones} phone{pluralize(phones)}"
    if route["kind"] == "emergency":
        return f"{number} is an emergency number: it goes {where}, and the dashboard shows an alert."
    return f"{number} goes {where}."


# -- the dial plan ----------------------------------------------------------------------
@reader_required
def dial_plan(request):
    """The rules in the order runsip tries them, and a "try a number" box (a GET: it places no call)."""
    form = RoutePreviewForm(request.GET if "number" in request.GET else None)
    preview = None
    if form.is_bound and form.is_valid():
        route = call_service.route_preview(form.cleaned_data["number"], caller=form.cleaned_data["caller"] or None)
        preview = {"route": route, "words": route_in_words(route)}
    return render(request, "webui/dial_plan.html", {
        "rules": DialRule.objects.select_related("trunk").order_by("position", "id"), "form": form,
        "preview": preview, "has_trunks": Trunk.objects.exists()})


def _dial_rule_form_page(request, rule):
    if request.method == "POST":
        form = DialRuleForm(request.POST)
        if form.is_valid():
            try:
                if rule is None:
                    rule = call_service.create_dial_rule(**form.cleaned_data)
                else:
                    rule = call_service.update_dial_rule(rule, **form.cleaned_data)
            except ValidationError as error:
                form.add_service_error(error)
            else:
                messages.success(request, f"Dial rule {rule.pattern} saved; runsip routes with it from the next "
                                          "call on.")
                return redirect("dial-plan")
    elif rule is not None:
        form = DialRuleForm(initial={name: getattr(rule, name) for name in
                                     ("name", "position", "pattern", "strip", "prefix", "trunk", "enabled")})
    else:
        form = DialRuleForm()
    return render(request, "webui/dial_plan_form.html", {"form": form, "rule": rule})


@admin_required
def dial_rule_create(request):
    return _dial_rule_form_page(request, None)


@admin_required
def dial_rule_edit(request, pk):
    return _dial_rule_form_page(request, get_object_or_404(DialRule, pk=pk))


@admin_required
def dial_rule_delete(request, pk):
    rule = get_object_or_404(DialRule.objects.select_related("trunk"), pk=pk)
    if request.method == "POST":
        call_service.delete_dial_rule(rule)
        messages.success(request, f"Dial rule {rule.pattern} deleted.")
        return redirect("dial-plan")
    return render(request, "webui/dial_plan_delete.html", {"rule": rule})


# -- calls --------------------------------------------------------------------------------
def _calls_filterset(request):
    filterset = CallFilterSet(request.GET, queryset=Call.objects.all())
    # The page shows the live calls above the log: "active" is the API's way of asking for them.
    del filterset.form.fields["active"]
    filterset.form.fields["answered"].widget.choices = ANSWERED_CHOICES
    for name in ("since", "until"):
        filterset.form.fields[name].widget.attrs["placeholder"] = "YYYY-MM-DD HH:MM"
    return filterset


@reader_required
def calls_page(request):
    """The calls going on now (live), and the call log with filters below them."""
    filterset = _calls_filterset(request)
    page = Paginator(filterset.qs, CALLS_PER_PAGE).get_page(request.GET.get("page"))
    context = {"active": _with_talk_time(call_service.active_calls()), "filterset": filterset, "page": page,
               "records": _with_talk_time(page.object_list), "filtered": _filtered(request, filterset),
               # Later pages of the log would shift under the reader's eyes; they catch up on navigation.
               "log_live": page.number == 1}
    if _partial(request):
        return render(request, "webui/_call_live.html", context)
    return render(request, "webui/calls.html", context)


@reader_required
def calls_csv(request):
    filterset = _calls_filterset(request)
    if not filterset.is_valid():
        return HttpResponseBadRequest("; ".join(f"{field}: {' '.join(errors)}"
                                               for field, errors in filterset.errors.items()),
                                      content_type="text/plain; charset=utf-8")
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse((writer.writerow(row) for row in call_service.calls_csv_rows(filterset.qs)),
                                     content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="calls-{timezone.now():%Y%m%d-%H%M%S}.csv"'
    return response


@admin_required
@require_POST
def alert_acknowledge(request, pk):
    alert = get_object_or_404(Alert, pk=pk)
    if alert.acknowledged_at is not None:
        messages.info(request, f"{alert.acknowledged_by or 'Someone'} had already acknowledged “{alert.subject}”.")
    else:
        call_service.acknowledge_alert(alert, by=request.user.get_username())
        messages.success(request, f"Acknowledged “{alert.subject}”.")
    return redirect(_next_or(request, "/"))
