"""openedx-authz, when the host runs it beside this app (docs/decisions/0010).

openedx-authz answers permission checks from ``casbin_rule``, but its own assignment API
writes more than the rule: an ``ExtendedCasbinRule`` linked to a ``Scope`` (the course; none
for an org-wide glob) and a ``Subject`` (the user), and an audit row per assignment. Its
listing APIs, its cascades and its own rollback rely on them, so a move writes them too, set
based and in the move's transaction, and a rollback removes the extended rules before their
rules (their foreign key would otherwise fail at commit) and audits the removal.

Its enforcers reload when its policy-cache version changes; :func:`invalidate_enforcers`
changes it after a move commits, through openedx-authz's own call.

Without openedx-authz installed every function here does nothing and costs no query.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from uuid import uuid4

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import connections, router
from django.utils import timezone

from .roles import (
    COURSE_KEY_PREFIX,
    ROLE_PTYPE,
    SCOPE_NAMESPACE,
    SUBJECT_NAMESPACE,
    strip_namespace,
)
from .stores import CasbinKey, _in_params, _in_sql, _insert_rows

logger = logging.getLogger(__name__)

APP_LABEL = "openedx_authz"
#: openedx-authz releases this app was tested against (a system check warns outside them).
TESTED_VERSIONS = ((1, 35), (2, 0))  # >= 1.35, < 2.0
#: ``ExtendedCasbinRule.casbin_rule_key`` holds ptype and v0..v3 joined by commas.
RULE_KEY_LENGTH = 255

# The user a move acts for (the actor of its audit rows); None for system moves.
_actor: ContextVar[Any] = ContextVar("authz_migration_actor", default=None)


def installed() -> bool:
    """Whether openedx-authz is an installed app of this project."""
    return apps.is_installed(APP_LABEL)


@contextmanager
def acting_as(user: Any):
    """Within this block, side rows name ``user`` (a user or None) as the actor."""
    token = _actor.set(getattr(user, "pk", None))
    try:
        yield
    finally:
        _actor.reset(token)


def rule_key(subject: str, role: str, scope: str) -> str:
    """openedx-authz's lookup key of a "g" rule written by this app (v3 empty)."""
    return f"{ROLE_PTYPE},{subject},{role},{scope},"


def rule_key_check():
    """``fits(subject, role, scope)``: whether the rule's extended row can be written; asked
    once per batch (without openedx-authz every rule fits)."""
    if not installed():
        return lambda subject, role, scope: True
    return lambda subject, role, scope: len(rule_key(subject, role, scope)) <= RULE_KEY_LENGTH


def _model(name: str):
    return apps.get_model(APP_LABEL, name)


def _connection(model):
    return connections[router.db_for_write(model)]


def _name_sql(connection, name: str) -> str:
    return connection.ops.quote_name(name)


# --- forward: write what openedx-authz's assignment writes ---------------------------------


def record_assignments(targets: Iterable[CasbinKey], created: list[CasbinKey]) -> None:
    """Give every rule of ``targets`` (now in ``casbin_rule``) the extended row, scope and
    subject openedx-authz's assignment gives it, where it lacks one, and audit the rules
    this move ``created``. A fixed number of queries, whatever the number of rules."""
    if not installed():
        return
    targets = set(targets)
    if not targets:
        return
    lacking = _rules_without_extension(targets)
    if lacking:
        names = {strip_namespace(v0, SUBJECT_NAMESPACE) for _, v0, _, _ in lacking} - {None}
        courses = {_course_of(v2) for _, _, _, v2 in lacking} - {None}
        users, scopes = _look_up(names, courses)
        _insert_extensions(lacking, _subjects_for(users), _scopes_for(courses, scopes))
    if created:
        _audit("created", created)


def _rules_without_extension(targets: set[CasbinKey]) -> list[tuple[int, str, str, str]]:
    """(id, v0, v1, v2) of the target rules that have no ExtendedCasbinRule (one query)."""
    extended = _model("ExtendedCasbinRule")
    rule = extended._meta.get_field("casbin_rule").related_model
    connection = _connection(rule)
    scopes = sorted({v2 for _, _, v2 in targets})
    rule_table = _name_sql(connection, rule._meta.db_table)
    ext_table = _name_sql(connection, extended._meta.db_table)
    rule_column = _name_sql(connection, extended._meta.get_field("casbin_rule").column)
    v2_in = _in_sql(connection, rule._meta.get_field("v2"), scopes)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT r.id, r.v0, r.v1, r.v2 FROM {rule_table} r LEFT JOIN {ext_table} e "  # noqa: S608 (identifiers only)
            f"ON e.{rule_column} = r.id WHERE r.ptype = %s AND r.v3 = %s AND r.v4 = %s "
            f"AND r.v5 = %s AND r.v2 {v2_in} AND e.id IS NULL",
            [ROLE_PTYPE, "", "", "", *_in_params(connection, scopes)],
        )
        rows = cursor.fetchall()
    # Exact comparison: a _ci collation also returns rows equal but for letter case.
    return [row for row in rows if (row[1], row[2], row[3]) in targets]


