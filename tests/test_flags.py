"""The effective flag (DESIGN.md, "Semantics"), checked against an expectation written from the
design's words rather than from flags.py.

For course C of org O: the newest course override row for (flag, C) if it is enabled; else the
newest org override row for (flag, O) if enabled; else the global waffle Flag with
``everyone=True``. Newest = latest change_date, ties broken by highest id; a newest row with
``enabled=False`` falls through.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from django.test import override_settings
from django.utils import timezone

from authz_migration import flags
from authz_migration.conf import course_override_model, org_override_model
from authz_migration.roles import InvalidCourseKey, InvalidOrg
from tests.conftest import FLAG

ORG = "OrgA"
COURSE = "course-v1:OrgA+C1+2024"

# --- the expectation, from DESIGN.md --------------------------------------------------------

# An override level is absent, forced on, forced off, or present but not enabled ("unset").
NONE = "none"
ON = "enabled on"
OFF = "enabled off"
DISABLED = "disabled"
LEVELS = [NONE, ON, OFF, DISABLED]

# The global waffle Flag: everyone=True, everyone=False, or no Flag row at all.
GLOBAL_ON = "everyone=True"
GLOBAL_OFF = "everyone=False"
GLOBAL_MISSING = "flag missing"
GLOBALS = [GLOBAL_ON, GLOBAL_OFF, GLOBAL_MISSING]


def expected_flag(course_level: str, org_level: str, global_level: str) -> tuple[bool, str]:
    """(enabled, source) as DESIGN.md states it: the first *enabled* override wins, course
    before org; "on" means Casbin, "off" legacy; otherwise only ``everyone=True`` is on."""
    for level, source in ((course_level, "course override"), (org_level, "org override")):
        if level == ON:
            return True, source
        if level == OFF:
            return False, source
        # NONE and DISABLED both fall through to the next level.
    return global_level == GLOBAL_ON, "global flag"


def test_source_names_match_the_module_constants():
    assert flags.COURSE_OVERRIDE == "course override"
    assert flags.ORG_OVERRIDE == "org override"
    assert flags.GLOBAL_FLAG == "global flag"


# --- helpers --------------------------------------------------------------------------------


def _apply_level(save, key: str, level: str, disabled_choice: str = "on") -> None:
    if level == ON:
        save(key, "on", enabled=True)
    elif level == OFF:
        save(key, "off", enabled=True)
    elif level == DISABLED:
        save(key, disabled_choice, enabled=False)


def _apply_global(global_flag, level: str) -> None:
    global_flag({GLOBAL_ON: True, GLOBAL_OFF: False, GLOBAL_MISSING: None}[level])


def _set_change_date(row, when: dt.datetime) -> None:
    """change_date is auto_now_add: set it explicitly with an UPDATE after the insert."""
    type(row).objects.filter(pk=row.pk).update(change_date=when)


T0 = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.UTC)


def _at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


# --- the whole precedence table: 4 x 4 x 3 = 48 cases ---------------------------------------

TABLE = list(itertools.product(LEVELS, LEVELS, GLOBALS))
assert len(TABLE) == 48


@pytest.mark.parametrize(
    ("course_level", "org_level", "global_level"),
    TABLE,
    ids=[f"course={c}|org={o}|global={g}" for c, o, g in TABLE],
)
def test_precedence_table(
    course_level, org_level, global_level, course_override, org_override, global_flag
):
    _apply_level(course_override, COURSE, course_level)
    _apply_level(org_override, ORG, org_level)
    _apply_global(global_flag, global_level)

    enabled, source = expected_flag(course_level, org_level, global_level)

    state = flags.effective_state(COURSE)
    assert flags.is_authz_enabled(COURSE) is enabled
    assert state.enabled is enabled
    assert state.source == source


@pytest.mark.parametrize("choice", ["on", "off"])
@pytest.mark.parametrize("global_on", [True, False])
def test_disabled_rows_fall_through_whatever_their_choice(
    choice, global_on, course_override, org_override, global_flag
):
    global_flag(global_on)
    course_override(COURSE, choice, enabled=False)
    org_override(ORG, choice, enabled=False)
    state = flags.effective_state(COURSE)
    assert (state.enabled, state.source) == (global_on, flags.GLOBAL_FLAG)
    assert flags.course_override_state(COURSE) is None
    assert flags.org_override_state(ORG) is None


def test_no_rows_at_all_means_legacy(db):
    assert flags.is_authz_enabled(COURSE) is False
    assert flags.effective_state(COURSE) == flags.EffectiveFlag(False, flags.GLOBAL_FLAG)
    assert flags.org_effective_state(ORG) == flags.EffectiveFlag(False, flags.GLOBAL_FLAG)


def test_everyone_none_counts_as_off(db):
    from waffle import get_waffle_flag_model

    get_waffle_flag_model().objects.create(name=FLAG, everyone=None, superusers=True)
    assert flags.global_state() is False
    assert flags.effective_state(COURSE) == flags.EffectiveFlag(False, flags.GLOBAL_FLAG)


@pytest.mark.parametrize(("everyone", "expected"), [(True, True), (False, False), (None, False)])
def test_org_effective_state_without_org_override_is_the_global_flag(
    everyone, expected, global_flag
):
    global_flag(everyone)
    assert flags.org_effective_state(ORG) == flags.EffectiveFlag(expected, flags.GLOBAL_FLAG)


# --- history: newest row wins ---------------------------------------------------------------


def test_course_newest_change_date_wins_over_higher_id(course_override):
    older_id_newer_date = course_override(COURSE, "on")
    newer_id_older_date = course_override(COURSE, "off")
    assert newer_id_older_date.pk > older_id_newer_date.pk
    _set_change_date(older_id_newer_date, _at(10))
    _set_change_date(newer_id_older_date, _at(5))

    assert flags.effective_state(COURSE) == flags.EffectiveFlag(True, flags.COURSE_OVERRIDE)


def test_course_change_date_tie_is_broken_by_highest_id(course_override):
    first = course_override(COURSE, "on")
    second = course_override(COURSE, "off")
    _set_change_date(first, _at(0))
    _set_change_date(second, _at(0))
    assert flags.effective_state(COURSE) == flags.EffectiveFlag(False, flags.COURSE_OVERRIDE)

    # ...and the other way round, so the test does not pass by insertion order alone.
    third = course_override(COURSE, "on")
    _set_change_date(third, _at(0))
    assert flags.effective_state(COURSE) == flags.EffectiveFlag(True, flags.COURSE_OVERRIDE)


def test_org_newest_change_date_wins_and_ties_by_highest_id(org_override):
    first = org_override(ORG, "on")
    second = org_override(ORG, "off")
    _set_change_date(first, _at(10))
    _set_change_date(second, _at(5))
    assert flags.effective_state(COURSE) == flags.EffectiveFlag(True, flags.ORG_OVERRIDE)

    _set_change_date(second, _at(10))
    assert flags.effective_state(COURSE) == flags.EffectiveFlag(False, flags.ORG_OVERRIDE)


def test_newer_disabled_course_row_falls_through_despite_older_enabled_row(
    course_override, org_override, global_flag
):
    global_flag(False)
    org_override(ORG, "on")
    old = course_override(COURSE, "off")
    new = course_override(COURSE, "off", enabled=False)
    _set_change_date(old, _at(0))
    _set_change_date(new, _at(1))

    assert flags.course_override_state(COURSE) is None
    assert flags.effective_state(COURSE) == flags.EffectiveFlag(True, flags.ORG_OVERRIDE)


def test_newer_disabled_org_row_falls_through_despite_older_enabled_row(org_override, global_flag):
    global_flag(True)
    old = org_override(ORG, "off")
    new = org_override(ORG, "off", enabled=False)
    _set_change_date(old, _at(0))
    _set_change_date(new, _at(1))

    assert flags.org_override_state(ORG) is None
    assert flags.effective_state(COURSE) == flags.EffectiveFlag(True, flags.GLOBAL_FLAG)


def test_older_disabled_row_does_not_hide_newer_enabled_row(course_override, global_flag):
    global_flag(False)
    old = course_override(COURSE, "on", enabled=False)
    new = course_override(COURSE, "on")
    _set_change_date(old, _at(0))
    _set_change_date(new, _at(1))
    assert flags.effective_state(COURSE) == flags.EffectiveFlag(True, flags.COURSE_OVERRIDE)


# --- what must not apply --------------------------------------------------------------------


def test_other_flag_names_are_ignored(course_override, org_override, global_flag):
    from waffle import get_waffle_flag_model

    get_waffle_flag_model().objects.create(name="some.other_flag", everyone=True)
    course_override(COURSE, "on", flag="some.other_flag")
    org_override(ORG, "on", flag="some.other_flag")
    assert flags.effective_state(COURSE) == flags.EffectiveFlag(False, flags.GLOBAL_FLAG)

    # An override of another flag newer than ours does not hide ours either.
    global_flag(True)
    course_override(COURSE, "off")
    course_override(COURSE, "on", enabled=False, flag="some.other_flag")
    assert flags.effective_state(COURSE) == flags.EffectiveFlag(False, flags.COURSE_OVERRIDE)
    assert flags.pinned_courses(ORG) == {COURSE: False}


def test_override_of_an_org_sharing_a_prefix_does_not_apply(org_override, course_override):
    org_override("OrgAB", "on")
    course_override("course-v1:OrgAB+C1+2024", "on")
    assert flags.effective_state(COURSE) == flags.EffectiveFlag(False, flags.GLOBAL_FLAG)

    # Nor the other way round: OrgA's override does not reach OrgAB's courses.
    org_override(ORG, "on")
    org_override("OrgAB", "off")
    assert flags.effective_state("course-v1:OrgAB+C2+2024") == flags.EffectiveFlag(
        False, flags.ORG_OVERRIDE
    )
    assert flags.effective_state("course-v1:OrgA+C2+2024") == flags.EffectiveFlag(
        True, flags.ORG_OVERRIDE
    )


def test_org_override_differing_only_in_case_does_not_apply(org_override, global_flag):
    global_flag(False)
    org_override("orga", "on")
    assert flags.org_override_state(ORG) is None
    assert flags.effective_state(COURSE) == flags.EffectiveFlag(False, flags.GLOBAL_FLAG)


def test_course_override_differing_only_in_case_does_not_apply(course_override, global_flag):
    global_flag(False)
    course_override("course-v1:orga+C1+2024", "on")
    assert flags.course_override_state(COURSE) is None
    assert flags.effective_state(COURSE) == flags.EffectiveFlag(False, flags.GLOBAL_FLAG)


# --- pinned courses -------------------------------------------------------------------------


def test_pinned_courses_are_exactly_the_enabled_newest_overrides(course_override):
    def history(course_id, *rows):
        for minute, (choice, enabled) in enumerate(rows):
            row = course_override(course_id, choice, enabled=enabled)
            _set_change_date(row, _at(minute))

    history("course-v1:OrgA+ON+R", ("on", True))
    history("course-v1:OrgA+OFF+R", ("off", True))
    history("course-v1:OrgA+OFF_THEN_ON+R", ("off", True), ("on", True))
    history("course-v1:OrgA+ON_THEN_DISABLED+R", ("on", True), ("on", False))
    history("course-v1:OrgA+DISABLED_THEN_OFF+R", ("on", False), ("off", True))
    history("course-v1:OrgA+DISABLED+R", ("off", False))
    # Not OrgA's: an org sharing the prefix, a case variant, and a shorter org.
    history("course-v1:OrgAB+ON+R", ("on", True))
    history("course-v1:orga+ON+R", ("on", True))
    history("course-v1:Org+ON+R", ("on", True))
    # Another flag.
    course_override("course-v1:OrgA+OTHER_FLAG+R", "on", flag="some.other_flag")

    assert flags.pinned_courses(ORG) == {
        "course-v1:OrgA+ON+R": True,
        "course-v1:OrgA+OFF+R": False,
        "course-v1:OrgA+OFF_THEN_ON+R": True,
        "course-v1:OrgA+DISABLED_THEN_OFF+R": False,
    }
    assert flags.pinned_courses("OrgAB") == {"course-v1:OrgAB+ON+R": True}
    assert flags.pinned_courses("orga") == {"course-v1:orga+ON+R": True}
    assert flags.pinned_courses("Org") == {"course-v1:Org+ON+R": True}
    assert flags.pinned_courses("OrgC") == {}


def test_pinned_courses_ties_by_highest_id(course_override):
    first = course_override(COURSE, "on")
    second = course_override(COURSE, "off")
    _set_change_date(first, _at(0))
    _set_change_date(second, _at(0))
    assert flags.pinned_courses(ORG) == {COURSE: False}
    _set_change_date(first, _at(1))
    assert flags.pinned_courses(ORG) == {COURSE: True}


def test_pinned_courses_agrees_with_effective_state(course_override, org_override, global_flag):
    global_flag(False)
    org_override(ORG, "on")
    course_override("course-v1:OrgA+P1+R", "off")
    course_override("course-v1:OrgA+P2+R", "on")
    course_override("course-v1:OrgA+U1+R", "off", enabled=False)
    pinned = flags.pinned_courses(ORG)
    for course in ("course-v1:OrgA+P1+R", "course-v1:OrgA+P2+R", "course-v1:OrgA+U1+R"):
        state = flags.effective_state(course)
        if course in pinned:
            assert state == flags.EffectiveFlag(pinned[course], flags.COURSE_OVERRIDE)
        else:
            assert state == flags.org_effective_state(ORG)


@pytest.mark.parametrize("org", ["", None, "Or g", "OrgA+", "OrgA/"])
def test_pinned_courses_rejects_invalid_orgs(db, org):
    with pytest.raises(InvalidOrg):
        flags.pinned_courses(org)


# --- malformed course keys ------------------------------------------------------------------

MALFORMED = ["not-a-key", "course-v1:OrgA+C1", "course-v1:Or g+C+R", "", None, "OrgA/C1/R"]


def _malformed_param(value):
    if value is None:
        return pytest.param(value, id="None")
    return pytest.param(value, id=repr(value))


@pytest.mark.parametrize("bad", [_malformed_param(v) for v in MALFORMED])
@pytest.mark.parametrize(
    "call",
    [flags.is_authz_enabled, flags.effective_state, flags.course_override_state],
    ids=["is_authz_enabled", "effective_state", "course_override_state"],
)
def test_malformed_course_keys_raise_with_the_value_in_the_message(db, call, bad):
    with pytest.raises(InvalidCourseKey) as excinfo:
        call(bad)
    assert repr(bad) in str(excinfo.value)


def test_invalid_course_key_is_a_value_error():
    assert issubclass(InvalidCourseKey, ValueError)


def test_course_key_object_is_accepted(course_override):
    class Key:
        def __str__(self):
            return COURSE

    course_override(COURSE, "on")
    assert flags.is_authz_enabled(Key()) is True


# --- settings are read lazily ---------------------------------------------------------------


def test_flag_name_setting_changes_which_flag_is_read(course_override, org_override, global_flag):
    from waffle import get_waffle_flag_model

    other = "my.other_flag"
    global_flag(False)
    get_waffle_flag_model().objects.create(name=other, everyone=True)
    course_override("course-v1:OrgA+C2+R", "off", flag=other)
    org_override(ORG, "off")

    assert flags.flag_name() == FLAG
    assert flags.effective_state(COURSE) == flags.EffectiveFlag(False, flags.ORG_OVERRIDE)

    with override_settings(AUTHZ_MIGRATION_FLAG_NAME=other):
        assert flags.flag_name() == other
        assert flags.effective_state(COURSE) == flags.EffectiveFlag(True, flags.GLOBAL_FLAG)
        assert flags.effective_state("course-v1:OrgA+C2+R") == flags.EffectiveFlag(
            False, flags.COURSE_OVERRIDE
        )
        assert flags.pinned_courses(ORG) == {"course-v1:OrgA+C2+R": False}

    assert flags.flag_name() == FLAG
    assert flags.pinned_courses(ORG) == {}


def test_reads_go_to_the_database_every_time(course_override):
    # No cache between calls: a new row is seen at once.
    assert flags.is_authz_enabled(COURSE) is False
    course_override(COURSE, "on")
    assert flags.is_authz_enabled(COURSE) is True
    course_override(COURSE, "on", enabled=False)
    assert flags.is_authz_enabled(COURSE) is False


def test_history_rows_are_read_through_the_configured_models(course_override, org_override):
    row = course_override(COURSE, "on")
    org_row = org_override(ORG, "off")
    assert isinstance(row, course_override_model())
    assert isinstance(org_row, org_override_model())
    assert timezone.is_aware(row.change_date)
