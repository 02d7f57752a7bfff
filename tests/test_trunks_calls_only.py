"""Trunks that carry calls without a registration ("register" off): many carriers know a PBX
by its address, or challenge each call. runsip keeps no registration for them, their state
says so, and "register now" is refused in words — in the UI, the API, the CLI and the core.
"""
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from registrar import trunks
from registrar.models import Trunk, TrunkStatus
from registrar.sip.uac import TrunkClient
from tests.test_trunks_ui import FORM, text
from tests.test_uac import LOCAL, NOW, config, exchange
from tests.test_core import Harness


@pytest.mark.django_db
def test_the_form_makes_a_calls_only_trunk_and_a_form_without_the_choice_keeps_it(admin_client):
    response = admin_client.post("/trunks/new/", {**FORM, "register": "0"})
    trunk = Trunk.objects.get(name="carrier")
    assert response.status_code == 302 and trunk.register is False
    assert TrunkStatus.objects.get(trunk=trunk).state == "calls_only"
    page = text(admin_client.get(response["Location"]))
    assert "calls only (keeps no registration)" in page
    admin_client.post(f"/trunks/{trunk.pk}/edit/", {**FORM, "password": ""})  # no "register": unchanged
    trunk.refresh_from_db()
    assert trunk.register is False
    admin_client.post(f"/trunks/{trunk.pk}/edit/", {**FORM, "password": "", "register": "1"})
    trunk.refresh_from_db()
    assert trunk.register is True
    assert 'value="1" selected' in text(admin_client.get(f"/trunks/{trunk.pk}/edit/"))


@pytest.mark.django_db
def test_the_api_sets_it_and_register_now_is_refused_naming_the_field(as_admin):
    created = as_admin.post("/api/v1/trunks/", {**{k: v for k, v in FORM.items() if k != "enabled"},
                                                "enabled": True, "register": False}, format="json")
    assert created.status_code == 201 and created.json()["register"] is False
    refused = as_admin.post(f"/api/v1/trunks/{created.json()['id']}/register-now/")
    assert refused.status_code == 400 and "carries calls only" in refused.json()["register"][0]


@pytest.mark.django_db
def test_the_cli_takes_register_no():
    out = StringIO()
    call_command("trunk", "add", "carrier", "--registrar", "sip:pbx.example.com", "--user", "4420",
                 "--password", "pw", "--register", "no", stdout=out)
    assert "carries calls only" in out.getvalue()
    assert Trunk.objects.get(name="carrier").register is False
    with pytest.raises(CommandError, match="carries calls only"):
        call_command("trunk", "register-now", "carrier")


def test_a_registered_trunk_turned_calls_only_unregisters_and_says_so():
    harness = Harness()
    client = TrunkClient(config(), local=LOCAL, now=NOW)
    exchange(client, harness, client.due(NOW))
    assert harness.store["1001"]
    reports = exchange(client, harness, client.stop(NOW + 10, "calls_only"), now=NOW + 10)
    assert reports[-1].state == "calls_only" and client.finished
    assert harness.store["1001"] == []


def test_the_snapshot_tells_runsip_not_to_register_it():
    assert config(register=False).registers is False
    assert config(register=True, enabled=False).registers is False
    assert config().registers is True


@pytest.mark.django_db
def test_the_snapshot_carries_the_flag_from_the_database():
    trunk = trunks.create_trunk(name="carrier", registrar_uri="sip:pbx.example.com", aor_user="4420",
                                password="pw", register=False)
    assert trunks.trunk_snapshot()[trunk.pk].register is False


@pytest.mark.django_db
def test_the_dashboard_counts_only_trunks_that_keep_a_registration(admin_client):
    trunks.create_trunk(name="carrier", registrar_uri="sip:pbx.example.com", aor_user="4420", password="pw",
                        register=False)
    trunks.create_trunk(name="backup", registrar_uri="sip:pbx2.example.com", aor_user="4421", password="pw")
    page = text(admin_client.get("/"))
    assert "of 1 trunk" in page and "of 2 trunks" not in page
