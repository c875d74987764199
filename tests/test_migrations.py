"""Every migration of the app is reversible, and the models match the migrations.

MySQL/MariaDB run migrations without a transaction, so reversibility is checked where it can
fail half way: on PostgreSQL and MariaDB, one step at a time. Each test ends by migrating the
app forward again, so the database is fully migrated for the tests that follow.
"""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader

APP = "authz_migration"
CASBIN_INDEX = "authz_mig_casbin_scope"

# What each known migration adds: a table of this app, or the index on casbin_rule.
ADDS = {
    "0001_courseaccessrole": "authz_migration_courseaccessrole",
    "0002_courseflagoverride": "authz_migration_courseflagoverride",
    "0003_orgflagoverride": "authz_migration_orgflagoverride",
    "0004_migrationrun": "authz_migration_migrationrun",
    "0005_scopelock": "authz_migration_scopelock",
    "0006_casbin_rule_scope_index": CASBIN_INDEX,
}
APP_TABLES = {name for name in ADDS.values() if name.startswith(APP)}


def migration_names() -> list[str]:
    """The app's migrations in dependency order, from the migration files themselves."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    leaves = loader.graph.leaf_nodes(APP)
    assert len(leaves) == 1, f"{APP} has several leaf migrations: {leaves}"
    return [name for app, name in loader.graph.forwards_plan(leaves[0]) if app == APP]


def migrate(target: str) -> None:
    call_command("migrate", APP, target, verbosity=0, interactive=False)


def app_tables() -> set[str]:
    with connection.cursor() as cursor:
        return {t for t in connection.introspection.table_names(cursor) if t.startswith(APP)}


def casbin_constraints() -> dict:
    with connection.cursor() as cursor:
        return connection.introspection.get_constraints(cursor, "casbin_rule")


def has_casbin_index() -> bool:
    constraint = casbin_constraints().get(CASBIN_INDEX)
    if constraint is None:
        return False
    assert constraint["index"] is True
    assert constraint["columns"] == ["v2"]
    return True


def assert_state(applied: list[str]) -> None:
    """The schema is exactly what the ``applied`` migrations create."""
    expected = {ADDS[name] for name in applied if name in ADDS}
    assert app_tables() == expected & APP_TABLES
    assert has_casbin_index() is (CASBIN_INDEX in expected)
    # casbin_rule itself belongs to casbin_adapter and is never touched.
    with connection.cursor() as cursor:
        assert "casbin_rule" in connection.introspection.table_names(cursor)


def test_the_known_migrations_are_all_there():
    names = migration_names()
    assert names[: len(ADDS)] == list(ADDS)


@pytest.mark.django_db(transaction=True)
def test_migrate_to_zero_and_back(server_db):
    names = migration_names()
    assert_state(names)
    try:
        migrate("zero")
        assert_state([])
        assert app_tables() == set()
        assert CASBIN_INDEX not in casbin_constraints()
    finally:
        migrate(names[-1])
    assert_state(names)
    assert app_tables() == APP_TABLES
    assert has_casbin_index()


@pytest.mark.django_db(transaction=True)
def test_every_migration_is_reversible_one_step_at_a_time(server_db):
    names = migration_names()
    try:
        migrate("zero")
        assert_state([])
        for i, name in enumerate(names):
            previous = names[i - 1] if i else "zero"
            migrate(name)
            assert_state(names[: i + 1])
            migrate(previous)
            assert_state(names[:i])
            migrate(name)
            assert_state(names[: i + 1])
    finally:
        migrate(names[-1])
    assert_state(names)


@pytest.mark.django_db(transaction=True)
def test_the_database_is_fully_migrated_afterwards(server_db):
    """Runs after the tests above (file order) and checks what they leave behind."""
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    assert executor.migration_plan(executor.loader.graph.leaf_nodes()) == []
    assert app_tables() == APP_TABLES
    assert has_casbin_index()


@pytest.mark.django_db
def test_no_missing_migrations():
    out = io.StringIO()
    # --check exits with status 1 (SystemExit) when the models need a migration.
    call_command("makemigrations", APP, "--check", "--dry-run", stdout=out, verbosity=1)
    assert "No changes detected" in out.getvalue()
