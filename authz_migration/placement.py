"""Where a role row belongs: the one rule that moves, ``verify``, the global-flip check and
the admin all ask (docs/decisions/0012).

Given where each course's effective flag points (``decide(org, course)``: True for Casbin,
False for the legacy table, None when the course is left out of this move), every row of a
store gets one :class:`Verdict`:

- ``moves``: a course-authoring role sitting in the system its flag does not name; a move
  carries it to ``target``;
- ``stays``: already where its flag points;
- ``excluded``: its course is left out of this move (pinned by its own override while its
  org moves);
- ``not_migrated``: not a course-authoring role (a role outside the map, a library key): it
  never moves and is never a problem;
- ``cannot_move``: it should move but cannot (``reason``, one of :data:`REASONS`); no re-run
  fixes it, only a change to the row.

Decisions are pure: classifying changes nothing and counts nothing. A batch asks the flag of
each distinct scope once, and looks up the users of a Casbin batch in one query.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from . import flags, peer
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
from .stores import CasbinRow, LegacyRow, casbin_rule_model, max_length, user_ids

Decide = Callable[[str, "str | None"], "bool | None"]

MOVES = "moves"
STAYS = "stays"
EXCLUDED = "excluded"
NOT_MIGRATED = "not_migrated"
CANNOT_MOVE = "cannot_move"

# Why a row that should move cannot. Stable strings: they are keys of run metadata.
NO_SCOPE = "no_scope"
MALFORMED_COURSE_KEY = "malformed_course_key"
INVALID_ORG = "invalid_org"
USER_MISSING = "user_missing"
UNKNOWN_USER = "unknown_user"
MALFORMED_CASBIN_ROW = "malformed_casbin_row"
VALUE_TOO_LONG = "value_too_long"
TARGET_NOT_CONFIRMED = "target_not_confirmed"
CONFLICTING_ROW = "conflicting_row"

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

# Library roles are not course-authoring roles: openedx-authz scopes libraries apart
# (lib^...). They stay in the legacy table, counted as not migrated.
LIBRARY_KEY_PREFIXES = ("library-v1:", "lib:")


class Verdict(NamedTuple):
    """Where one row belongs. ``course`` is None for an org-wide role; ``target`` is the row
    a move writes (Casbin (v0, v1, v2), or legacy (user_id, org, course_id, role))."""

    kind: str
    reason: str | None = None
    org: str | None = None
    course: str | None = None
    target: tuple | None = None

    @property
    def org_wide(self) -> bool:
        return self.org is not None and self.course is None


_NOT_MIGRATED = Verdict(NOT_MIGRATED)


def _kind(decision: bool | None, in_casbin: bool) -> str:
    """A row in Casbin (``in_casbin``) or the legacy table, whose flag says ``decision``."""
    if decision is None:
        return EXCLUDED
    return STAYS if decision == in_casbin else MOVES


# --- legacy rows -----------------------------------------------------------------------------


def _legacy_scope(course_id: str, org: str) -> tuple[str, str | None, str] | str:
    """(org, course or None, Casbin scope) of a legacy row's scope, or why it has none
    (a reason, or NOT_MIGRATED for a library key)."""
    if course_id.startswith(LIBRARY_KEY_PREFIXES):
        return NOT_MIGRATED
    if course_id:
        found = try_org_of(course_id)
        return (found, course_id, course_scope_key(course_id)) if found else MALFORMED_COURSE_KEY
    if not org:
        return NO_SCOPE
    try:
        org = validate_org(org)
    except InvalidOrg:
        return INVALID_ORG
    return org, None, org_scope_key(org)


def legacy_verdicts(rows: list[LegacyRow], decide: Decide) -> list[Verdict]:
    """The verdict of each legacy row (no query: rows come with their usernames)."""
    casbin_roles = {legacy: role_key(casbin) for legacy, casbin in role_map().items()}
    limit = max_length(casbin_rule_model(), "v2") or 255
    fits = peer.rule_key_check()
    places: dict[tuple[str, str], object] = {}
    verdicts = []
    for row in rows:
        role = casbin_roles.get(row.role)
        if role is None:
            verdicts.append(_NOT_MIGRATED)
            continue
        key = (row.course_id, "" if row.course_id else row.org)
        place = places.get(key)
        if place is None:
            place = places[key] = _legacy_place(*key, decide)
        if place is NOT_MIGRATED:
            verdicts.append(_NOT_MIGRATED)
        elif isinstance(place, str):
            verdicts.append(Verdict(CANNOT_MOVE, place))
        elif place[4] is not None:
            verdicts.append(place[4])  # the place's rows do not move: its shared verdict
        else:
            verdicts.append(_legacy_verdict(row, role, place, limit, fits))
    return verdicts


def _legacy_place(course_id: str, org: str, decide: Decide):
    scope = _legacy_scope(course_id, org)
    if isinstance(scope, str):
        return scope
    org, course, casbin_scope = scope
    kind = _kind(decide(org, course), in_casbin=False)
    return org, course, casbin_scope, kind, _settled(kind, org, course)


def _settled(kind: str, org: str, course: str | None) -> Verdict | None:
    """The verdict of every row of a place whose rows do not move (one shared, immutable
    tuple: a census or a scan of a million rows that stay made a million), None when its
    rows move (each row's own checks then decide)."""
    return None if kind == MOVES else Verdict(kind, None, org, course)


def _legacy_verdict(row: LegacyRow, role: str, place, limit: int, fits) -> Verdict:
    """The verdict of a row of a place whose rows move (``place``: :func:`_legacy_place`)."""
    org, course, scope, _, _ = place
    if not row.username:
        return Verdict(CANNOT_MOVE, USER_MISSING, org, course)
    subject = subject_key(row.username)
    if max(len(subject), len(role), len(scope)) > limit or not fits(subject, role, scope):
        return Verdict(CANNOT_MOVE, VALUE_TOO_LONG, org, course)
    return Verdict(MOVES, None, org, course, (subject, role, scope))


# --- Casbin rows ------------------------------------------------------------------------------


def casbin_verdicts(rows: list[CasbinRow], decide: Decide) -> list[Verdict]:
    """The verdict of each Casbin row; the users of the rows that would move are looked up
    in one query."""
    legacy_roles = {role_key(casbin): legacy for casbin, legacy in reverse_role_map().items()}
    model = legacy_role_model()
    limits = (max_length(model, "org") or 64, max_length(model, "course_id") or 255)
    places: dict[str, object] = {}
    names: dict[str, str | None] = {}
    verdicts: list = []
    for row in rows:
        username = names.get(row.v0, False)
        if username is False:
            username = names[row.v0] = strip_namespace(row.v0, SUBJECT_NAMESPACE)
        if username is None or any(row.extra) or strip_namespace(row.v1, ROLE_NAMESPACE) is None:
            verdicts.append(Verdict(CANNOT_MOVE, MALFORMED_CASBIN_ROW))
            continue
        legacy_role = legacy_roles.get(row.v1)
        if legacy_role is None:
            verdicts.append(_NOT_MIGRATED)
            continue
        place = places.get(row.v2, False)
        if place is False:
            place = places[row.v2] = _casbin_place(row.v2, decide, limits)
        if place is None:
            verdicts.append(Verdict(CANNOT_MOVE, MALFORMED_CASBIN_ROW))
        else:
            org, course, kind, fits, settled = place
            if settled is not None:
                verdicts.append(settled)
            elif not fits:
                verdicts.append(Verdict(CANNOT_MOVE, VALUE_TOO_LONG, org, course))
            else:
                verdicts.append((username, org, course, legacy_role))  # user looked up below
    return _with_users(verdicts)


def _casbin_place(v2: str, decide: Decide, limits: tuple[int, int]):
    scope = parse_scope(v2)
    if scope is None:
        return None
    org, course = scope
    fits = len(org) <= limits[0] and len(course or "") <= limits[1]
    kind = _kind(decide(org, course), in_casbin=True)
    return org, course, kind, fits, _settled(kind, org, course)


def _with_users(pending: list) -> list[Verdict]:
    """Resolve the usernames of the rows that would move (one query)."""
    ids = user_ids(entry[0] for entry in pending if not isinstance(entry, Verdict))
    verdicts = []
    for entry in pending:
        if isinstance(entry, Verdict):
            verdicts.append(entry)
            continue
        username, org, course, role = entry
        user_id = ids.get(username)
        if user_id is None:
            verdicts.append(Verdict(CANNOT_MOVE, UNKNOWN_USER, org, course))
        else:
            verdicts.append(Verdict(MOVES, None, org, course, (user_id, org, course or "", role)))
    return verdicts


# --- describing and deciding ------------------------------------------------------------------


def describe(row, reason: str | None = None) -> dict:
    """What a run (or ``verify``) records of a row that cannot move: ids and usernames, never
    emails or other personal data."""
    if isinstance(row, LegacyRow):
        described = {"id": row.pk, "role": row.role, "scope": row.course_id or row.org}
        if reason == USER_MISSING:
            described["user_id"] = row.user_id
        elif reason == VALUE_TOO_LONG:
            described["user"] = row.username
        return described
    if reason == UNKNOWN_USER:
        return {"id": row.pk, "user": row.v0[len(SUBJECT_NAMESPACE) :], "scope": row.v2}
    if reason == CONFLICTING_ROW:
        return {"id": row.pk, "user": row.v0, "scope": row.v2}
    return {"id": row.pk, "subject": row.v0, "role": row.v1, "scope": row.v2}


def flags_of(rows: list) -> Decide:
    """``decide`` by the effective flags of the courses and orgs of ``rows`` (legacy or
    Casbin rows), read in three queries: a sync or a scan over many orgs reads the flags of
    one batch at a time."""
    return snapshot_of(rows).state


def snapshot_of(rows: list) -> flags.FlagSnapshot:
    """The flags of the courses and orgs that ``rows`` (legacy or Casbin) name."""
    orgs, courses = set(), set()
    if rows and isinstance(rows[0], LegacyRow):
        keys = {(row.course_id, "" if row.course_id else row.org) for row in rows}
        scopes = (_legacy_scope(course_id, org) for course_id, org in keys)
        scopes = (scope[:2] for scope in scopes if isinstance(scope, tuple))
    else:
        scopes = (parse_scope(v2) for v2 in {row.v2 for row in rows})
    for scope in scopes:
        if scope:
            orgs.add(scope[0])
            if scope[1]:
                courses.add(scope[1])
    return flags.FlagSnapshot(orgs, courses)
