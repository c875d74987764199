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
    InvalidOrg,
    course_scope_key,
    org_scope_key,
    parse_scope,
    reverse_role_map,
    role_key,
    role_map,
    strip_namespace,
    subject_key,
    try_org_of,
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


def _unplaceable(result: BatchResult, row: LegacyRow, mapping, reason: str):
    """A legacy row whose scope names no course of an org. A role outside the map is not a
    course-authoring role and was never going to move (Open edX's global roles such as
    ``course_creator_group`` have neither org nor course; ``library_user`` has a library key):
    not migrated, not a problem. A mapped role there is a row that cannot move."""
    if row.role in mapping:
        result.problem(reason, _describe_legacy(row))
    else:
        result.not_migrated[row.role] += 1


def _describe_legacy(row: LegacyRow, **more) -> dict:
    return {"id": row.pk, "role": row.role, "scope": row.course_id or row.org, **more}


# Where a batch's rows go is worked out once per distinct scope, not once per row: an org's
# rows share a few hundred course keys (five or more roles per course).
LIBRARY = "library"


def _legacy_place(course_id: str, org: str, decide: Decide):
    """A reason string when the scope cannot be placed (or LIBRARY), else (org, course,
    Casbin scope, decide(org, course))."""
    if course_id.startswith(LIBRARY_KEY_PREFIXES):
        # Library roles are not course-authoring roles: openedx-authz scopes libraries
        # apart (lib^...). They stay in the legacy table, counted, not reported.
        return LIBRARY
    if course_id:
        org = try_org_of(course_id)
        if org is None:
            return MALFORMED_COURSE_KEY
        return org, course_id, course_scope_key(course_id), decide(org, course_id)
    if org:
        try:
            org = validate_org(org)
        except InvalidOrg:
            return INVALID_ORG
        return org, None, org_scope_key(org), decide(org, None)
    return NO_SCOPE


def _count_unmoved(result: BatchResult, where, course: str | None) -> None:
    """A row that stays: excluded from this move (``where`` None) or already where it
    belongs."""
    if where is None:
        result.excluded += 1
        if course:
            result.excluded_courses.add(course)
    else:
        result.in_place += 1


def forward_batch(rows: list[LegacyRow], decide: Decide, *, dry_run: bool = False):
    """Move legacy rows whose course belongs in Casbin to Casbin."""
    result = BatchResult(scanned=len(rows))
    mapping = role_map()
    casbin_roles = {legacy: role_key(casbin) for legacy, casbin in mapping.items()}
    limit = max_length(casbin_rule_model(), "v2") or 255
    places: dict[tuple[str, str], object] = {}
    planned: list[tuple[LegacyRow, tuple[str, str, str]]] = []
    for row in rows:
        key = (row.course_id, "" if row.course_id else row.org)
        place = places.get(key)
        if place is None:
            place = places[key] = _legacy_place(row.course_id, row.org, decide)
        if isinstance(place, str):
            if place == LIBRARY:
                result.not_migrated[row.role] += 1
            else:
                _unplaceable(result, row, mapping, place)
            continue
        _, course, scope, where = place
        if not where:  # None: excluded from this move; False: belongs in the legacy table
            _count_unmoved(result, where, course)
            continue
        role = casbin_roles.get(row.role)
        if role is None:
            result.not_migrated[row.role] += 1
            continue
        if not row.username:
            result.problem(USER_MISSING, _describe_legacy(row, user_id=row.user_id))
            continue
        subject = subject_key(row.username)
        if len(subject) > limit or len(role) > limit or len(scope) > limit:
            result.problem(VALUE_TOO_LONG, _describe_legacy(row, user=row.username))
            continue
        planned.append((row, (subject, role, scope)))

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
    result.casbin_added = created
    return result


def _casbin_place(v2: str, decide: Decide, legacy_limits: tuple[int, int]):
    """None when ``v2`` is no scope of this app, else (org, course, decide(org, course),
    whether org and course fit the legacy columns)."""
    scope = parse_scope(v2)
    if scope is None:
        return None
    org, course = scope
    fits = len(org) <= legacy_limits[0] and len(course or "") <= legacy_limits[1]
    return org, course, decide(org, course), fits


