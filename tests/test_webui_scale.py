"""Pages stay bounded however many phones are registered."""
import time

import pytest

from registrar import services
from registrar.sip.core import Origin, StoreRegistration
from registrar.sip.policy import Policy
from registrar.sip.registrar import ContactRequest, RegisterRequest

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_login_hashes")]


def test_the_registrations_page_is_paginated(admin_client, monkeypatch):
    services.create_extension("1001", "pw", max_contacts=100)
    contacts = tuple(ContactRequest(f"sip:1001@192.0.2.5:{5000 + i}", "", None, "", None, 3600) for i in range(100))
    services.store_registrations([StoreRegistration(1, RegisterRequest("1001", "c", 1, False, contacts[:50]),
                                                    Origin("192.0.2.5", 5000, "udp", "UA", ""), 100, Policy()),
                                  StoreRegistration(2, RegisterRequest("1001", "d", 1, False, contacts[50:]),
                                                    Origin("192.0.2.5", 5000, "udp", "UA", ""), 100, Policy())],
                                 time.time())
    from webui import views

    first = admin_client.get("/registrations/").content.decode()
    assert first.count('data-extension="1001"') == views.REGISTRATIONS_PER_PAGE
    assert "100 live bindings" in first and "Page 1 of 1" not in first
    monkeypatch.setattr(views, "REGISTRATIONS_PER_PAGE", 30)
    page = admin_client.get("/registrations/?page=4").content.decode()
    assert page.count('data-extension="1001"') == 10 and "Page 4 of 4" in page
