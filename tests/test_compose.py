"""docker-compose.yml describes the production shape (no Docker engine runs here, so the
file is checked as data: every process, from one image, with health checks and restarts)."""
from pathlib import Path

import yaml

COMPOSE = yaml.safe_load((Path(__file__).resolve().parent.parent / "docker-compose.yml").read_text())
REGIS_PROCESSES = {"web", "sip", "celery-worker", "celery-beat", "migrate"}


def test_it_has_every_process():
    assert set(COMPOSE["services"]) == REGIS_PROCESSES | {"postgres", "redis"}


def test_the_regis_processes_share_one_image_and_configuration():
    images = {COMPOSE["services"][name]["image"] for name in REGIS_PROCESSES}
    assert images == {"regis:latest"}
    for name in REGIS_PROCESSES:
        environment = COMPOSE["services"][name]["environment"]
        assert environment["DATABASE_URL"].startswith("postgres://") and environment["REDIS_URL"]


def test_long_running_services_restart_and_report_health():
    for name in ("postgres", "redis", "web", "sip"):
        service = COMPOSE["services"][name]
        assert service["restart"] == "unless-stopped" and service["healthcheck"]["test"], name
    assert COMPOSE["services"]["sip"]["healthcheck"]["test"][-2:] == ["healthcheck", "--sip"]


def test_sip_is_published_on_udp_and_tcp_and_data_persists():
    assert {"5060:5060/udp", "5060:5060/tcp"} <= set(COMPOSE["services"]["sip"]["ports"])
    assert {"pgdata", "regis-data"} <= set(COMPOSE["volumes"])


def test_the_commands_exist():
    from django.core.management import get_commands

    commands = get_commands()
    assert "runsip" in commands and "healthcheck" in commands
    assert COMPOSE["services"]["sip"]["command"][:3] == ["python", "manage.py", "runsip"]
    assert COMPOSE["services"]["celery-beat"]["command"][:3] == ["celery", "-A", "pbx"]


def test_sip_service_listens_on_tls_and_publishes_it():
    sip = COMPOSE["services"]["sip"]
    assert "tls:0.0.0.0:5061" in sip["command"]
    assert "5061:5061/tcp" in sip["ports"]
