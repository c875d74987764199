"""The database's own path for plain rows (authz_migration/sqlmoves.py) decides nothing on
its own: on data full of rows it must not take, a move ends exactly as when every row goes
through placement in Python, store for store and count for count, on every database."""

from __future__ import annotations

import pytest
from django.db import connection

from authz_migration import api, sqlmoves
from authz_migration.conf import legacy_role_model
from authz_migration.models import MigrationRun
from authz_migration.stores import casbin_rule_model
from tests.helpers import (
    SAFETY_NET,
    add_casbin,
    add_casbin_role,
    fill_casbin_since_analyze,
    legacy_rows_by_username,
    make_users,
    seed_legacy,
)

ORG = "OrgA"
PLAIN = [f"course-v1:OrgA+C{i}+R" for i in range(6)]
PINNED = "course-v1:OrgA+Pinned+R"
# Rows the database must leave to placement, each for its own reason.
ODD = [
    ("", "instructor", ORG),  # an org-wide role
    (PLAIN[0], "finance_admin", ORG),  # a role outside the map
    ("library-v1:OrgA+Lib", "staff", ORG),  # a library key
    ("course-v1:OrgA+Café+R", "staff", ORG),  # a letter outside ASCII: placement moves it
    ("course-v1:OrgA+C 1+R", "staff", ORG),  # a space: a malformed key
    ("course-v1:OrgA+C8+R\n", "staff", ORG),  # a final newline (PCRE's $ lets it by)
    ("course-v1:OrgA++R", "staff", ORG),  # an empty course part
    ("course-v1:OrgA+C9+", "staff", ORG),  # an empty run
    ("course-v1:OrgA+C9+R+X", "staff", ORG),  # a part too many
    ("course-v1:OrgA+C7+R", "staff", "orga"),  # the org column names another org
    ("course-v1:orga+C1+R", "staff", "orga"),  # a look-alike org, not OrgA
    ("course-v1:Org_A+C1+R", "beta_testers", "Org_A"),  # LIKE's wildcard, not OrgA
    (PINNED, "staff", ORG),  # a course with its own override
]
COUNTS = ("scanned", "moved", "created", "already_present", "in_place", "excluded")


def seed(make_user, course_override) -> None:
    users = [make_user(name) for name in ("alice", "dave", "bob", "carol")]
    model = legacy_role_model()
    rows = [
        model(user=user, org=ORG, course_id=course, role=role)
        for user in users
        for course in PLAIN
        for role in ("staff", "instructor")
    ]
    # Their own user: under MariaDB's _ci key, look-alike rows of one user would clash.
    erin = make_user("erin")
    rows += [model(user=erin, org=org, course_id=c, role=r) for c, r, org in ODD]
    if connection.vendor != "mysql":  # (MariaDB's _ci key holds one of the two)
        # The same role as the "orga" row of C7 (one target for both), its org column right.
        rows.append(model(user=erin, org=ORG, course_id="course-v1:OrgA+C7+R", role="staff"))
    model.objects.bulk_create(rows)
    course_override(PINNED, "off")
    add_casbin_role("bob", "course_staff", PLAIN[1])  # already there: moves without a write
    add_casbin("user^carol", "role^course_staff", f"course-v1^{PLAIN[2]}", "x")  # not equal


def state() -> tuple:
    casbin = sorted(casbin_rule_model().objects.values_list("ptype", "v0", "v1", "v2", "v3"))
    return sorted(legacy_rows_by_username()), casbin


def summary(outcome) -> dict:
    metadata = outcome.metadata
    return {
        "status": outcome.status,
        "counts": {name: metadata["counts"][name] for name in (*COUNTS, "not_migrated")},
        "could_not_move": {k: v["count"] for k, v in metadata["could_not_move"].items()},
        "not_migrated_by_role": metadata["not_migrated_by_role"],
        "excluded_courses": metadata["excluded_courses"]["items"],
    }


def both_ways(monkeypatch, run) -> list:
    """``run()``'s summaries and end states with the database's path, then (the data rolled
    back by the test's transaction savepoint) with every row through placement."""
    from django.db import transaction

    if not sqlmoves.usable():
        pytest.skip("no database path here (beside openedx-authz): nothing to compare")
    results = []
    for usable in (sqlmoves.usable, lambda: False):
        monkeypatch.setattr(sqlmoves, "usable", usable)
        with transaction.atomic():
            outcomes = run()
            results.append(([summary(o) for o in outcomes], state()))
            transaction.set_rollback(True)
    return results


