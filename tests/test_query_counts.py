"""Moves are set-based: the number of queries of an org move depends on the number of batches,
never on the number of rows in a batch (DESIGN.md, "Lessons").

Every count below is exact and explained query by query. An org sync (``api.sync_org``) whose
org override decides the direction, with the scope's lock rows already present (the steady
state: they are created once per org, by the first move ever made there), issues:

    planning (api.sync_org, before taking any lock)
      1  org override: the org's effective state (enabled, so no global flag query)
      1  course overrides of the org: pinned courses (a second move if any point the other way)
    guard.acquire
      2  PostgreSQL/MariaDB: SELECT ... FOR SHARE on "instance", SELECT ... FOR UPDATE on
         "org:OrgA"; SQLite: SELECT the lock rows present, UPDATE "instance" (the write lock)
    the move, in a savepoint
      1  SAVEPOINT
      2  decider, re-read under the lock: course overrides (pinned), org override
      1  forward only (PROBE): whether the org has any Casbin course scope yet; with none,
         no batch tests its targets one by one (sqlmoves.targets_absent)
      1  SQLite forward only (PROBE): whether casbin_rule has a trigger; with none, a
         batch's DELETE does not find each target again (sqlmoves.inserts_complete)
      per batch (PER_BATCH, either direction; authz_migration/sqlmoves.py):
        PostgreSQL, 1 statement:
        1  WITH bound (the batch: the highest primary key and the count of the next
           batch-size source rows, keyset: pk > cursor, ORDER BY pk, LIMIT batch size),
           src (its plain rows, each target tested once), written (INSERT of the targets
           missing), gone (DELETE of the rows whose target was there or written)
        SQLite and MariaDB first
        1  the batch's bounds, as PostgreSQL's ``bound`` (rows not read)
        SQLite, 2 statements (3 forward when the probe found a scope):
        1  forward after the probe found a scope only: SELECT the plain rows whose target
           is already there
        1  INSERT ... SELECT of the others' targets (rollback: INSERT OR IGNORE, the
           legacy table's unique key passing over the targets present)
        1  DELETE of the plain rows whose target is now there (of the whole batch, by its
           key range, when the INSERT wrote a target for each of its rows)
        MariaDB, 3 statements:
        1  SELECT the plain rows with their targets (a plain read; rollback: with the
           users' ids and whether each target or a look-alike of it is there)
        1  INSERT of the targets missing (forward: one JSON document; rollback: one
           executemany, in the legacy key's order)
        1  DELETE of the rows (forward: each looked up by the unique key, in key order;
           rollback: by primary key)
        then, only when the statements moved fewer rows than the batch holds
        (1)  read what is left of the batch (org-wide roles, odd rows), which goes through
           placement in Python: none here
      1  one more read, empty, when the last batch was full (a short batch is known to be last)
      1  RELEASE SAVEPOINT
    record
      1  INSERT the MigrationRun row

So FIXED = 2 + 2 + 1 + 2 + 1 + 1 = 9, and a move of N rows in batches of B issues
FIXED + PROBE + PER_BATCH * ceil(N / B) + (1 if N % B == 0 else 0) queries.
"""

from __future__ import annotations

import math
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from authz_migration import api, guard, stores
from authz_migration.conf import legacy_role_model
from tests.helpers import (
    casbin_count,
    fill_casbin_since_analyze,
    legacy_count,
    legacy_rows_by_user_id,
    make_users,
    seed_legacy,
)

ORG = "OrgA"
ROLES_PER_COURSE = 5
DEFAULT_BATCH = 5000
FIXED = 9
PER_BATCH = {
    ("postgresql", "forward"): 1,
    ("postgresql", "rollback"): 1,
    ("sqlite", "forward"): 3,
    ("sqlite", "rollback"): 3,
    ("mysql", "forward"): 4,
    ("mysql", "rollback"): 4,
}
PROBE = {
    ("postgresql", "forward"): 1,
    ("sqlite", "forward"): 2,
    ("mysql", "forward"): 1,
}
MULTI_TABLE_DELETE = re.compile(r"DELETE (\w+) FROM ")
EXECUTEMANY = re.compile(r"^\d+ times: ")

