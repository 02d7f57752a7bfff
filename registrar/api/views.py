"""The API's viewsets and views: unpack the request, call a service, pack the answer.

Every write goes through ``registrar.services``. What the writing views share is
written once, in :class:`ServiceErrorsMixin`: a service refuses bad input with Django's
ValidationError, which becomes a 400 whose JSON names each field and its problem, like
DRF's own validation errors. Services validate before they write, so a refused request
has changed nothing.
"""
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count, Q
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.authentication import BasicAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from registrar import services, stats
from registrar.api import serializers
from registrar.api.permissions import HasRole
from registrar.filters import AuthAttemptFilterSet, BindingFilterSet, ExtensionFilterSet
from registrar.models import AuthAttempt, Extension, SoftParameter, SoftParameterChange, number_validator


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
        extension, generated = services.create_extension(**serializer.validated_data)
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
