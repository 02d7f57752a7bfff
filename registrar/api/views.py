"""The API's viewsets and views: unpack the request, call a service, pack the answer.

Every write goes through ``registrar.services``. What the writing views share is
written once, in :class:`ServiceErrorsMixin`: a service refuses bad input with Django's
ValidationError, which becomes a 400 whose JSON names each field and its problem, like
DRF's own validation errors. Services validate before they write, so a refused request
has changed nothing.
"""
import json

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import Count, Q
from django.http import Http404, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, renderers, status, viewsets
from rest_framework.authentication import BasicAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from registrar import diagnosis, services, stats, trace
from registrar.api import serializers
from registrar.api.permissions import HasRole
from registrar.filters import (AuthAttemptFilterSet, BanFilterSet, BindingFilterSet, ExtensionFilterSet,
                               TraceFilterSet)
from registrar.models import (AlertRoute, AuthAttempt, Ban, Extension, JobRun, SoftParameter, SoftParameterChange,
                              TracedMessage, Webhook, WebhookDelivery, WorkerStatus, number_validator)


class ServiceErrorsMixin:
    """Turns a service's ValidationError into DRF's 400 naming the fields."""

    def handle_exception(self, exc):
        if isinstance(exc, DjangoValidationError):
            exc = ValidationError(as_serializer_error(exc))
        return super().handle_exception(exc)


@extend_schema_view(
    create=extend_schema(responses={201: serializers.ExtensionCreatedSerializer},
                         description="Without a password one is generated and returned once as generated_password."),
    destroy=extend_schema(description="Deletes the extension and its registrations."),
)
class ExtensionViewSet(ServiceErrorsMixin, viewsets.ModelViewSet):
    """SIP accounts, looked up by number, each with its state and its count of live registrations."""

    serializer_class = serializers.ExtensionSerializer
    filterset_class = ExtensionFilterSet
    lookup_field = "number"
    lookup_value_regex = number_validator.regex.pattern.strip("^$")

    def get_queryset(self):
        live = Q(bindings__expires_at__gt=timezone.now())
        return Extension.objects.annotate(devices_online=Count("bindings", filter=live)).order_by("number")

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        settings_fields = {name: fields.pop(name) for name in ("may_watch", "auth_mode", "oauth_server",
                                                               "bearer_methods", "call_permission")
                           if name in fields}
        with transaction.atomic():
            extension, generated = services.create_extension(**fields)
            if settings_fields:
                services.update_extension(extension, **settings_fields)
        extension.generated_password = generated
        created = serializers.ExtensionCreatedSerializer(extension, context=self.get_serializer_context())
        return Response(created.data, status=status.HTTP_201_CREATED)

    def perform_update(self, serializer):
        serializer.instance = services.update_extension(serializer.instance, **serializer.validated_data)

    def perform_destroy(self, extension):
        services.delete_extension(extension)

    @extend_schema(request=serializers.SetPasswordSerializer, responses=serializers.GeneratedPasswordSerializer)
    @action(detail=True, methods=["post"], url_path="set-password",
            serializer_class=serializers.SetPasswordSerializer)
    def set_password(self, request, number=None):
        """Store a new password (only its hashes), or generate one and return it once."""
        extension = self.get_object()
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        generated = services.set_password(extension, serializer.validated_data.get("password"))
        return Response({"number": extension.number, "generated_password": generated})

    @extend_schema(responses=serializers.DiagnosisSerializer, filters=False)
    @action(detail=True, methods=["get"], serializer_class=serializers.DiagnosisSerializer, filterset_class=None,
            pagination_class=None)
    def diagnosis(self, request, number=None):
        """Why this extension's phones fail: per reason over the last 24 hours, what was received, the fix in
        one sentence and the soft parameter involved. Works for numbers without an extension too (phones
        trying an extension that does not exist)."""
        result = diagnosis.diagnose(number)
        result["exists"] = Extension.objects.filter(number=number).exists()
        return Response(self.get_serializer(result).data)


@extend_schema_view(destroy=extend_schema(
    description="Force-unregisters the device: its binding is removed now, and the phone registers again at "
                "its next refresh."))
