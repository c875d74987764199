"""The two role stores: the legacy role table and Casbin's ``casbin_rule``.

Everything here is set-based: each function is one statement for a whole batch, never one
per row. Batch-sized statements are plain SQL (identifiers quoted, values as parameters), not
ORM calls: a move is not a revocation, so no model signals are sent and no per-row cascade
collection is done, and the ORM's per-value preparation would cost more than the statement
(docs/decisions/0005).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from typing import NamedTuple

from django.contrib.auth import get_user_model
from django.db import connections, router
from django.db.models import F, Q, Value
from django.db.models.sql.subqueries import DeleteQuery

from .conf import legacy_role_model
from .roles import (
    ROLE_PTYPE,
    SCOPE_NAMESPACE,
    course_key_prefix,
    course_scope_key,
    org_scope_prefix,
)


def casbin_rule_model():
    from casbin_adapter.models import CasbinRule

    return CasbinRule


@dataclass(frozen=True)
class Selection:
    """Which rows a move reads: some courses, one org (its courses and its org-wide rows),
    or everything."""

    courses: tuple[str, ...] = ()
    org: str | None = None
    everything: bool = False


# Rows are named tuples, not dataclasses: a batch builds thousands of them, and a tuple is
# several times cheaper to make.
class LegacyRow(NamedTuple):
    pk: int
    user_id: int | None
    org: str
    course_id: str
    role: str
    username: str | None = None  # read with the row (forward moves); None: no such user


class CasbinRow(NamedTuple):
    pk: int
    v0: str
    v1: str
    v2: str
    extra: tuple[str, str, str] = ("", "", "")


# --- legacy store ---------------------------------------------------------------------------

# A blank course_id, compared as SQL text: Open edX's CourseKeyField parses a plain "" as a
# course key (and fails); an expression is passed to the database as it is.
BLANK_COURSE = Value("")


def _prefix_lookup(model) -> str:
    """The lookup of an org's key prefix: ``startswith``, exact, but on MariaDB/MySQL, where
    Django writes it ``LIKE BINARY``, which the index of a ``_ci`` column cannot answer: the
    read then walks the primary key, through the whole table for an org with no row left
    (0.19 to 0.29 s an org over 1,000,000 rows in a cutover). There the column's own ``LIKE``
    (``istartswith``) reads the index's range, a superset of the org's rows that the reads
    narrow to exact matches (:func:`_compares_exactly`)."""
    vendor = connections[router.db_for_read(model)].vendor
    return "istartswith" if vendor == "mysql" else "startswith"


def prefix_superset(model, field: str, prefix: str) -> Q:
    """Rows of ``model`` whose ``field`` starts with ``prefix``, or a superset of them, by a
    condition the column's index answers, for probes and bounds that a read then narrows:
    PostgreSQL's ``LIKE`` prefix (its ``_like`` index); MariaDB/MySQL's ``LIKE`` in the
    column's ``_ci`` collation (:func:`_prefix_lookup`); on SQLite, whose ``LIKE`` ignores
    case and so no index answers it (a scan of the whole table for each org of a cutover,
    three times in its release), the range from ``prefix`` up to ``prefix`` with its last
    character's successor, the same rows exactly under the column's ``BINARY`` collation."""
    vendor = connections[router.db_for_read(model)].vendor
    if vendor != "sqlite":
        return Q(**{f"{field}__{_prefix_lookup(model)}": prefix})
    above = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    # Expressions, passed to the database as they are: a prefix is no course key, and Open
    # edX's CourseKeyField would parse a plain value as one (and fail).
    return Q(**{f"{field}__gte": Value(prefix), f"{field}__lt": Value(above)})


def _legacy_filter(selection: Selection) -> Q:
    if selection.everything:
        return Q()
    if selection.org is not None:
        lookup = f"course_id__{_prefix_lookup(legacy_role_model())}"
        return Q(**{lookup: course_key_prefix(selection.org)}) | Q(
            course_id=BLANK_COURSE, org=selection.org
        )
    return Q(course_id__in=list(selection.courses))


def _legacy_matcher(selection: Selection):
    """(course_id, org) -> whether the row is in the selection, comparing exact keys: SQLite's
    LIKE and MariaDB's _ci collations ignore case, a move does not."""
    if selection.everything:
        return None
    if selection.org is not None:
        prefix, org = course_key_prefix(selection.org), selection.org
        return lambda course_id, row_org: (
            course_id.startswith(prefix) if course_id else row_org == org
        )
    courses = set(selection.courses)
    return lambda course_id, row_org: course_id in courses


