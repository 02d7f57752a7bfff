"""OAuth 2.0 for SIP (RFC 8898): the one write path for OAuthServer and for extensions'
authentication settings, the snapshot runsip reads, and the glue of Regis's own
authorization server (django-oauth-toolkit at /o/).

Client secrets of OAuth servers are encrypted with registrar.crypto: the introspection
call needs them back in clear. :func:`oauth_snapshot` returns plain dataclasses from
registrar.sip.bearer, secrets decrypted, for runsip's database thread.

Tokens from Regis's own server carry the extension number as their ``username``: the
password grant accepts an extension's number and SIP password (checked against its HA1,
:class:`ExtensionPasswordValidator`), and the token belongs to a Django user of that
name, made on first use without a usable password or any role, so it can never log in
to the web UI or the REST API. :func:`issue_token` does the same for an admin (the
``oauth token`` command).
"""
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model
from oauth2_provider.oauth2_validators import OAuth2Validator

from registrar import crypto, services
from registrar.choices import AuthMode, OAuthMode
from registrar.models import Extension, OAuthServer
from registrar.sip import digest
from registrar.sip.bearer import ExtensionAuth, OAuthServerConfig, parse_methods

EDITABLE_FIELDS = ("name", "mode", "introspection_url", "client_id", "timeout_seconds", "verify_tls", "jwks_url",
                   "issuer", "audience", "authz_server", "required_scope", "enabled")
SIP_METHODS = frozenset({"REGISTER", "SUBSCRIBE", "INVITE", "MESSAGE", "OPTIONS", "PUBLISH", "REFER", "NOTIFY",
                         "INFO", "UPDATE", "BYE"})


def _validate(server: OAuthServer) -> None:
    server.full_clean(exclude=["client_secret_encrypted"])
    if server.mode == OAuthMode.INTROSPECTION and not server.introspection_url:
        raise ValidationError({"introspection_url": "Introspection mode needs the introspection URL."})
    if server.mode == OAuthMode.JWKS and not server.jwks_url:
        raise ValidationError({"jwks_url": "JWKS mode needs the URL of the server's keys."})


def create_server(*, name: str, client_secret: str = "", **fields) -> OAuthServer:
    server = OAuthServer(name=name, **fields)
    _validate(server)
    server.client_secret_encrypted = crypto.encrypt(client_secret) if client_secret else ""
    server.save()
    return server


def update_server(server: OAuthServer, *, client_secret: str | None = None, **fields) -> OAuthServer:
    """A client_secret left out or empty keeps the stored one."""
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValidationError({name: "This field cannot be changed." for name in unknown})
    for name, value in fields.items():
        setattr(server, name, value)
    _validate(server)
    if client_secret:
        server.client_secret_encrypted = crypto.encrypt(client_secret)
    server.save()
    return server


def delete_server(server: OAuthServer) -> None:
    users = list(server.extensions.values_list("number", flat=True)[:10])
    if users:
        raise ValidationError({"name": f"Extensions use this server ({', '.join(users)}): change them first."})
    server.delete()


def clean_methods(text: str) -> str:
    methods = parse_methods(text)
    unknown = sorted(methods - SIP_METHODS)
    if unknown:
        raise ValidationError({"bearer_methods": f"Not SIP methods Regis handles: {', '.join(unknown)}."})
    if not methods:
        raise ValidationError({"bearer_methods": "Name at least one method, e.g. REGISTER."})
    return ",".join(sorted(methods, key=lambda method: (method != "REGISTER", method)))


_UNCHANGED = object()


def set_extension_auth(extension: Extension, *, auth_mode: str | None = None, oauth_server=_UNCHANGED,
                       bearer_methods: str | None = None) -> Extension:
    """Change how an extension authenticates; bearer and either need an OAuth server."""
    fields = {}
    if auth_mode is not None:
        fields["auth_mode"] = auth_mode
    if oauth_server is not _UNCHANGED:
        fields["oauth_server"] = oauth_server
    if bearer_methods is not None:
        fields["bearer_methods"] = bearer_methods
    return services.update_extension(extension, **fields)


def _secret(server: OAuthServer) -> str | None:
    if not server.client_secret_encrypted:
        return ""
    try:
        return crypto.decrypt(server.client_secret_encrypted)
    except crypto.UnreadableSecret:
        return None


