"""OAuth servers and extensions' bearer settings: the write path (registrar.oauth), the API
(/api/v1/oauth-servers/, the extension fields), the web pages, the HTTP client
(registrar.oauth_client) against real HTTP servers on loopback, and Regis as its own
authorization server (django-oauth-toolkit served by daphne on the test database).
"""
import base64
import io
import json
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.exceptions import ValidationError
from jwt.algorithms import RSAAlgorithm

from registrar import oauth, oauth_client, services
from registrar.models import Extension, OAuthServer
from registrar.sip.bearer import Failure, OAuthServerConfig
from tests import e2e

SECRET = "introspection-secret-8841"
SERVER = {"name": "keycloak", "mode": "introspection", "client_id": "regis",
          "introspection_url": "https://auth.example.com/realms/demo/protocol/openid-connect/token/introspect",
          "authz_server": "https://auth.example.com/realms/demo"}


def make_server(**fields):
    return oauth.create_server(client_secret=SECRET, **{**SERVER, **fields})


# -- the write path --------------------------------------------------------------------
@pytest.mark.django_db
def test_the_client_secret_is_encrypted_and_the_snapshot_decrypts_it():
    server = make_server()
    stored = OAuthServer.objects.get(pk=server.pk).client_secret_encrypted
    assert stored and SECRET not in stored
    extension, _ = services.create_extension("1001", "pw-1001")
    oauth.set_extension_auth(extension, auth_mode="bearer", oauth_server=server, bearer_methods="invite,register")
    servers, extensions = oauth_snapshot_now()
    assert servers[server.pk].client_secret == SECRET
    assert servers[server.pk].authz_server == SERVER["authz_server"]
    assert extensions["1001"].server_id == server.pk
    assert extensions["1001"].methods == frozenset({"REGISTER", "INVITE"})
    assert Extension.objects.get(number="1001").bearer_methods == "REGISTER,INVITE"


def oauth_snapshot_now():
    return oauth.oauth_snapshot()


@pytest.mark.django_db
def test_an_update_without_secret_keeps_the_stored_one():
    server = make_server()
    before = server.client_secret_encrypted
    oauth.update_server(server, client_secret=None, timeout_seconds=5)
    assert OAuthServer.objects.get(pk=server.pk).client_secret_encrypted == before
    oauth.update_server(server, client_secret="new-secret")
    assert oauth.oauth_snapshot()[0][server.pk].client_secret == "new-secret"


@pytest.mark.django_db
def test_each_mode_needs_its_url():
    with pytest.raises(ValidationError) as refused:
        oauth.create_server(name="a", mode="introspection")
    assert "introspection_url" in refused.value.message_dict
    with pytest.raises(ValidationError) as refused:
        oauth.create_server(name="b", mode="jwks")
    assert "jwks_url" in refused.value.message_dict
    with pytest.raises(ValidationError) as refused:
        oauth.create_server(name="c", mode="jwks", jwks_url="ftp://keys.example.com/jwks")
    assert "jwks_url" in refused.value.message_dict


@pytest.mark.django_db
def test_bearer_needs_a_server_and_real_methods():
    extension, _ = services.create_extension("1001", "pw-1001")
    with pytest.raises(ValidationError) as refused:
        oauth.set_extension_auth(extension, auth_mode="bearer")
    assert "oauth_server" in refused.value.message_dict
    with pytest.raises(ValidationError) as refused:
        oauth.set_extension_auth(extension, bearer_methods="REGISTER,DANCE")
    assert "bearer_methods" in refused.value.message_dict


@pytest.mark.django_db
def test_a_server_in_use_cannot_be_deleted():
    server = make_server()
    extension, _ = services.create_extension("1001", "pw-1001")
    oauth.set_extension_auth(extension, auth_mode="either", oauth_server=server)
    with pytest.raises(ValidationError, match="1001"):
        oauth.delete_server(server)
    oauth.set_extension_auth(extension, auth_mode="digest", oauth_server=None)
    oauth.delete_server(server)
    assert not OAuthServer.objects.exists()


@pytest.mark.django_db
def test_tokens_never_speak_for_a_person_named_like_an_extension(django_user_model):
    services.create_extension("1001", "pw-1001")
    services.create_extension("1002", "pw-1002")
    django_user_model.objects.create_user("1002", "", "a-person's-password")
    assert oauth.check_extension_password("1001", "pw-1001") and not oauth.check_extension_password("1001", "x")
    user = oauth.extension_user("1001")
    assert user.username == "1001" and not user.has_usable_password()
    assert oauth.extension_user("1001") == user
    assert oauth.extension_user("1002") is None