def _exhausted(after: int | None, until: int | None) -> bool:
    """Whether a keyset read from ``after`` up to ``until`` can find nothing (no query)."""
    return until is not None and (until < 1 or (after is not None and after >= until))


def _keyset(queryset, after: int | None, until: int | None):
    """Rows with a primary key above ``after`` and, when given, at most ``until``."""
    if after is not None:
        queryset = queryset.filter(pk__gt=after)
    if until is not None:
        queryset = queryset.filter(pk__lte=until)
    return queryset


def last_pk(legacy: bool) -> int:
    """The highest primary key in the legacy table (or ``casbin_rule``), 0 when empty."""
    model = legacy_role_model() if legacy else casbin_rule_model()
    pks = model.objects.order_by("-pk").values_list("pk", flat=True)[:1]
    return next(iter(pks), 0)


def read_legacy(
    selection: Selection, after: int | None, limit: int, until: int | None = None
) -> tuple[list[LegacyRow], int | None, int]:
    """Up to ``limit`` legacy rows of the selection with a primary key above ``after`` (and at
    most ``until``), each with its user's username; also the highest primary key read (where
    the next batch starts) and how many rows were read."""
    if _exhausted(after, until):
        return [], None, 0
    queryset = _keyset(_sources(selection, True), after, until)
    rows = _with_usernames(queryset.order_by("pk"), limit)
    last = rows[-1][0] if rows else None
    # The columns as stored (raw SQL, no field converters); a NULL course key is blank.
    kept = [
        LegacyRow(
            pk, uid, org or "", course if type(course) is str else str(course or ""), role, name
        )
        for pk, uid, org, course, role, name in rows
    ]
    matches = None if _compares_exactly(queryset.db) else _legacy_matcher(selection)
    if matches is not None:
        kept = [row for row in kept if matches(row.course_id, row.org)]
    return kept, last, len(rows)


def _compares_exactly(alias: str) -> bool:
    """Whether the database's own key comparisons (``=``, escaped ``LIKE`` prefixes) are
    exact, so that rows need no second look in Python: PostgreSQL's are; SQLite's ``LIKE``
    and MariaDB's ``_ci`` collations ignore letter case."""
    return connections[alias].vendor == "postgresql"


# The legacy row's columns as the keyset read selects them, each under an alias of its own:
# Django aliases annotations in every version (4.2 names plain columns only by their column
# and puts annotations last), so the outer query can name each one.
_LEGACY_READ = {
    "authz_pk": "pk",
    "authz_user": "user_id",
    "authz_org": "org",
    "authz_course": "course_id",
    "authz_role": "role",
}


def _with_usernames(queryset, limit: int) -> list[tuple]:
    """Up to ``limit`` rows of the ordered legacy ``queryset`` as (pk, user_id, org,
    course_id, role, username), the username None when the user is gone, in one query: the
    ORM's own SQL, LEFT JOINed to the user table. (The ORM would join INNER on a non-null
    foreign key and drop rows whose user is gone, which a move must report.)"""
    users = get_user_model()
    connection = connections[queryset.db]
    annotated = queryset.annotate(**{alias: F(name) for alias, name in _LEGACY_READ.items()})
    inner, params = annotated.values_list(*_LEGACY_READ)[:limit].query.sql_with_params()
    columns = ", ".join(f"r.{connection.ops.quote_name(alias)}" for alias in _LEGACY_READ)
    table = connection.ops.quote_name(users._meta.db_table)
    pk = connection.ops.quote_name(users._meta.pk.column)
    name = connection.ops.quote_name(users._meta.get_field(users.USERNAME_FIELD).column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns}, u.{name} FROM ({inner}) r LEFT JOIN {table} u "  # noqa: S608 (identifiers and the ORM's SQL only)
            f"ON u.{pk} = r.authz_user ORDER BY r.authz_pk",
            params,
        )
        return cursor.fetchall()


