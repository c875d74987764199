"""Effective flag state, computed exactly as Open edX's CourseWaffleFlag does.

For course C of org O: the newest course override row for (flag, C) if it is enabled; else the
newest org override row for (flag, O) if enabled; else the global waffle ``Flag`` with
``everyone=True``. "Newest" is the latest ``change_date``, ties broken by the highest id. A
newest row with ``enabled=False`` means "unset" and falls through.

Reads go to the database every time (never waffle's cache): the receiver decides a move from
the committed state it sees while holding the scope lock, and a cached value could be stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .conf import course_override_model, get_setting, org_override_model
from .models import OverrideChoice
from .roles import course_key_prefix, normalize_course_key, org_of, validate_org

COURSE_OVERRIDE = "course override"
ORG_OVERRIDE = "org override"
GLOBAL_FLAG = "global flag"


@dataclass(frozen=True)
class EffectiveFlag:
    """Whether Casbin is authoritative for a course, and which rule decided it."""

    enabled: bool
    source: str


def flag_name() -> str:
    return get_setting("FLAG_NAME")


def _state_of(row: tuple[bool, str] | None) -> bool | None:
    if row is None or not row[0]:
        return None
    return row[1] == OverrideChoice.ON


def _newest(queryset, key_field: str, key: str):
    """(enabled, override_choice) of the newest row whose key equals ``key`` exactly.

    Keys and the flag name are compared exactly, as the moves compare them: MariaDB's _ci
    collations would otherwise let an override for ``orga`` apply to ``OrgA``, or one of
    ``AUTHZ.enable_course_authoring`` to the watched flag (docs/decisions/0006)."""
    rows = queryset.order_by("-change_date", "-id").values_list(
        "waffle_flag", key_field, "enabled", "override_choice"
    )
    name = flag_name()
    return next(
        ((enabled, choice) for flag, k, enabled, choice in rows if flag == name and str(k) == key),
        None,
    )


def global_state() -> bool:
    """The global flag: on only when the waffle ``Flag`` exists with ``everyone=True``."""
    from waffle import get_waffle_flag_model

    name = flag_name()
    rows = get_waffle_flag_model().objects.filter(name=name).values_list("name", "everyone")
    return any(flag == name and everyone is True for flag, everyone in rows)


def course_override_state(course_key: Any) -> bool | None:
    """The course's own override: True/False when forced on/off, None when unset."""
    key = normalize_course_key(course_key)
    rows = course_override_model().objects.filter(waffle_flag=flag_name(), course_id=key)
    return _state_of(_newest(rows, "course_id", key))


def org_override_state(org: str) -> bool | None:
    """The org's override: True/False when forced on/off, None when unset."""
    org = validate_org(org)
    rows = org_override_model().objects.filter(waffle_flag=flag_name(), org=org)
    return _state_of(_newest(rows, "org", org))


def org_effective_state(org: str) -> EffectiveFlag:
    """The state of every course of ``org`` without a course override, and of the org's
    org-wide roles."""
    forced = org_override_state(org)
    if forced is not None:
        return EffectiveFlag(forced, ORG_OVERRIDE)
    return EffectiveFlag(global_state(), GLOBAL_FLAG)


def effective_state(course_key: Any) -> EffectiveFlag:
    """The effective flag of one course and where it comes from.

    Raises :class:`~authz_migration.roles.InvalidCourseKey` for a malformed key.
    """
    forced = course_override_state(course_key)
    if forced is not None:
        return EffectiveFlag(forced, COURSE_OVERRIDE)
    return org_effective_state(org_of(course_key))


def is_authz_enabled(course_key: Any) -> bool:
    """True when Casbin is the authoritative system for ``course_key``."""
    return effective_state(course_key).enabled


def pinned_courses(org: str) -> dict[str, bool]:
    """Courses of ``org`` whose newest course override is enabled, with the state it forces.

    These courses keep their state whatever the org does. One query for the whole org.
    """
    prefix = course_key_prefix(validate_org(org))
    forced = _forced_keys(course_override_model(), "course_id", course_id__startswith=prefix)
    # SQLite's LIKE ignores case: keep only this org's exact prefix.
    return {course: state for course, state in forced.items() if course.startswith(prefix)}


def _forced_keys(model, key_field: str, keys: set[str] | None = None, **filters):
    """key -> forced state, for the keys (all keys matching ``filters`` when None) whose
    newest override row of the flag is enabled. One query over the override history; keys
    are matched exactly, whatever the collation says."""
    name = flag_name()
    rows = (
        model.objects.filter(waffle_flag=name, **filters)
        .order_by(key_field, "-change_date", "-id")
        .values_list("waffle_flag", key_field, "enabled", "override_choice")
    )
    states: dict[str, bool] = {}
    seen: set[str] = set()
    for flag, key, enabled, choice in _fetch(rows, narrowed=bool(filters)):
        key = str(key)
        if flag != name or key in seen or (keys is not None and key not in keys):
            continue
        seen.add(key)  # newest first within a key: its first row decides
        state = _state_of((enabled, choice))
        if state is not None:
            states[key] = state
    return states