@pytest.mark.django_db
def test_the_oauth_command_registers_a_client_and_issues_a_token():
    from django.core.management import call_command
    from django.core.management.base import CommandError
    from oauth2_provider.models import AccessToken

    services.create_extension("1001", "pw-1001")
    out = io.StringIO()
    call_command("oauth", "application", "desk-app", stdout=out)
    assert "client_id: " in out.getvalue() and "client_secret: " in out.getvalue()
    out = io.StringIO()
    call_command("oauth", "token", "1001", "--application", "desk-app", stdout=out)
    token = AccessToken.objects.get()
    assert out.getvalue().strip() == token.token and token.user.username == "1001" and token.scope == "sip"
    with pytest.raises(CommandError, match="no extension 1009"):
        call_command("oauth", "token", "1009", "--application", "desk-app", stdout=io.StringIO())


# -- API -------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_admin_creates_a_server_and_the_secret_is_never_returned(as_admin):
    response = as_admin.post("/api/v1/oauth-servers/", {**SERVER, "client_secret": SECRET}, format="json")
    assert response.status_code == 201, response.content
    assert "client_secret" not in response.json() and SECRET not in response.content.decode()
    assert response.json()["has_client_secret"] is True
    listed = as_admin.get("/api/v1/oauth-servers/")
    assert SECRET not in listed.content.decode() and listed.json()["count"] == 1
    pk = response.json()["id"]
    changed = as_admin.patch(f"/api/v1/oauth-servers/{pk}/", {"timeout_seconds": 4}, format="json")
    assert changed.status_code == 200 and changed.json()["timeout_seconds"] == 4
    assert oauth.oauth_snapshot()[0][pk].client_secret == SECRET


@pytest.mark.django_db
def test_api_errors_name_their_field(as_admin):
    response = as_admin.post("/api/v1/oauth-servers/", {"name": "x", "mode": "jwks"}, format="json")
    assert response.status_code == 400 and "jwks_url" in response.json()
    response = as_admin.post("/api/v1/oauth-servers/", {**SERVER, "colour": "blue"}, format="json")
    assert response.status_code == 400 and "colour" in response.json()


@pytest.mark.django_db
def test_viewers_read_but_do_not_write(as_viewer):
    make_server()
    assert as_viewer.get("/api/v1/oauth-servers/").status_code == 200
    assert as_viewer.post("/api/v1/oauth-servers/", {**SERVER, "name": "other"}, format="json").status_code == 403