def batch_bound(keys) -> tuple[int | None, int]:
    """The highest of a batch's ``keys`` (a query of :func:`batch_keys`) and how many there
    are, without reading the rows: one query. (None, 0) when there are none."""
    if keys is None:
        return None, 0
    inner, params = keys.query.sql_with_params()
    with connections[keys.db].cursor() as cursor:
        cursor.execute(f"SELECT MAX(t.authz_pk), COUNT(*) FROM ({inner}) t", params)  # noqa: S608 (the ORM's SQL)
        [(upper, count)] = cursor.fetchall()
    return upper, count


def batch_delete(selection: Selection, legacy: bool, after: int | None, upper: int):
    """SQL and parameters of a DELETE of every source row of the selection with a primary key
    in (``after``, ``upper``]: the rows of :func:`batch_keys` whose highest key is
    ``upper``, found again by the key range itself (no keyset subquery), as long as no row
    of the range changed meanwhile (SQLite: the move holds the one write lock)."""
    rows = _keyset(_sources(selection, legacy), after, upper)
    return rows.query.chain(DeleteQuery).get_compiler(router.db_for_write(rows.model)).as_sql()


def batch_keys(
    selection: Selection, legacy: bool, after: int | None, limit: int, until: int | None = None
):
    """The primary keys (``authz_pk``) of the next ``limit`` source rows of the selection
    above ``after`` (and at most ``until``), in key order: a query not yet run, for
    :func:`batch_bound` or a statement that bounds its batch itself. None when the range
    is empty."""
    if _exhausted(after, until):
        return None
    keys = _keyset(_sources(selection, legacy), after, until).order_by("pk")
    keys = keys.annotate(authz_pk=F("pk"))
    return keys.values_list("authz_pk")[:limit]


def user_ids(names: Iterable[str]) -> dict[str, int]:
    """username -> user id for the users that exist (one query)."""
    names = set(names)
    if not names:
        return {}
    model = get_user_model()
    field = model.USERNAME_FIELD
    rows = _select_any(model, ("pk", field), {field: names})
    # Exact names only: a _ci collation would also return "Alice" for "alice".
    return {name: pk for pk, name in rows if name in names}


LegacyKey = tuple[int, str, str, str]  # user_id, org, course_id, role


def existing_legacy(keys: set[LegacyKey]) -> tuple[set[LegacyKey], set[LegacyKey]]:
    """The subset of ``keys`` present in the legacy table, and the subset that cannot be
    inserted because a row equal but for letter case, accents or trailing spaces exists (a
    unique key that ignores them, as under MariaDB's _ci PAD SPACE collations). One query."""
    if not keys:
        return set(), set()
    users = {k[0] for k in keys}
    orgs = {k[1] for k in keys}
    courses = {k[2] for k in keys}
    roles = {k[3] for k in keys}
    # A blank course key goes as a plain SQL string: Open edX's CourseKeyField would not
    # take "" through the ORM.
    any_of = {"user": users, "course_id": courses, "org": orgs, "role": roles}
    rows = _select_any(legacy_role_model(), ("user", "org", "course_id", "role"), any_of)
    found = {(uid, org or "", str(course or ""), role) for uid, org, course, role in rows}
    present = found & keys
    others = found - present
    if not others:  # nothing equal but for case: no clash to look for (the common case)
        return present, set()
    folded = {_fold(key) for key in others}
    return present, {key for key in keys - present if _fold(key) in folded}


def _fold(key: LegacyKey) -> tuple:
    return (key[0], *(_fold_text(value) for value in key[1:]))