class RegistrationViewSet(ServiceErrorsMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                          mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Live registrations (bindings); expired ones are not shown."""

    serializer_class = serializers.RegistrationSerializer
    filterset_class = BindingFilterSet

    def get_queryset(self):
        return services.live_bindings().select_related("extension")

    def perform_destroy(self, binding):
        services.remove_binding(binding)


class AuthAttemptViewSet(viewsets.ReadOnlyModelViewSet):
    """Rejected and re-challenged requests, newest first, each with its reason code and its explanation."""

    queryset = AuthAttempt.objects.order_by("-created_at", "-id")
    serializer_class = serializers.AuthAttemptSerializer
    filterset_class = AuthAttemptFilterSet


class SoftParameterViewSet(ServiceErrorsMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                           mixins.UpdateModelMixin, viewsets.GenericViewSet):
    """Runtime policy; a change takes effect live and is recorded in soft-parameter-changes."""

    queryset = SoftParameter.objects.order_by("number")
    serializer_class = serializers.SoftParameterSerializer
    lookup_field = "number"
    lookup_value_regex = r"\d+"

    def perform_update(self, serializer):
        if "value" in serializer.validated_data:
            serializer.instance = services.set_soft_parameter(
                serializer.instance.number, serializer.validated_data["value"], user=self.request.user, via="api")


class SoftParameterChangeViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit trail of soft parameters, newest first."""

    queryset = SoftParameterChange.objects.order_by("-changed_at", "-id")
    serializer_class = serializers.SoftParameterChangeSerializer
    filterset_fields = ["parameter", "via"]


class SummaryView(APIView):
    """The dashboard's counts and its 24-hour series."""

    @extend_schema(responses=serializers.SummarySerializer)
    def get(self, request):
        return Response(serializers.SummarySerializer({**stats.summary(), "hourly": stats.hourly_series()}).data)


class TokenView(APIView):
    """The caller's own API token. Any user with a role may hold one; a viewer's token only reads.
    Besides a session or a token, HTTP Basic credentials are accepted here, so that a script can
    get its first token with a username and password."""

    authentication_classes = [*api_settings.DEFAULT_AUTHENTICATION_CLASSES, BasicAuthentication]
    permission_classes = [HasRole]

    @extend_schema(request=None, responses={201: serializers.TokenSerializer},
                   description="Issue a new token for yourself, replacing any previous one; it is shown this once.")
    def post(self, request):
        return Response({"token": services.issue_api_token(request.user)}, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: OpenApiResponse(description="Revoked (or there was none).")},
                   description="Revoke your token.")
    def delete(self, request):
        services.revoke_api_token(request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    list=extend_schema(description="Bans, newest first; filter with active=true for those in force."),
    retrieve=extend_schema(responses=serializers.BanDetailSerializer),
    destroy=extend_schema(description="Lifts the ban now: the SIP worker serves the address again within a "
                                      "second and forgets its failures. The record stays, with lifted_at and "
                                      "lifted_by."),
)
class BanViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                 viewsets.GenericViewSet):
    """Source addresses banned after repeated failed authentications (soft parameters 300-304)."""

    queryset = Ban.objects.order_by("-created_at", "-id")
    filterset_class = BanFilterSet

    def get_serializer_class(self):
        return serializers.BanDetailSerializer if self.action == "retrieve" else serializers.BanSerializer

    def perform_destroy(self, ban):
        services.lift_ban(ban, by=self.request.user.get_username())


def accepted_patterns(query) -> list[str] | None:
    """The ``patterns`` query parameter as a list (comma-separated), or None when absent."""
    if "patterns" not in query:
        return None
    return [item.strip() for item in query["patterns"].split(",") if item.strip()]