def rollback_batch(rows: list[CasbinRow], decide: Decide, *, dry_run: bool = False):
    """Move Casbin role rows whose course belongs in the legacy table back to it."""
    result = BatchResult(scanned=len(rows))
    legacy_roles = {role_key(casbin): legacy for casbin, legacy in reverse_role_map().items()}
    model = legacy_role_model()
    limits = (max_length(model, "org") or 64, max_length(model, "course_id") or 255)
    places: dict[str, object] = {}
    names: dict[str, str | None] = {}
    parsed = []
    for row in rows:
        username = names.get(row.v0, False)
        if username is False:
            username = names[row.v0] = strip_namespace(row.v0, SUBJECT_NAMESPACE)
        place = None
        if username is not None and not any(row.extra) and _is_role(row.v1):
            # Only a well-formed row asks where its scope belongs (an org's decider counts
            # the org-wide rows it is asked about).
            place = places.get(row.v2, False)
            if place is False:
                place = places[row.v2] = _casbin_place(row.v2, decide, limits)
        if place is None:
            result.problem(MALFORMED_CASBIN_ROW, _describe_casbin(row))
            continue
        org, course, where, fits = place
        if where is None or where:
            _count_unmoved(result, where, course)
            continue
        legacy_role = legacy_roles.get(row.v1)
        if legacy_role is None:
            result.not_migrated[row.v1[len(ROLE_NAMESPACE) :]] += 1
            continue
        if not fits:
            result.problem(VALUE_TOO_LONG, _describe_casbin(row))
            continue
        parsed.append((row, username, org, course or "", legacy_role))

    ids = user_ids(username for _, username, _, _, _ in parsed)
    planned: list[tuple[CasbinRow, tuple[int, str, str, str]]] = []
    for row, username, org, course, role in parsed:
        user_id = ids.get(username)
        if user_id is None:
            result.problem(UNKNOWN_USER, {"id": row.pk, "user": username, "scope": row.v2})
            continue
        planned.append((row, (user_id, org, course, role)))

    present, clashing = existing_legacy({target for _, target in planned})
    if clashing:
        for row, target in planned:
            if target in clashing:
                result.problem(CONFLICTING_ROW, {"id": row.pk, "user": row.v0, "scope": row.v2})
        planned = [(row, target) for row, target in planned if target not in clashing]
    moved, _ = _write_then_delete(
        result,
        planned,
        present,
        dry_run=dry_run,
        insert=insert_legacy,
        reread=lambda keys: existing_legacy(keys)[0],
        delete=lambda rows: delete_casbin([row.pk for row in rows]),
        scope=lambda row, target: row.v2,
        in_key_order=True,
    )
    result.casbin_removed = [(row.v0, row.v1, row.v2) for row, _ in moved]
    return result


def _is_role(v1: str) -> bool:
    return strip_namespace(v1, ROLE_NAMESPACE) is not None


def _describe_casbin(row: CasbinRow) -> dict:
    return {"id": row.pk, "subject": row.v0, "role": row.v1, "scope": row.v2}


def _write_then_delete(
    result, planned, present, *, dry_run, insert, reread, delete, scope, in_key_order=False
):
    """Write the targets that are missing, confirm them, then delete exactly the source rows
    whose target is confirmed. Returns the (row, target) pairs that moved and the targets
    written, in the order written. Three statements at most; a dry run only counts.

    Targets are written in source order, or sorted with ``in_key_order``: concurrent inserts
    into a unique index (the legacy table's) then take its locks in the same order."""
    # A dict keeps source order (deterministic ids) where a set would not.
    wanted = dict.fromkeys(target for _, target in planned)
    missing = [target for target in wanted if target not in present]
    if present:
        result.already_present = sum(1 for _, target in planned if target in present)
    if dry_run:
        result.created = len(missing)
        result.moved = len(planned)
        return [], []
    if in_key_order:
        missing.sort()
    inserted = insert(missing)
    # The statement's row count proves the targets exist; only a shortfall (a trigger that
    # silently skipped a row) costs a read to find out which.
    complete = inserted == len(missing)
    moved, created = planned, missing
    if not complete:
        confirmed = reread(set(wanted))
        moved = [(row, target) for row, target in planned if target in confirmed]
        created = [target for target in missing if target in confirmed]
        for row, target in planned:
            if target not in confirmed:
                result.problem(TARGET_NOT_CONFIRMED, {"id": row.pk, "scope": scope(row, target)})
    result.moved = delete([row for row, _ in moved])
    result.created = len(created)
    return moved, created