def _fold_text(value: str) -> str:
    """What MariaDB's default collations (utf8mb4 ``_ci``, PAD SPACE) compare as equal:
    letter case, accents and trailing spaces."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(char for char in decomposed if not unicodedata.combining(char))
    return stripped.casefold().rstrip(" ")


def insert_legacy(keys: list[LegacyKey]) -> int:
    """Insert legacy rows; returns how many the database reports inserted."""
    return _insert_rows(legacy_role_model(), ("user", "org", "course_id", "role"), keys)


def delete_legacy(rows: list[LegacyRow]) -> int:
    """Delete these legacy rows (by primary key); returns how many the database deleted.
    ``rows``: :class:`LegacyRow`, or tuples whose first five fields are a LegacyRow's.

    On MariaDB and MySQL the rows are locked in the order of the table's unique key (user,
    org, course_id, role) through that key, rather than in primary-key order: see
    :func:`_mysql_delete_in_key_order`."""
    model = legacy_role_model()
    pks = [row[0] for row in rows]
    connection = connections[router.db_for_write(model)]
    if rows and connection.vendor == "mysql" and _has_json_table(connection):
        key = _unique_key(connection, model)
        if key is not None:
            deleted = _mysql_delete_in_key_order(connection, model, key, rows)
            if deleted == len(rows):
                return deleted
            # A row the key join cannot find again (a NULL in its key equals nothing):
            # the rest go by primary key; the rows already deleted match nothing there.
            return deleted + _delete_pks(model, pks)
    return _delete_pks(model, pks)


def casbin_scopes_exist(prefix: str) -> bool:
    """Whether any Casbin row has a scope starting with ``prefix`` (one index probe; on
    MariaDB/MySQL the probe ignores case, which only ever answers yes more often)."""
    model = casbin_rule_model()
    return model.objects.filter(prefix_superset(model, "v2", prefix)).exists()


def has_triggers(model) -> bool:
    """SQLite: whether any trigger is defined on ``model``'s table, a temporary one included
    (one query; names compared as SQLite compares them, ignoring case)."""
    connection = connections[router.db_for_write(model)]
    found = "type = 'trigger' AND tbl_name = %s COLLATE NOCASE"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM sqlite_master WHERE {found} "  # noqa: S608 (the code's own text)
            f"UNION ALL SELECT 1 FROM sqlite_temp_master WHERE {found}",
            [model._meta.db_table] * 2,
        )
        return cursor.fetchone() is not None


def has_json_table(model) -> bool:
    """Whether ``model``'s database is MariaDB 10.6+ or MySQL 8.0.4+, whose ``JSON_TABLE``
    the moves' statements there take their rows and keys from."""
    connection = connections[router.db_for_write(model)]
    return connection.vendor == "mysql" and _has_json_table(connection)


def _delete_pks(model, pks: list[int]) -> int:
    if not pks:
        return 0
    connection = connections[router.db_for_write(model)]
    table = connection.ops.quote_name(model._meta.db_table)
    column = connection.ops.quote_name(model._meta.pk.column)
    with connection.cursor() as cursor:
        if connection.vendor == "mysql" and _has_json_table(connection):
            cursor.execute(_pk_lookup_delete_sql(connection, model), [_pk_param(pks)])
        else:
            in_pks = _in_sql(connection, model._meta.pk, pks)
            cursor.execute(
                f"DELETE FROM {table} WHERE {column} {in_pks}",  # noqa: S608 (identifiers only)
                _in_params(connection, pks),
            )
        return cursor.rowcount


# Whether the server has JSON_TABLE (MariaDB 10.6, MySQL 8.0.4), learned once per process and
# database alias; older servers keep ``WHERE id IN (...)``.
_JSON_TABLE: dict[str, bool] = {}


def _has_json_table(connection) -> bool:
    if connection.alias not in _JSON_TABLE:
        with _side_cursor(connection) as cursor:
            cursor.execute("SELECT VERSION()")
            [(version,)] = cursor.fetchall()
        numbers = tuple(int(part) for part in version.split("-", 1)[0].split(".")[:3])
        minimum = (10, 6, 0) if "mariadb" in version.lower() else (8, 0, 4)
        _JSON_TABLE[connection.alias] = numbers >= minimum
    return _JSON_TABLE[connection.alias]


@contextmanager
def _side_cursor(connection):
    """A cursor on a short-lived second connection, for catalog queries: never inside a
    move's transaction, never counted among its queries."""
    side = connections.create_connection(connection.alias)
    try:
        with side.cursor() as cursor:
            yield cursor
    finally:
        side.close()