def _fetch(rows, narrowed: bool):
    """The rows of an override history read: a read of the whole history is streamed
    (``iterator()``: a server-side cursor on PostgreSQL, so the history is never in memory at
    once); a read narrowed to some orgs or courses fits in memory and is fetched in one round
    trip, where PostgreSQL's cursor takes three (DECLARE, FETCH, CLOSE): a cutover makes a
    few such reads for every org it releases."""
    return rows.iterator() if not narrowed else rows


def current_org_rows(orgs: set[str] | None = None) -> dict[str, tuple[bool, str, str]]:
    """org -> (enabled, override_choice, note) of the newest org override row of the flag,
    for ``orgs`` (every org with a row when None). One query over the history; orgs are
    matched exactly. The cutover reads the note to tell its own pins from an operator's."""
    name = flag_name()
    filters = {"org__in": orgs} if orgs is not None else {}
    rows = (
        org_override_model()
        .objects.filter(waffle_flag=name, **filters)
        .order_by("org", "-change_date", "-id")
        .values_list("waffle_flag", "org", "enabled", "override_choice", "note")
    )
    current: dict[str, tuple[bool, str, str]] = {}
    for flag, org, enabled, choice, note in _fetch(rows, narrowed=orgs is not None):
        org = str(org)
        if flag != name or org in current or (orgs is not None and org not in orgs):
            continue
        current[org] = (enabled, choice, note or "")  # newest first within an org
    return current


class FlagSnapshot:
    """Effective flags of many courses and orgs, read in three queries (global, org
    overrides, course overrides) instead of three per course."""

    def __init__(self, orgs: set[str], courses: set[str]):
        self.global_enabled = global_state()
        self.orgs = _forced_keys(org_override_model(), "org", orgs, org__in=orgs) if orgs else {}
        self.courses = (
            _forced_keys(course_override_model(), "course_id", courses, course_id__in=courses)
            if courses
            else {}
        )

    def org_state(self, org: str) -> bool:
        return self.orgs.get(org, self.global_enabled)

    def state(self, org: str, course_key: str | None) -> bool:
        """Effective flag of a course, or of an org's org-wide roles when ``course_key`` is
        None."""
        if course_key is not None and course_key in self.courses:
            return self.courses[course_key]
        return self.org_state(org)


@dataclass(frozen=True)
class Transition:
    """The effective flag before and after one override row was saved, and the row that was
    current before it (``(enabled, override_choice)``, or None) to restore on failure."""

    before: EffectiveFlag
    after: EffectiveFlag
    previous_row: tuple[bool, str] | None

    @property
    def changed(self) -> bool:
        return self.before.enabled != self.after.enabled

    def describe(self) -> dict:
        return {
            "before": self.before.enabled,
            "before_source": self.before.source,
            "after": self.after.enabled,
            "after_source": self.after.source,
        }


def _two_newest(
    queryset, key_field: str, key: str, new_pk: Any
) -> tuple[bool | None, bool | None, tuple | None]:
    """(state before, state after, previous row) of one override key, in one query: the two
    newest rows tell both, since only ``new_pk`` differs between the two views. Rows whose
    key or flag name differs in letter case only (MariaDB _ci collations) are skipped."""
    recent = queryset.order_by("-change_date", "-id").values_list(
        "pk", "waffle_flag", key_field, "enabled", "override_choice"
    )[:8]
    name = flag_name()
    rows = [
        (pk, enabled, choice)
        for pk, flag, k, enabled, choice in recent
        if flag == name and str(k) == key
    ][:2]
    after = rows[0] if rows else None
    previous = next((r for r in rows if r[0] != new_pk), None)
    before_row = previous[1:] if previous else None
    after_row = after[1:] if after else None
    return _state_of(before_row), _state_of(after_row), before_row


def course_transition(course_key: str, new_pk: Any) -> Transition:
    """What saving course override row ``new_pk`` changed for its course, through the whole
    chain (course, then org, then global). Reads committed state plus the caller's own."""
    key = normalize_course_key(course_key)
    rows = course_override_model().objects.filter(waffle_flag=flag_name(), course_id=key)
    before, after, previous = _two_newest(rows, "course_id", key, new_pk)
    fallback = None
    if before is None or after is None:
        fallback = org_effective_state(org_of(key))
    return Transition(
        EffectiveFlag(before, COURSE_OVERRIDE) if before is not None else fallback,
        EffectiveFlag(after, COURSE_OVERRIDE) if after is not None else fallback,
        previous,
    )


def org_transition(org: str, new_pk: Any) -> Transition:
    """What saving org override row ``new_pk`` changed for the org's unpinned courses and its
    org-wide roles (org, then global)."""
    org = validate_org(org)
    rows = org_override_model().objects.filter(waffle_flag=flag_name(), org=org)
    before, after, previous = _two_newest(rows, "org", org, new_pk)
    fallback = None
    if before is None or after is None:
        fallback = EffectiveFlag(global_state(), GLOBAL_FLAG)
    return Transition(
        EffectiveFlag(before, ORG_OVERRIDE) if before is not None else fallback,
        EffectiveFlag(after, ORG_OVERRIDE) if after is not None else fallback,
        previous,
    )


def overridden_keys() -> tuple[set[str], set[str]]:
    """Courses and orgs whose newest override is enabled (they do not follow the global
    flag). Two queries over the override history of the flag."""
    courses = _forced_keys(course_override_model(), "course_id")
    return set(courses), set(_forced_keys(org_override_model(), "org"))
