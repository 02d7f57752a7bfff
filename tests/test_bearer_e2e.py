"""OAuth bearer REGISTERs end to end (issue 6's "done when"), with a real authorization
server: Regis's own (django-oauth-toolkit under daphne), tokens obtained over HTTP with
the password grant, introspected by runsip (UDP) and by the websocket door (ws) over
HTTP (RFC 7662), revoked over HTTP, and the server stopped.
"""
import pytest
from asgiref.sync import async_to_sync
from django.conf import settings as django_settings

from registrar.models import AuthAttempt, Binding
from tests import e2e
from tests.e2e import eventually
from tests.test_websocket_sip import WsPhone, phone_socket

CACHE_SECONDS = 2


@pytest.fixture
def runsip(transactional_db):
    process = e2e.RunSip(e2e.database_url(django_settings.DATABASES["default"]),
                         env={"OAUTH_CACHE_SECONDS": str(CACHE_SECONDS)})
    process.start()
    yield process
    alive = not process.died
    process.stop()
    assert alive, process.output


def register(runsip, user, token=None):
    with e2e.SipClient(("127.0.0.1", runsip.port)) as phone:
        return phone.register(user, authorization_value=f"Bearer {token}" if token else None)


def last_attempt(reason):
    return AuthAttempt.objects.filter(reason=reason).order_by("-created_at").first()


def test_bearer_register_over_udp_from_token_to_revocation_and_server_down(bearer_setup, runsip):
    token, revoke, web = bearer_setup
    challenge = register(runsip, "1001")
    assert challenge.status == 401
    assert challenge.get_all("WWW-Authenticate") == [
        f'Bearer realm="{e2e.SIP_DOMAIN}", authz_server="{web.url}/o/"']

    mine, theirs, spare = token("1001"), token("1002"), token("1001")
    assert eventually(lambda: register(runsip, "1001", mine).status == 200)
    assert Binding.objects.filter(extension__number="1001").exists()

    refused = register(runsip, "1001", theirs)
    assert refused.status == 401 and 'error="invalid_request"' in refused.get("WWW-Authenticate")
    assert eventually(lambda: last_attempt("token_user_mismatch"))

    revoke(mine)
    # Refused once the cached verdict runs out (OAUTH_CACHE_SECONDS), not a moment later.
    answer = eventually(lambda: (r := register(runsip, "1001", mine)).status == 401 and r,
                        timeout=CACHE_SECONDS + 3)
    assert answer and 'error="invalid_token"' in answer.get("WWW-Authenticate")
    assert eventually(lambda: last_attempt("token_inactive"))

    web.stop()
    down = register(runsip, "1001", spare)
    assert down.status == 503 and down.get("Retry-After") == "5"
    attempt = eventually(lambda: last_attempt("auth_server_failed"))
    assert attempt and "introspection failed: refused" in attempt.detail


def test_bearer_register_over_ws(bearer_setup, settings):
    token, _, _ = bearer_setup
    settings.SIP_DOMAIN = settings.SIP_REALM = e2e.SIP_DOMAIN
    value = token("1001")

    async def scenario():
        communicator = phone_socket()
        assert (await communicator.connect())[0]
        phone = WsPhone(communicator, "1001")
        answer = await phone.exchange(phone.register_bytes(authorization_value=f"Bearer {value}"))
        transports = await _binding_transports("1001")
        await communicator.disconnect()
        return answer, transports

    answer, transports = async_to_sync(scenario)()
    assert answer.status == 200, answer.raw
    assert transports == ["ws"]


async def _binding_transports(number):
    from asgiref.sync import sync_to_async

    return await sync_to_async(lambda: list(Binding.objects.filter(extension__number=number)
                                            .values_list("transport", flat=True)))()