def _course_of(scope: str) -> str | None:
    """The course key of a course scope; None for an org-wide glob (it has no Scope row)."""
    if scope.startswith(SCOPE_NAMESPACE + COURSE_KEY_PREFIX) and not scope.endswith("*"):
        return scope[len(SCOPE_NAMESPACE) :]
    return None


def _look_up(names: set[str], courses: set[str]):
    """In one query: username -> [user id, its UserSubject's id or None] for the users that
    exist, and course key -> CourseScope id for the scopes that exist, found by their key or
    (scopes written before openedx-authz kept the key) by their linked course overview."""
    connection = _connection(_model("CourseScope"))
    found_users: dict[str, list] = {}
    by_key: dict[str, int] = {}
    by_link: dict[str, int] = {}
    with connection.cursor() as cursor:
        cursor.execute(
            _look_up_sql(connection, names, courses),
            [*_in_params(connection, names), *_in_params(connection, courses) * 2],
        )
        rows = cursor.fetchall()
    for kind, key, pk, subject, linked in rows:
        if kind == "u":
            if key in names:  # exact: a _ci collation also returns "Alice" for "alice"
                found_users[key] = [pk, subject]
            continue
        if key in courses:
            by_key.setdefault(key, pk)
        if linked is not None and str(linked) in courses:
            by_link.setdefault(str(linked), pk)
    return found_users, {**by_link, **by_key}


def _look_up_sql(connection, names: set[str], courses: set[str]) -> str:
    """The query of :func:`_look_up`: the users by name with their subjects, then the course
    scopes by key or by course overview; its parameters are the names' list, then the
    courses' twice. SQL with the lists as parameters (on PostgreSQL one text each, split by
    the server: ``stores._array_param``): through the ORM, its ``__in`` lookups prepared each
    value in Python, a third of a 5,000-rule batch's side-row work."""
    users = get_user_model()
    user_subject, course_scope = _model("UserSubject"), _model("CourseScope")
    name_field = users._meta.get_field(users.USERNAME_FIELD)
    overview = course_scope._meta.get_field("course_overview")
    key_field = course_scope._meta.get_field("external_key")
    scope_ptr = course_scope._meta.pk
    user_pk = _name_sql(connection, users._meta.pk.column)
    name = _name_sql(connection, name_field.column)
    scope_pk = _name_sql(connection, scope_ptr.target_field.column)
    subject_pk = _name_sql(connection, user_subject._meta.pk.column)
    subject_user = _name_sql(connection, user_subject._meta.get_field("user").column)
    key = f"s.{_name_sql(connection, key_field.column)}"
    link = f"c.{_name_sql(connection, overview.column)}"
    return (
        f"SELECT 'u', u.{name}, u.{user_pk}, MIN(us.{subject_pk}), NULL "  # noqa: S608 (identifiers only)
        f"FROM {_name_sql(connection, users._meta.db_table)} u "
        f"LEFT JOIN {_name_sql(connection, user_subject._meta.db_table)} us "
        f"ON us.{subject_user} = u.{user_pk} "
        f"WHERE u.{name} {_any_of_sql(connection, name_field, names)} "
        f"GROUP BY u.{user_pk}, u.{name} "
        f"UNION ALL SELECT 'c', {key}, s.{scope_pk}, NULL, {link} "
        f"FROM {_name_sql(connection, course_scope._meta.db_table)} c "
        f"JOIN {_name_sql(connection, scope_ptr.related_model._meta.db_table)} s "
        f"ON s.{scope_pk} = c.{_name_sql(connection, scope_ptr.column)} "
        f"WHERE {key} {_any_of_sql(connection, key_field, courses)} "
        f"OR {link} {_any_of_sql(connection, overview, courses)}"
    )


def _any_of_sql(connection, model_field, values) -> str:
    """``= ANY(...)``/``IN (...)`` for ``values`` (parameters: ``stores._in_params``); with
    no values, a test that matches nothing (an empty ``IN ()`` is not SQL; PostgreSQL's
    ``= ANY`` of an empty array is, and is false)."""
    if not values and connection.vendor != "postgresql":
        return "IN (NULL)"
    return _in_sql(connection, model_field, values)


def _subjects_for(found: dict[str, list]) -> dict[str, int]:
    """``user^NAME`` -> the id of that user's ``Subject``, created where missing. Users are
    locked (in id order) only when some subject is missing, so that two moves never give
    one user two subjects (openedx-authz's own look-up would then fail for that user)."""
    missing = sorted(uid for uid, subject in found.values() if subject is None)
    if missing:
        users = get_user_model()
        user_subject = _model("UserSubject")
        locking = users._default_manager.select_for_update().filter(pk__in=missing)
        list(locking.order_by("pk").values_list("pk", flat=True))  # rows locked, none built
        # A locking read sees what another move committed while this one waited.
        again = user_subject.objects.select_for_update().filter(user_id__in=missing)
        now_there = dict(again.values_list("user_id", "pk"))
        create = [uid for uid in missing if uid not in now_there]
        subject_model = _model("Subject")
        made = subject_model.objects.bulk_create([subject_model() for _ in create])
        new = dict(zip(create, (row.pk for row in made), strict=True))
        _insert_rows(user_subject, ("subject_ptr", "user"), [(pk, uid) for uid, pk in new.items()])
        subjects = {**now_there, **new}
        for entry in found.values():
            entry[1] = entry[1] or subjects[entry[0]]
    return {SUBJECT_NAMESPACE + name: subject for name, (_, subject) in found.items()}


