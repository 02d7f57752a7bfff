"""`manage.py extension ...` as an admin would type it."""
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from registrar.models import Extension

pytestmark = pytest.mark.django_db


def run(*args):
    from io import StringIO

    out = StringIO()
    call_command("extension", *args, stdout=out)
    return out.getvalue()


def test_create_with_a_generated_password_prints_it_once():
    output = run("create", "1001", "--generate", "--name", "Front desk")
    password = output.split("Password (shown once): ")[1].strip()
    extension = Extension.objects.get(number="1001")
    assert extension.display_name == "Front desk"
    assert password not in str(Extension.objects.values().get())


def test_create_set_password_list_delete():
    run("create", "1002", "--password", "pw1")
    before = Extension.objects.get(number="1002").ha1_md5
    run("set-password", "1002", "--password", "pw2")
    assert Extension.objects.get(number="1002").ha1_md5 != before
    assert "1002" in run("list")
    run("delete", "1002")
    assert not Extension.objects.filter(number="1002").exists()


def test_errors_are_sentences():
    with pytest.raises(CommandError, match="No extension 7777"):
        run("delete", "7777")
    run("create", "1003", "--password", "x")
    with pytest.raises(CommandError, match="already exists"):
        run("create", "1003", "--password", "x")
    with pytest.raises(CommandError, match="number"):
        run("create", "bad number", "--password", "x")


def softparam(*args):
    from io import StringIO

    out = StringIO()
    call_command("softparam", *args, stdout=out)
    return out.getvalue()


def test_softparam_show_and_set_like_the_gateway_cli():
    assert "Value:       0" in softparam("show", "286")
    assert "286 third_party_ua_inspection = 1" in softparam("set", "286", "1")
    assert "Value:       1" in softparam("show", "third_party_ua_inspection")
    softparam("set", "104", "MD5")
    assert "MD5" in softparam("list")
    with pytest.raises(CommandError, match="whole number"):
        softparam("set", "100", "soon")
    with pytest.raises(CommandError, match="no soft parameter"):
        softparam("show", "999")
