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


def _newest(queryset, exclude_pk: Any = None) -> tuple[bool, str] | None:
    if exclude_pk is not None:
        queryset = queryset.exclude(pk=exclude_pk)
    return (
        queryset.order_by("-change_date", "-id").values_list("enabled", "override_choice").first()
    )


def global_state() -> bool:
    """The global flag: on only when the waffle ``Flag`` exists with ``everyone=True``."""
    from waffle import get_waffle_flag_model

    everyone = (
        get_waffle_flag_model()
        .objects.filter(name=flag_name())
        .values_list("everyone", flat=True)
        .first()
    )
    return everyone is True


def course_override_state(course_key: Any, *, exclude_pk: Any = None) -> bool | None:
    """The course's own override: True/False when forced on/off, None when unset."""
    key = normalize_course_key(course_key)
    rows = course_override_model().objects.filter(waffle_flag=flag_name(), course_id=key)
    return _state_of(_newest(rows, exclude_pk))


def org_override_state(org: str, *, exclude_pk: Any = None) -> bool | None:
    """The org's override: True/False when forced on/off, None when unset."""
    rows = org_override_model().objects.filter(waffle_flag=flag_name(), org=validate_org(org))
    return _state_of(_newest(rows, exclude_pk))


def org_effective_state(org: str, *, exclude_pk: Any = None) -> EffectiveFlag:
    """The state of every course of ``org`` without a course override, and of the org's
    org-wide roles. ``exclude_pk`` leaves out one org override row ("before this save")."""
    forced = org_override_state(org, exclude_pk=exclude_pk)
    if forced is not None:
        return EffectiveFlag(forced, ORG_OVERRIDE)
    return EffectiveFlag(global_state(), GLOBAL_FLAG)


def effective_state(course_key: Any, *, exclude_course_pk: Any = None) -> EffectiveFlag:
    """The effective flag of one course and where it comes from.

    Raises :class:`~authz_migration.roles.InvalidCourseKey` for a malformed key.
    """
    forced = course_override_state(course_key, exclude_pk=exclude_course_pk)
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
    rows = (
        course_override_model()
        .objects.filter(waffle_flag=flag_name(), course_id__startswith=prefix)
        .order_by("course_id", "-change_date", "-id")
        .values_list("course_id", "enabled", "override_choice")
    )
    pinned: dict[str, bool] = {}
    seen: set[str] = set()
    for course_id, enabled, choice in rows.iterator():
        course_id = str(course_id)
        # SQLite's LIKE ignores case: keep only this org's exact prefix.
        if course_id in seen or not course_id.startswith(prefix):
            continue
        seen.add(course_id)
        state = _state_of((enabled, choice))
        if state is not None:
            pinned[course_id] = state
    return pinned


def _newest_per_key(rows, keys: set[str]) -> dict[str, bool]:
    """From rows (key, enabled, choice) ordered by key then newest first: key -> forced
    state, for keys whose newest row is enabled. Exact-key match (ci collations)."""
    states: dict[str, bool] = {}
    seen: set[str] = set()
    for key, enabled, choice in rows:
        key = str(key)
        if key in seen or key not in keys:
            continue
        seen.add(key)
        state = _state_of((enabled, choice))
        if state is not None:
            states[key] = state
    return states


class FlagSnapshot:
    """Effective flags of many courses and orgs, read in three queries (global, org
    overrides, course overrides) instead of three per course."""

    def __init__(self, orgs: set[str], courses: set[str]):
        flag = flag_name()
        self.global_enabled = global_state()
        org_rows = (
            org_override_model()
            .objects.filter(waffle_flag=flag, org__in=orgs)
            .order_by("org", "-change_date", "-id")
            .values_list("org", "enabled", "override_choice")
            if orgs
            else []
        )
        self.orgs = _newest_per_key(org_rows, orgs)
        course_rows = (
            course_override_model()
            .objects.filter(waffle_flag=flag, course_id__in=courses)
            .order_by("course_id", "-change_date", "-id")
            .values_list("course_id", "enabled", "override_choice")
            if courses
            else []
        )
        self.courses = _newest_per_key(course_rows, courses)

    def org_state(self, org: str) -> bool:
        return self.orgs.get(org, self.global_enabled)

    def state(self, org: str, course_key: str | None) -> bool:
        """Effective flag of a course, or of an org's org-wide roles when ``course_key`` is
        None."""
        if course_key is not None and course_key in self.courses:
            return self.courses[course_key]
        return self.org_state(org)