# One row a batch: each odd row meets the predicate alone (on MariaDB a batch with any
# other row would go through placement whole, whatever the predicate said of it).
@pytest.mark.parametrize("batch_size", [5000, 1])
def test_an_org_move_and_back_ends_as_placement_alone_would(
    db, make_user, course_override, org_override, monkeypatch, batch_size
):
    seed(make_user, course_override)

    def run():
        forward = api.migrate_org(ORG, True, force=True, batch_size=batch_size)
        back = api.migrate_org(ORG, False, force=True, batch_size=batch_size)
        org_override(ORG, "on")
        synced = api.sync_org(ORG, batch_size=batch_size)
        return [forward, back, *synced]

    database, python = both_ways(monkeypatch, run)
    assert database == python
    [forward, *_], _ = database
    assert forward["counts"]["moved"] >= len(PLAIN) * 8  # the plain rows did move
    assert forward["counts"]["already_present"] >= 1


def test_an_instance_sync_ends_as_placement_alone_would(
    db, make_user, course_override, org_override, global_flag, monkeypatch
):
    seed(make_user, course_override)
    org_override("orga", "off")  # an org with its own override stays put
    global_flag(True)

    def run():
        return list(api.sync_instance())

    database, python = both_ways(monkeypatch, run)
    assert database == python


def test_a_forced_move_of_one_course_ends_as_placement_alone_would(
    db, make_user, course_override, monkeypatch
):
    seed(make_user, course_override)

    def run():
        forward = api.migrate_course(PLAIN[3], True, force=True)
        return [forward, api.migrate_course(PLAIN[3], False, force=True)]

    database, python = both_ways(monkeypatch, run)
    assert database == python


def test_plain_rows_cost_the_database_path_no_python_placement(db, make_user, monkeypatch):
    """The plain rows of a batch never reach placement: only the odd ones do (on MariaDB a
    batch with an odd row goes through placement whole: here the org-wide role has a batch
    of its own)."""
    if not sqlmoves.usable():
        pytest.skip("no database path here")
    placed = _placed_rows_of_a_move(make_user, monkeypatch, batch_size=len(PLAIN))
    assert [row.course_id for row in placed] == [""]  # the org-wide role alone


def test_on_mariadb_a_batch_with_an_odd_row_goes_through_placement_whole(
    db, make_user, monkeypatch
):
    """So that all its legacy rows are deleted by one statement, in one key order
    (docs/decisions/0011): the org-wide role sorts before the course roles of its user."""
    if connection.vendor != "mysql":
        pytest.skip("MariaDB/MySQL only")
    placed = _placed_rows_of_a_move(make_user, monkeypatch, batch_size=len(PLAIN) + 1)
    assert sorted(row.course_id for row in placed) == ["", *PLAIN]


def _placed_rows_of_a_move(make_user, monkeypatch, batch_size: int) -> list:
    """Move an org of plain rows and one org-wide role (the last row); the rows placement
    saw."""
    from authz_migration import placement

    alice = make_user("alice")
    model = legacy_role_model()
    model.objects.bulk_create(
        [model(user=alice, org=ORG, course_id=c, role="staff") for c in PLAIN]
        + [model(user=alice, org=ORG, course_id="", role="staff")]
    )
    placed = []
    real = placement.legacy_verdicts
    monkeypatch.setattr(
        placement, "legacy_verdicts", lambda rows, decide: placed.extend(rows) or real(rows, decide)
    )

    outcome = api.migrate_org(ORG, True, force=True, batch_size=batch_size)

    assert (outcome.status, outcome.moved) == (MigrationRun.Status.COMPLETED, len(PLAIN) + 1)
    return placed


def test_plain_casbin_rows_cost_a_rollback_no_python_placement(db, make_user, monkeypatch):
    """Back the same way: of plain Casbin rows and one rule outside the role map (the last
    row, in a batch of its own), only that rule reaches placement."""
    if not sqlmoves.usable():
        pytest.skip("no database path here")
    placed = _placed_rules_of_a_rollback(make_user, monkeypatch, None)
    assert [row.v1 for row in placed] == ["role^library_admin"]


