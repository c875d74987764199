"""The two role stores: the legacy role table and Casbin's ``casbin_rule``.

Everything here is set-based: each function is one query (or one statement per
``bulk_create`` chunk) for a whole batch, never one per row. Deletes go through
``_raw_delete``: a move is not a revocation, so no model delete signals are sent and no
per-row cascade collection is done (docs/decisions/0005).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.db import connections, router
from django.db.models import Q, Value

from .conf import legacy_role_model
from .roles import course_key_prefix, course_scope_key, org_scope_prefix

CASBIN_PTYPE = "g"
# Casbin scopes in the namespace this app writes; other "g" rows are not course roles.
SCOPE_PREFIX = "course-v1^"


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

    def describe(self) -> str:
        if self.everything:
            return "instance"
        return self.org if self.org is not None else ", ".join(self.courses)


@dataclass(frozen=True)
class LegacyRow:
    pk: int
    user_id: int | None
    org: str
    course_id: str
    role: str


@dataclass(frozen=True)
class CasbinRow:
    pk: int
    v0: str
    v1: str
    v2: str
    extra: tuple[str, str, str] = field(default=("", "", ""))


# --- legacy store ---------------------------------------------------------------------------

# A blank course_id, compared as SQL text: Open edX's CourseKeyField parses a plain "" as a
# course key (and fails); an expression is passed to the database as it is.
BLANK_COURSE = Value("")


def _legacy_filter(selection: Selection) -> Q:
    if selection.everything:
        return Q()
    if selection.org is not None:
        return Q(course_id__startswith=course_key_prefix(selection.org)) | Q(
            course_id=BLANK_COURSE, org=selection.org
        )
    return Q(course_id__in=list(selection.courses))


def _legacy_matches(selection: Selection, courses: set[str], row: LegacyRow) -> bool:
    # SQLite's LIKE and MariaDB's _ci collations ignore case; a move keeps to exact keys.
    if selection.everything:
        return True
    if selection.org is not None:
        if row.course_id:
            return row.course_id.startswith(course_key_prefix(selection.org))
        return row.org == selection.org
    return row.course_id in courses


def read_legacy(
    selection: Selection, after: int | None, limit: int
) -> tuple[list[LegacyRow], int | None, int]:
    """Up to ``limit`` legacy rows of the selection with a primary key above ``after``; also
    the highest primary key read (where the next batch starts) and how many rows were read."""
    queryset = legacy_role_model().objects.filter(_legacy_filter(selection))
    if after is not None:
        queryset = queryset.filter(pk__gt=after)
    rows = list(
        queryset.order_by("pk").values_list("pk", "user_id", "org", "course_id", "role")[:limit]
    )
    last = rows[-1][0] if rows else None
    kept = [
        LegacyRow(pk, user_id, org or "", str(course_id or ""), role)
        for pk, user_id, org, course_id, role in rows
    ]
    courses = set(selection.courses)
    return [row for row in kept if _legacy_matches(selection, courses, row)], last, len(rows)


def usernames(user_ids: Iterable[int]) -> dict[int, str]:
    """user id -> username for the users that exist (one query)."""
    ids = {uid for uid in user_ids if uid is not None}
    if not ids:
        return {}
    model = get_user_model()
    if _use_arrays(model):
        return dict(_select_any(model, ("pk", model.USERNAME_FIELD), {"pk": ids}))
    return dict(model.objects.filter(pk__in=ids).values_list("pk", model.USERNAME_FIELD))


def user_ids(names: Iterable[str]) -> dict[str, int]:
    """username -> user id for the users that exist (one query)."""
    names = set(names)
    if not names:
        return {}
    model = get_user_model()
    field = model.USERNAME_FIELD
    if _use_arrays(model):
        rows = _select_any(model, ("pk", field), {field: names})
    else:
        rows = model.objects.filter(**{f"{field}__in": names}).values_list("pk", field)
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
    model = legacy_role_model()
    if _use_arrays(model):
        any_of = {"user": users, "course_id": courses, "org": orgs, "role": roles}
        rows = _select_any(model, ("user", "org", "course_id", "role"), any_of)
    else:
        in_courses = Q(course_id__in=[c for c in courses if c])
        if "" in courses:
            in_courses |= Q(course_id=BLANK_COURSE)
        rows = model.objects.filter(
            in_courses, user_id__in=users, org__in=orgs, role__in=roles
        ).values_list("user_id", "org", "course_id", "role")
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


def delete_legacy(pks: list[int]) -> int:
    return _delete_pks(legacy_role_model(), pks)


def _delete_pks(model, pks: list[int]) -> int:
    if not pks:
        return 0
    if _use_arrays(model):
        connection = connections[router.db_for_write(model)]
        table = connection.ops.quote_name(model._meta.db_table)
        column = connection.ops.quote_name(model._meta.pk.column)
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {table} WHERE {column} = ANY(%s)", [list(pks)])  # noqa: S608 (identifiers only)
            return cursor.rowcount
    queryset = model.objects.filter(pk__in=pks)
    return queryset._raw_delete(queryset.db)


def _use_arrays(model) -> bool:
    """On PostgreSQL a list goes to the server as one array parameter (``= ANY(%s)``):
    psycopg's client-side binding of thousands of ``IN`` parameters costs more than the
    query itself (benchmarks/README.rst)."""
    return connections[router.db_for_read(model)].vendor == "postgresql"


def _select_any(model, field_names: tuple[str, ...], any_of: dict, equal=None):
    """Rows of ``field_names`` whose columns in ``any_of`` hold one of the given values and
    whose columns in ``equal`` hold the given value, on PostgreSQL (see :func:`_use_arrays`).
    Every value is a parameter."""
    connection = connections[router.db_for_read(model)]
    ops = connection.ops
    equal = equal or {}
    columns = ", ".join(ops.quote_name(_column(model, name)) for name in field_names)
    in_any = " AND ".join(f"{ops.quote_name(_column(model, name))} = ANY(%s)" for name in any_of)
    equal_to = "".join(f" AND {ops.quote_name(_column(model, name))} = %s" for name in equal)
    table = ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns} FROM {table} WHERE {in_any}{equal_to}",  # noqa: S608 (identifiers only)
            [*(list(values) for values in any_of.values()), *equal.values()],
        )
        return cursor.fetchall()


def _column(model, name: str) -> str:
    field = model._meta.pk if name == "pk" else model._meta.get_field(name)
    return field.column


# --- Casbin store ---------------------------------------------------------------------------


def _casbin_filter(selection: Selection) -> Q:
    base = Q(ptype=CASBIN_PTYPE)
    if selection.everything:
        return base & Q(v2__startswith=SCOPE_PREFIX)
    if selection.org is not None:
        return base & Q(v2__startswith=org_scope_prefix(selection.org))
    return base & Q(v2__in=[course_scope_key(c) for c in selection.courses])


def _casbin_matcher(selection: Selection):
    if selection.everything:
        return lambda v2: v2.startswith(SCOPE_PREFIX)
    if selection.org is not None:
        prefix = org_scope_prefix(selection.org)
        return lambda v2: v2.startswith(prefix)
    return {course_scope_key(c) for c in selection.courses}.__contains__


def read_casbin(
    selection: Selection, after: int | None, limit: int
) -> tuple[list[CasbinRow], int | None, int]:
    """Up to ``limit`` Casbin role rows of the selection above ``after``; also the highest
    primary key read (where the next batch starts) and how many rows were read."""
    queryset = casbin_rule_model().objects.filter(_casbin_filter(selection))
    if after is not None:
        queryset = queryset.filter(pk__gt=after)
    rows = list(
        queryset.order_by("pk").values_list("pk", "v0", "v1", "v2", "v3", "v4", "v5")[:limit]
    )
    last = rows[-1][0] if rows else None
    matches = _casbin_matcher(selection)
    kept = [
        CasbinRow(pk, v0, v1, v2, (v3, v4, v5))
        for pk, v0, v1, v2, v3, v4, v5 in rows
        if matches(v2)
    ]
    return kept, last, len(rows)


CasbinKey = tuple[str, str, str]  # v0 (subject), v1 (role), v2 (scope)


def existing_casbin(keys: set[CasbinKey]) -> set[CasbinKey]:
    """The subset of ``keys`` present as Casbin role rows with empty extra columns."""
    if not keys:
        return set()
    scopes = {k[2] for k in keys}
    model = casbin_rule_model()
    if _use_arrays(model):
        equal = {"ptype": CASBIN_PTYPE, "v3": "", "v4": "", "v5": ""}
        rows = _select_any(model, ("v0", "v1", "v2"), {"v2": scopes}, equal)
        return {tuple(row) for row in rows} & keys
    subjects = {k[0] for k in keys}
    rows = model.objects.filter(
        ptype=CASBIN_PTYPE, v2__in=scopes, v0__in=subjects, v3="", v4="", v5=""
    ).values_list("v0", "v1", "v2")
    return set(rows) & keys


def insert_casbin(keys: list[CasbinKey]) -> int:
    """Insert Casbin role rows; returns how many the database reports inserted."""
    rows = [(CASBIN_PTYPE, v0, v1, v2, "", "", "") for v0, v1, v2 in keys]
    return _insert_rows(casbin_rule_model(), ("ptype", "v0", "v1", "v2", "v3", "v4", "v5"), rows)


def _insert_rows(model, field_names: tuple[str, ...], rows: list[tuple]) -> int:
    """One set-based INSERT of plain values, without building model instances (the Python
    side of ``bulk_create`` costs more than the statement at these sizes). PostgreSQL gets a
    single ``INSERT ... SELECT FROM UNNEST`` of one array per column; the other backends an
    ``executemany``, which MySQLdb sends as multi-row INSERTs and SQLite runs in-process.
    Values are always parameters."""
    if not rows:
        return 0
    connection = connections[router.db_for_write(model)]
    fields = [model._meta.get_field(name) for name in field_names]
    table = connection.ops.quote_name(model._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in fields)
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT * FROM UNNEST({arrays})",  # noqa: S608 (identifiers only)
                [list(column) for column in zip(*rows, strict=True)],
            )
            return cursor.rowcount
        placeholders = ", ".join(["%s"] * len(fields))
        cursor.executemany(
            f"INSERT INTO {table} ({columns}) VALUES ({placeholders})",  # noqa: S608
            rows,
        )
        return cursor.rowcount


def delete_casbin(pks: list[int]) -> int:
    return _delete_pks(casbin_rule_model(), pks)


def max_length(model, field_name: str) -> int | None:
    return model._meta.get_field(field_name).max_length


def count_source(selection: Selection, legacy: bool) -> int:
    """Rows a move of ``selection`` will read from its source store (one query)."""
    if legacy:
        return legacy_role_model().objects.filter(_legacy_filter(selection)).count()
    return casbin_rule_model().objects.filter(_casbin_filter(selection)).count()
