"""The access paths of the moves' DELETEs on MariaDB, proved with EXPLAIN (issue 14).

``DELETE ... WHERE id IN (...)`` is planned from statistics: with the list a large share of a
small table MariaDB scans the whole table (EXPLAIN type ALL), and a scanning DELETE locks, or
waits for, every row it reads, other orgs' rows included. The moves' DELETEs must look up each
of their rows by a unique key, whatever the table's size and statistics: the small table, where
the scan is cheapest, is the trap.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from authz_migration import sqlmoves, stores
from authz_migration.conf import legacy_role_model
from tests.helpers import make_users

# ANALYZE TABLE commits implicitly on MariaDB: these tests run outside a test transaction.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def mariadb_only():
    if connection.vendor != "mysql":
        pytest.skip("MariaDB/MySQL query plans")


def seed_legacy_rows(orgs: int, courses: int, users: int) -> None:
    people = make_users("ap", users)
    model = legacy_role_model()
    model.objects.bulk_create(
        [
            model(user=user, org=f"Org{o}", course_id=f"course-v1:Org{o}+C{c}+R", role="staff")
            for o in range(orgs)
            for c in range(courses)
            for user in people
        ],
        batch_size=5000,
    )
    analyze(model._meta.db_table)


def analyze(table: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE TABLE {connection.ops.quote_name(table)}")
        cursor.fetchall()


def explain(sql: str, params) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def org_rows(org: str) -> list[stores.LegacyRow]:
    rows, _, _ = stores.read_legacy(stores.Selection(org=org), None, 10**6)
    return rows


def unique_key_name() -> str:
    """The name of the legacy table's unique key (user, org, course_id, role)."""
    table = legacy_role_model()._meta.db_table
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    [name] = [
        name
        for name, info in constraints.items()
        if info["unique"] and info["columns"] == ["user_id", "org", "course_id", "role"]
    ]
    return name


def assert_lookups(plan: list[dict], table: str, key: str) -> None:
    """The key list is read first, then ``table`` by one ``eq_ref`` lookup per key."""
    assert [step["table"] for step in plan] == ["k", table], plan
    [_, target] = plan
    assert (target["type"], target["key"]) == ("eq_ref", key), plan