def test_on_mariadb_a_rollback_batch_meeting_a_look_alike_goes_through_placement_whole(
    db, make_user, monkeypatch
):
    """A legacy row equal but for case to a plain row's target (which MariaDB's ``_ci``
    unique key holds as the same row): the batch goes through placement, which reports that
    row and moves the others, all written by one INSERT in key order (docs/decisions/0011)."""
    if connection.vendor != "mysql":
        pytest.skip("MariaDB/MySQL only: elsewhere the unique key compares case")
    placed = _placed_rules_of_a_rollback(make_user, monkeypatch, "orga")
    plain = [row.v2 for row in placed if row.v1 == "role^course_staff"]
    assert sorted(plain) == sorted(f"course-v1^{c}" for c in PLAIN)


def test_an_orgs_rows_go_through_placement_when_its_name_is_not_ascii(db, make_user, monkeypatch):
    """An org's name may hold any letter (roles.validate_org); the database takes ASCII keys
    only, and where it tests only the part of a key after the org's own prefix, it does so
    only for an org whose name is ASCII: these rows go through placement, both ways."""
    from authz_migration import placement

    if not sqlmoves.usable():
        pytest.skip("no database path here")
    org = "Café"
    alice = make_user("alice")
    model = legacy_role_model()
    courses = [f"course-v1:{org}+C{i}+R" for i in range(3)]
    model.objects.bulk_create(
        [model(user=alice, org=org, course_id=c, role="staff") for c in courses]
    )
    placed = []
    for name in ("legacy_verdicts", "casbin_verdicts"):
        real = getattr(placement, name)
        monkeypatch.setattr(
            placement,
            name,
            lambda rows, decide, real=real: placed.extend(rows) or real(rows, decide),
        )

    forward = api.migrate_org(org, True, force=True)
    back = api.migrate_org(org, False, force=True)

    assert (forward.moved, back.moved) == (3, 3)
    assert len(placed) == 6
    assert sorted(model.objects.values_list("course_id", flat=True)) == courses


def _placed_rules_of_a_rollback(make_user, monkeypatch, look_alike: str | None) -> list:
    """Roll an org of plain Casbin rows back, and a rule outside the role map in a batch of
    its own, with a legacy row of org ``look_alike`` (when given) equal to the first rule's
    target but for case; the rules placement saw."""
    from authz_migration import placement

    alice = make_user("alice")
    for course in PLAIN:
        add_casbin_role("alice", "course_staff", course)
    add_casbin_role("alice", "library_admin", PLAIN[0])
    if look_alike:
        legacy_role_model().objects.create(
            user=alice, org=look_alike, course_id=PLAIN[0], role="staff"
        )
    placed = []
    real = placement.casbin_verdicts
    monkeypatch.setattr(
        placement, "casbin_verdicts", lambda rows, decide: placed.extend(rows) or real(rows, decide)
    )

    outcome = api.migrate_org(ORG, False, force=True, batch_size=len(PLAIN))

    conflicts = outcome.metadata["could_not_move"].get("conflicting_row", {}).get("count", 0)
    assert (outcome.moved, conflicts) == (len(PLAIN) - bool(look_alike), bool(look_alike))
    assert outcome.metadata["counts"]["not_migrated"] == 1
    return placed