def _scopes_for(courses: set[str], found: dict[str, int]) -> dict[str, int]:
    """Casbin scope -> the id of its ``CourseScope``, created where missing (linked to its
    course overview when one exists, as openedx-authz does)."""
    missing = sorted(courses - set(found))
    if missing:
        course_scope = _model("CourseScope")
        scope_model = _model("Scope")
        exists = _existing_overviews(missing)
        made = scope_model.objects.bulk_create([scope_model(external_key=k) for k in missing])
        new = dict(zip(missing, (row.pk for row in made), strict=True))
        linked = [(new[k], k) for k in missing if k in exists]
        _insert_rows(course_scope, ("scope_ptr", "course_overview"), linked)
        _insert_rows(course_scope, ("scope_ptr",), [(new[k],) for k in missing if k not in exists])
        found = {**found, **new}
    return {SCOPE_NAMESPACE + key: pk for key, pk in found.items()}


def _existing_overviews(keys: list[str]) -> set[str]:
    """The course keys of ``keys`` that have a course overview (one query). As SQL with the
    keys as parameters: through the ORM, a ``CourseKeyField`` parses every key it is given
    (opaque-keys): about a sixth of the side-row work of a batch of new courses."""
    overview = _model("CourseScope")._meta.get_field("course_overview").target_field
    connection = _connection(overview.model)
    column = connection.ops.quote_name(overview.column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {column} FROM {connection.ops.quote_name(overview.model._meta.db_table)} "  # noqa: S608 (identifiers only)
            f"WHERE {column} {_any_of_sql(connection, overview, keys)}",
            _in_params(connection, keys),
        )
        return {str(key) for (key,) in cursor.fetchall()}


def _insert_extensions(lacking, subjects: dict[str, int], scopes: dict[str, int]) -> None:
    extended = _model("ExtendedCasbinRule")
    now = timezone.now()
    constants = {"created_at": now, "updated_at": now}
    with_scope, without_scope = [], []
    for pk, v0, v1, v2 in lacking:
        key = rule_key(v0, v1, v2)
        scope = scopes.get(v2)
        if scope is None:
            without_scope.append((key, pk, subjects.get(v0)))
        else:
            with_scope.append((key, pk, subjects.get(v0), scope))
    _insert_rows(extended, ("casbin_rule_key", "casbin_rule", "subject"), without_scope, constants)
    _insert_rows(
        extended, ("casbin_rule_key", "casbin_rule", "subject", "scope"), with_scope, constants
    )


def _audit(operation: str, rules: list[CasbinKey]) -> None:
    constants = {"operation": operation, "actor_id": _actor.get(), "timestamp": timezone.now()}
    # On MariaDB/MySQL as one JSON document (stores._json_insert_sql): the audit table has
    # no unique key and no foreign key, so the insert never waits on a row.
    audit = _model("RoleAssignmentAudit")
    _insert_rows(audit, ("subject", "role", "scope"), rules, constants, as_json=True)


# --- rollback: remove what openedx-authz's unassignment removes -----------------------------


def forget_assignments(rules: list[tuple[int, str, str, str]]) -> None:
    """Before the rules (id, v0, v1, v2) are deleted: delete their extended rows and audit
    their removal (two queries). Scopes and subjects stay, as openedx-authz leaves them."""
    if not installed() or not rules:
        return
    extended = _model("ExtendedCasbinRule")
    connection = _connection(extended)
    field = extended._meta.get_field("casbin_rule")
    pks = [rule[0] for rule in rules]
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {_name_sql(connection, extended._meta.db_table)} "  # noqa: S608 (identifiers only)
            f"WHERE {_name_sql(connection, field.column)} {_in_sql(connection, field, pks)}",
            _in_params(connection, pks),
        )
    _audit("deleted", [(v0, v1, v2) for _, v0, v1, v2 in rules])


# --- after commit ----------------------------------------------------------------------------


def invalidate_enforcers() -> None:
    """Make every openedx-authz enforcer, in this process and in every other, reload at its
    next permission check: a new policy-cache version."""
    if not installed():
        return
    # One UPDATE of the version row openedx-authz's enforcers poll; where the row does not
    # exist yet, openedx-authz's own call creates it.
    control = _model("PolicyCacheControl")
    if not control.objects.filter(pk=1).update(version=uuid4()):
        from openedx_authz.engine.enforcer import AuthzEnforcer

        AuthzEnforcer.invalidate_policy_cache()
