"""`manage.py trunk ...` as an admin would type it; one test runs the real command in a subprocess for
its exit status and standard error."""
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError

from registrar import trunks
from registrar.models import Trunk
from registrar.sip.uac import TrunkReport
from tests import e2e

pytestmark = pytest.mark.django_db

SECRET = "Upstream-pw-80211"
MANAGE = Path(__file__).resolve().parent.parent / "manage.py"


def run(*args, stdin=None):
    out = StringIO()
    call_command("trunk", *args, stdout=out, **({"stdin": stdin} if stdin is not None else {}))
    return out.getvalue()


def add(name="carrier", *extra):
    return run("add", name, "--registrar", "sip:pbx.example.com;transport=tcp", "--user", "4420",
               "--password", SECRET, *extra)


def test_add_with_every_option():
    output = add("carrier", "--domain", "example.com", "--auth-user", "auth4420", "--realm", "pbx.example.com",
                 "--expires", "600", "--proxy", "sip:edge.example.com:5080", "--contact-user", "c4420")
    assert "Added trunk carrier" in output and SECRET not in output
    trunk = Trunk.objects.get()
    assert (trunk.aor_domain, trunk.auth_username, trunk.expected_realm, trunk.expires, trunk.outbound_proxy,
            trunk.contact_user, trunk.enabled) == ("example.com", "auth4420", "pbx.example.com", 600,
                                                   "sip:edge.example.com:5080", "c4420", True)
    assert SECRET not in trunk.password_encrypted
    assert trunks.trunk_snapshot()[trunk.pk].password == SECRET


def test_add_reads_the_password_from_stdin_and_may_stay_disabled():
    run("add", "quiet", "--registrar", "sips:pbx.example.com", "--user", "1", "--password-stdin", "--disabled",
        stdin=StringIO(SECRET + "\n"))
    trunk = Trunk.objects.get(name="quiet")
    assert not trunk.enabled and trunk.status.state == "disabled"
    assert trunks.trunk_snapshot()[trunk.pk].password == SECRET


def test_add_refuses_bad_input_naming_the_option():
    with pytest.raises(CommandError, match="--registrar: 'http://x' is not a usable SIP URI"):
        run("add", "bad", "--registrar", "http://x", "--user", "1", "--password", "p")
    with pytest.raises(CommandError, match="--password: A trunk needs the password"):
        run("add", "bad", "--registrar", "sip:x.example.com", "--user", "1")
    with pytest.raises(CommandError, match="no password"):
        run("add", "bad", "--registrar", "sip:x.example.com", "--user", "1", "--password-stdin",
            stdin=StringIO(""))
    add()
    with pytest.raises(CommandError, match="already exists"):
        add()
    assert list(Trunk.objects.values_list("name", flat=True)) == ["carrier"]


def test_list_shows_state_and_cause():
    add()
    add("backup")
    now = time.time()
    carrier, backup = Trunk.objects.get(name="carrier"), Trunk.objects.get(name="backup")
    trunks.record_trunk_reports([
        TrunkReport(trunk_id=carrier.pk, state="registered", at=now, registered_until=now + 3600, status=200,
                    phrase="OK", finished_exchange=True, granted=3600),
        TrunkReport(trunk_id=backup.pk, state="failed", at=now, status=403, phrase="Forbidden", cause="forbidden",
                    detail="the server refused this account (403)", next_attempt_at=now + 30,
                    finished_exchange=True)])
    lines = {line.split()[0]: line for line in run("list").splitlines()[1:]}
    assert "registered until" in lines["carrier"]
    assert "failed: Forbidden by the server (the server refused this account (403))" in lines["backup"]


def test_show_prints_status_and_history_without_the_password():
    add()
    trunk = Trunk.objects.get()
    start = time.time() - 100
    trunks.record_trunk_reports([TrunkReport(
        trunk_id=trunk.pk, state="failed", at=start, cause="timeout", detail="no answer from pbx.example.com:5060",
        next_attempt_at=start + 30, finished_exchange=True)])
    trunks.record_trunk_reports([TrunkReport(
        trunk_id=trunk.pk, state="registered", at=start + 30, registered_until=start + 3630, status=200,
        phrase="OK", finished_exchange=True, granted=3600)])
    output = run("show", "carrier")
    assert "state:" in output and "registered until" in output and "last answer:        200 OK" in output
    assert "password:           stored, encrypted" in output and SECRET not in output
    history = output.split("Recent attempts (2, newest first):")[1]
    assert history.index("registered for 3600 s") < history.index("No answer from the server: no answer from")


def test_set_changes_fields_and_keeps_the_password_unless_given():
    add()
    trunk = Trunk.objects.get()
    assert "expires, proxy" in run("set", "carrier", "--expires", "900", "--proxy", "sip:edge.example.com")
    trunk.refresh_from_db()
    assert trunk.expires == 900 and trunk.outbound_proxy == "sip:edge.example.com"
    assert trunks.trunk_snapshot()[trunk.pk].password == SECRET
    run("set", "carrier", "--password-stdin", stdin=StringIO("other-pw\n"))
    assert trunks.trunk_snapshot()[trunk.pk].password == "other-pw"
    run("set", "carrier", "--rename", "main", "--proxy", "")
    trunk.refresh_from_db()
    assert trunk.name == "main" and trunk.outbound_proxy == ""
    with pytest.raises(CommandError, match="--expires: "):
        run("set", "main", "--expires", "5")
    with pytest.raises(CommandError, match="Nothing to change"):
        run("set", "main")
    assert Trunk.objects.get().expires == 900


def test_enable_disable_register_now_delete():
    add()
    run("disable", "carrier")
    trunk = Trunk.objects.get()
    assert not trunk.enabled and trunk.status.state == "disabled"
    with pytest.raises(CommandError, match="is disabled"):
        run("register-now", "carrier")
    run("enable", "carrier")
    assert "Asked runsip" in run("register-now", "carrier")
    trunk.refresh_from_db()
    assert trunk.enabled and trunk.register_now_at is not None
    run("delete", "carrier")
    assert not Trunk.objects.exists()
    with pytest.raises(CommandError, match="No trunk named 'carrier'"):
        run("delete", "carrier")


@pytest.mark.django_db(transaction=True)
def test_errors_go_to_stderr_with_a_non_zero_exit():
    add()
    env = {"DJANGO_SETTINGS_MODULE": "pbx.settings",
           "DATABASE_URL": e2e.database_url(django_settings.DATABASES["default"]), "PATH": "/usr/bin:/bin"}
    failed = subprocess.run([sys.executable, str(MANAGE), "trunk", "set", "carrier", "--registrar", "nonsense:"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert failed.returncode != 0
    assert "--registrar:" in failed.stderr and failed.stdout == ""
    listed = subprocess.run([sys.executable, str(MANAGE), "trunk", "list"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0 and "carrier" in listed.stdout
