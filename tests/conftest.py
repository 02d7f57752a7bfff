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
