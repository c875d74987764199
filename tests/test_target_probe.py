"""A forward move over an org or the instance asks once whether Casbin holds any course scope
of it yet (sqlmoves.targets_absent); with none, its batches write targets without testing
each. A command makes every batch a move of its own: its later batches carry the first
batch's answer for as long as no other move has run, and test again once one has."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from authz_migration import api, sqlmoves, verify
from authz_migration.conf import legacy_role_model
from authz_migration.models import MigrationRun
from authz_migration.stores import Selection, casbin_rule_model
from tests.helpers import (
    ROLE_MAP,
    ROLES,
    add_casbin_role,
    casbin_rows,
    g,
    legacy_count,
    make_users,
    seed_legacy,
)

ORG = "OrgA"
COURSES = 4
ROLES_PER_COURSE = 2


@pytest.fixture
def org_rows(db):
    """COURSES * ROLES_PER_COURSE plain legacy rows of OrgA, each its own batch below."""
    if not sqlmoves.usable():
        pytest.skip("no database path here (beside openedx-authz): nothing is probed")
    users = make_users("u", ROLES_PER_COURSE)
    return seed_legacy(ORG, COURSES, users, ROLES_PER_COURSE)


def command_batches(**options):
    """A forward move of OrgA as the command makes it: one batch (one row) per move."""
    return api.run_in_batches(api.plan("forward", orgs=[ORG], force=True), batch_size=1, **options)


def probes(queries: list[str]) -> int:
    """The Casbin scope probes among ``queries`` (stores.casbin_scopes_exist)."""
    table = connection.ops.quote_name(casbin_rule_model()._meta.db_table)
    return sum(1 for sql in queries if sql.startswith("SELECT") and f"FROM {table} WHERE" in sql)


def target_tests(queries: list[str]) -> int:
    """The statements that look each row's target up in Casbin (sqlmoves' ``present``)."""
    table = connection.ops.quote_name(casbin_rule_model()._meta.db_table)
    return sum(1 for sql in queries if f"EXISTS (SELECT 1 FROM {table} c" in sql)


def test_a_commands_later_batches_neither_probe_nor_test_their_targets(org_rows):
    with CaptureQueriesContext(connection) as ctx:
        outcomes = list(command_batches())
    queries = [q["sql"] for q in ctx.captured_queries]

    # (One more, empty, after the last full batch.)
    assert [o.moved for o in outcomes] == [1] * org_rows + [0]
    assert legacy_count() == 0 and len(casbin_rows()) == org_rows
    # The first batch probes; the others find the command's own run the last one recorded.
    assert probes(queries) == 1
    assert target_tests(queries) == 0


def test_a_move_between_a_commands_batches_makes_the_next_batch_test_its_targets(org_rows):
    """Another move runs between two batches of the command (it records a run), and a rule
    that a later batch's row would write appears with it: that batch must find the rule,
    not write it a second time. (A course of another org stands for the move here; the rule
    is added as such a writer might have added it.)"""
    batches = command_batches()
    first = next(batches)
    assert first.moved == 1 and first.targets_absent
    assert api.migrate_course("course-v1:OrgB+X+R", True, force=True).run is not None
    # The last course's first row (seed_legacy: user u1 there, the first role).
    later = ("u1", ROLE_MAP[ROLES[0]], f"course-v1:{ORG}+C{COURSES - 1}+R")
    add_casbin_role(*later)

    with CaptureQueriesContext(connection) as ctx:
        rest = list(batches)
    queries = [q["sql"] for q in ctx.captured_queries]

    assert sum(o.moved for o in rest) == org_rows - 1
    assert legacy_count() == 0
    rules = list(casbin_rule_model().objects.values_list(*("ptype", "v0", "v1", "v2")))
    assert rules.count(g(*later)[:4]) == 1  # found, not written twice
    assert len(rules) == org_rows
    # The next batch probed, found rules and tested each target; so did every later one.
    assert probes(queries) == len(rest)
    assert target_tests(queries) >= org_rows - 1


def test_a_command_that_recorded_no_run_does_not_carry_the_answer(org_rows):
    """A dry run records nothing and writes nothing: nothing is carried."""
    outcomes = list(command_batches(dry_run=True))
    assert outcomes and not any(o.targets_absent for o in outcomes)
    assert MigrationRun.objects.count() == 0


def test_on_sqlite_an_orgs_probes_and_bounds_search_an_index(org_rows):
    """SQLite's LIKE ignores case, so no index answers an org's key prefix: the target probe
    and the bounds of an org's scan (a cutover's parity proof, ``verify``) read the whole
    table, each org of a cutover three times. They ask for the prefix as a key range."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's query plans")
    add_casbin_role("u0", ROLE_MAP[ROLES[0]], "course-v1:OrgB+X+R")
    with CaptureQueriesContext(connection) as ctx:
        assert sqlmoves.targets_absent(Selection(org=ORG))
        report = verify.scan(Selection(org=ORG))
    assert sum(p.legacy_rows for p in report.placements.values()) == org_rows
    tables = {legacy_role_model()._meta.db_table, casbin_rule_model()._meta.db_table}
    role_reads = [q["sql"] for q in ctx.captured_queries if any(t in q["sql"] for t in tables)]
    assert len(role_reads) == 4  # the probe, two bounds (one empty: no read), one read
    with connection.cursor() as cursor:
        for sql in role_reads:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
            steps = [row[3] for row in cursor.fetchall()]
            assert not any(
                step.startswith("SCAN") and any(t in step for t in tables) for step in steps
            ), (sql, steps)
