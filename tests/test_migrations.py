"""Every migration of the app is reversible, and the models match the migrations.

MySQL/MariaDB run migrations without a transaction, so reversibility is checked where it can
fail half way: on PostgreSQL and MariaDB, one step at a time. Each test ends by migrating the
app forward again, so the database is fully migrated for the tests that follow.
"""

from __future__ import annotations

import inspect
import io
import re

import pytest
from django.core.management import call_command
from django.db import connection, models
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


# --- safe schema migrations: linters ------------------------------------------------------------
#
# A failed migration on MySQL/MariaDB is left half applied (DDL is not transactional there), so
# each migration of this app stays small and single-purpose, reversible, and free of data
# rewrites. Two linters check that: django-migration-linter (backward-incompatible SQL, as
# generated for the database under test, and RunPython conventions), and the app's own rules
# below, which read the migration operations themselves.

# Operations that rewrite or drop data, or rename what running code still reads: not in this
# app's migrations (a rolling deploy runs old and new code side by side).
FORBIDDEN_OPERATIONS = (
    "RunSQL",
    "RemoveField",
    "DeleteModel",
    "RenameField",
    "RenameModel",
    "AlterModelTable",
)
# What a RunPython function must not do: touch rows (DDL through the schema editor is fine).
DATA_ACCESS = re.compile(
    r"\.objects\b|\.save\(|\.delete\(|\.update\(|bulk_create|bulk_update|\.cursor\(|\.execute\("
)


def migration_problems(migration) -> list[str]:
    """What makes ``migration`` unsafe to run on a live MariaDB, PostgreSQL or SQLite site."""
    from django.db import migrations as ops

    problems = []
    created = {op.name.lower() for op in migration.operations if isinstance(op, ops.CreateModel)}
    touched = set()
    for op in migration.operations:
        kind = type(op).__name__
        if kind in FORBIDDEN_OPERATIONS:
            problems.append(f"{kind} (drops, renames or rewrites what old code reads)")
        if getattr(op, "reversible", True) is False:
            problems.append(f"{kind} is not reversible")
        if isinstance(op, ops.RunPython):
            if len(migration.operations) > 1:
                problems.append("RunPython shares its migration with other operations")
            for code in (op.code, op.reverse_code):
                if code is not None and DATA_ACCESS.search(inspect.getsource(code)):
                    problems.append(f"RunPython {code.__name__} reads or writes rows")
            continue
        model = getattr(op, "model_name", None) or getattr(op, "name", "")
        touched.add(model.lower())
        field = getattr(op, "field", None)
        if isinstance(op, ops.AddField) and model.lower() not in created:
            if field.unique and field.has_default():
                problems.append(f"AddField {model}.{op.name}: a unique column with a default")
            if not field.null and not field.has_default() and not field.many_to_many:
                problems.append(f"AddField {model}.{op.name}: NOT NULL without a default")
        if isinstance(op, ops.AlterField) and field.unique:
            problems.append(f"AlterField {model}.{op.name} makes a column unique")
        if isinstance(op, ops.AddConstraint) and model.lower() not in created:
            if isinstance(op.constraint, models.UniqueConstraint):
                problems.append(f"AddConstraint {op.constraint.name}: unique on a populated table")
    if len(touched) > 1:
        problems.append(f"touches several models at once: {sorted(touched)}")
    return problems


def app_migrations() -> list:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return [loader.disk_migrations[(APP, name)] for name in migration_names()]


def test_every_migration_follows_the_safety_rules():
    found = {m.name: migration_problems(m) for m in app_migrations()}
    assert {name: problems for name, problems in found.items() if problems} == {}


def _fake_migration(*operations):
    from django.db import migrations as ops

    return type("Migration", (ops.Migration,), {"operations": list(operations)})("0099_x", APP)


def _rewrite_roles(apps, schema_editor):
    apps.get_model(APP, "CourseAccessRole").objects.update(role="staff")


def test_the_safety_rules_catch_unsafe_migrations():
    """The rules above are only worth something if they fire: each unsafe kind of operation
    is reported."""
    from django.db import migrations as ops

    unsafe = {
        "raw SQL": [ops.RunSQL("UPDATE t SET x = 1", reverse_sql="")],
        "no reverse": [ops.RunPython(migrations_noop)],
        "data rewrite": [ops.RunPython(_rewrite_roles, migrations_noop)],
        "unique with default": [
            ops.AddField(
                "migrationrun", "token", models.CharField(max_length=8, unique=True, default="x")
            )
        ],
        "not null without default": [
            ops.AddField("migrationrun", "token", models.CharField(max_length=8))
        ],
        "unique constraint on a populated table": [
            ops.AddConstraint(
                "migrationrun", models.UniqueConstraint(fields=["scope_key"], name="one_run")
            )
        ],
        "drop": [ops.RemoveField("migrationrun", "metadata")],
        "two models": [
            ops.AddIndex("migrationrun", models.Index(fields=["trigger"], name="a")),
            ops.AddIndex("scopelock", models.Index(fields=["key"], name="b")),
        ],
    }
    for what, operations in unsafe.items():
        assert migration_problems(_fake_migration(*operations)), what
    safe = _fake_migration(
        ops.AddField("migrationrun", "note", models.TextField(blank=True, default="")),
        ops.AddIndex("migrationrun", models.Index(fields=["trigger"], name="authz_mig_x")),
    )
    assert migration_problems(safe) == []


def migrations_noop(apps, schema_editor):
    """A RunPython body that does nothing."""


@pytest.mark.django_db(transaction=True)
def test_django_migration_linter_finds_nothing(capsys):
    """django-migration-linter over this app's migrations, with the SQL that ``sqlmigrate``
    generates for the database under test; every warning counts as an error."""
    from django_migration_linter import MigrationLinter

    linter = MigrationLinter(
        include_apps=[APP], all_warnings_as_errors=True, no_cache=True, database="default"
    )
    linter.lint_all_migrations(app_label=APP)
    linter.print_summary()
    report = capsys.readouterr().out
    assert linter.nb_total == len(migration_names()), report
    assert (linter.has_errors, linter.nb_warnings) == (False, 0), report
    assert linter.nb_valid == linter.nb_total, report


@pytest.mark.django_db(transaction=True)
def test_unapplying_the_casbin_index_keeps_every_casbin_row(server_db):
    """0006 adds an index to a table this app does not own: taking it off again (and putting
    it back) must leave casbin_rule's rows exactly as they were."""
    from casbin_adapter.models import CasbinRule

    names = migration_names()
    rows = [
        CasbinRule(ptype="g", v0=f"user^u{i}", v1="role^course_staff", v2=f"course-v1^k{i}")
        for i in range(50)
    ]
    CasbinRule.objects.bulk_create(rows)
    before = sorted(CasbinRule.objects.values_list("id", "ptype", "v0", "v1", "v2"))
    try:
        migrate("0005_scopelock")
        assert not has_casbin_index()
        assert sorted(CasbinRule.objects.values_list("id", "ptype", "v0", "v1", "v2")) == before
    finally:
        migrate(names[-1])
    assert has_casbin_index()
    assert sorted(CasbinRule.objects.values_list("id", "ptype", "v0", "v1", "v2")) == before