@pytest.mark.django_db
def test_the_extension_api_sets_the_authentication_mode(as_admin):
    make_server()
    created = as_admin.post("/api/v1/extensions/", {"number": "1001", "password": "pw-1001", "auth_mode": "either",
                                                    "oauth_server": "keycloak"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["auth_mode"] == "either" and created.json()["oauth_server"] == "keycloak"
    refused = as_admin.patch("/api/v1/extensions/1001/", {"auth_mode": "bearer", "oauth_server": None},
                             format="json")
    assert refused.status_code == 400 and "oauth_server" in refused.json()
    changed = as_admin.patch("/api/v1/extensions/1001/", {"bearer_methods": "REGISTER"}, format="json")
    assert changed.status_code == 200 and changed.json()["bearer_methods"] == "REGISTER"
    no_server = as_admin.post("/api/v1/extensions/", {"number": "1002", "password": "pw", "auth_mode": "bearer"},
                              format="json")
    assert no_server.status_code == 400 and "oauth_server" in no_server.json()
    assert not Extension.objects.filter(number="1002").exists()


# -- web pages -------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_admin_manages_servers_in_the_web_ui(admin_client):
    assert admin_client.get("/oauth-servers/").status_code == 200
    response = admin_client.post("/oauth-servers/new/", {**SERVER, "client_secret": SECRET, "timeout_seconds": 2,
                                                         "verify_tls": "on", "enabled": "on"})
    assert response.status_code == 302, response.content.decode()[-2000:]
    server = OAuthServer.objects.get(name="keycloak")
    page = admin_client.get("/oauth-servers/").content.decode()
    assert "keycloak" in page and SECRET not in page
    edit = admin_client.get(f"/oauth-servers/{server.pk}/edit/").content.decode()
    assert SERVER["introspection_url"] in edit and SECRET not in edit
    refused = admin_client.post(f"/oauth-servers/{server.pk}/edit/", {**SERVER, "mode": "jwks",
                                                                       "timeout_seconds": 2})
    assert refused.status_code == 200 and "JWKS mode needs" in refused.content.decode()
    assert admin_client.post(f"/oauth-servers/{server.pk}/delete/").status_code == 302
    assert not OAuthServer.objects.exists()


@pytest.mark.django_db
def test_the_extension_form_sets_bearer_authentication(admin_client):
    make_server()
    services.create_extension("1001", "pw-1001")
    form = admin_client.get("/extensions/1001/edit/").content.decode()
    assert 'name="auth_mode"' in form and 'name="oauth_server"' in form and 'name="bearer_methods"' in form
    response = admin_client.post("/extensions/1001/edit/", {
        "display_name": "Web phone", "max_contacts": 5, "enabled": "on", "auth_mode": "bearer",
        "oauth_server": "keycloak", "bearer_methods": "REGISTER,INVITE"})
    assert response.status_code == 302
    extension = Extension.objects.get(number="1001")
    assert (extension.auth_mode, extension.oauth_server.name, extension.display_name) == \
        ("bearer", "keycloak", "Web phone")


@pytest.mark.django_db
def test_viewers_cannot_open_the_server_form(viewer_client):
    assert viewer_client.get("/oauth-servers/").status_code == 200
    assert viewer_client.get("/oauth-servers/new/").status_code == 403


# -- HTTP servers on loopback ----------------------------------------------------------
class Endpoint:
    """A tiny HTTP server on 127.0.0.1 whose answer the test chooses."""

    def __init__(self, answer):
        self.answer = answer  # (status, body bytes) or callable(handler) -> (status, body)
        self.requests = []
        self.release = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                endpoint.requests.append((self.command, self.path, dict(self.headers), self.rfile.read(length)))
                status, body = endpoint.answer(self) if callable(endpoint.answer) else endpoint.answer
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (the timeout test)

            do_GET = do_POST = _serve

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((e2e.LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://{e2e.LOOPBACK}:{self.server.server_address[1]}/"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def introspection_server(url, **fields):
    return OAuthServerConfig(**{"id": 1, "name": "test", "mode": "introspection", "introspection_url": url,
                                "client_id": "regis", "client_secret": SECRET, "timeout_seconds": 2, **fields})


def test_introspection_posts_the_token_with_basic_client_credentials():
    answer = json.dumps({"active": True, "username": "1001", "exp": time.time() + 60}).encode()
    with Endpoint((200, answer)) as endpoint:
        verdict = oauth_client.introspect(introspection_server(endpoint.url + "introspect"), "tok.en-1")
    assert verdict.ok and verdict.claims.username == "1001"
    method, path, headers, body = endpoint.requests[0]
    assert (method, path) == ("POST", "/introspect")
    assert urllib.parse.parse_qs(body.decode())["token"] == ["tok.en-1"]
    assert headers["Authorization"] == "Basic " + base64.b64encode(f"regis:{SECRET}".encode()).decode()
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_an_inactive_answer_is_token_inactive():
    with Endpoint((200, b'{"active": false}')) as endpoint:
        verdict = oauth_client.introspect(introspection_server(endpoint.url), "t")
    assert verdict.failure is Failure.TOKEN_INACTIVE and verdict.status == 401


def test_a_server_answering_500_is_http_status():
    with Endpoint((500, b'{"error": "boom"}')) as endpoint:
        verdict = oauth_client.introspect(introspection_server(endpoint.url), "t")
    assert verdict.failure is Failure.INTROSPECTION_HTTP_STATUS and "HTTP 500" in verdict.reason
    assert verdict.status == 503


def test_a_server_answering_garbage_is_bad_json():
    with Endpoint((200, b"<html>login</html>")) as endpoint:
        verdict = oauth_client.introspect(introspection_server(endpoint.url), "t")
    assert verdict.failure is Failure.INTROSPECTION_BAD_JSON and verdict.status == 503


def test_a_slow_server_is_a_timeout():
    def slow(handler):
        endpoint.release.wait(10)
        return 200, b'{"active": true}'

    with Endpoint(slow) as endpoint:
        verdict = oauth_client.introspect(introspection_server(endpoint.url, timeout_seconds=0.3), "t")
    assert verdict.failure is Failure.INTROSPECTION_TIMEOUT and verdict.status == 503


def test_a_stopped_server_is_refused():
    verdict = oauth_client.introspect(introspection_server(f"http://{e2e.LOOPBACK}:{e2e.free_port()}/"), "t")
    assert verdict.failure is Failure.INTROSPECTION_REFUSED and verdict.status == 503


# -- JWTs against a JWKS served on loopback --------------------------------------------
@pytest.fixture(scope="module")
def signing():
    first = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    second = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return first, second


def _jwks(*pairs):
    return json.dumps({"keys": [{**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid}
                                for kid, key in pairs]}).encode()


def _jwt(key, kid, **claims):
    payload = {"iss": "https://as.test", "aud": "regis", "exp": time.time() + 300, "username": "1001", **claims}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


def jwks_server(url, **fields):
    return OAuthServerConfig(**{"id": 7, "name": "jwt", "mode": "jwks", "jwks_url": url, "issuer": "https://as.test",
                                "audience": "regis", "timeout_seconds": 2, **fields})


def test_jwts_are_checked_against_the_served_jwks(signing):
    first, second = signing
    with Endpoint((200, _jwks(("k1", first)))) as endpoint:
        config, cache = jwks_server(endpoint.url + "jwks"), oauth_client.JwksCache(min_refresh=0)
        assert oauth_client.verify_token(config, _jwt(first, "k1"), cache).ok
        assert oauth_client.verify_token(config, _jwt(first, "k1", exp=time.time() - 10), cache).failure \
            is Failure.TOKEN_EXPIRED
        assert oauth_client.verify_token(config, _jwt(first, "k1", aud="other"), cache).failure \
            is Failure.WRONG_AUDIENCE
        assert oauth_client.verify_token(config, _jwt(first, "k1", iss="https://evil"), cache).failure \
            is Failure.WRONG_ISSUER
        assert oauth_client.verify_token(config, _jwt(second, "k1"), cache).failure is Failure.BAD_SIGNATURE
        assert len(endpoint.requests) == 1, "the JWKS is fetched once and cached"


def test_an_unknown_kid_fetches_the_jwks_again_once(signing):
    first, second = signing
    with Endpoint((200, _jwks(("k1", first)))) as endpoint:
        config, cache = jwks_server(endpoint.url), oauth_client.JwksCache(min_refresh=0)
        assert oauth_client.verify_token(config, _jwt(first, "k1"), cache).ok
        endpoint.answer = (200, _jwks(("k1", first), ("k2", second)))  # the server rotated its keys
        assert oauth_client.verify_token(config, _jwt(second, "k2"), cache).ok
        assert len(endpoint.requests) == 2
        unknown = oauth_client.verify_token(config, _jwt(second, "k3"), cache)
        assert unknown.failure is Failure.UNKNOWN_KEY and len(endpoint.requests) == 3


def test_unknown_kids_do_not_refetch_more_often_than_the_floor(signing):
    first, _ = signing
    with Endpoint((200, _jwks(("k1", first)))) as endpoint:
        config, cache = jwks_server(endpoint.url), oauth_client.JwksCache(min_refresh=3600)
        for kid in ("x1", "x2", "x3"):
            assert oauth_client.verify_token(config, _jwt(first, kid), cache).failure is Failure.UNKNOWN_KEY
        assert len(endpoint.requests) == 1


def test_an_unreachable_jwks_is_a_server_failure(signing):
    first, _ = signing
    config = jwks_server(f"http://{e2e.LOOPBACK}:{e2e.free_port()}/jwks")
    verdict = oauth_client.verify_token(config, _jwt(first, "k1"), oauth_client.JwksCache())
    assert verdict.failure is Failure.INTROSPECTION_REFUSED and verdict.status == 503


# -- Regis as its own authorization server (django-oauth-toolkit over HTTP) -------------
def _post(url, fields, client_id, client_secret):
    request = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), method="POST", headers={
        "Authorization": "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode(),
        "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_a_token_from_regis_introspects_with_the_extension_number_until_revoked(authorization_server):
    services.create_extension("1001", "sip-pw-1001")
    application, secret = oauth.create_application("webphone")
    base = authorization_server.url

    refused, _ = _post(f"{base}/o/token/", {"grant_type": "password", "username": "1001", "password": "wrong"},
                       application.client_id, secret)
    assert refused == 400
    status, body = _post(f"{base}/o/token/", {"grant_type": "password", "username": "1001",
                                              "password": "sip-pw-1001", "scope": "sip"},
                         application.client_id, secret)
    assert status == 200, body
    token = json.loads(body)["access_token"]

    config = introspection_server(f"{base}/o/introspect/", client_id=application.client_id, client_secret=secret,
                                  timeout_seconds=10)
    verdict = oauth_client.introspect(config, token)
    assert verdict.ok, verdict.reason
    assert verdict.claims.username == "1001" and "sip" in verdict.claims.scope

    wrong_client = oauth_client.introspect(
        introspection_server(f"{base}/o/introspect/", client_id=application.client_id, client_secret="nope",
                             timeout_seconds=10), token)
    assert wrong_client.failure is Failure.INTROSPECTION_HTTP_STATUS

    status, _ = _post(f"{base}/o/revoke_token/", {"token": token}, application.client_id, secret)
    assert status == 200
    revoked = oauth_client.introspect(config, token)
    assert revoked.failure is Failure.TOKEN_INACTIVE and revoked.error == "invalid_token"


def test_an_admin_issues_a_token_for_an_extension(authorization_server):
    services.create_extension("1002", "sip-pw-1002")
    application, secret = oauth.create_application("provisioning")
    token = oauth.issue_token("1002", application, seconds=600)
    config = introspection_server(f"{authorization_server.url}/o/introspect/", client_id=application.client_id,
                                  client_secret=secret, timeout_seconds=10)
    verdict = oauth_client.introspect(config, token.token)
    assert verdict.ok and verdict.claims.username == "1002"