# The legacy table's unique key on MariaDB/MySQL, learned once per process: (alias, table) ->
# {field: column}, or None when the table has no unique key on those columns.
_UNIQUE_KEYS: dict[tuple[str, str], dict | None] = {}
LEGACY_KEY_FIELDS = ("user", "org", "course_id", "role")


def _unique_key(connection, model) -> dict | None:
    """{field: column} of the legacy table's unique key (user, org, course_id, role), or None
    when the table has none. Asked once per process, on a short-lived second connection:
    never inside a move's transaction, never counted among its queries."""
    table = model._meta.db_table
    cache_key = (connection.alias, table)
    if cache_key not in _UNIQUE_KEYS:
        columns = {name: _column(model, name) for name in LEGACY_KEY_FIELDS}
        with _side_cursor(connection) as cursor:
            cursor.execute(
                "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND NON_UNIQUE = 0 "
                "ORDER BY INDEX_NAME, SEQ_IN_INDEX",
                [table],
            )
            rows = cursor.fetchall()
        indexes: dict[str, set] = {}
        for index, column in rows:
            indexes.setdefault(index, set()).add(column)
        found = set(columns.values()) in indexes.values()
        _UNIQUE_KEYS[cache_key] = columns if found else None
    return _UNIQUE_KEYS[cache_key]


