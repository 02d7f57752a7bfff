"""The web side of the foundation: login, the status page and the Django admin."""
import pytest
from django.utils import timezone

from registrar import services
from registrar.models import Binding, Extension

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "", "pw")
    client.force_login(user)
    return client


def test_the_status_page_needs_a_login(client):
    response = client.get("/")
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_the_status_page_lists_live_registrations(admin_client):
    extension, _ = services.create_extension("1001", "pw")
    now = timezone.now()
    Binding.objects.create(extension=extension, contact_uri="sip:1001@192.0.2.5:5060", call_id="c", cseq=1,
                           expires_at=now + timezone.timedelta(minutes=5), source_ip="192.0.2.5",
                           source_port=5060, transport="udp", user_agent="Yealink T46", first_registered=now,
                           last_refreshed=now)
    page = admin_client.get("/").content.decode()
    assert "sip:1001@192.0.2.5:5060" in page and "Yealink T46" in page


def test_the_admin_creates_an_extension_with_a_generated_password_shown_once(admin_client):
    response = admin_client.post("/admin/registrar/extension/add/", {
        "number": "2001", "display_name": "Lobby", "enabled": "on", "max_contacts": "3", "password": "",
    }, follow=True)
    assert response.status_code == 200
    extension = Extension.objects.get(number="2001")
    messages = [str(m) for m in response.context["messages"]]
    generated = messages[0].split(": ")[1].split(" ")[0]
    assert extension.ha1_md5 == services.digest.compute_ha1("2001", extension.realm, generated, "MD5")


def test_the_admin_pages_render(admin_client):
    for url in ("/admin/registrar/extension/", "/admin/registrar/binding/", "/admin/registrar/softparameter/",
                "/admin/registrar/authattempt/", "/admin/registrar/softparameter/286/change/"):
        assert admin_client.get(url).status_code == 200, url
