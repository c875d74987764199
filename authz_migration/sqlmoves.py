"""The part of a batch the database moves by itself (docs/decisions/0014).

Most rows of a move are plain: a course role of the role map, in a well-formed ASCII course
key of the org its row names, held by a user who exists, in a course whose flag simply
follows the scope's (no override of its own). For those the answer of
:mod:`~authz_migration.placement` is known without looking at the row in Python, so the
database moves them and no row leaves it: on PostgreSQL one statement per batch (find the
batch, read its rows and test each target once, write the missing targets, delete the rows
whose target was there or was written); elsewhere the batch's bounds first, then on SQLite
at most three (the rows whose target is there, the INSERT of the others' targets, the DELETE
of the rows whose target now exists, or of the whole batch by its key range when the INSERT
wrote a target for each of its rows: :meth:`_Forward.delete_batch`); on MariaDB/MySQL three,
as the Python path writes (the plain rows read with their targets, the insert of the missing
targets, the DELETE: forward, a JSON insert and the key-order DELETE of
docs/decisions/0011; back, an insert in key order and a DELETE by primary key). A forward
move into a scope with no Casbin rule yet leaves out the per-row test
(:func:`targets_absent`), a SQLite forward move on a ``casbin_rule`` without triggers the
DELETE's (:func:`inserts_complete`); a SQLite rollback lets the legacy table's unique key
pass over the targets present.

The predicate here is deliberately narrower than placement's rule: every row it takes is one
placement would move, to the same target. Whatever it leaves (org-wide roles, unmapped roles,
odd keys, missing users, overridden courses) stays in the source store and goes through
placement in Python, as every row did before, which classifies, reports and moves it. So the
rule of where a row belongs is still written once; this module only spares Python the rows
whose answer is certain. Hosts with openedx-authz keep the Python path (:func:`usable`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from django.contrib.auth import get_user_model
from django.db import connections, router
from django.db.models import UniqueConstraint

from . import peer
from .conf import legacy_role_model
from .roles import (
    COURSE_KEY_PREFIX,
    ROLE_PTYPE,
    SCOPE_NAMESPACE,
    SUBJECT_NAMESPACE,
    course_key_prefix,
    course_scope_key,
    reverse_role_map,
    role_key,
    role_map,
)
from .stores import (
    Selection,
    batch_bound,
    batch_delete,
    batch_keys,
    casbin_rule_model,
    casbin_scopes_exist,
    delete_casbin,
    delete_legacy,
    has_json_table,
    has_triggers,
    insert_casbin,
    insert_legacy,
    max_length,
)


@dataclass(frozen=True)
class Rule:
    """Which rows' courses follow the move's direction without a second look: every course
    of the selection but ``skip_courses`` (courses with their own override) and the courses
    of ``skip_orgs`` (orgs with their own override, on an instance move)."""

    skip_courses: tuple[str, ...] = ()
    skip_orgs: tuple[str, ...] = ()
    # Forward: no plain row's target can be in casbin_rule yet (:func:`targets_absent`), so
    # the per-row test of each target is left out.
    targets_absent: bool = False
    # Forward, SQLite: an INSERT into casbin_rule writes every row it selects or fails
    # (:func:`inserts_complete`), so the DELETE need not find each target again.
    inserts_complete: bool = False


class Span(NamedTuple):
    """Which batch to move: the next ``limit`` source rows of the selection above ``after``
    (and at most ``until``), in key order."""

    after: int | None
    limit: int
    until: int | None


@dataclass
class Moved:
    """What a batch's statements did: sources deleted, targets written, and (when asked for)
    the Casbin (v0, v1, v2) rows written or deleted; and the batch itself: its highest
    primary key (None: no rows were left) and how many source rows it holds."""

    moved: int = 0
    created: int = 0
    casbin_added: list = field(default_factory=list)
    casbin_removed: list = field(default_factory=list)
    upper: int | None = None
    count: int = 0


# One character class of a course key part, ASCII only: narrower than the ``\w`` of
# roles.py (which admits any letter), never wider. Other keys go through placement.
_PART = "[-A-Za-z0-9_.~:]+"
# Any character that cannot appear in such a key (its parts, or the + between them).
_OUTSIDE_KEY = "[^-A-Za-z0-9_.~:+]"
_ASCII_PART = re.compile(_PART)


class _Sql:
    """SQL fragments for one connection's vendor; values are always parameters."""

    def __init__(self, connection):
        self.connection = connection
        self.vendor = connection.vendor
        self.params: list = []

    def q(self, name: str) -> str:
        return self.connection.ops.quote_name(name)

    def p(self, value) -> str:
        self.params.append(value)
        return "%s"

    def concat(self, *parts: str) -> str:
        if self.vendor == "mysql":
            return f"CONCAT({', '.join(parts)})"
        return "(" + " || ".join(parts) + ")"

    def exact(self, expr: str) -> str:
        """``expr`` compared byte for byte, as placement compares in Python: MariaDB's
        ``_ci`` collations ignore case (and trailing spaces); the others compare exactly."""
        return f"BINARY {expr}" if self.vendor == "mysql" else expr

    def unindexed(self, expr: str) -> str:
        """``expr`` as an index cannot serve it, its comparisons unchanged (each caller says
        which index it keeps the planner from)."""
        if self.vendor == "postgresql":
            return f'({expr} COLLATE "C")'  # byte-wise equality, as the default's
        return f"+{expr}"  # SQLite's way

    def length(self, expr: str) -> str:
        """In characters (MariaDB's LENGTH counts bytes)."""
        return f"CHAR_LENGTH({expr})" if self.vendor == "mysql" else f"LENGTH({expr})"

    def before_plus(self, expr: str) -> str:
        """``expr`` up to its first ``+`` (a well-formed key has one)."""
        if self.vendor == "postgresql":
            return f"split_part({expr}, '+', 1)"
        if self.vendor == "mysql":
            return f"SUBSTRING_INDEX({expr}, '+', 1)"
        return f"SUBSTR({expr}, 1, INSTR({expr}, '+') - 1)"

    def member(self, expr: str, values, negate: bool = False) -> str:
        """``expr`` exactly one of ``values`` (or none of them); True/False when empty."""
        if not values:
            return "1 = 1" if negate else "1 = 0"
        marks = ", ".join(self.p(value) for value in values)
        return f"{expr} {'NOT IN' if negate else 'IN'} ({marks})"

    def one_of(self, expr: str, values) -> str:
        """``expr`` exactly one of ``values``, a column its index can answer: on MariaDB the
        index's test in the column's collation first, then the exact one. (The exact test
        alone cannot use the index: a course's move then read the batch's whole key range,
        a scan of the table below the course's last row.)"""
        if self.vendor != "mysql":
            return self.member(expr, values)
        return f"{self.member(expr, values)} AND {self.member(self.exact(expr), values)}"

    def starts(self, expr: str, prefix: str) -> str:
        """``expr`` starts with ``prefix``, exactly. PostgreSQL: a LIKE, itself exact; a
        second test there would also cost the planner its estimate (a function's equality
        counts as 1 row in 200), and with it the batch's join plan. MariaDB: a LIKE, which
        its index can answer, in the column's collation, then the exact test. SQLite: the
        exact test alone (its LIKE ignores case, and with the columns' BINARY collation no
        index answers it: a second function a row, for nothing)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like = "" if self.vendor == "sqlite" else f"{expr} LIKE {self.p(escaped + '%')}"
        if self.vendor == "postgresql":
            return like
        exactly = f"{self.exact(f'SUBSTR({expr}, 1, {len(prefix)})')} = {self.p(prefix)}"
        return f"{like} AND {exactly}" if like else exactly

    def course_key(self, column: str, skip: int = 0, org: str | None = None) -> str:
        """``column`` after its first ``skip`` characters is ``course-v1:ORG+COURSE+RUN``
        with ASCII parts. ``org``: the org whose key prefix the caller has matched exactly
        (:meth:`starts`)."""
        expr = f"SUBSTR({column}, {skip + 1})" if skip else column
        if self.vendor == "postgresql":
            # MariaDB's pattern below, in parts: two pluses with something before, between
            # and after; no other character. PostgreSQL's regex engine spends about 1.3
            # microseconds a row on the anchored pattern (a third of a forward batch's
            # read); these tests, a tenth of that.
            return (
                f"{expr} LIKE {self.p('course-v1:_%+_%+_%')} "
                f"AND {expr} NOT LIKE {self.p('%+%+%+%')} AND {expr} !~ {self.p(_OUTSIDE_KEY)}"
            )
        if self.vendor == "mysql":
            # PCRE's \z: only at the very end ($ also matches before a final newline).
            pattern = f"^course-v1:{_PART}[+]{_PART}[+]{_PART}\\z"
            return f"{self.exact(expr)} REGEXP {self.p(pattern)}"
        # SQLite: GLOB is case-sensitive and native (REGEXP would call into Python per row).
        # Its fixed start is not to lead SQLite to the column's index: it then read the
        # whole org by it for each batch, to keep the batch's key range.
        if org is not None and _ASCII_PART.fullmatch(org):
            # The prefix is the org's, itself such a part: only COURSE+RUN is left to test.
            # The character class costs per character: on the whole key, half of a 5,000-row
            # rollback batch's read.
            rest = f"SUBSTR({column}, {skip + len(course_key_prefix(org)) + 1})"
            return (
                f"{rest} GLOB '?*+?*' AND {rest} NOT GLOB '*+*+*' "
                f"AND {rest} NOT GLOB '*{_OUTSIDE_KEY}*'"
            )
        return (
            f"{self.unindexed(expr)} GLOB 'course-v1:?*+?*+?*' AND {expr} NOT GLOB '*+*+*+*' "
            f"AND SUBSTR({expr}, 11) NOT GLOB '*{_OUTSIDE_KEY}*'"
        )

    def case(self, expr: str, mapping: dict[str, str]) -> str:
        whens = " ".join(f"WHEN {self.p(k)} THEN {self.p(v)}" for k, v in mapping.items())
        return f"CASE {expr} {whens} END"


def _user_columns(sql: _Sql) -> tuple[str, str, str]:
    users = get_user_model()
    name = users._meta.get_field(users.USERNAME_FIELD).column
    return sql.q(users._meta.db_table), sql.q(users._meta.pk.column), sql.q(name)


def _unique_key_declared(model) -> bool:
    """Whether the legacy model declares (user, org, course_id, role) unique, as Open edX's
    CourseAccessRole does; then no two rows of an org share a target."""
    key = {"user", "org", "course_id", "role"}
    together = [set(names) for names in model._meta.unique_together]
    constraints = [
        set(c.fields)
        for c in model._meta.constraints
        if isinstance(c, UniqueConstraint) and c.condition is None
    ]
    return key in together + constraints


# The upper end of a batch that a PostgreSQL statement bounds itself (its ``bound`` CTE).
BOUND = "(SELECT upper FROM bound)"


def _key_range(sql: _Sql, pk: str, after: int | None, upper: int | str) -> str:
    """``pk`` in (after, upper]: the batch (``upper`` a key or :data:`BOUND`)."""
    text = f"{pk} <= {upper if upper == BOUND else sql.p(upper)}"
    return text if after is None else f"{text} AND {pk} > {sql.p(after)}"


def _fits(limit: int | None, value_len: int) -> bool:
    return limit is None or value_len <= limit


# --- forward: legacy rows to Casbin ------------------------------------------------------------


class _Forward:
    """The statements of a forward batch over legacy rows with a primary key in (after,
    upper] (``upper`` a key, or :data:`BOUND` in PostgreSQL's one statement). ``l`` is
    the source row, ``u`` its user."""

    def __init__(self, selection: Selection, rule: Rule, after: int | None, upper):
        self.model = legacy_role_model()
        self.casbin = casbin_rule_model()
        self.connection = connections[router.db_for_write(self.model)]
        self.selection, self.rule, self.after, self.upper = selection, rule, after, upper
        self.limit = max_length(self.casbin, "v2") or 255
        self.roles = {
            legacy: role_key(casbin)
            for legacy, casbin in role_map().items()
            if _fits(self.limit, len(role_key(casbin)))
        }

    def col(self, sql: _Sql, name: str, alias: str = "l") -> str:
        field = self.model._meta.pk if name == "pk" else self.model._meta.get_field(name)
        return f"{alias}.{sql.q(field.column)}"

    # The target's columns as SQL. Each call adds its parameters: call them in the order
    # their text appears in the statement.
    def subject(self, sql: _Sql) -> str:
        _, _, name = _user_columns(sql)
        return sql.concat(sql.p(SUBJECT_NAMESPACE), f"u.{name}")

    def role(self, sql: _Sql) -> str:
        return sql.case(self.col(sql, "role"), self.roles)

    def scope(self, sql: _Sql) -> str:
        return sql.concat(sql.p(SCOPE_NAMESPACE), self.col(sql, "course_id"))

    def where(self, sql: _Sql) -> str:
        """The rows this module may move: see the module docstring."""
        pk, course, org = (self.col(sql, n) for n in ("pk", "course_id", "org"))
        _, _, name = _user_columns(sql)
        parts = [_key_range(sql, pk, self.after, self.upper)]
        if self.selection.org is not None:
            parts.append(sql.starts(course, course_key_prefix(self.selection.org)))
            parts.append(f"{sql.exact(org)} = {sql.p(self.selection.org)}")
        else:
            if not self.selection.everything:
                parts.append(sql.one_of(course, self.selection.courses))
            key_org = f"SUBSTR({sql.before_plus(course)}, {len(COURSE_KEY_PREFIX) + 1})"
            parts.append(f"{sql.exact(org)} = {key_org}")
        parts.append(sql.course_key(course, org=self.selection.org))
        parts.append(sql.member(sql.exact(self.col(sql, "role")), list(self.roles)))
        # (On MariaDB these compare in the column's _ci collation: they leave out a superset,
        # whose rows placement then takes.)
        parts.append(sql.member(course, self.rule.skip_courses, negate=True))
        skipped = [course_key_prefix(o)[:-1] for o in self.rule.skip_orgs]
        parts.append(sql.member(sql.before_plus(course), skipped, negate=True))
        parts.append(f"{sql.length(f'u.{name}')} <= {sql.p(self.limit - len(SUBJECT_NAMESPACE))}")
        parts.append(f"{sql.length(course)} <= {sql.p(self.limit - len(SCOPE_NAMESPACE))}")
        return " AND ".join(f"({part})" for part in parts)

    def present(self, sql: _Sql) -> str:
        """EXISTS: the row's target is in ``casbin_rule``, compared exactly."""
        c = {n: f"c.{sql.q(self.casbin._meta.get_field(n).column)}" for n in _CASBIN_FIELDS}
        # MariaDB: the scope's index by the column's collation, then each value exactly
        # (the extra columns and ptype compare as the Python path's read compares them).
        indexed = f"{c['v2']} = {self.scope(sql)} AND " if sql.vendor == "mysql" else ""
        text = (
            f"EXISTS (SELECT 1 FROM {sql.q(self.casbin._meta.db_table)} c "  # noqa: S608 (identifiers only)
            f"WHERE {indexed}{sql.exact(c['v2'])} = {self.scope(sql)} "
            f"AND {sql.exact(c['v0'])} = {self.subject(sql)} "
            f"AND {sql.exact(c['v1'])} = {self.role(sql)} AND {c['ptype']} = {sql.p(ROLE_PTYPE)} "
            f"AND {c['v3']} = '' AND {c['v4']} = '' AND {c['v5']} = ''"
        )
        return text + _PER_ROW_LOOKUP[sql.vendor] + ")"

    def there(self, sql: _Sql) -> str:
        """Whether the row's target was there before the statement, as far as it must be
        asked: not at all when the rule says no target can be."""
        return "FALSE" if self.rule.targets_absent else self.present(sql)

    def rows_and_users(self, sql: _Sql) -> str:
        """The source rows (``l``) joined to their users (``u``)."""
        users, pk, _ = _user_columns(sql)
        table = sql.q(self.model._meta.db_table)
        # MariaDB would otherwise read every user and each user's rows: the batch's rows
        # come first, by their key range, and each finds its user.
        join = "STRAIGHT_JOIN" if sql.vendor == "mysql" else "JOIN"
        return f"{table} l {join} {users} u ON u.{pk} = {self.col(sql, 'user')}"

    def present_sources(self) -> tuple[str, list]:
        """SELECT the primary keys of the rows whose target is already there."""
        sql = _Sql(self.connection)
        return (
            f"SELECT {self.col(sql, 'pk')} FROM {self.rows_and_users(sql)} "  # noqa: S608 (identifiers only)
            f"WHERE {self.where(sql)} AND {self.present(sql)}",
            sql.params,
        )

    def insert(self, returning: bool, skip: list) -> tuple[str, list]:
        """INSERT the targets of the rows but ``skip`` (whose target is there), in source
        order. The rows to skip are read first, apart: an existence test inside the INSERT
        would be planned before the statement fills the table, and a table empty at that
        moment is scanned once per row, its new rows included."""
        sql = _Sql(self.connection)
        columns = ", ".join(sql.q(self.casbin._meta.get_field(n).column) for n in _CASBIN_FIELDS)
        text = (
            f"INSERT INTO {sql.q(self.casbin._meta.db_table)} ({columns}) "  # noqa: S608 (identifiers only)
            f"SELECT {sql.p(ROLE_PTYPE)}, {self.subject(sql)}, {self.role(sql)}, "
            f"{self.scope(sql)}, '', '', '' FROM {self.rows_and_users(sql)} "
            f"WHERE {self.where(sql)} AND {sql.member(self.col(sql, 'pk'), skip, True)} "
        )
        if _unique_key_declared(self.model):
            text += f"ORDER BY {self.col(sql, 'pk')}"
        else:  # equal rows may repeat: one target each
            text += f"GROUP BY 2, 3, 4 ORDER BY MIN({self.col(sql, 'pk')})"
        if returning:
            text += f" RETURNING {', '.join(columns.split(', ')[1:4])}"
        return text, sql.params

    def delete(self, confirm: bool = True) -> tuple[str, list]:
        """DELETE the rows whose target is now present (SQLite); with ``confirm`` False, the
        plain rows, every target known written (:attr:`Rule.inserts_complete`). The batch's
        range stands outside the EXISTS too: inside alone, SQLite scans the whole table."""
        sql = _Sql(self.connection)
        users, pk, _ = _user_columns(sql)
        text = (
            f"DELETE FROM {sql.q(self.model._meta.db_table)} AS l WHERE "  # noqa: S608 (identifiers only)
            f"{_key_range(sql, self.col(sql, 'pk'), self.after, self.upper)} AND EXISTS (SELECT 1 "
            f"FROM {users} u WHERE u.{pk} = {self.col(sql, 'user')} AND {self.where(sql)}"
        )
        return text + (f" AND {self.present(sql)})" if confirm else ")"), sql.params

    def delete_batch(self) -> tuple[str, list]:
        """SQLite: DELETE the batch's rows, every one, by the key range (the move holds
        SQLite's one write lock, so the range holds the rows the bound counted). Only when
        the INSERT wrote as many targets as the batch has rows: its rows are some of the
        batch's, one target each, so every row of the batch was plain and has its target
        now. The plain predicate, the user lookup and the per-row test are then not
        evaluated again (the DELETE's whole cost but the floor's, about three quarters of
        it)."""
        return batch_delete(self.selection, True, self.after, self.upper)

    def plain_rows(self) -> tuple[str, list]:
        """MariaDB/MySQL: SELECT the plain rows (a plain read, which locks nothing), each
        with its key, its target and whether that target is there: the INSERT and the
        key-order DELETE then go as the Python path's do (docs/decisions/0011)."""
        sql = _Sql(self.connection)
        key = ", ".join(self.col(sql, n) for n in ("pk", "user", "org", "course_id", "role"))
        return (
            f"SELECT {key}, {self.subject(sql)}, {self.role(sql)}, {self.scope(sql)}, "  # noqa: S608 (identifiers only)
            f"{self.there(sql)} FROM {self.rows_and_users(sql)} WHERE {self.where(sql)}",
            sql.params,
        )

    def one_statement(self, listed: bool, keys) -> tuple[str, list]:
        """PostgreSQL: the whole batch in one statement. ``bound`` finds the batch (its
        ``keys``, a query of :func:`~authz_migration.stores.batch_keys`), ``src`` reads its
        plain rows and tests each target once; the INSERT sorts ``src`` before writing its first
        row, so every test runs before the table grows; the DELETE takes the rows whose
        target was there or was just written (:func:`_confirmed`: after a shortfall only
        the first, and placement the rest), by the row versions read (``ctid``: a direct
        fetch each, where the primary key cost an index lookup; a row updated meanwhile is
        not deleted, and the pass over the rows left takes it)."""
        sql = _Sql(self.connection)
        casbin = sql.q(self.casbin._meta.db_table)
        legacy = sql.q(self.model._meta.db_table)
        columns = ", ".join(sql.q(self.casbin._meta.get_field(n).column) for n in _CASBIN_FIELDS)
        v = [sql.q(self.casbin._meta.get_field(n).column) for n in ("v0", "v1", "v2")]
        text = (
            f"{_bound_cte(sql, keys)}src AS MATERIALIZED (SELECT {self.col(sql, 'pk')} AS id, "  # noqa: S608 (identifiers only)
            f"l.ctid AS tid, "
            f"{self.subject(sql)} AS s, {self.role(sql)} AS r, {self.scope(sql)} AS o, "
            f"{self.there(sql)} AS there FROM {self.rows_and_users(sql)} "
            f"WHERE {self.where(sql)}), {_fresh_sql(self.model)}"
            f"written AS (INSERT INTO {casbin} ({columns}) SELECT {sql.p(ROLE_PTYPE)}, s, r, o, "
            f"'', '', '' FROM {_fresh_rows(self.model)} ORDER BY id "
            f"RETURNING {', '.join(v) if listed else 1}), "
            f"gone AS (DELETE FROM {legacy} WHERE ctid = ANY(ARRAY(SELECT tid FROM src "
            f"WHERE {_confirmed(_fresh_rows(self.model))})) RETURNING 1) "
        )
        return text + _final_select("gone", "written", listed), sql.params


# PostgreSQL: OFFSET 0 keeps an EXISTS a lookup per row through an index. Joined instead
# (a semi-join), it is planned from the table's statistics, and casbin_rule filled since
# its last ANALYZE (a first sync) looks nearly empty: a scan of the table per batch follows.
_PER_ROW_LOOKUP = {"postgresql": " OFFSET 0", "sqlite": "", "mysql": ""}

_CASBIN_FIELDS = ("ptype", "v0", "v1", "v2", "v3", "v4", "v5")
LEGACY_KEY = ("user", "org", "course_id", "role")


def _fresh_sql(model) -> str:
    """The ``fresh`` CTE of a forward statement where equal legacy rows may repeat (no unique
    key declared): one row of ``src`` per target to write, read twice (the INSERT, the
    count). With the unique key none: :func:`_fresh_rows` reads ``src`` itself, where a CTE
    would copy every row once more (about 4 % of a batch's time)."""
    if _unique_key_declared(model):
        return ""
    return (
        "fresh AS (SELECT DISTINCT ON (s, r, o) id, s, r, o FROM src WHERE NOT there "
        "ORDER BY s, r, o, id), "
    )


def _fresh_rows(model) -> str:
    """The rows of ``src`` whose target a forward statement writes, as a FROM item."""
    if _unique_key_declared(model):
        return "(SELECT id, s, r, o FROM src WHERE NOT there) fresh"
    return "fresh"


def _confirmed(fresh: str) -> str:
    """Whether a row of ``src`` has its target now: there before, or written (``fresh``: the
    rows whose target was to be written, a FROM item). As on the Python path
    (``moves._write_then_delete``), the INSERT's row count proves every target of ``fresh``
    written. A shortfall (a trigger that skipped a row) leaves every row whose target was
    not there before: they are read with the rows left and go through placement, which
    finds each target written or reports it not confirmed. (Comparing each row with the
    INSERT's ``RETURNING`` here cost a fifth of a forward batch when made on every row, and
    returning the targets for it alone, 3 % more.)"""
    return f"there OR (SELECT COUNT(*) FROM written) = (SELECT COUNT(*) FROM {fresh})"  # noqa: S608 (CTE names only)


def _bound_cte(sql: _Sql, keys) -> str:
    """``WITH bound (upper, n)``: the highest of the batch's ``keys`` (a query of
    :func:`~authz_migration.stores.batch_keys`) and their count, read in the statement's
    own snapshot (:data:`BOUND`)."""
    inner, params = keys.query.sql_with_params()
    sql.params.extend(params)
    bound = f"SELECT MAX(t.authz_pk), COUNT(*) FROM ({inner}) t"  # noqa: S608 (the ORM's SQL)
    return f"WITH bound (upper, n) AS MATERIALIZED ({bound}), "


def _final_select(counted: str, listed_cte: str, listed: bool) -> str:
    """The final SELECT of a one-statement batch: the batch's highest key, its row count and
    the count of ``counted``, then the count of ``listed_cte``'s rows; or, when ``listed``,
    those rows as they are (v0, v1, v2), then the numbers as text in a row of their own
    (:func:`_numbers_row`). The rows then need no reshaping in Python: the driver's tuples
    are the rules an enforcer follows (5,000 rules with the numbers repeated on each and
    sliced off took 3.6 ms to fetch and reshape; as they are, 1.7 ms)."""
    numbers = [
        "(SELECT upper FROM bound)",
        "(SELECT n FROM bound)",
        f"(SELECT COUNT(*) FROM {counted})",  # noqa: S608 (CTE names only)
    ]
    if not listed:
        return f"SELECT {', '.join(numbers)}, (SELECT COUNT(*) FROM {listed_cte})"  # noqa: S608
    as_text = ", ".join(f"CAST({number} AS TEXT)" for number in numbers)
    return f"SELECT * FROM {listed_cte} UNION ALL SELECT {as_text}"  # noqa: S608 (CTE names)


def _numbers_row(result: list) -> tuple:
    """Take the numbers' row out of a listed one-statement result (:func:`_final_select`)
    and return them as integers (the highest key None when the range held no rows). It is
    the last row: PostgreSQL appends a ``UNION ALL``'s branches in order. (Were a rule's
    row last instead, ``int`` of its text would fail the move, never misread it.)"""
    upper, count, counted = result.pop()
    return (None if upper is None else int(upper)), int(count), int(counted)


# --- rollback: Casbin rows to the legacy table ------------------------------------------------


class _Rollback:
    """The statements of a rollback batch over Casbin rows with a primary key in (after,
    upper] (as :class:`_Forward`'s). ``c`` is the source row, ``u`` the user its subject
    names."""

    def __init__(self, selection: Selection, rule: Rule, after: int | None, upper):
        self.model = legacy_role_model()
        self.casbin = casbin_rule_model()
        self.connection = connections[router.db_for_write(self.casbin)]
        self.selection, self.rule, self.after, self.upper = selection, rule, after, upper
        self.roles = {role_key(casbin): legacy for casbin, legacy in reverse_role_map().items()}
        self.limits = (max_length(self.model, "org"), max_length(self.model, "course_id"))

    def c(self, sql: _Sql, name: str) -> str:
        field = self.casbin._meta.pk if name == "pk" else self.casbin._meta.get_field(name)
        return f"c.{sql.q(field.column)}"

    def lcol(self, sql: _Sql, name: str) -> str:
        return f"l.{sql.q(self.model._meta.get_field(name).column)}"

    # The target's columns as SQL (each call adds its parameters: call in text order).
    def course(self, sql: _Sql) -> str:
        return f"SUBSTR({self.c(sql, 'v2')}, {len(SCOPE_NAMESPACE) + 1})"

    def org(self, sql: _Sql) -> str:
        if self.selection.org is not None:
            return sql.p(self.selection.org)
        return f"SUBSTR({sql.before_plus(self.course(sql))}, {len(COURSE_KEY_PREFIX) + 1})"

    def role(self, sql: _Sql) -> str:
        return sql.case(self.c(sql, "v1"), self.roles)

    def user_join(self, sql: _Sql) -> str:
        """The user the subject names, exactly (an index lookup by username first)."""
        _, _, name = _user_columns(sql)
        username = f"SUBSTR({self.c(sql, 'v0')}, {len(SUBJECT_NAMESPACE) + 1})"
        join = f"u.{name} = {username}"
        if sql.vendor == "mysql":  # the index by the column's collation, then exactly
            join += f" AND {sql.exact(f'u.{name}')} = {username}"
        return join

    def where(self, sql: _Sql) -> str:
        pk, v2 = self.c(sql, "pk"), self.c(sql, "v2")
        parts = [_key_range(sql, pk, self.after, self.upper)]
        if self.selection.org is not None:
            parts.append(sql.starts(v2, course_scope_key(course_key_prefix(self.selection.org))))
        elif self.selection.courses:
            parts.append(sql.one_of(v2, [course_scope_key(c) for c in self.selection.courses]))
        else:
            parts.append(sql.starts(v2, SCOPE_NAMESPACE))
        parts.append(sql.course_key(v2, len(SCOPE_NAMESPACE), self.selection.org))
        # Exactly, as placement reads them (under MariaDB's PAD SPACE, ' ' = '').
        parts.append(f"{sql.exact(self.c(sql, 'ptype'))} = {sql.p(ROLE_PTYPE)}")
        parts.extend(f"{sql.exact(self.c(sql, n))} = ''" for n in ("v3", "v4", "v5"))
        parts.append(sql.member(sql.exact(self.c(sql, "v1")), list(self.roles)))
        parts.append(sql.starts(self.c(sql, "v0"), SUBJECT_NAMESPACE))
        parts.append(sql.member(self.course(sql), self.rule.skip_courses, negate=True))
        skipped = [course_key_prefix(o)[:-1] for o in self.rule.skip_orgs]
        parts.append(sql.member(sql.before_plus(self.course(sql)), skipped, negate=True))
        if self.limits[0] is not None:
            parts.append(f"{sql.length(self.org(sql))} <= {sql.p(self.limits[0])}")
        if self.limits[1] is not None:
            parts.append(f"{sql.length(self.course(sql))} <= {sql.p(self.limits[1])}")
        return " AND ".join(f"({part})" for part in parts)

    def present(self, sql: _Sql) -> str:
        """EXISTS: the row's target is in the legacy table (the user's rows are looked up by
        its index; the org is compared, never looked up: statistics taken before a move say
        the org it fills has no rows, and PostgreSQL would then look rows up by the org's
        own index, each lookup reading every row the move has written so far)."""
        text = (
            f"EXISTS (SELECT 1 FROM {sql.q(self.model._meta.db_table)} l "  # noqa: S608 (identifiers only)
            f"WHERE {self.lcol(sql, 'user')} = u.{_user_columns(sql)[1]} "
            f"AND {sql.unindexed(self.lcol(sql, 'org'))} = {self.org(sql)} "
            f"AND {self.lcol(sql, 'course_id')} = {self.course(sql)} "
            f"AND {self.lcol(sql, 'role')} = {self.role(sql)}"
        )
        return text + _PER_ROW_LOOKUP[sql.vendor] + ")"

    def delete_batch(self, returning: bool) -> tuple[str, list]:
        """DELETE the batch's rules, every one (as :meth:`_Forward.delete_batch`)."""
        sql = _Sql(self.connection)
        text, params = batch_delete(self.selection, False, self.after, self.upper)
        if returning:
            text += " RETURNING " + ", ".join(
                sql.q(self.casbin._meta.get_field(n).column) for n in ("v0", "v1", "v2")
            )
        return text, params

    def standing(self, sql: _Sql) -> str:
        """MariaDB/MySQL: where the row's target stands in the legacy table: NULL absent, 1
        there exactly, 0 there only as a look-alike, equal in the unique key's collation
        (which would refuse the insert, and which placement reports). Looked up by the
        whole unique key."""
        legacy = sql.q(self.model._meta.db_table)
        pairs = (("org", self.org), ("course_id", self.course), ("role", self.role))
        exactly = " AND ".join(
            f"{sql.exact(self.lcol(sql, n))} = {value(sql)}" for n, value in pairs
        )
        return (
            f"(SELECT MAX({exactly}) FROM {legacy} l "  # noqa: S608 (identifiers only)
            f"WHERE {self.lcol(sql, 'user')} = u.{_user_columns(sql)[1]} AND "
            + " AND ".join(f"{self.lcol(sql, n)} = {value(sql)}" for n, value in pairs)
            + ")"
        )

    def plain_rows(self) -> tuple[str, list]:
        """MariaDB/MySQL: SELECT the plain rows (a plain read, which locks nothing), each
        with its key and subject, role and scope, its target and :meth:`standing`: the
        INSERT in key order and the DELETE by primary key then go as the Python path's do
        (docs/decisions/0011)."""
        sql = _Sql(self.connection)
        users, pk, _ = _user_columns(sql)
        key = ", ".join(self.c(sql, n) for n in ("pk", "v0", "v1", "v2"))
        return (
            f"SELECT {key}, u.{pk}, {self.org(sql)}, {self.course(sql)}, {self.role(sql)}, "  # noqa: S608 (identifiers only)
            f"{self.standing(sql)} FROM {sql.q(self.casbin._meta.db_table)} c "
            f"STRAIGHT_JOIN {users} u ON {self.user_join(sql)} WHERE {self.where(sql)}",
            sql.params,
        )

    def present_sources(self) -> tuple[str, list]:
        """SELECT the primary keys of the rows whose target is there as the legacy table's
        unique key compares (a row equal but for case counts: it would block the insert)."""
        sql = _Sql(self.connection)
        users = _user_columns(sql)[0]
        return (
            f"SELECT {self.c(sql, 'pk')} FROM {sql.q(self.casbin._meta.db_table)} c "  # noqa: S608 (identifiers only)
            f"JOIN {users} u ON {self.user_join(sql)} WHERE {self.where(sql)} "
            f"AND {self.present(sql)}",
            sql.params,
        )

    def insert(self, skip: list, ignore: bool = False) -> tuple[str, list]:
        """INSERT the legacy rows of the rows but ``skip``, in the unique key's order
        (docs/decisions/0011); see :meth:`_Forward.insert` for why ``skip`` is read apart.
        ``ignore`` (SQLite, the unique key declared): no ``skip``, the key itself passes over
        the targets present, within the batch too (SQLite runs one writer at a time: no
        order to keep)."""
        sql = _Sql(self.connection)
        users = _user_columns(sql)[0]
        columns = ", ".join(
            sql.q(self.model._meta.get_field(n).column)
            for n in ("user", "org", "course_id", "role")
        )
        verb, distinct, order = "INSERT INTO", "DISTINCT ", " ORDER BY 1, 2, 3, 4"
        if ignore:
            verb, distinct, order = "INSERT OR IGNORE INTO", "", ""
        return (
            f"{verb} {sql.q(self.model._meta.db_table)} ({columns}) "  # noqa: S608 (identifiers only)
            f"SELECT {distinct}u.{_user_columns(sql)[1]}, {self.org(sql)}, {self.course(sql)}, "
            f"{self.role(sql)} FROM {sql.q(self.casbin._meta.db_table)} c JOIN {users} u "
            f"ON {self.user_join(sql)} WHERE {self.where(sql)} "
            f"AND {sql.member(self.c(sql, 'pk'), skip, True)}{order}",
            sql.params,
        )

    def one_statement(self, listed: bool, keys) -> tuple[str, list]:
        """PostgreSQL: the whole batch in one statement, as :meth:`_Forward.one_statement`."""
        sql = _Sql(self.connection)
        users, pk, _ = _user_columns(sql)
        casbin = sql.q(self.casbin._meta.db_table)
        legacy = sql.q(self.model._meta.db_table)
        key = [sql.q(self.model._meta.get_field(n).column) for n in LEGACY_KEY]
        v = [sql.q(self.casbin._meta.get_field(n).column) for n in ("v0", "v1", "v2")]
        text = (
            f"{_bound_cte(sql, keys)}src AS MATERIALIZED (SELECT {self.c(sql, 'pk')} AS id, "  # noqa: S608 (identifiers only)
            f"c.ctid AS tid, "
            f"u.{pk} AS k0, {self.org(sql)} AS k1, {self.course(sql)} AS k2, "
            f"{self.role(sql)} AS k3, {self.present(sql)} AS there FROM {casbin} c JOIN {users} u "
            f"ON {self.user_join(sql)} WHERE {self.where(sql)}), "
            f"fresh AS (SELECT DISTINCT k0, k1, k2, k3 FROM src WHERE NOT there), "
            f"written AS (INSERT INTO {legacy} ({', '.join(key)}) SELECT * FROM fresh "
            f"ORDER BY 1, 2, 3, 4 RETURNING 1), "
            f"gone AS (DELETE FROM {casbin} WHERE ctid = ANY(ARRAY(SELECT tid FROM src "
            f"WHERE {_confirmed('fresh')})) RETURNING {', '.join(v) if listed else 1}) "
        )
        return text + _final_select("written", "gone", listed), sql.params

    def delete(self, returning: bool) -> tuple[str, list]:
        """DELETE the rows whose target is now present, compared exactly (SQLite; the
        range outside the EXISTS as in :meth:`_Forward.delete`)."""
        sql = _Sql(self.connection)
        text = (
            f"DELETE FROM {sql.q(self.casbin._meta.db_table)} AS c WHERE "  # noqa: S608 (identifiers only)
            f"{_key_range(sql, self.c(sql, 'pk'), self.after, self.upper)} AND EXISTS (SELECT 1 "
            f"FROM {_user_columns(sql)[0]} u WHERE {self.user_join(sql)} AND {self.where(sql)} "
            f"AND {self.present(sql)})"
        )
        if returning:
            text += " RETURNING " + ", ".join(
                sql.q(self.casbin._meta.get_field(n).column) for n in ("v0", "v1", "v2")
            )
        return text, sql.params


# --- entry points ------------------------------------------------------------------------------


def usable() -> bool:
    """Whether the database may move rows here: PostgreSQL and SQLite, and MariaDB and MySQL
    with ``JSON_TABLE``; never beside openedx-authz (its side rows are written per rule by
    :mod:`~authz_migration.peer`).

    MariaDB/MySQL moves its plain rows with the Python path's own statements (a plain read,
    a JSON insert or an INSERT in key order, the key-order DELETE or the DELETE by primary
    key of docs/decisions/0011): a statement that read the batch's key range in order to
    write would be a locking read under InnoDB, waiting for rows of other orgs that a
    concurrent move holds (docs/decisions/0014)."""
    if peer.installed():
        return False
    connection = connections[router.db_for_write(casbin_rule_model())]
    if connection.vendor == "mysql":
        return has_json_table(legacy_role_model())
    return connection.vendor in ("postgresql", "sqlite")


def targets_absent(selection: Selection) -> bool:
    """Whether a forward move over ``selection`` may leave out the per-row test of its
    targets (one index probe, at the move's start): no Casbin row has a course scope of the
    selection yet, and the legacy table's unique key makes every plain row's target its
    own (the role map is one-to-one: system check E005). Rows the move itself writes then
    never meet a later batch's; rows placement writes might (a row whose org column differs
    from its key's), so the caller stops leaving the test out once placement has written.

    Only for an org or the whole instance: a few courses' rows are tested faster than
    probed. Only while this move is the scope's one writer, which the scope guard makes it
    for the app's own moves (docs/decisions/0014)."""
    if selection.org is None and not selection.everything:
        return False
    if not _unique_key_declared(legacy_role_model()):
        return False
    prefix = SCOPE_NAMESPACE
    if selection.org is not None:
        prefix = course_scope_key(course_key_prefix(selection.org))
    return not casbin_scopes_exist(prefix)


def inserts_complete(selection: Selection) -> bool:
    """SQLite: whether a forward move over ``selection`` may delete its plain rows without
    finding each target again after the INSERT wrote them: no trigger is defined on
    ``casbin_rule`` (only a trigger's ``RAISE(IGNORE)`` skips a row without failing the
    statement), checked once at the move's start; the move holds SQLite's one write lock
    throughout, so none can appear meanwhile. For an org or the whole instance, as
    :func:`targets_absent`. Elsewhere False: PostgreSQL's statement checks the INSERT's row
    count itself (:func:`_confirmed`); MariaDB's moves write through the Python path's
    statements, whose row count proves them."""
    if selection.org is None and not selection.everything:
        return False
    if _vendor(legacy=True) != "sqlite":
        return False
    return not has_triggers(casbin_rule_model())


def forward(selection: Selection, rule: Rule, span: Span, listed: bool) -> Moved | None:
    """Move the plain legacy rows of the batch ``span`` names to Casbin: one statement on
    PostgreSQL, which finds the batch too; otherwise the batch's bounds, then two or three
    statements on SQLite, three on MariaDB/MySQL. On MariaDB/MySQL, None (nothing written)
    when some of the batch's rows are not plain: the batch then goes through placement
    whole, so that its legacy rows are deleted by one statement in one key order
    (docs/decisions/0011)."""
    return _carry(_Forward, selection, rule, span, listed)


def rollback(selection: Selection, rule: Rule, span: Span, listed: bool) -> Moved | None:
    """Move the plain Casbin rows of the batch (as for :func:`forward`) to the legacy table:
    one statement on PostgreSQL, the bounds and two or three statements on SQLite, three on
    MariaDB/MySQL (None there as for :func:`forward`, also when a target has a look-alike:
    :func:`_rollback_by_rows`)."""
    return _carry(_Rollback, selection, rule, span, listed)


def _carry(kind, selection: Selection, rule: Rule, span: Span, listed: bool) -> Moved | None:
    """A batch's way by the source rows' database (``kind``: :class:`_Forward` or
    :class:`_Rollback`): PostgreSQL's one statement; elsewhere the bounds first, then
    MariaDB/MySQL's plain read with the Python path's writes, or SQLite's statements."""
    forward = kind is _Forward
    if _vendor(legacy=forward) == "postgresql":
        return _one_statement(kind, selection, rule, span, listed)
    statements, done = _bounded(kind, selection, rule, span)
    if statements is None:
        return done
    if statements.connection.vendor == "mysql":
        by_rows = _forward_by_rows if forward else _rollback_by_rows
        return by_rows(statements, listed, done.count)
    return (_sqlite_forward if forward else _sqlite_rollback)(statements, listed, done)


def _sqlite_forward(statements: _Forward, listed: bool, done: Moved) -> Moved:
    """SQLite: the rows whose target is there (unless the rule says none can be), the
    INSERT of the others' targets, the DELETE of the batch (:meth:`_Forward.delete_batch`)
    or of its plain rows."""
    rule = statements.rule
    with statements.connection.cursor() as cursor:
        skip = []
        if not rule.targets_absent:
            cursor.execute(*statements.present_sources())
            skip = [pk for (pk,) in cursor.fetchall()]
        cursor.execute(*statements.insert(listed, skip))
        if listed:
            done.casbin_added = [tuple(row) for row in cursor.fetchall()]
            done.created = len(done.casbin_added)
        else:
            done.created = cursor.rowcount
        if done.created == done.count:
            cursor.execute(*statements.delete_batch())
        else:
            cursor.execute(*statements.delete(confirm=not rule.inserts_complete))
        done.moved = cursor.rowcount
    return done


def _sqlite_rollback(statements: _Rollback, listed: bool, done: Moved) -> Moved:
    """SQLite: the INSERT of the targets (the legacy unique key, where declared, passing over
    those present), the DELETE of the batch (:meth:`_Rollback.delete_batch`) or of its plain
    rules."""
    # The legacy table's unique key compares as the target test does (SQLite: exactly), so
    # where it is declared it answers the test in the INSERT itself.
    ignore = _unique_key_declared(statements.model)
    with statements.connection.cursor() as cursor:
        skip = []
        if not ignore:
            cursor.execute(*statements.present_sources())
            skip = [pk for (pk,) in cursor.fetchall()]
        cursor.execute(*statements.insert(skip, ignore))
        done.created = cursor.rowcount
        if done.created == done.count:
            cursor.execute(*statements.delete_batch(returning=listed))
        else:
            cursor.execute(*statements.delete(returning=listed))
        if listed:
            done.casbin_removed = [tuple(row) for row in cursor.fetchall()]
            done.moved = len(done.casbin_removed)
        else:
            done.moved = cursor.rowcount
    return done


def _bounded(kind, selection: Selection, rule: Rule, span: Span) -> tuple:
    """SQLite, MariaDB/MySQL: the batch's bounds (one query) and its statements (``kind``:
    :class:`_Forward` or :class:`_Rollback`), with the :class:`Moved` to fill; no statements
    when the range holds no rows."""
    keys = batch_keys(selection, kind is _Forward, *span)
    upper, count = batch_bound(keys)
    if upper is None:
        return None, Moved()
    return kind(selection, rule, span.after, upper), Moved(upper=upper, count=count)


def _vendor(legacy: bool) -> str:
    """The vendor of the database the batch's source rows live in."""
    model = legacy_role_model() if legacy else casbin_rule_model()
    return connections[router.db_for_write(model)].vendor


def _forward_by_rows(statements: _Forward, listed: bool, expected: int) -> Moved | None:
    """MariaDB/MySQL: read the plain rows with their targets, write the targets missing in
    one JSON insert, delete the rows in key order. (A trigger there cannot skip a row
    silently, it fails the statement: every target is written or the move fails.)"""
    with statements.connection.cursor() as cursor:
        cursor.execute(*statements.plain_rows())
        rows = cursor.fetchall()
    if len(rows) != expected:
        return None
    # One target per key: equal legacy rows may repeat where no unique key says otherwise.
    fresh = list(dict.fromkeys(tuple(row[5:8]) for row in rows if not row[8]))
    created = insert_casbin(fresh)
    moved = delete_legacy(rows)  # each row begins with a LegacyRow's five fields
    return Moved(
        moved, created, casbin_added=fresh if listed else [], upper=statements.upper, count=expected
    )


def _rollback_by_rows(statements: _Rollback, listed: bool, expected: int) -> Moved | None:
    """MariaDB/MySQL: read the plain rows with their targets, write the targets missing in
    one INSERT in key order, delete the rows by primary key. None (nothing written) when
    some of the batch's rows are not plain, or a target has a look-alike in the legacy
    table: the batch then goes through placement whole, which reports the look-alikes, so
    that its legacy rows are written by one statement in one key order
    (docs/decisions/0011)."""
    with statements.connection.cursor() as cursor:
        cursor.execute(*statements.plain_rows())
        rows = cursor.fetchall()
    if len(rows) != expected or any(row[8] == 0 for row in rows):
        return None
    # One target per key: equal Casbin rows may repeat (casbin_rule has no unique key).
    fresh = sorted(dict.fromkeys(tuple(row[4:8]) for row in rows if row[8] is None))
    created = insert_legacy(fresh)
    moved = delete_casbin([row[0] for row in rows])
    removed = [tuple(row[1:4]) for row in rows] if listed else []
    return Moved(moved, created, casbin_removed=removed, upper=statements.upper, count=expected)


def _one_statement(kind, selection: Selection, rule: Rule, span: Span, listed: bool) -> Moved:
    """PostgreSQL: run a batch's one statement (``kind`` and ``span`` as for
    :func:`_bounded`), which finds the batch, moves it and reports both."""
    keys = batch_keys(selection, kind is _Forward, *span)
    if keys is None:
        return Moved()
    statements = kind(selection, rule, span.after, BOUND)
    with statements.connection.cursor() as cursor:
        cursor.execute(*statements.one_statement(listed, keys))
        result = cursor.fetchall()
    if listed:
        upper, count, first = _numbers_row(result)
        rows, second = result, len(result)
    else:
        [(upper, count, first, second)] = result
        rows = []
    if isinstance(statements, _Forward):  # gone, written
        return Moved(first, second, casbin_added=rows, upper=upper, count=count)
    return Moved(second, first, casbin_removed=rows, upper=upper, count=count)  # written, gone
