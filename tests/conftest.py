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