class UaPolicyDryRunView(APIView):
    """Who soft parameter 286 (third-party User-Agent inspection) would refuse, before it is on."""

    @extend_schema(
        parameters=[OpenApiParameter("patterns", str, description=(
            "Accepted User-Agent patterns to try, comma-separated (case-insensitive substrings). Default: soft "
            "parameter 287 as it is. Empty: no pattern, so every phone would be refused."))],
        responses=serializers.DryRunSerializer,
        description="The live registrations whose User-Agent matches none of the patterns: with 286 on, they "
                    "would be refused with 403 at their next refresh. Reads only; changes nothing.")
    def get(self, request):
        patterns = accepted_patterns(request.query_params)
        policy = services.current_policy()
        if patterns is None:
            patterns = list(policy.accepted_user_agents)
        return Response(serializers.DryRunSerializer({
            "patterns": patterns, "inspection_on": policy.ua_inspection,
            "refused": diagnosis.ua_policy_dry_run(patterns)}).data)


class PcapRenderer(renderers.BaseRenderer):
    """Lets a client ask for the capture with ``Accept: application/vnd.tcpdump.pcap``; an error
    answered to such a request is still JSON."""

    media_type = trace.PCAP_MEDIA_TYPE
    format = "pcap"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, bytes):
            return data
        response = (renderer_context or {}).get("response")
        if response is not None:
            response["Content-Type"] = "application/json"
        return json.dumps(data).encode()


TRACE_FILTERS = [
    OpenApiParameter("extension", str, description="Messages of this extension."),
    OpenApiParameter("ip", str, description="Messages to or from this phone address."),
    OpenApiParameter("call_id", str, description="Messages of this Call-ID (one dialog)."),
]


