"""Shared fixtures. Factories write through the configured models, so the same tests run
against the app's own tables and a host's."""

from __future__ import annotations

import itertools

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection

from authz_migration import sqlmoves
from authz_migration.conf import course_override_model, legacy_role_model, org_override_model
from tests.helpers import email_of

FLAG = "authz.enable_course_authoring"
_counter = itertools.count()


def pytest_report_header(config):
    return f"authz_migration tests on database: {settings.DB}"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Every test that uses the ``server_db`` fixture, directly or through another fixture,
    carries the ``server_db`` marker, so ``-m "not server_db"`` deselects it. Runs before
    ``-m`` filters the items."""
    for item in items:
        if "server_db" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
            "server_db"
        ):
            item.add_marker(pytest.mark.server_db)


@pytest.fixture
def server_db():
    """Skip unless the test database is PostgreSQL or MariaDB. A test that uses it (or a
    fixture that does) is marked ``server_db`` (pytest_collection_modifyitems)."""
    if connection.vendor == "sqlite":
        pytest.skip("needs PostgreSQL or MariaDB")


@pytest.fixture
def python_path(monkeypatch):
    """Every row of a move goes through placement in Python (sqlmoves off): for tests that
    break or watch one of the Python path's statements (moves.insert_casbin, ...)."""
    monkeypatch.setattr(sqlmoves, "usable", lambda: False)


@pytest.fixture
def people(make_user):
    """Three users, alice, bob and carol (emails from ``helpers.email_of``), by name."""
    return {name: make_user(name, email=email_of(name)) for name in ("alice", "bob", "carol")}


@pytest.fixture
def make_user(db):
    def make(username: str | None = None, **extra):
        name = username or f"user{next(_counter)}"
        return get_user_model().objects.create(username=name, **extra)

    return make


@pytest.fixture
def grant(db):
    """grant(user, course_id="course-v1:O+C+R", role="staff", org=None) -> legacy row."""

    def grant_(user, course_id: str = "", role: str = "staff", org: str | None = None):
        if org is None:
            org = course_id.split(":", 1)[1].split("+", 1)[0] if course_id else ""
        return legacy_role_model().objects.create(
            user=user, org=org, course_id=course_id, role=role
        )

    return grant_


@pytest.fixture
def global_flag(db):
    """global_flag(True/False/None): set the waffle flag's ``everyone``; None deletes it."""
    from waffle import get_waffle_flag_model

    def set_(everyone: bool | None):
        model = get_waffle_flag_model()
        if everyone is None:
            model.objects.filter(name=FLAG).delete()
            return None
        flag, _ = model.objects.update_or_create(name=FLAG, defaults={"everyone": everyone})
        return flag

    return set_


@pytest.fixture
def course_override(db):
    """course_override(course_id, "on"/"off", enabled=True) -> the new history row."""

    def save(course_id: str, choice: str = "on", enabled: bool = True, flag: str = FLAG, **kw):
        row = course_override_model()(
            waffle_flag=flag, course_id=course_id, override_choice=choice, enabled=enabled, **kw
        )
        row.save()
        return row

    return save


@pytest.fixture
def org_override(db):
    """org_override(org, "on"/"off", enabled=True) -> the new history row."""

    def save(org: str, choice: str = "on", enabled: bool = True, flag: str = FLAG, **kw):
        row = org_override_model()(
            waffle_flag=flag, org=org, override_choice=choice, enabled=enabled, **kw
        )
        row.save()
        return row

    return save
