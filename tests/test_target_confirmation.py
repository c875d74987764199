"""A source row is deleted only when its target row exists: a target the database silently
did not write (a trigger that skips the row) leaves its source in place, reported."""

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from authz_migration import api
from authz_migration.conf import legacy_role_model
from authz_migration.models import MigrationRun
from authz_migration.signals import migration_run_finished
from authz_migration.stores import casbin_rule_model

SKIP_TRIGGERS = {
    # A BEFORE trigger returning NULL drops the row without an error.
    "postgresql": [
        """CREATE FUNCTION authz_test_skip() RETURNS trigger AS $$
           BEGIN IF NEW.v0 = 'user^skipme' THEN RETURN NULL; END IF; RETURN NEW; END;
           $$ LANGUAGE plpgsql""",
        """CREATE TRIGGER authz_test_skip BEFORE INSERT ON casbin_rule
           FOR EACH ROW EXECUTE FUNCTION authz_test_skip()""",
    ],
    # RAISE(IGNORE) abandons the row's insert without an error.
    "sqlite": [
        """CREATE TRIGGER authz_test_skip BEFORE INSERT ON casbin_rule
           WHEN NEW.v0 = 'user^skipme' BEGIN SELECT RAISE(IGNORE); END""",
    ],
}
DROP = {
    "postgresql": [
        "DROP TRIGGER IF EXISTS authz_test_skip ON casbin_rule",
        "DROP FUNCTION IF EXISTS authz_test_skip()",
    ],
    "sqlite": ["DROP TRIGGER IF EXISTS authz_test_skip"],
}


# SQLite also keeps triggers of one connection apart (sqlite_temp_master), on main's table.
TEMPORARY = """CREATE TEMP TRIGGER authz_test_skip BEFORE INSERT ON main.casbin_rule
               WHEN NEW.v0 = 'user^skipme' BEGIN SELECT RAISE(IGNORE); END"""


@pytest.fixture(params=["trigger", "temporary trigger"])
def skipping_trigger(request):
    if connection.vendor not in SKIP_TRIGGERS:
        pytest.skip("MariaDB triggers cannot skip a row silently: they fail it")
    if request.param == "temporary trigger" and connection.vendor != "sqlite":
        pytest.skip("a SQLite temporary trigger")
    with connection.cursor() as cursor:
        if request.param == "temporary trigger":
            cursor.execute(TEMPORARY)
        else:
            for sql in SKIP_TRIGGERS[connection.vendor]:
                cursor.execute(sql)
    yield
    with connection.cursor() as cursor:
        for sql in DROP[connection.vendor]:
            cursor.execute(sql)


@pytest.mark.django_db(transaction=True)
def test_unwritten_target_keeps_its_source(make_user, grant, skipping_trigger):
    grant(make_user("skipme"), "course-v1:OrgA+C1+R", "staff")
    grant(make_user("alice"), "course-v1:OrgA+C1+R", "instructor")

    outcome = api.migrate_org("OrgA", True, force=True)

    assert outcome.status == MigrationRun.Status.PARTIAL_SUCCESS
    assert outcome.moved == 1
    [row] = outcome.metadata["could_not_move"]["target_not_confirmed"]["rows"]
    assert row["scope"] == "course-v1^course-v1:OrgA+C1+R"
    remaining = legacy_role_model().objects.values_list("user__username", "role")
    assert list(remaining) == [("skipme", "staff")]
    assert list(casbin_rule_model().objects.values_list("v0", flat=True)) == ["user^alice"]


@pytest.mark.django_db(transaction=True)
def test_a_listener_hears_only_of_the_targets_written(make_user, grant, skipping_trigger):
    """With a receiver of migration_run_finished, the move lists the rules it wrote (an
    enforcer or a watcher follows from that list): the rule the trigger skipped is not in
    it, and its source stays where it was."""
    heard = []

    def receiver(sender, run=None, added=(), removed=(), **kwargs):
        heard.append(([tuple(rule) for rule in added], list(removed)))

    grant(make_user("skipme"), "course-v1:OrgA+C1+R", "staff")
    grant(make_user("alice"), "course-v1:OrgA+C1+R", "instructor")
    migration_run_finished.connect(receiver, weak=False)
    try:
        outcome = api.migrate_org("OrgA", True, force=True)
    finally:
        migration_run_finished.disconnect(receiver)

    assert outcome.moved == 1
    written = ("user^alice", "role^course_admin", "course-v1^course-v1:OrgA+C1+R")
    assert heard == [([written], [])]
    remaining = legacy_role_model().objects.values_list("user__username", flat=True)
    assert list(remaining) == ["skipme"]


def _sqlite_forward_delete(make_user, grant, trigger: bool, odd_row: bool) -> str:
    """The DELETE of a SQLite forward move of one plain row, with a trigger on casbin_rule
    that skips nothing (its presence alone counts) and a row of a role outside the map in
    the same batch (not plain: it stays) when asked."""
    from django.test.utils import CaptureQueriesContext

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's forward DELETE")
    alice = make_user("alice")
    grant(alice, "course-v1:OrgA+C1+R", "instructor")
    if odd_row:
        grant(alice, "course-v1:OrgA+C1+R", "finance_admin")
    if trigger:
        with connection.cursor() as cursor:
            cursor.execute(TEMPORARY.replace("user^skipme", "user^nobody"))
    try:
        with CaptureQueriesContext(connection) as ctx:
            outcome = api.migrate_org("OrgA", True, force=True)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(DROP["sqlite"][0])
    assert outcome.moved == 1
    table = connection.ops.quote_name(legacy_role_model()._meta.db_table)
    [delete] = [
        q["sql"] for q in ctx.captured_queries if q["sql"].startswith(f"DELETE FROM {table}")
    ]
    return delete


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("with_trigger", [False, True])
def test_sqlites_delete_finds_each_target_again_only_under_a_trigger(
    make_user, grant, with_trigger
):
    """Without a trigger on casbin_rule an INSERT writes every row it selects or fails, so
    the DELETE of the plain rows of a SQLite forward batch leaves out the per-row target
    test; a trigger (any trigger: it could skip rows) brings the test back."""
    delete = _sqlite_forward_delete(make_user, grant, with_trigger, odd_row=True)
    assert ("casbin_rule" in delete) is with_trigger, delete


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("with_trigger", [False, True])
def test_sqlites_delete_takes_a_whole_batch_by_its_keys_when_each_row_was_written(
    make_user, grant, with_trigger
):
    """A batch whose INSERT wrote as many targets as it has rows, trigger or not: its DELETE
    takes the batch's key range, with neither the plain predicate, the users nor a target
    test."""
    delete = _sqlite_forward_delete(make_user, grant, with_trigger, odd_row=False)
    users = connection.ops.quote_name(get_user_model()._meta.db_table)
    assert "casbin_rule" not in delete and "GLOB" not in delete, delete
    assert users not in delete and "EXISTS" not in delete, delete