def _mysql_delete_in_key_order(connection, model, key: dict, rows: list[LegacyRow]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(_key_order_delete_sql(connection, model, key), [_key_order_param(rows)])
        return cursor.rowcount


def _key_order_delete_sql(connection, model, key: dict) -> str:
    """A DELETE of legacy rows on MariaDB/MySQL that locks them in unique-key order (its one
    parameter: :func:`_key_order_param`).

    InnoDB checks an INSERT into a unique index against equal entries, including rows deleted
    but not yet purged, and locks those and the next entry in the index (next-key, shared),
    at every isolation level. The legacy key leads with the user, so the next entry can be
    the same user's row in another org: a rollback inserting into org B can hold the lock on
    the first row of org A that a forward move of org A is deleting. Both statements
    therefore lock in key order (inserts are written in key order, see moves.py), so neither
    can wait for the other while holding a lock the other needs: they may queue, never
    deadlock. A DELETE by primary key would mark the index entries in primary-key order.

    Access path: the primary keys come as one JSON parameter in key order, read first
    (``STRAIGHT_JOIN``); each finds its row (``r``, by primary key), and through that row's
    own key values the row is found again by the whole unique key (``d``, the row deleted):
    ``eq_ref`` both, the only plans a primary and a full unique key allow, whatever the
    statistics (tests/test_access_paths.py). So the unique index's entries are locked in
    the parameter's order, before any row is deleted. (The key values themselves as JSON
    text, typed in the columns' collations, cost a quarter of the statement's time more: 46
    against 36 ms a 5,000-row batch.) ``d``'s primary key is compared as an expression
    (``+ 0``), so that it filters rather than offers the primary key as a second access
    path."""
    ops = connection.ops
    table = ops.quote_name(model._meta.db_table)
    pk = ops.quote_name(model._meta.pk.column)
    same_key = " AND ".join(
        f"d.{ops.quote_name(column)} = r.{ops.quote_name(column)}" for column in key.values()
    )
    return (
        f"DELETE d FROM JSON_TABLE(%s, '$[*]' COLUMNS (pk BIGINT PATH '$')) AS k "  # noqa: S608 (identifiers only)
        f"STRAIGHT_JOIN {table} r ON r.{pk} = k.pk "
        f"STRAIGHT_JOIN {table} d ON {same_key} AND d.{pk} + 0 = k.pk"
    )


# A legacy row's (user, org, course_id, role), read by position: LegacyRow's fields, and the
# first five columns of a MariaDB batch's plain rows (sqlmoves), with no LegacyRow built.
_LEGACY_KEY_OF = itemgetter(1, 2, 3, 4)


def _key_order_param(rows: list[LegacyRow]) -> str:
    """The rows' primary keys as a JSON array, in the order of their keys as read."""
    return json.dumps([row[0] for row in sorted(rows, key=_LEGACY_KEY_OF)])


def _pk_lookup_delete_sql(connection, model) -> str:
    """A DELETE of exactly the primary keys given as one JSON array parameter (see
    :func:`_pk_param`) that can only run as one primary-key lookup per key, on MariaDB and
    MySQL.

    ``DELETE ... WHERE id IN (...)`` is planned from the table's statistics: when the list is
    a large share of a small table the optimizer scans the whole table (EXPLAIN type ALL),
    and under InnoDB a scanning DELETE locks, or waits for, every row it reads, other orgs'
    rows included: two moves of different orgs then deadlock (issue 14). Joined to the keys
    as a table (``JSON_TABLE``, read first by ``STRAIGHT_JOIN``), the only access path left
    to the table is ``eq_ref`` on its primary key, whatever the statistics say: the statement
    locks the rows it deletes and nothing else (tests/test_access_paths.py)."""
    table = connection.ops.quote_name(model._meta.db_table)
    column = connection.ops.quote_name(model._meta.pk.column)
    return (
        f"DELETE FROM {table} USING JSON_TABLE(%s, '$[*]' COLUMNS (pk BIGINT PATH '$')) AS k "  # noqa: S608 (identifiers only)
        f"STRAIGHT_JOIN {table} ON {table}.{column} = k.pk"
    )


def _pk_param(pks: list[int]) -> str:
    return json.dumps([int(pk) for pk in pks])


# Lists of thousands of values (a batch's keys) are written as SQL here rather than as ORM
# ``__in`` lookups: the ORM prepares every value on its own, which at batch size costs more
# than the statement. On PostgreSQL a list is one array parameter (``= ANY(...)``); on the
# other databases an ``IN`` list of placeholders.


def _in_sql(connection, model_field, values) -> str:
    """``= ANY(array)`` or ``IN (%s, ...)`` for ``values`` (parameters: :func:`_in_params`)."""
    if connection.vendor == "postgresql":
        return f"= ANY({_array_sql(connection, model_field, values)})"
    return f"IN ({', '.join(['%s'] * len(values))})"


def _in_params(connection, values) -> list:
    if connection.vendor == "postgresql":
        return [_array_param(values)]
    return list(values)


# Lists reach PostgreSQL as one text parameter that the server splits (``string_to_array``):
# psycopg dumps a Python list element by element, which at batch size costs several times
# what the statement itself does. The separator is the ASCII unit separator, which no
# username, course key, org or role holds; a list where one does goes as a plain array.
SEPARATOR = "\x1f"


def _splittable(values) -> bool:
    return SEPARATOR not in "".join(map(str, values))


def _array_sql(connection, model_field, values) -> str:
    """SQL for an array of ``model_field``'s type holding ``values`` (one placeholder; its
    parameter is :func:`_array_param`)."""
    cast = model_field.db_type(connection)
    if cast.startswith("varchar"):
        cast = "text"  # an explicit varchar(n) cast would truncate; the column checks length
    if not _splittable(values):
        return f"%s::{cast}[]"
    # A leading empty element, sliced off again: string_to_array('', ...) is an empty array,
    # not an array of one empty string.
    return f"(string_to_array(%s, chr(31)))[2:]::{cast}[]"


def _array_param(values):
    if not _splittable(values):
        return list(values)
    return SEPARATOR.join(["", *map(str, values)])


def _select_any(model, field_names: tuple[str, ...], any_of: dict, equal=None):
    """Rows of ``field_names`` whose columns in ``any_of`` hold one of the given values and
    whose columns in ``equal`` hold the given value; one query, every value a parameter.
    Under a _ci collation MariaDB also returns rows equal but for case: callers compare."""
    connection = connections[router.db_for_read(model)]
    ops = connection.ops
    equal = equal or {}
    columns = ", ".join(ops.quote_name(_column(model, name)) for name in field_names)
    equal_to = "".join(f" AND {ops.quote_name(_column(model, name))} = %s" for name in equal)
    table = ops.quote_name(model._meta.db_table)
    params = [p for values in any_of.values() for p in _in_params(connection, values)]
    if connection.vendor == "postgresql" and len(any_of) == 1:
        # One index lookup per value, whatever the statistics say. A table that grows fast
        # (casbin_rule during a sync --all that starts from an empty one) has no column
        # statistics until autovacuum's next ANALYZE; the planner then takes the equality
        # filters to match almost nothing and scans the whole table per batch, a lookup
        # that grew with the table. OFFSET 0 keeps the subquery a per-value lookup.
        [(name, values)] = any_of.items()
        array = _array_sql(connection, _field(model, name), values)
        column = ops.quote_name(_column(model, name))
        sql = (
            f"SELECT t.* FROM UNNEST({array}) AS k(v), LATERAL (SELECT {columns} FROM {table} "  # noqa: S608 (identifiers only)
            f"WHERE {column} = k.v{equal_to} OFFSET 0) AS t"
        )
    else:
        in_any = " AND ".join(
            f"{ops.quote_name(_column(model, name))} "
            f"{_in_sql(connection, _field(model, name), values)}"
            for name, values in any_of.items()
        )
        sql = f"SELECT {columns} FROM {table} WHERE {in_any}{equal_to}"  # noqa: S608 (identifiers only)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *equal.values()])
        return cursor.fetchall()


def _field(model, name: str):
    return model._meta.pk if name == "pk" else model._meta.get_field(name)


def _column(model, name: str) -> str:
    return _field(model, name).column


# --- Casbin store ---------------------------------------------------------------------------


def _casbin_filter(selection: Selection) -> Q:
    base = Q(ptype=ROLE_PTYPE)
    if selection.everything:
        return base & Q(v2__startswith=SCOPE_NAMESPACE)
    if selection.org is not None:
        lookup = f"v2__{_prefix_lookup(casbin_rule_model())}"
        return base & Q(**{lookup: org_scope_prefix(selection.org)})
    return base & Q(v2__in=[course_scope_key(c) for c in selection.courses])


def _casbin_matcher(selection: Selection):
    if selection.everything:
        return lambda v2: v2.startswith(SCOPE_NAMESPACE)
    if selection.org is not None:
        prefix = org_scope_prefix(selection.org)
        return lambda v2: v2.startswith(prefix)
    return {course_scope_key(c) for c in selection.courses}.__contains__


def read_casbin(
    selection: Selection, after: int | None, limit: int, until: int | None = None
) -> tuple[list[CasbinRow], int | None, int]:
    """Up to ``limit`` Casbin role rows of the selection above ``after`` (and at most
    ``until``); also the highest primary key read (where the next batch starts) and how many
    rows were read."""
    if _exhausted(after, until):
        return [], None, 0
    queryset = _keyset(_sources(selection, False), after, until)
    rows = list(
        queryset.order_by("pk").values_list("pk", "v0", "v1", "v2", "v3", "v4", "v5")[:limit]
    )
    last = rows[-1][0] if rows else None
    matches = None if _compares_exactly(queryset.db) else _casbin_matcher(selection)
    kept = [
        CasbinRow(pk, v0, v1, v2, (v3, v4, v5))
        for pk, v0, v1, v2, v3, v4, v5 in rows
        if matches is None or matches(v2)
    ]
    return kept, last, len(rows)


CasbinKey = tuple[str, str, str]  # v0 (subject), v1 (role), v2 (scope)


def existing_casbin(keys: set[CasbinKey]) -> set[CasbinKey]:
    """The subset of ``keys`` present as Casbin role rows with empty extra columns."""
    if not keys:
        return set()
    scopes = {k[2] for k in keys}
    equal = {"ptype": ROLE_PTYPE, "v3": "", "v4": "", "v5": ""}
    rows = _select_any(casbin_rule_model(), ("v0", "v1", "v2"), {"v2": scopes}, equal)
    return {tuple(row) for row in rows} & keys


def insert_casbin(keys: list[CasbinKey]) -> int:
    """Insert Casbin role rows; returns how many the database reports inserted."""
    constants = {"ptype": ROLE_PTYPE, "v3": "", "v4": "", "v5": ""}
    return _insert_rows(casbin_rule_model(), ("v0", "v1", "v2"), keys, constants, as_json=True)


def _insert_rows(
    model, field_names: tuple[str, ...], rows: list[tuple], constants=None, as_json=False
) -> int:
    """One set-based INSERT of plain values, without building model instances (the Python
    side of ``bulk_create`` costs more than the statement at these sizes). ``constants``
    (field -> value) are the same in every row. PostgreSQL gets a single ``INSERT ... SELECT
    FROM UNNEST`` of one array per column (see :func:`_array_sql`); MariaDB/MySQL one JSON
    array where ``as_json`` (:func:`_json_insert_sql`); otherwise an ``executemany``, which
    MySQLdb sends as multi-row INSERTs and SQLite runs in-process. Values are always
    parameters."""
    if not rows:
        return 0
    constants = constants or {}
    connection = connections[router.db_for_write(model)]
    table = connection.ops.quote_name(model._meta.db_table)
    columns = ", ".join(
        connection.ops.quote_name(_column(model, name)) for name in (*field_names, *constants)
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            by_column = dict(zip(field_names, zip(*rows, strict=True), strict=True))
            values = ", ".join(["u.*", *(["%s"] * len(constants))])
            unnest = ", ".join(
                _array_sql(connection, _field(model, name), column)
                for name, column in by_column.items()
            )
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT {values} FROM UNNEST({unnest}) AS u",  # noqa: S608 (identifiers only)
                [*constants.values(), *(_array_param(column) for column in by_column.values())],
            )
            return cursor.rowcount
        if as_json and connection.vendor == "mysql" and _has_json_table(connection):
            cursor.execute(
                _json_insert_sql(connection, model, field_names, constants),
                [*constants.values(), json.dumps(rows, ensure_ascii=False)],
            )
            return cursor.rowcount
        placeholders = ", ".join(["%s"] * (len(field_names) + len(constants)))
        tail = tuple(constants.values())
        cursor.executemany(
            f"INSERT INTO {table} ({columns}) VALUES ({placeholders})",  # noqa: S608
            [(*row, *tail) for row in rows],
        )
        return cursor.rowcount


def _json_insert_sql(connection, model, field_names: tuple[str, ...], constants: dict) -> str:
    """MariaDB/MySQL: an INSERT of rows given as one JSON array parameter, after one
    parameter per constant, written in the array's order. ``executemany`` escaped every
    value in Python, one call each: about a third of a 25,000-row move's time;
    ``json.dumps`` is one call, in C. Each value is read as its column's own type.

    Only for tables whose inserts never wait on a row: ``casbin_rule`` and openedx-authz's
    audit table (no unique key, no foreign key). An ``INSERT ... SELECT`` holds the table's
    AUTO-INC lock until it ends (``innodb_autoinc_lock_mode`` 1, the default), and an insert
    into the legacy table (or openedx-authz's extended rules, with their unique keys and
    foreign keys) can wait for a row lock while holding it: another insert of that table
    would then queue behind a wait, and could close a circle."""
    ops = connection.ops
    table = ops.quote_name(model._meta.db_table)
    columns = ", ".join(ops.quote_name(_column(model, name)) for name in (*field_names, *constants))
    paths = ", ".join(
        f"c{int(i)} {_field(model, name).db_type(connection)} PATH '$[{int(i)}]'"
        for i, name in enumerate(field_names)
    )
    read = ", ".join(f"j.c{int(i)}" for i in range(len(field_names)))
    fixed = ", ".join(["%s"] * len(constants))
    return (
        f"INSERT INTO {table} ({columns}) SELECT {read}{', ' if constants else ''}{fixed} "  # noqa: S608 (identifiers only)
        f"FROM JSON_TABLE(%s, '$[*]' COLUMNS (n FOR ORDINALITY, {paths})) AS j ORDER BY j.n"
    )


def delete_casbin(pks: list[int]) -> int:
    return _delete_pks(casbin_rule_model(), pks)


def max_length(model, field_name: str) -> int | None:
    return model._meta.get_field(field_name).max_length


def count_source(selection: Selection, legacy: bool, until: int | None = None) -> int:
    """Rows a move of ``selection`` will read from its source store (one query)."""
    return _keyset(_sources(selection, legacy), None, until).count()


def _sources(selection: Selection, legacy: bool):
    """The selection's rows in a move's source store: the legacy table's, or Casbin's."""
    if legacy:
        return legacy_role_model().objects.filter(_legacy_filter(selection))
    return casbin_rule_model().objects.filter(_casbin_filter(selection))