def pcap_response(messages, stem: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(trace.pcap_export(messages.iterator(chunk_size=2000)),
                                     content_type=PcapRenderer.media_type)
    response["Content-Disposition"] = f'attachment; filename="{trace.file_name(stem, "pcap")}"'
    return response


class TraceViewSet(viewsets.ReadOnlyModelViewSet):
    """The SIP trace: messages in and out of the extensions and addresses listed in soft parameters 310 and 311,
    newest first. SIP carries no password: Authorization headers hold a digest response, not the password."""

    queryset = TracedMessage.objects.order_by("-captured_at", "-id")
    serializer_class = serializers.TracedMessageSerializer
    filterset_class = TraceFilterSet

    @extend_schema(parameters=[*TRACE_FILTERS, OpenApiParameter("format", exclude=True)], filters=False,
                   responses={(200, PcapRenderer.media_type): OpenApiTypes.BINARY},
                   description="The messages as a pcap capture file (libpcap, raw IP, each message one UDP "
                               "datagram; see registrar/trace.py), oldest first, for Wireshark, tshark or sngrep.")
    @action(detail=False, methods=["get"], renderer_classes=[renderers.JSONRenderer, PcapRenderer],
            pagination_class=None)
    def pcap(self, request):
        messages = self.filter_queryset(TracedMessage.objects.order_by("captured_at", "id"))
        return pcap_response(messages, f"trace-{timezone.now():%Y%m%d-%H%M%S}")


# -- operations ------------------------------------------------------------------------
JOB_NAME = OpenApiParameter("name", str, OpenApiParameter.PATH, description="The job's name.")


@extend_schema_view(retrieve=extend_schema(parameters=[JOB_NAME]))
class JobViewSet(ServiceErrorsMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The housekeeping jobs (registrar.tasks.JOBS), each with its schedule, its last run and whether it failed or
    is overdue. Every run is recorded in job-runs."""

    serializer_class = serializers.JobSerializer
    lookup_field = "name"
    lookup_value_regex = r"[A-Za-z0-9_.-]+"
    filter_backends = []

    def get_queryset(self):
        return services.job_statuses()

    def get_object(self):
        job = next((job for job in self.get_queryset() if job.name == self.kwargs["name"]), None)
        if job is None:
            raise Http404("There is no such job.")
        return job

    @extend_schema(request=None, parameters=[JOB_NAME],
                   responses={200: serializers.JobStartedSerializer, 202: serializers.JobStartedSerializer},
                   description="Run the job now, as its schedule would. Without a broker (the embedded default) it "
                               "runs in this request: 200 with the recorded run, failed or not. With a broker it is "
                               "queued for a Celery worker: 202, and its run appears in job-runs when done.")
    @action(detail=True, methods=["post"], serializer_class=serializers.JobStartedSerializer)
    def run(self, request, name=None):
        job = self.get_object()
        if not job.runnable:
            raise ValidationError({"name": ["This job no longer exists; only its past runs are kept."]})
        run = services.run_job_now(job.name)
        return Response(serializers.JobStartedSerializer({"name": job.name, "queued": run is None, "run": run}).data,
                        status=status.HTTP_202_ACCEPTED if run is None else status.HTTP_200_OK)


class JobRunViewSet(viewsets.ReadOnlyModelViewSet):
    """Recorded runs of the housekeeping jobs, newest first (kept 3 days, and each job's last run always)."""

    queryset = JobRun.objects.order_by("-started_at", "-id")
    serializer_class = serializers.JobRunSerializer
    filterset_fields = ["name", "outcome"]


class WorkerStatusViewSet(viewsets.ReadOnlyModelViewSet):
    """The runsip processes, as each last reported itself; a process that stops cleanly removes itself, one
    that is not alive stopped reporting (crashed or hung). Forgotten a day after it was last seen."""

    queryset = WorkerStatus.objects.order_by("hostname", "pid")
    serializer_class = serializers.WorkerStatusSerializer
    filterset_fields = ["hostname"]


@extend_schema_view(destroy=extend_schema(description="Alerts of the event are no longer e-mailed."))
class AlertRouteViewSet(ServiceErrorsMixin, viewsets.ModelViewSet):
    """Where the e-mail of each alert event goes: one route per event (webhooks choose their events on the
    webhook)."""

    queryset = AlertRoute.objects.order_by("event")
    serializer_class = serializers.AlertRouteSerializer
    filterset_fields = ["event", "enabled"]

    def perform_create(self, serializer):
        serializer.instance = services.create_alert_route(**serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = services.update_alert_route(serializer.instance, **serializer.validated_data)

    def perform_destroy(self, route):
        services.delete_alert_route(route)


@extend_schema_view(
    create=extend_schema(responses={201: serializers.WebhookCreatedSerializer},
                         description="Without a secret one is generated and returned once as generated_secret."),
    destroy=extend_schema(description="Deletes the webhook and its delivery log."),
)
class WebhookViewSet(ServiceErrorsMixin, viewsets.ModelViewSet):
    """Outbound webhooks. The secret is write-only: given or generated at creation, replaced with set-secret,
    never shown again."""

    queryset = Webhook.objects.order_by("name", "id")
    serializer_class = serializers.WebhookSerializer
    filterset_fields = ["enabled"]

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        webhook, secret = services.create_webhook(data.pop("url"), data.pop("events"), **data)
        webhook.generated_secret = None if data.get("secret") else secret
        created = serializers.WebhookCreatedSerializer(webhook, context=self.get_serializer_context())
        return Response(created.data, status=status.HTTP_201_CREATED)

    def perform_update(self, serializer):
        serializer.instance = services.update_webhook(serializer.instance, **serializer.validated_data)

    def perform_destroy(self, webhook):
        services.delete_webhook(webhook)

    @extend_schema(request=serializers.SetSecretSerializer, responses=serializers.GeneratedSecretSerializer)
    @action(detail=True, methods=["post"], url_path="set-secret", serializer_class=serializers.SetSecretSerializer)
    def set_secret(self, request, pk=None):
        """Replace the signing secret, or generate one and return it once; the old one stops working at once."""
        webhook = self.get_object()
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        generated = services.set_webhook_secret(webhook, serializer.validated_data.get("secret"))
        return Response({"id": webhook.pk, "generated_secret": generated})


class WebhookDeliveryViewSet(viewsets.ReadOnlyModelViewSet):
    """The webhook delivery log: every attempt to deliver an alert to a webhook, newest first (kept 30 days)."""

    queryset = WebhookDelivery.objects.select_related("alert").order_by("-created_at", "-id")
    serializer_class = serializers.WebhookDeliverySerializer
    filterset_fields = ["webhook", "alert", "succeeded"]


# -- outbound trunks (registrar.trunks owns the writes) ---------------------------------
from registrar import trunks  # noqa: E402
from registrar.filters import TrunkFilterSet  # noqa: E402
from registrar.choices import TrunkState  # noqa: E402
from registrar.models import Trunk  # noqa: E402

REGISTER_NOW_DETAIL = "runsip registers the trunk again within seconds; follow its status."


@extend_schema_view(
    create=extend_schema(description="The trunk is registered by runsip within seconds; a password is required."),
    partial_update=extend_schema(description="A password left out or empty keeps the stored one."),
    update=extend_schema(description="A password left out or empty keeps the stored one."),
    destroy=extend_schema(description="Deletes the trunk; runsip unregisters it upstream."),
)
class TrunkViewSet(ServiceErrorsMixin, viewsets.ModelViewSet):
    """Outbound trunks: registrations Regis keeps alive at upstream SIP servers, each with its live status
    (registered until when, or why it failed and when it tries again)."""

    serializer_class = serializers.TrunkSerializer
    filterset_class = TrunkFilterSet

    def get_queryset(self):
        return Trunk.objects.select_related("status").order_by("name")

    def _fresh(self, trunk):
        return self.get_queryset().get(pk=trunk.pk)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        trunk = trunks.create_trunk(password=fields.pop("password", ""), **fields)
        created = self.get_serializer(self._fresh(trunk))
        return Response(created.data, status=status.HTTP_201_CREATED)

    def perform_update(self, serializer):
        trunk = trunks.update_trunk(serializer.instance, **serializer.validated_data)
        serializer.instance = self._fresh(trunk)

    def perform_destroy(self, trunk):
        trunks.delete_trunk(trunk)

    @extend_schema(request=None, responses={202: serializers.RegisterNowSerializer})
    @action(detail=True, methods=["post"], url_path="register-now",
            serializer_class=serializers.RegisterNowSerializer)
    def register_now(self, request, pk=None):
        """Ask runsip to register the trunk again at once (after a fix upstream, instead of waiting for the
        next retry). A disabled trunk is refused: enable it instead."""
        trunk = self.get_object()
        try:
            trunks.request_register_now(trunk)
        except DjangoValidationError as error:
            raise ValidationError(error.message_dict) from None
        state = trunk.status.state if hasattr(trunk, "status") else TrunkState.REGISTERING
        return Response(self.get_serializer({"id": trunk.pk, "name": trunk.name,
                                             "register_now_at": trunk.register_now_at, "state": state,
                                             "detail": REGISTER_NOW_DETAIL}).data,
                        status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses=serializers.TrunkAttemptSerializer(many=True), filters=False)
    @action(detail=True, methods=["get"], serializer_class=serializers.TrunkAttemptSerializer,
            filterset_class=None)
    def attempts(self, request, pk=None):
        """The trunk's recent REGISTER exchanges, newest first (the last 50 are kept)."""
        trunk = self.get_object()
        page = self.paginate_queryset(trunk.attempts.order_by("-at", "-id"))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


# -- reg-event subscriptions (RFC 3680) --------------------------------------------------
from registrar import subscriptions  # noqa: E402


class SubscriptionViewSet(viewsets.ReadOnlyModelViewSet):
    """The reg-event subscriptions in force (SUBSCRIBE with Event: reg to runsip), with the reginfo version
    last sent. Read-only: subscribers create, refresh and end them over SIP."""

    queryset = subscriptions.listing()
    serializer_class = serializers.SubscriptionSerializer
    filterset_fields = ["subscriber", "transport"]


# -- calls: the dial plan, call records, emergency alerts (registrar.calls owns the writes) --
import csv  # noqa: E402

from registrar import calls  # noqa: E402
from registrar.filters import AlertFilterSet, CallFilterSet  # noqa: E402
from registrar.models import Alert, Call, DialRule  # noqa: E402


@extend_schema_view(
    create=extend_schema(description="Adds a rule; runsip routes with it from the next call on."),
    destroy=extend_schema(description="Removes the rule; numbers it matched go to the next matching rule."),
)
class DialRuleViewSet(ServiceErrorsMixin, viewsets.ModelViewSet):
    """The dial plan: how numbers that are not extensions go out through trunks, tried by position (lowest
    first), the first enabled rule whose pattern matches the whole number winning."""

    queryset = DialRule.objects.select_related("trunk").order_by("position", "id")
    serializer_class = serializers.DialRuleSerializer
    filterset_fields = ["enabled"]

    def perform_create(self, serializer):
        serializer.instance = calls.create_dial_rule(**serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = calls.update_dial_rule(serializer.instance, **serializer.validated_data)

    def perform_destroy(self, rule):
        calls.delete_dial_rule(rule)

    @extend_schema(request=serializers.RoutePreviewRequestSerializer, responses=serializers.RoutePreviewSerializer,
                   filters=False)
    @action(detail=False, methods=["post"], permission_classes=[HasRole],
            serializer_class=serializers.RoutePreviewRequestSerializer)
    def preview(self, request):
        """Where a call to the number would go now — an extension, a trunk (after strip and prefix), the
        emergency route — or why it would be refused. It places no call and changes nothing, so viewers may ask
        too."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        route = calls.route_preview(data["number"], caller=data.get("caller"))
        return Response(serializers.RoutePreviewSerializer(route).data)


class CsvRenderer(renderers.BaseRenderer):
    """Lets ``?format=csv`` (or ``Accept: text/csv``) ask for the call log as CSV; an error answered to
    such a request is still JSON."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        response = (renderer_context or {}).get("response")
        if response is not None:
            response["Content-Type"] = "application/json"
        return json.dumps(data).encode()


class _Echo:
    """A file-like sink for csv.writer that hands each row back instead of storing it."""

    def write(self, text):
        return text


def calls_csv_response(queryset) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse((writer.writerow(row) for row in calls.calls_csv_rows(queryset)),
                                     content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="calls-{timezone.now():%Y%m%d-%H%M%S}.csv"'
    return response


@extend_schema_view(list=extend_schema(
    description="Call records, newest first. active=true lists the calls going on now instead; "
                "format=csv downloads the filtered records as CSV (as export.csv does)."))
class CallViewSet(viewsets.ReadOnlyModelViewSet):
    """Calls through the proxy: the ones going on now and the call records (CDR) of the ended ones. Read-only:
    runsip records them as the calls happen."""

    queryset = Call.objects.order_by("-started_at", "-id")
    serializer_class = serializers.CallSerializer
    filterset_class = CallFilterSet
    renderer_classes = [*api_settings.DEFAULT_RENDERER_CLASSES, CsvRenderer]

    def filter_queryset(self, queryset):
        # The filters choose between the live calls and the records; one call is found among all.
        if self.action == "retrieve":
            return queryset
        return super().filter_queryset(queryset)

    def list(self, request, *args, **kwargs):
        if request.accepted_renderer.format == "csv":
            return self.export(request)
        return super().list(request, *args, **kwargs)

    # Routed in registrar/api/urls.py at calls/export.csv, without the router's trailing slash.
    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR}, operation_id="calls_export_csv", filters=True,
                   description="The filtered call records as CSV (header first), newest first; the same filters "
                               "as the list.")
    def export(self, request):
        return calls_csv_response(self.filter_queryset(self.get_queryset()))


CALL_EXPORT = {"pagination_class": None, "renderer_classes": [renderers.JSONRenderer, CsvRenderer]}


class AlertViewSet(ServiceErrorsMixin, viewsets.ReadOnlyModelViewSet):
    """Alerts Regis raised, newest first, with who acknowledged them. Emergency-call alerts stay on the
    dashboard until acknowledged."""

    queryset = Alert.objects.order_by("-created_at", "-id")
    serializer_class = serializers.AlertSerializer
    filterset_class = AlertFilterSet

    @extend_schema(request=None, responses=serializers.AlertSerializer, filters=False)
    @action(detail=True, methods=["post"], filterset_class=None)
    def acknowledge(self, request, pk=None):
        """Say the alert has been seen: it leaves the dashboards, and who and when are recorded."""
        alert = calls.acknowledge_alert(self.get_object(), by=request.user.get_username())
        return Response(self.get_serializer(alert).data)
