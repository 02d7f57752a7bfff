"""The API of OAuth servers (/api/v1/oauth-servers/): shapes and a viewset.

Writes go through registrar.oauth; the client secret is write-only (stored encrypted,
never returned) and a refused change is a 400 naming the field.
"""
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.response import Response

from registrar import oauth
from registrar.api.serializers import StrictFieldsMixin
from registrar.api.views import ServiceErrorsMixin
from registrar.models import OAuthServer


class OAuthServerSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    """An OAuth 2.0 authorization server that vouches for extensions' bearer tokens: asked per token
    (introspection, RFC 7662) or trusted through its signing keys (JWKS, JWTs checked locally)."""

    url = serializers.HyperlinkedIdentityField(view_name="api:oauthserver-detail")
    client_secret = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False, max_length=500,
        style={"input_type": "password"},
        help_text="HTTP Basic password of the introspection call. On an update, leave it out (or empty) to keep "
                  "the stored one. Never returned.")
    has_client_secret = serializers.SerializerMethodField(help_text="Whether a client secret is stored.")

    class Meta:
        model = OAuthServer
        fields = ["id", "url", "name", "mode", "introspection_url", "client_id", "client_secret",
                  "has_client_secret", "timeout_seconds", "verify_tls", "jwks_url", "issuer", "audience",
                  "authz_server", "required_scope", "enabled", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]

    def get_has_client_secret(self, server) -> bool:
        return bool(server.client_secret_encrypted)


@extend_schema_view(
    partial_update=extend_schema(description="A client_secret left out or empty keeps the stored one."),
    update=extend_schema(description="A client_secret left out or empty keeps the stored one."),
    destroy=extend_schema(description="Refused while extensions use the server."),
)
class OAuthServerViewSet(ServiceErrorsMixin, viewsets.ModelViewSet):
    """OAuth servers that extensions in bearer (or either) mode authenticate with (RFC 8898)."""

    serializer_class = OAuthServerSerializer
    queryset = OAuthServer.objects.order_by("name")
    filterset_fields = ["enabled", "mode"]

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        server = oauth.create_server(**serializer.validated_data)
        return Response(self.get_serializer(server).data, status=status.HTTP_201_CREATED)

    def perform_update(self, serializer):
        serializer.instance = oauth.update_server(serializer.instance, **serializer.validated_data)

    def perform_destroy(self, server):
        oauth.delete_server(server)