# Measured once on each database (rows, direction) -> {vendor: queries}.
EXACT = {
    (10, "forward"): {"postgresql": 11, "mysql": 14, "sqlite": 14},
    (10, "rollback"): {"postgresql": 10, "mysql": 13, "sqlite": 12},
    (1000, "forward"): {"postgresql": 11, "mysql": 14, "sqlite": 14},
    (1000, "rollback"): {"postgresql": 10, "mysql": 13, "sqlite": 12},
}


def expected(rows: int, batch_size: int, direction: str) -> int:
    batches = math.ceil(rows / batch_size)
    per_batch = PER_BATCH[(connection.vendor, direction)]
    probe = PROBE.get((connection.vendor, direction), 0)
    return FIXED + probe + per_batch * batches + (1 if rows % batch_size == 0 else 0)


@pytest.fixture
def org_data(db):
    """seed(n): n legacy role rows of OrgA, five per course, spread over 50 users."""
    guard.ensure_lock_rows([guard.INSTANCE, guard.org_lock_key(ORG)])

    def seed(rows: int, user_prefix: str = "u"):
        users = make_users(user_prefix, 50)
        assert seed_legacy(ORG, rows // ROLES_PER_COURSE, users, ROLES_PER_COURSE) == rows
        return legacy_rows_by_user_id()

    return seed


def counted_sync(org_override, choice: str, batch_size: int | None = None):
    """Flip OrgA's override, then sync the org; return the queries and the outcome."""
    org_override(ORG, choice)
    with CaptureQueriesContext(connection) as ctx:
        [out] = api.sync_org(ORG, batch_size=batch_size)
    return [q["sql"] for q in ctx.captured_queries], out


def statements(queries: list[str], verb: str, table: str) -> int:
    """How many of ``queries`` are ``verb`` statements on ``table`` (an ``executemany`` is
    logged as one query, ``"<n> times: <sql>"``)."""
    name = connection.ops.quote_name(table)
    prefix = f"{verb} {name}"
    # PostgreSQL's one statement per batch inserts and deletes (sqlmoves.py).
    one = f"{'INSERT INTO' if verb == 'INSERT INTO' else 'DELETE FROM'} {name}"

    def deletes_from_table(sql: str) -> bool:
        # MariaDB's key-order DELETE names the alias it deletes from (stores.py).
        alias = MULTI_TABLE_DELETE.match(sql)
        return bool(alias) and f"{name} {alias.group(1)} " in sql

    return sum(
        1
        for sql in queries
        if EXECUTEMANY.sub("", sql).replace("INSERT OR IGNORE", "INSERT").startswith(prefix)
        or (sql.startswith("WITH bound (upper, n) AS MATERIALIZED") and one in sql)
        or (verb == "DELETE FROM" and deletes_from_table(sql))
    )


@pytest.mark.parametrize("rows", [10, 1000])
def test_org_move_and_rollback_exact_query_counts(org_data, org_override, rows):
    before = org_data(rows)
    legacy_table = legacy_role_model()._meta.db_table

    forward_queries, forward = counted_sync(org_override, "on")

    assert (forward.status, forward.moved) == ("completed", rows)
    assert (legacy_count(), casbin_count()) == (0, rows)
    assert len(forward_queries) == EXACT[(rows, "forward")][connection.vendor]
    assert len(forward_queries) == expected(rows, DEFAULT_BATCH, "forward")
    assert statements(forward_queries, "INSERT INTO", "casbin_rule") == 1
    assert statements(forward_queries, "DELETE FROM", legacy_table) == 1

    rollback_queries, back = counted_sync(org_override, "off")

    assert (back.status, back.moved) == ("completed", rows)
    assert legacy_rows_by_user_id() == before
    assert len(rollback_queries) == EXACT[(rows, "rollback")][connection.vendor]
    assert len(rollback_queries) == expected(rows, DEFAULT_BATCH, "rollback")
    assert statements(rollback_queries, "INSERT INTO", legacy_table) == 1
    assert statements(rollback_queries, "DELETE FROM", "casbin_rule") == 1


def test_a_hundred_times_more_rows_cost_no_more_queries(org_data, org_override):
    org_data(10)
    small_forward, _ = counted_sync(org_override, "on")
    small_rollback, _ = counted_sync(org_override, "off")
    # The same org again, with 100 times the rows.
    legacy_role_model().objects.all().delete()
    org_data(1000, user_prefix="v")

    big_forward, forward = counted_sync(org_override, "on")
    big_rollback, back = counted_sync(org_override, "off")

    assert (forward.moved, back.moved) == (1000, 1000)
    assert (len(big_forward), len(big_rollback)) == (len(small_forward), len(small_rollback))


@pytest.mark.parametrize(
    "batch_size, batches, empty_read",
    [(100, 10, 1), (125, 8, 1), (120, 9, 0), (250, 4, 1), (1000, 1, 1), (5000, 1, 0)],
)
def test_query_count_grows_with_the_number_of_batches_only(
    org_data, org_override, batch_size, batches, empty_read
):
    before = org_data(1000)
    legacy_table = legacy_role_model()._meta.db_table

    forward_queries, forward = counted_sync(org_override, "on", batch_size)
    rollback_queries, back = counted_sync(org_override, "off", batch_size)

    assert (forward.moved, forward.metadata["batches"]) == (1000, batches)
    assert (back.moved, back.metadata["batches"]) == (1000, batches)
    assert legacy_rows_by_user_id() == before
    # Linear in the number of batches: FIXED + PER_BATCH per batch (+ the final empty read).
    forward_cost = PER_BATCH[(connection.vendor, "forward")]
    rollback_cost = PER_BATCH[(connection.vendor, "rollback")]
    probe = PROBE.get((connection.vendor, "forward"), 0)
    assert len(forward_queries) == FIXED + probe + forward_cost * batches + empty_read
    assert len(rollback_queries) == FIXED + rollback_cost * batches + empty_read
    # One INSERT and one DELETE per batch, whatever the batch's size. (PostgreSQL's final
    # empty read is its one statement, which finds no batch and writes nothing.)
    writes = batches + (empty_read if connection.vendor == "postgresql" else 0)
    assert statements(forward_queries, "INSERT INTO", "casbin_rule") == writes
    assert statements(forward_queries, "DELETE FROM", legacy_table) == writes
    assert statements(rollback_queries, "INSERT INTO", legacy_table) == writes
    assert statements(rollback_queries, "DELETE FROM", "casbin_rule") == writes


@pytest.mark.server_db
def test_existence_reads_stay_index_lookups_on_a_table_without_statistics(db):
    """casbin_rule filled since its last ANALYZE (a sync --all that starts from an empty
    table) has no column statistics; the per-batch existence read must still be a lookup
    per scope, not a scan of the table (it was: 100 ms a batch at 600,000 rows)."""
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL query plan")
    with connection.cursor() as cursor:
        fill_casbin_since_analyze(cursor, "OrgA")
    keys = {
        (f"user^u{i}", "role^course_staff", f"course-v1^course-v1:OrgB+C{i}+R") for i in range(100)
    }

    with CaptureQueriesContext(connection) as ctx:
        assert stores.existing_casbin(keys) == set()
    [read] = [q["sql"] for q in ctx.captured_queries]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + read.replace("%", "%%"))
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "authz_mig_casbin_scope" in plan, plan
    assert "Seq Scan on casbin_rule" not in plan, plan
