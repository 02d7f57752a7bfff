"""Shared test set-up."""
import pytest


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """A private SQLite test database file per run, so concurrent runs cannot clobber each other.

    It is a file rather than :memory: because the end-to-end tests start runsip as a
    separate process that must see the same database.
    """
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")


@pytest.fixture(autouse=True)
def seeded_rows(request):
    """The rows migrations seed (soft parameters, role groups), for every database test.

    Transactional tests flush the database when they end, taking those rows with them,
    so tests running after one would otherwise see an unseeded database.
    """
    marker = request.node.get_closest_marker("django_db")
    uses_db = marker is not None or {"db", "transactional_db"} & set(request.fixturenames)
    if not uses_db:
        return
    transactional = "transactional_db" in request.fixturenames or (
        marker is not None and marker.kwargs.get("transaction", False))
    request.getfixturevalue("transactional_db" if transactional else "db")
    from registrar import services
    from registrar.roles import ensure_groups

    services.ensure_soft_parameters()
    ensure_groups()


# -- users with roles, and clients logged in as them -----------------------------------
@pytest.fixture
def fast_login_hashes(settings):
    """Logging in is not what most tests are about; PBKDF2 would dominate their time.
    Not for tests whose users log in to a server subprocess (it checks with the real hashers)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def make_user(django_user_model):
    """make_user(username, group=None): a user in the role group "admin" or "viewer" (or none)."""
    def make(username, group=None):
        from django.contrib.auth.models import Group

        user = django_user_model.objects.create_user(username, "", "pw")
        if group:
            user.groups.add(Group.objects.get(name=group))
        return user
    return make


@pytest.fixture
def admin_client(client, make_user):
    client.force_login(make_user("alice", "admin"))
    return client


@pytest.fixture
def viewer_client(client, make_user):
    client.force_login(make_user("victor", "viewer"))
    return client


@pytest.fixture
def nobody_client(client, make_user):
    client.force_login(make_user("nora"))
    return client


@pytest.fixture
def as_admin(make_user):
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(make_user("ada", "admin"))
    return api


@pytest.fixture
def as_viewer(make_user):
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(make_user("vera", "viewer"))
    return api


@pytest.fixture
def celery_eager():
    """Set whether tasks run in-process (the embedded default) or go to a broker."""
    from registrar import tasks

    conf = tasks.run_job.app.conf
    before = conf.task_always_eager

    def set_eager(value: bool):
        conf.task_always_eager = value

    yield set_eager
    conf.task_always_eager = before


@pytest.fixture
def authorization_server(transactional_db, settings):
    """daphne serving Regis (and /o/) on loopback, on the committed test database."""
    from django.conf import settings as django_settings

    from tests import browser as web
    from tests import e2e

    settings.SIP_DOMAIN = e2e.SIP_DOMAIN
    settings.SIP_REALM = e2e.SIP_DOMAIN
    relay = web.relay_socket_path()
    env = web.process_environment(e2e.database_url(django_settings.DATABASES["default"]), relay)
    daphne = web.Daphne(env)
    try:
        daphne.start()
        yield daphne
    finally:
        daphne.stop()
        web.remove_relay_socket(relay)


@pytest.fixture(scope="module")
def chromium():
    """One headless Debian chromium per browser test module (tests/browser.py has the flags).

    Playwright's sync API keeps an asyncio loop marked as running in this thread, which
    Django's ORM guard mistakes for async code; the ORM calls in these tests are plain
    synchronous ones between Playwright calls, so the guard is lifted while the browser is
    up (Django's documented escape hatch, DJANGO_ALLOW_ASYNC_UNSAFE)."""
    from playwright.sync_api import sync_playwright

    from tests import browser as web

    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = web.launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def bearer_setup(authorization_server):
    """Extensions 1001 and 1002 in bearer mode against daphne's own /o/ (django-oauth-toolkit):
    (token(number) by the password grant over HTTP, revoke(token), the daphne)."""
    import json

    from registrar import oauth, services
    from registrar.models import Extension
    from tests.test_oauth import _post

    services.create_extension("1001", "sip-pw-1001")
    services.create_extension("1002", "sip-pw-1002")
    application, secret = oauth.create_application("webphone")
    base = authorization_server.url
    server = oauth.create_server(name="regis", mode="introspection", introspection_url=f"{base}/o/introspect/",
                                 client_id=application.client_id, client_secret=secret, authz_server=f"{base}/o/",
                                 timeout_seconds=3)
    for number in ("1001", "1002"):
        oauth.set_extension_auth(Extension.objects.get(number=number), auth_mode="bearer", oauth_server=server)

    def token(number):
        status, body = _post(f"{base}/o/token/", {"grant_type": "password", "username": number,
                                                  "password": f"sip-pw-{number}", "scope": "sip"},
                             application.client_id, secret)
        assert status == 200, body
        return json.loads(body)["access_token"]

    def revoke(value):
        status, _ = _post(f"{base}/o/revoke_token/", {"token": value}, application.client_id, secret)
        assert status == 200

    return token, revoke, authorization_server


# The admin the relay_* browser fixtures create and log in as.
BROWSER_ADMIN, BROWSER_ADMIN_PASSWORD = "boss", "browser-pw-7"


@pytest.fixture
def relay_daphne(transactional_db, settings, django_user_model):
    """The web process alone (daphne) on a relay socket this test process publishes to: the
    test plays runsip's part through the services, whose live events must reach open pages."""
    from django.conf import settings as django_settings

    from tests import browser as web
    from tests import e2e

    relay = web.relay_socket_path()
    settings.LIVE_RELAY_SOCKET = relay
    django_user_model.objects.create_superuser(BROWSER_ADMIN, "", BROWSER_ADMIN_PASSWORD)
    server = web.Daphne(web.process_environment(e2e.database_url(django_settings.DATABASES["default"]), relay))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        web.remove_relay_socket(relay)


@pytest.fixture
def relay_page(chromium, relay_daphne):
    """A chromium page on :func:`relay_daphne`, not yet logged in."""
    from tests import browser as web

    page = web.new_page(chromium, relay_daphne.url)
    yield page
    page.context.close()