# (orgs, courses, users): the org moved is Org0. Small tables where the org is all of the
# table, a third of it or an eighth (the shape of issue 14), and a large one.
SHAPES = {
    "one org, 10 rows": (1, 2, 5),
    "one org, 600 rows": (1, 30, 20),
    "a third of 600 rows": (3, 10, 20),
    "an eighth of 1,600 rows": (8, 10, 20),
    "5,000 of 30,000 rows": (6, 100, 50),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_legacy_delete_looks_up_each_row_by_the_unique_key(shape):
    seed_legacy_rows(*SHAPES[shape])
    model = legacy_role_model()
    rows = org_rows("Org0")[:5000]
    key = stores._unique_key(connection, model)
    assert key is not None

    plan = explain(
        stores._key_order_delete_sql(connection, model, key), [stores._key_order_param(rows)]
    )

    # Each key finds its row by primary key (r), then the row deleted (d) by the whole unique
    # key: the unique index's entries are locked in the parameter's (key) order.
    assert [step["table"] for step in plan] == ["k", "r", "d"], plan
    [_, by_pk, by_key] = plan
    assert (by_pk["type"], by_pk["key"]) == ("eq_ref", "PRIMARY"), plan
    assert (by_key["type"], by_key["key"]) == ("eq_ref", unique_key_name()), plan
    assert stores.delete_legacy(rows) == len(rows)
    assert model.objects.filter(pk__in=[row.pk for row in rows]).count() == 0


def test_a_database_batch_deletes_its_rows_in_unique_key_order():
    """The forward batch the database moves hands its plain rows, as read, to the key-order
    DELETE (docs/decisions/0011): its parameter lists them by (user, org, course_id, role),
    not by primary key. Rows are written so that the two orders differ."""
    people = make_users("ko", 3)
    model = legacy_role_model()
    for course in ("C2", "C1"):
        for user in reversed(people):
            model.objects.create(
                user=user, org="KeyOrg", course_id=f"course-v1:KeyOrg+{course}+R", role="staff"
            )
    rows = sorted(model.objects.values_list("user_id", "org", "course_id", "pk"))
    in_key_order = [pk for *_, pk in rows]
    assert in_key_order != sorted(in_key_order)

    with CaptureQueriesContext(connection) as queries:
        done = sqlmoves.forward(
            stores.Selection(org="KeyOrg"), sqlmoves.Rule(), sqlmoves.Span(None, 5000, None), False
        )

    assert done is not None and done.moved == len(rows)
    [delete] = [q["sql"] for q in queries if q["sql"].startswith("DELETE d FROM JSON_TABLE")]
    assert delete.split("'")[1] == json.dumps(in_key_order)


@pytest.mark.parametrize("rows, share", [(10, 1), (600, 1), (600, 3), (1600, 8), (30000, 6)])
def test_casbin_delete_looks_up_each_row_by_primary_key(rows, share):
    from casbin_adapter.models import CasbinRule

    CasbinRule.objects.bulk_create(
        [
            CasbinRule(
                ptype="g",
                v0=f"user^u{i}",
                v1="role^course_staff",
                v2=f"course-v1^course-v1:Org{i % share}+C+R",
            )
            for i in range(rows)
        ],
        batch_size=5000,
    )
    analyze(CasbinRule._meta.db_table)
    pks = list(
        CasbinRule.objects.filter(v2="course-v1^course-v1:Org0+C+R").values_list("pk", flat=True)
    )[:5000]

    sql = stores._pk_lookup_delete_sql(connection, CasbinRule)
    plan = explain(sql, [stores._pk_param(pks)])

    assert_lookups(plan, CasbinRule._meta.db_table, "PRIMARY")
    assert stores.delete_casbin(pks) == len(pks)


def test_a_plain_in_list_delete_scans_a_small_table():
    """The trap itself, so that the tests above keep meaning something: the statement the
    moves used before scans the whole table here."""
    seed_legacy_rows(1, 30, 20)
    model = legacy_role_model()
    pks = [row.pk for row in org_rows("Org0")]
    table = connection.ops.quote_name(model._meta.db_table)
    plan = explain(f"DELETE FROM {table} WHERE id IN ({', '.join(['%s'] * len(pks))})", pks)
    assert plan[0]["type"] == "ALL", plan


def test_a_legacy_table_without_the_unique_key_is_deleted_by_primary_key(monkeypatch):
    seed_legacy_rows(1, 2, 5)
    model = legacy_role_model()
    monkeypatch.setitem(stores._UNIQUE_KEYS, (connection.alias, model._meta.db_table), None)
    rows = org_rows("Org0")
    assert stores.delete_legacy(rows) == len(rows)
    assert not model.objects.exists()


def test_a_server_without_json_table_deletes_with_an_in_list_and_inserts_row_values(monkeypatch):
    """MariaDB before 10.6 and MySQL before 8.0.4 have no JSON_TABLE: the moves keep working
    there with the statements they used before."""
    seed_legacy_rows(1, 2, 5)
    model = legacy_role_model()
    monkeypatch.setitem(stores._JSON_TABLE, connection.alias, False)
    rows = org_rows("Org0")
    rules = [("user^ap0", "role^course_staff", "course-v1^course-v1:Org0+C0+R")]
    with CaptureQueriesContext(connection) as ctx:
        assert stores.delete_legacy(rows) == len(rows)
        assert stores.insert_casbin(rules) == 1
    [delete, insert] = [q["sql"] for q in ctx.captured_queries]
    assert "JSON_TABLE" not in delete and " IN (" in delete
    assert "JSON_TABLE" not in insert and " VALUES " in insert
    assert not model.objects.exists()
    assert stores.existing_casbin(set(rules)) == set(rules)


def test_legacy_rows_are_inserted_as_row_values_casbin_rules_as_one_json_document():
    """An INSERT ... SELECT holds the table's AUTO-INC lock until it ends; an insert into
    the legacy table may wait for a row lock of its unique key meanwhile, so it stays a
    multi-row VALUES insert. casbin_rule has no unique key: its rows go as one document."""
    seed_legacy_rows(1, 2, 5)
    rows = org_rows("Org0")
    keys = [(row.user_id, row.org, row.course_id, row.role) for row in rows]
    rules = [("user^ap0", "role^course_staff", "course-v1^course-v1:Org0+C0+R")]
    stores.delete_legacy(rows)
    with CaptureQueriesContext(connection) as ctx:
        assert stores.insert_legacy(keys) == len(keys)
        assert stores.insert_casbin(rules) == 1
    [legacy, casbin] = [q["sql"] for q in ctx.captured_queries]
    assert " VALUES " in legacy and "JSON_TABLE" not in legacy
    assert "JSON_TABLE" in casbin


def test_the_plain_row_read_starts_from_the_batch_then_finds_each_user():
    """The database path's read (sqlmoves) takes the batch's rows by their primary-key range
    and looks up each row's user. Planned from statistics, MariaDB read the few users first
    and every role of each, whatever the batch: every batch a pass over the org."""
    seed_legacy_rows(2, 5, 2000)  # as the benchmark's orgs: many users, each in a few courses
    analyze(get_user_model()._meta.db_table)
    rows = org_rows("Org0")
    rule = sqlmoves.Rule(targets_absent=True)
    selection = stores.Selection(org="Org0")
    text, params = sqlmoves._Forward(selection, rule, rows[0].pk - 1, rows[4999].pk).plain_rows()

    plan = explain(text, params)

    assert [(step["table"], step["key"]) for step in plan] == [("l", "PRIMARY"), ("u", "PRIMARY")]
    assert (plan[0]["type"], plan[1]["type"]) == ("range", "eq_ref"), plan


def test_the_plain_rule_read_of_a_rollback_starts_from_the_batch_then_looks_up_by_key():
    """Back the same way: the batch's Casbin rules by their primary-key range, each rule's
    user by username, and its target by the legacy table's whole unique key."""
    from authz_migration import api

    seed_legacy_rows(2, 5, 2000)
    api.migrate_org("Org0", True, force=True)
    rules = stores.casbin_rule_model()
    for model in (rules, get_user_model(), legacy_role_model()):
        analyze(model._meta.db_table)
    pks = list(rules.objects.order_by("pk").values_list("pk", flat=True)[:5000])
    selection = stores.Selection(org="Org0")
    text, params = sqlmoves._Rollback(selection, sqlmoves.Rule(), pks[0] - 1, pks[-1]).plain_rows()

    plan = explain(text, params)

    steps = [(step["table"], step["type"], step["key"]) for step in plan]
    lookups = [("u", "eq_ref", "username"), ("l", "eq_ref", unique_key_name())]
    assert steps == [("c", "range", "PRIMARY"), *lookups], plan


@pytest.mark.parametrize("forward", [True, False], ids=["forward", "rollback"])
def test_a_courses_plain_read_finds_its_rows_by_the_course_index(forward):
    """A course's move (an override toggle) reads its few rows through the course's index
    (the legacy ``course_id`` index, casbin_rule's scope index), never by the batch's key
    range, which starts at the table's first row. The exact comparison alone cannot use the
    index: a toggle beside 1,000,000 rules took 689 ms so."""
    from authz_migration import api

    seed_legacy_rows(6, 100, 50)  # 30,000 rows; the course is among the last
    course = "course-v1:Org5+C99+R"
    selection = stores.Selection(courses=(course,))
    if forward:
        model, kind = legacy_role_model(), sqlmoves._Forward
        rows = model.objects.filter(course_id=course)
    else:
        for org in range(6):
            api.migrate_org(f"Org{org}", True, force=True)
        model, kind = stores.casbin_rule_model(), sqlmoves._Rollback
        rows = model.objects.filter(v2=f"course-v1^{course}")
    for table in (model, get_user_model(), legacy_role_model()):
        analyze(table._meta.db_table)
    upper = max(rows.values_list("pk", flat=True))
    text, params = kind(selection, sqlmoves.Rule(), None, upper).plain_rows()

    [first, *_] = explain(text, params)

    column = "course_id" if forward else "v2"
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, model._meta.db_table)
    indexes = {name for name, info in constraints.items() if info["columns"] == [column]}
    assert first["key"] in indexes, first
