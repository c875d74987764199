"""One batch of a move: classify the source rows, write the missing targets, confirm them,
delete the sources. A fixed number of queries per batch, whatever its size.

``decide(org, course_key)`` tells where a row belongs: True (Casbin), False (legacy), or None
(leave it alone: the course is excluded from this move). ``course_key`` is None for an
org-wide role. Rows that belong where they already are stay, uncounted as problems.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .conf import legacy_role_model
from .roles import (
    ROLE_NAMESPACE,
    SUBJECT_NAMESPACE,
    InvalidCourseKey,
    InvalidOrg,
    course_scope_key,
    normalize_course_key,
    org_of,
    org_scope_key,
    parse_scope,
    reverse_role_map,
    role_key,
    role_map,
    strip_namespace,
    subject_key,
    validate_org,
)
from .stores import (
    CasbinRow,
    LegacyRow,
    casbin_rule_model,
    delete_casbin,
    delete_legacy,
    existing_casbin,
    existing_legacy,
    insert_casbin,
    insert_legacy,
    max_length,
    user_ids,
    usernames,
)

Decide = Callable[[str, "str | None"], "bool | None"]

# Why a row that should move could not. Stable strings: they are keys of run metadata.
NO_SCOPE = "no_scope"
MALFORMED_COURSE_KEY = "malformed_course_key"
INVALID_ORG = "invalid_org"
USER_MISSING = "user_missing"
UNKNOWN_USER = "unknown_user"
MALFORMED_CASBIN_ROW = "malformed_casbin_row"
VALUE_TOO_LONG = "value_too_long"
TARGET_NOT_CONFIRMED = "target_not_confirmed"
CONFLICTING_ROW = "conflicting_row"

LIBRARY_KEY_PREFIXES = ("library-v1:", "lib:")

REASONS = {
    NO_SCOPE: "legacy row with neither org nor course",
    MALFORMED_COURSE_KEY: "course key is not course-v1:ORG+COURSE+RUN",
    INVALID_ORG: "org name cannot be part of a course key",
    USER_MISSING: "legacy row whose user no longer exists",
    UNKNOWN_USER: "Casbin subject names no existing user",
    MALFORMED_CASBIN_ROW: "Casbin row not of the form g, user^NAME, role^ROLE, SCOPE",
    VALUE_TOO_LONG: "the target value does not fit its column",
    TARGET_NOT_CONFIRMED: "the target row was not found after writing it",
    CONFLICTING_ROW: "a legacy row equal but for letter case, accents or trailing spaces exists "
    "(the unique key ignores them, as under MariaDB's _ci collations)",
}


@dataclass
class BatchResult:
    """What one batch did. Lists of rows hold small dicts with usernames, never emails."""

    scanned: int = 0
    moved: int = 0
    created: int = 0
    already_present: int = 0
    in_place: int = 0
    excluded: int = 0
    not_migrated: Counter = field(default_factory=Counter)
    problems: dict[str, list[dict]] = field(default_factory=dict)
    excluded_courses: set[str] = field(default_factory=set)
    # Casbin (v0, v1, v2) written and removed: what an in-memory enforcer must learn.
    casbin_added: list[tuple[str, str, str]] = field(default_factory=list)
    casbin_removed: list[tuple[str, str, str]] = field(default_factory=list)

    def problem(self, reason: str, row: dict) -> None:
        self.problems.setdefault(reason, []).append(row)

    @property
    def problem_count(self) -> int:
        return sum(len(rows) for rows in self.problems.values())


def _placement(decide: Decide, org: str, course: str | None, result: BatchResult, target: bool):
    """True when the row must move toward ``target``; counts it otherwise."""
    where = decide(org, course)
    if where is None:
        result.excluded += 1
        if course:
            result.excluded_courses.add(course)
        return False
    if where != target:
        result.in_place += 1
        return False
    return True


def _unplaceable(result: BatchResult, row: LegacyRow, mapping, reason: str, describe: dict):
    """A legacy row whose scope names no course of an org. A role outside the map is not a
    course-authoring role and was never going to move (Open edX's global roles such as
    ``course_creator_group`` have neither org nor course; ``library_user`` has a library key):
    not migrated, not a problem. A mapped role there is a row that cannot move."""
    if row.role in mapping:
        result.problem(reason, describe)
    else:
        result.not_migrated[row.role] += 1


def forward_batch(rows: list[LegacyRow], decide: Decide, *, dry_run: bool = False):
    """Move legacy rows whose course belongs in Casbin to Casbin."""
    result = BatchResult(scanned=len(rows))
    mapping = role_map()
    names = usernames(row.user_id for row in rows)
    limit = max_length(casbin_rule_model(), "v2") or 255
    planned: list[tuple[LegacyRow, tuple[str, str, str]]] = []
    for row in rows:
        describe = {"id": row.pk, "role": row.role, "scope": row.course_id or row.org}
        if row.course_id.startswith(LIBRARY_KEY_PREFIXES):
            # Library roles are not course-authoring roles: openedx-authz scopes libraries
            # apart (lib^...). They stay in the legacy table, counted, not reported.
            result.not_migrated[row.role] += 1
            continue
        if row.course_id:
            try:
                course = normalize_course_key(row.course_id)
                org = org_of(course)
            except InvalidCourseKey:
                _unplaceable(result, row, mapping, MALFORMED_COURSE_KEY, describe)
                continue
            scope = course_scope_key(course)
        elif row.org:
            try:
                org = validate_org(row.org)
            except InvalidOrg:
                _unplaceable(result, row, mapping, INVALID_ORG, describe)
                continue
            course, scope = None, org_scope_key(org)
        else:
            _unplaceable(result, row, mapping, NO_SCOPE, describe)
            continue
        if not _placement(decide, org, course, result, target=True):
            continue
        if row.role not in mapping:
            result.not_migrated[row.role] += 1
            continue
        username = names.get(row.user_id)
        if not username:
            result.problem(USER_MISSING, {**describe, "user_id": row.user_id})
            continue
        target = (subject_key(username), role_key(mapping[row.role]), scope)
        if any(len(value) > limit for value in target):
            result.problem(VALUE_TOO_LONG, {**describe, "user": username})
            continue
        planned.append((row, target))

    present = existing_casbin({target for _, target in planned})
    _, created = _write_then_delete(
        result,
        planned,
        present,
        dry_run=dry_run,
        insert=insert_casbin,
        reread=existing_casbin,
        delete=delete_legacy,
        scope=lambda row, target: target[2],
    )
    result.casbin_added = sorted(created)
    return result


def rollback_batch(rows: list[CasbinRow], decide: Decide, *, dry_run: bool = False):
    """Move Casbin role rows whose course belongs in the legacy table back to it."""
    result = BatchResult(scanned=len(rows))
    legacy_roles = reverse_role_map()
    model = legacy_role_model()
    org_limit = max_length(model, "org") or 64
    course_limit = max_length(model, "course_id") or 255
    parsed = []
    for row in rows:
        describe = {"id": row.pk, "subject": row.v0, "role": row.v1, "scope": row.v2}
        scope = parse_scope(row.v2)
        username = strip_namespace(row.v0, SUBJECT_NAMESPACE)
        casbin_role = strip_namespace(row.v1, ROLE_NAMESPACE)
        if scope is None or username is None or casbin_role is None or any(row.extra):
            result.problem(MALFORMED_CASBIN_ROW, describe)
            continue
        org, course = scope
        if not _placement(decide, org, course, result, target=False):
            continue
        if casbin_role not in legacy_roles:
            result.not_migrated[casbin_role] += 1
            continue
        if len(org) > org_limit or len(course or "") > course_limit:
            result.problem(VALUE_TOO_LONG, describe)
            continue
        parsed.append((row, username, org, course or "", legacy_roles[casbin_role]))

    ids = user_ids(username for _, username, _, _, _ in parsed)
    planned: list[tuple[CasbinRow, tuple[int, str, str, str]]] = []
    for row, username, org, course, role in parsed:
        if username not in ids:
            result.problem(UNKNOWN_USER, {"id": row.pk, "user": username, "scope": row.v2})
            continue
        planned.append((row, (ids[username], org, course, role)))

    wanted = {target for _, target in planned}
    present, clashing = existing_legacy(wanted)
    if clashing:
        for row, target in planned:
            if target in clashing:
                result.problem(CONFLICTING_ROW, {"id": row.pk, "user": row.v0, "scope": row.v2})
        planned = [(row, target) for row, target in planned if target not in clashing]
        wanted -= clashing
    moved, _ = _write_then_delete(
        result,
        planned,
        present,
        dry_run=dry_run,
        insert=insert_legacy,
        reread=lambda keys: existing_legacy(keys)[0],
        delete=delete_casbin,
        scope=lambda row, target: row.v2,
    )
    result.casbin_removed = [(row.v0, row.v1, row.v2) for row, _ in moved]
    return result


def _write_then_delete(result, planned, present, *, dry_run, insert, reread, delete, scope):
    """Write the targets that are missing, confirm them, then delete exactly the source rows
    whose target is confirmed. Returns the (row, target) pairs that moved and the targets
    written. Three statements at most; a dry run only counts."""
    wanted = {target for _, target in planned}
    missing = wanted - present
    result.already_present = sum(1 for _, target in planned if target in present)
    if dry_run:
        result.created = len(missing)
        result.moved = len(planned)
        return [], set()
    inserted = insert(sorted(missing))
    # The statement's row count proves the targets exist; only a shortfall (a trigger that
    # silently skipped a row) costs a read to find out which.
    confirmed = wanted if inserted == len(missing) else reread(wanted)
    moved = [(row, target) for row, target in planned if target in confirmed]
    for row, target in planned:
        if target not in confirmed:
            result.problem(TARGET_NOT_CONFIRMED, {"id": row.pk, "scope": scope(row, target)})
    result.moved = delete([row.pk for row, _ in moved])
    created = missing & confirmed
    result.created = len(created)
    return moved, created