def server_config(server: OAuthServer) -> OAuthServerConfig:
    return OAuthServerConfig(
        id=server.pk, name=server.name, mode=server.mode, introspection_url=server.introspection_url,
        client_id=server.client_id, client_secret=_secret(server), timeout_seconds=server.timeout_seconds,
        verify_tls=server.verify_tls, jwks_url=server.jwks_url, issuer=server.issuer, audience=server.audience,
        authz_server=server.authz_server or server.introspection_url or server.jwks_url,
        required_scope=server.required_scope, enabled=server.enabled)


def oauth_snapshot() -> tuple[dict[int, OAuthServerConfig], dict[str, ExtensionAuth]]:
    """Every OAuth server (secrets decrypted, None when unreadable) and every extension
    that allows bearer tokens, for runsip's in-memory cache."""
    servers = {server.pk: server_config(server) for server in OAuthServer.objects.all()}
    extensions = {}
    for number, mode, server_id, methods in Extension.objects.exclude(auth_mode=AuthMode.DIGEST).values_list(
            "number", "auth_mode", "oauth_server_id", "bearer_methods"):
        extensions[number] = ExtensionAuth(number, mode, server_id, parse_methods(methods))
    return servers, extensions


# -- Regis as its own authorization server ---------------------------------------------
def extension_user(number: str):
    """The Django user whose tokens speak for extension ``number`` (made on first use).
    None when that name belongs to a person (staff, a role, or a usable password)."""
    user_model = get_user_model()
    user = user_model.objects.filter(username=number).first()
    if user is None:
        user = user_model(username=number)
        user.set_unusable_password()
        user.save()
        return user
    if not user.is_active or user.is_staff or user.is_superuser or user.has_usable_password() \
            or user.groups.exists():
        return None
    return user


def check_extension_password(number: str, password: str) -> bool:
    extension = Extension.objects.filter(number=number, enabled=True).first()
    if extension is None or not password or extension.realm != settings.SIP_REALM:
        return False
    offered = digest.compute_ha1(number, extension.realm, password, "MD5")
    return hmac.compare_digest(offered, extension.ha1_md5)


class ExtensionPasswordValidator(OAuth2Validator):
    """The password grant accepts an extension's number and SIP password (falling back to
    Django's users), so that a WebRTC app logs in like a phone and gets a token whose
    introspection ``username`` is the extension number."""

    def validate_user(self, username, password, client, request, *args, **kwargs):
        if check_extension_password(username, password):
            user = extension_user(username)
            if user is not None:
                request.user = user
                return True
            return False
        return super().validate_user(username, password, client, request, *args, **kwargs)


def create_application(name: str, *, client_id: str | None = None, client_secret: str | None = None):
    """A confidential client that may use the password grant and call /o/introspect/ with its
    credentials (HTTP Basic). Returns (application, secret in clear — shown once: DOT stores a hash)."""
    application_model = get_application_model()
    client_secret = client_secret or secrets.token_urlsafe(32)
    extra = {"client_id": client_id} if client_id else {}
    application = application_model(
        name=name, client_type=application_model.CLIENT_CONFIDENTIAL,
        authorization_grant_type=application_model.GRANT_PASSWORD, client_secret=client_secret, **extra)
    application.full_clean(exclude=["user", "redirect_uris", "post_logout_redirect_uris", "allowed_origins"])
    application.save()
    return application, client_secret


def issue_token(number: str, application, *, scope: str = "sip", seconds: int | None = None):
    """An access token for extension ``number`` (admins: the ``oauth token`` command)."""
    if not Extension.objects.filter(number=number).exists():
        raise ValidationError({"number": f"There is no extension {number}."})
    user = extension_user(number)
    if user is None:
        raise ValidationError({"number": f"The user named {number} is a person, not an extension."})
    seconds = seconds or settings.OAUTH2_PROVIDER.get("ACCESS_TOKEN_EXPIRE_SECONDS", 3600)
    return get_access_token_model().objects.create(
        user=user, application=application, token=secrets.token_urlsafe(32), scope=scope,
        expires=timezone.now() + timedelta(seconds=seconds))