@pytest.mark.server_db
def test_the_database_path_reads_each_target_by_index_on_a_table_without_statistics(db):
    """casbin_rule filled since its last ANALYZE looks empty to PostgreSQL's planner; each
    plain row's target must still be looked up through the scope index, never by scanning
    the table (it would be a scan per row)."""
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL query plan")
    from authz_migration.stores import Selection, batch_keys

    selection = Selection(org=ORG)
    batch = sqlmoves._Forward(selection, sqlmoves.Rule(), 0, sqlmoves.BOUND)
    with connection.cursor() as cursor:
        fill_casbin_since_analyze(cursor, "OrgB")
        text, params = batch.one_statement(False, batch_keys(selection, True, 0, 10))
        cursor.execute("EXPLAIN " + text, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "authz_mig_casbin_scope" in plan, plan
    assert "Seq Scan on casbin_rule" not in plan, plan


@pytest.mark.parametrize("order", ["odd row first", "plain row first"])
def test_a_target_placement_wrote_is_never_written_twice(db, make_user, monkeypatch, order):
    """With no Casbin row of the org at the start, batches leave out the per-row test of
    their targets; once placement has written a target (a row whose org column names
    another org), a later batch's plain row with the same target must find it."""
    if connection.vendor == "mysql":
        pytest.skip("MariaDB's _ci key holds one of the two rows")
    erin = make_user("erin")
    model = legacy_role_model()
    course = "course-v1:OrgA+C7+R"
    rows = [model(user=erin, org="orga", course_id=course, role="staff")]
    rows.append(model(user=erin, org=ORG, course_id=course, role="staff"))
    if order == "plain row first":
        rows.reverse()
    rows += [model(user=erin, org=ORG, course_id=c, role="staff") for c in PLAIN]
    for row in rows:
        row.save()  # in this order: the primary keys are the batches' order

    def run():
        return [api.migrate_org(ORG, True, force=True, batch_size=1)]

    database, python = both_ways(monkeypatch, run)
    assert database == python
    [forward], (legacy, casbin) = database
    assert forward["counts"]["moved"] == len(rows)
    assert legacy == []
    assert len(casbin) == len(set(casbin)) == len(PLAIN) + 1  # one target for the two rows


def test_a_rollback_over_repeated_and_present_targets_ends_as_placement_alone_would(
    db, make_user, monkeypatch
):
    """Casbin may hold one rule twice (in different batches), and a rule's legacy row may
    already be there: each source still goes, each target is written once."""
    alice = make_user("alice")
    make_user("bob")
    for course in PLAIN[:3]:
        add_casbin_role("alice", "course_staff", course)
        add_casbin_role("bob", "course_admin", course)
    add_casbin_role("alice", "course_staff", PLAIN[0])  # the same rule again, a later batch
    legacy_role_model().objects.create(user=alice, org=ORG, course_id=PLAIN[1], role="staff")

    def run():
        return [api.migrate_org(ORG, False, force=True, batch_size=2)]

    database, python = both_ways(monkeypatch, run)
    assert database == python
    [back], (legacy, casbin) = database
    assert (back["counts"]["moved"], back["counts"]["created"]) == (7, 5)
    assert casbin == [] and len(legacy) == len(set(legacy)) == 6


def test_sqlites_deletes_read_only_their_batchs_key_range(db):
    """The batch's range stands outside the DELETE's EXISTS: inside alone, SQLite scanned
    the whole table for every batch."""
    if connection.vendor != "sqlite":
        pytest.skip("a SQLite query plan")
    from authz_migration.stores import Selection

    rule = sqlmoves.Rule()
    statements = [
        sqlmoves._Forward(Selection(org=ORG), rule, 0, 10).delete(),
        sqlmoves._Rollback(Selection(org=ORG), rule, 0, 10).delete(False),
    ]
    for text, params in statements:
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN QUERY PLAN " + text, params)
            outer = cursor.fetchall()[0][3]
        assert outer.startswith("SEARCH") and "rowid>?" in outer, outer


def test_sqlites_whole_batch_deletes_read_only_their_batchs_key_range(db):
    """The DELETE of a whole batch finds its rows by their primary key range, never through
    the org's index (which would read the whole org for every batch) nor by a scan."""
    if connection.vendor != "sqlite":
        pytest.skip("a SQLite query plan")
    from authz_migration.stores import Selection

    users = make_users("u", 5)
    for org in (ORG, "OrgB"):
        seed_legacy(org, 200, users)
    selection, rule = Selection(org=ORG), sqlmoves.Rule()
    forward = sqlmoves._Forward(selection, rule, 5, 10)
    back = sqlmoves._Rollback(selection, rule, 5, 10)
    for text, params in (forward.delete_batch(), back.delete_batch(False)):
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # statistics, as a live database has them
            cursor.execute("EXPLAIN QUERY PLAN " + text, params)
            steps = [row[3] for row in cursor.fetchall()]
        assert steps == [
            "SEARCH " + steps[0].split()[1] + " USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"
        ], steps


def test_sqlites_forward_statements_read_by_the_batchs_key_range(db):
    """The key test's GLOB has a fixed start the course_id index can serve; through that
    index SQLite read the whole org for every batch, to keep the batch's key range."""
    if connection.vendor != "sqlite":
        pytest.skip("a SQLite query plan")
    from authz_migration.stores import Selection

    users = make_users("u", 5)
    for org in (ORG, "OrgB"):
        seed_legacy(org, 200, users)
    batch = sqlmoves._Forward(Selection(org=ORG), sqlmoves.Rule(), 0, 10)
    for text, params in (batch.insert(False, []), batch.present_sources()):
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # statistics, as a live database has them
            cursor.execute("EXPLAIN QUERY PLAN " + text, params)
            outer = cursor.fetchall()[0][3]
        assert "rowid>?" in outer and "course_id" not in outer, outer


@pytest.mark.django_db(transaction=True)
@pytest.mark.server_db
def test_a_row_updated_while_its_batch_moves_keeps_its_new_role(monkeypatch):
    """PostgreSQL's batch deletes the row versions it read (ctid). A row another transaction
    updates between the read and the DELETE is not deleted with its old values' target: it
    goes through placement as it now is, and its new role reaches Casbin."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's one statement")
    import threading

    from django.db import connections, transaction

    from tests.helpers import in_thread, make_users, wait_for

    [alice] = make_users("ctid", 1)
    model = legacy_role_model()
    model.objects.bulk_create(
        [model(user=alice, org=ORG, course_id=c, role="staff") for c in PLAIN]
    )
    updated, release = threading.Event(), threading.Event()

    def update_then_hold():
        with transaction.atomic():
            model.objects.filter(course_id=PLAIN[0]).update(role="instructor")
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                box["pid"] = cursor.fetchone()[0]
            updated.set()
            release.wait(SAFETY_NET)

    box: dict = {}
    updater, updater_box = in_thread(update_then_hold)
    wait_for(updated, updater, updater_box, "the update")
    mover, mover_box = in_thread(api.migrate_org, ORG, True, force=True)
    try:
        waiting = None
        while not waiting:  # the server tells when the move's statement waits for the update
            assert mover.is_alive(), mover_box
            assert not release.wait(0.02), "no wait seen"
            with connections["default"].cursor() as cursor:
                cursor.execute(
                    "SELECT query FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                    [box["pid"]],
                )
                waiting = cursor.fetchall()
        assert waiting[0][0].startswith("WITH bound (upper, n) AS MATERIALIZED"), (
            waiting
        )  # the batch
    finally:
        release.set()
        updater.join(SAFETY_NET)
    mover.join(SAFETY_NET)

    assert "error" not in mover_box, mover_box
    assert not model.objects.exists()
    rules = set(casbin_rule_model().objects.values_list("v0", "v1", "v2"))
    assert ("user^ctid0", "role^course_admin", f"course-v1^{PLAIN[0]}") in rules
    assert {("user^ctid0", "role^course_staff", f"course-v1^{c}") for c in PLAIN[1:]} <= rules


def test_a_listed_batch_reports_exactly_the_rules_it_wrote_and_removed(db):
    """A batch whose rules an enforcer follows lists them with its numbers (on PostgreSQL
    the rules as the statement's rows and the numbers in a row of their own,
    sqlmoves._final_select): the rules listed are the rows written and deleted, the
    numbers the batch's, and a range with no rows left lists nothing and has no key."""
    if not sqlmoves.usable():
        pytest.skip("no database path here (beside openedx-authz)")
    from authz_migration.stores import Selection

    seed_legacy(ORG, 4, make_users("listed", 3))
    selection, rule, whole = Selection(org=ORG), sqlmoves.Rule(), sqlmoves.Span(None, 5000, None)
    last_legacy = legacy_role_model().objects.order_by("-pk").values_list("pk", flat=True)[0]

    forward = sqlmoves.forward(selection, rule, whole, listed=True)
    rules = sorted(casbin_rule_model().objects.values_list("v0", "v1", "v2"))
    last_rule = casbin_rule_model().objects.order_by("-pk").values_list("pk", flat=True)[0]
    assert len(rules) == 20 and sorted(forward.casbin_added) == rules
    assert (forward.moved, forward.created, forward.count, forward.upper) == (
        20, 20, 20, last_legacy
    )  # fmt: skip
    back = sqlmoves.rollback(selection, rule, whole, listed=True)
    assert sorted(back.casbin_removed) == rules
    assert (back.moved, back.created, back.count, back.upper) == (20, 20, 20, last_rule)
    past_the_end = sqlmoves.Span(last_rule, 5000, None)
    nothing = sqlmoves.rollback(selection, rule, past_the_end, listed=True)
    assert (nothing.upper, nothing.count, nothing.moved, nothing.casbin_removed) == (
        None, 0, 0, []
    )  # fmt: skip
