"""Automatic moves on override saves (DESIGN.md, "Semantics"), on every supported database.

With ``AUTHZ_MIGRATION_AUTOMATIC`` on, saving a course or org override row of the watched flag
moves exactly the roles whose effective flag changed, in the save's transaction, and records a
``MigrationRun`` (trigger ``signal``). No change, automatic off, another flag, or a malformed
key: nothing moves and nothing is recorded. A global flag change never moves data; it only
tells the operator to run ``authz_migrate sync --all`` when rows now sit in the wrong system.

The atomic guarantee is checked with a real database fault: a trigger that rejects one Casbin
row makes the move fail half way; every change rolls back, the ``failed`` run survives, and a
compensating override row keeps the flag where it was.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from casbin_adapter.models import CasbinRule
from django.db import DatabaseError, connection, transaction
from django.test import override_settings

from authz_migration import flags
from authz_migration.automatic import RESULT_ATTRIBUTE
from authz_migration.conf import legacy_role_model, org_override_model
from authz_migration.models import MigrationRun
from tests.conftest import FLAG
from tests.helpers import CASBIN_TO_LEGACY, ROLE_MAP

ORG = "OrgA"
C1 = "course-v1:OrgA+C1+2024"
C2 = "course-v1:OrgA+C2+2024"
C3 = "course-v1:OrgA+C3+2024"
OTHER_ORG_COURSE = "course-v1:OrgB+X1+2024"
PREFIX_ORG_COURSE = "course-v1:OrgAB+Y1+2024"  # OrgAB must never be taken for OrgA

LEGACY = "legacy"
CASBIN = "casbin"


automatic_on = override_settings(AUTHZ_MIGRATION_AUTOMATIC=True)


# --- reading both systems -------------------------------------------------------------------


def casbin_scope_owner(v2: str) -> str:
    """The course key of a Casbin scope, or the org of an org-wide glob."""
    key = v2.removeprefix("course-v1^")
    if key.endswith("+*"):
        return key.removeprefix("course-v1:")[:-2]
    return key


def role_rows() -> Counter:
    """Multiset of (system, username, legacy role, course key or org) over both systems; Casbin
    rows are mapped back to legacy role names."""
    rows: Counter = Counter()
    legacy = legacy_role_model().objects.values_list("user__username", "role", "course_id", "org")
    for username, role, course_id, org in legacy:
        rows[(LEGACY, username, role, course_id or org)] += 1
    casbin = CasbinRule.objects.filter(ptype="g").values_list("v0", "v1", "v2")
    for v0, v1, v2 in casbin:
        role = CASBIN_TO_LEGACY[v1.removeprefix("role^")]
        rows[(CASBIN, v0.removeprefix("user^"), role, casbin_scope_owner(v2))] += 1
    return rows


def roles_anywhere() -> Counter:
    """Multiset of (username, legacy role, course key or org) regardless of system."""
    found: Counter = Counter()
    for (_, username, role, scope), count in role_rows().items():
        found[(username, role, scope)] += count
    return found


def systems_of(scope: str) -> set[str]:
    """Where the mapped (movable) roles of a course key or org-wide org currently live."""
    return {system for system, _, role, owner in role_rows() if owner == scope and role in ROLE_MAP}


def runs(**filters) -> list[MigrationRun]:
    return list(MigrationRun.objects.filter(**filters).order_by("id"))


def result_of(row):
    return getattr(row, RESULT_ATTRIBUTE)


def casbin_grant(username: str, casbin_role: str, scope: str) -> CasbinRule:
    """A Casbin role row as openedx-authz writes it; ``scope`` is a course key or an org."""
    v2 = (
        f"course-v1^{scope}" if scope.startswith("course-v1:") else f"course-v1^course-v1:{scope}+*"
    )
    return CasbinRule.objects.create(
        ptype="g", v0=f"user^{username}", v1=f"role^{casbin_role}", v2=v2, v3="", v4="", v5=""
    )


@pytest.fixture
def automatic():
    with automatic_on:
        yield


@pytest.fixture
def org_roles(make_user, grant):
    """Roles in three courses of OrgA, an org-wide OrgA role, an unmapped role, and roles in
    OrgB and OrgAB that no OrgA save may touch. All in the legacy table."""
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    grant(alice, C1, "staff")
    grant(bob, C1, "instructor")
    grant(alice, C2, "instructor")
    grant(carol, C2, "beta_testers")
    grant(bob, C3, "data_researcher")
    grant(carol, C3, "finance_admin")  # not a course-authoring role: never moves
    grant(carol, "", "staff", org=ORG)
    grant(alice, OTHER_ORG_COURSE, "staff")
    grant(bob, PREFIX_ORG_COURSE, "staff")
    return {"alice": alice, "bob": bob, "carol": carol}


def assert_untouched_neighbours():
    assert systems_of(OTHER_ORG_COURSE) == {LEGACY}
    assert systems_of(PREFIX_ORG_COURSE) == {LEGACY}
    assert (LEGACY, "carol", "finance_admin", C3) in role_rows()


# --- the examples of DESIGN.md ---------------------------------------------------------------


def test_course_force_on_while_org_forced_on_moves_nothing_and_records_nothing(
    org_roles, automatic, org_override, course_override
):
    org_override(ORG, "on")
    assert systems_of(C1) == {CASBIN}
    before_runs = MigrationRun.objects.count()
    before_rows = role_rows()

    row = course_override(C1, "on")

    assert MigrationRun.objects.count() == before_runs
    assert role_rows() == before_rows
    result = result_of(row)
    assert result.outcome is None
    assert not result.transition.changed
    assert "did not change" in result.reason


def test_removing_a_course_force_off_while_org_forced_on_moves_the_course_forward(
    org_roles, automatic, org_override, course_override
):
    course_override(C1, "off")  # global off, org unset: no change
    assert runs() == []
    org_override(ORG, "on")
    assert systems_of(C1) == {LEGACY}
    assert systems_of(C2) == {CASBIN}

    row = course_override(C1, "off", enabled=False)

    assert systems_of(C1) == {CASBIN}
    run = runs(scope_type="course")[-1]
    assert (run.migration_type, run.scope_key, run.status) == ("forward", C1, "completed")
    assert run.metadata["counts"]["moved"] == 2
    assert run.metadata["flag"] == {
        "before": False,
        "before_source": "course override",
        "after": True,
        "after_source": "org override",
    }
    assert result_of(row).outcome.run == run
    assert flags.is_authz_enabled(C1)
    assert_untouched_neighbours()


def test_org_force_on_leaves_a_course_forced_off_and_lists_it(
    org_roles, automatic, org_override, course_override
):
    course_override(C2, "off")

    org_override(ORG, "on")

    assert systems_of(C1) == {CASBIN}
    assert systems_of(C3) == {CASBIN}
    assert systems_of(ORG) == {CASBIN}  # the org-wide role follows the org
    assert systems_of(C2) == {LEGACY}  # pinned off by its own override
    (run,) = runs()
    assert (run.migration_type, run.scope_type, run.scope_key) == ("forward", "org", ORG)
    assert run.status == "completed"
    assert C2 in run.metadata["excluded_courses"]["items"]
    assert run.metadata["excluded_courses"]["count"] == 1
    # The org-wide role now lives in Casbin, where C2 (legacy) does not look: say so.
    split = run.metadata["org_wide_roles_split"]
    assert split["items"] == [C2]
    assert split["count"] == 1
    assert_untouched_neighbours()


def test_org_force_on_without_org_wide_roles_reports_no_split(
    make_user, grant, automatic, org_override, course_override
):
    alice = make_user("alice")
    grant(alice, C1, "staff")
    grant(alice, C2, "staff")
    course_override(C2, "off")

    org_override(ORG, "on")

    (run,) = runs()
    assert run.metadata["excluded_courses"]["items"] == [C2]
    assert "org_wide_roles_split" not in run.metadata
    assert systems_of(C1) == {CASBIN}
    assert systems_of(C2) == {LEGACY}


def test_org_force_off_after_force_on_rolls_back(org_roles, automatic, org_override):
    initial = role_rows()
    org_override(ORG, "on")
    assert systems_of(C1) == systems_of(C2) == systems_of(ORG) == {CASBIN}

    row = org_override(ORG, "off")

    assert role_rows() == initial
    forward, rollback = runs()
    assert (forward.migration_type, rollback.migration_type) == ("forward", "rollback")
    assert (rollback.scope_type, rollback.scope_key, rollback.status) == ("org", ORG, "completed")
    assert rollback.metadata["counts"]["moved"] == 6
    assert result_of(row).outcome.run == rollback
    assert not flags.is_authz_enabled(C1)


def test_unsetting_an_org_force_on_falls_back_to_the_global_flag(
    org_roles, automatic, org_override
):
    initial = role_rows()
    org_override(ORG, "on")

    org_override(ORG, "on", enabled=False)  # global off: back to legacy

    assert role_rows() == initial
    assert runs()[-1].metadata["flag"] == {
        "before": True,
        "before_source": "org override",
        "after": False,
        "after_source": "global flag",
    }


def test_course_force_on_with_org_unset_and_global_off_moves_forward(
    org_roles, automatic, org_override, course_override, global_flag
):
    global_flag(False)
    org_override(ORG, "off", enabled=False)  # present but unset
    assert runs() == []

    course_override(C1, "on")

    assert systems_of(C1) == {CASBIN}
    assert systems_of(C2) == systems_of(C3) == systems_of(ORG) == {LEGACY}
    (run,) = runs()
    assert (run.migration_type, run.scope_type, run.scope_key) == ("forward", "course", C1)
    assert run.metadata["counts"]["moved"] == 2
    assert run.metadata["flag"] == {
        "before": False,
        "before_source": "global flag",
        "after": True,
        "after_source": "course override",
    }
    assert (CASBIN, "alice", "staff", C1) in role_rows()
    assert (CASBIN, "bob", "instructor", C1) in role_rows()
    assert_untouched_neighbours()


def test_global_on_then_course_force_off_rolls_the_course_back(
    make_user, automatic, course_override, global_flag
):
    make_user("alice")
    make_user("bob")
    casbin_grant("alice", "course_staff", C1)
    casbin_grant("bob", "course_admin", C1)
    casbin_grant("alice", "course_staff", C2)
    global_flag(True)  # every role already in Casbin: nothing left behind, nothing recorded
    assert runs() == []

    course_override(C1, "off")

    assert systems_of(C1) == {LEGACY}
    assert systems_of(C2) == {CASBIN}
    (run,) = runs()
    assert (run.migration_type, run.scope_type, run.scope_key) == ("rollback", "course", C1)
    assert run.metadata["flag"]["before_source"] == "global flag"
    assert run.metadata["flag"]["after_source"] == "course override"
    assert (LEGACY, "bob", "instructor", C1) in role_rows()


def test_course_override_of_an_org_forced_off_course_follows_the_whole_chain(
    org_roles, automatic, org_override, course_override, global_flag
):
    global_flag(False)
    org_override(ORG, "off")  # forced off, global off: no change
    assert runs() == []

    course_override(C3, "on")
    assert systems_of(C3) == {CASBIN}

    course_override(C3, "on", enabled=False)  # back to the org's "off"
    assert systems_of(C3) == {LEGACY}
    forward, rollback = runs()
    assert forward.migration_type == "forward"
    assert rollback.metadata["flag"]["after_source"] == "org override"


# --- what does not move --------------------------------------------------------------------


def test_automatic_off_moves_nothing_and_records_nothing(org_roles, org_override, course_override):
    initial = role_rows()
    with override_settings(AUTHZ_MIGRATION_AUTOMATIC=False):
        org_row = org_override(ORG, "on")
        course_row = course_override(C1, "off")
    assert role_rows() == initial
    assert runs() == []
    assert not hasattr(org_row, RESULT_ATTRIBUTE)
    assert not hasattr(course_row, RESULT_ATTRIBUTE)


def test_automatic_is_off_by_default(org_roles, org_override):
    initial = role_rows()
    org_override(ORG, "on")
    assert role_rows() == initial
    assert runs() == []


def test_another_flag_moves_nothing(org_roles, automatic, org_override, course_override):
    initial = role_rows()
    org_override(ORG, "on", flag="some.other_flag")
    course_override(C1, "on", flag="some.other_flag")
    assert role_rows() == initial
    assert runs() == []


def test_the_flag_name_setting_is_followed(org_roles, automatic, org_override):
    with override_settings(AUTHZ_MIGRATION_FLAG_NAME="custom.flag"):
        org_override(ORG, "on", flag=FLAG)
        assert runs() == []
        org_override(ORG, "on", flag="custom.flag")
    assert systems_of(C1) == {CASBIN}
    assert len(runs()) == 1


@pytest.mark.parametrize(
    ("kind", "choice", "enabled"),
    [
        ("course", "off", True),  # global off already
        ("course", "on", False),  # unset: falls through to off
        ("org", "off", True),
        ("org", "on", False),
    ],
)
def test_no_effective_change_records_no_run(
    org_roles, automatic, org_override, course_override, kind, choice, enabled
):
    initial = role_rows()
    save = course_override if kind == "course" else org_override
    row = save(C1 if kind == "course" else ORG, choice, enabled=enabled)
    assert role_rows() == initial
    assert runs() == []
    assert not result_of(row).transition.changed
    assert result_of(row).outcome is None


def test_saving_the_same_override_twice_moves_once(org_roles, automatic, org_override):
    org_override(ORG, "on")
    after_first = role_rows()
    org_override(ORG, "on", note="same again")
    assert role_rows() == after_first
    assert len(runs()) == 1


def test_malformed_course_key_does_not_crash_the_save(org_roles, automatic, course_override):
    initial = role_rows()
    row = course_override("not a course key", "on")
    assert row.pk is not None  # the override itself is saved
    assert role_rows() == initial
    assert runs() == []
    result = result_of(row)
    assert result.outcome is None
    assert "not a course key" in result.reason


def test_invalid_org_does_not_crash_the_save(org_roles, automatic, org_override):
    initial = role_rows()
    row = org_override("Org A!", "on")
    assert row.pk is not None
    assert role_rows() == initial
    assert runs() == []
    assert result_of(row).outcome is None


# --- the run record ------------------------------------------------------------------------


def test_trigger_and_triggered_by_are_recorded(
    org_roles, make_user, automatic, org_override, course_override
):
    admin = make_user("admin", is_staff=True)
    org_override(ORG, "on", changed_by=admin)
    course_override(C1, "off")  # no author

    by_admin, anonymous = runs()
    assert (by_admin.trigger, by_admin.triggered_by) == ("signal", admin)
    assert (anonymous.trigger, anonymous.triggered_by) == ("signal", None)
    assert by_admin.completed_at is not None
    assert "duration_seconds" in by_admin.metadata


def test_run_metadata_has_the_flag_transition(org_roles, automatic, org_override):
    org_override(ORG, "on")
    (run,) = runs()
    assert run.metadata["flag"] == {
        "before": False,
        "before_source": "global flag",
        "after": True,
        "after_source": "org override",
    }
    assert run.metadata["counts"]["moved"] == 6  # five course roles and the org-wide one
    assert run.metadata["not_migrated_by_role"] == {"finance_admin": 1}


def test_the_move_commits_or_rolls_back_with_the_flag_change(org_roles, automatic, org_override):
    initial = role_rows()
    with pytest.raises(RuntimeError), transaction.atomic():
        org_override(ORG, "on")
        assert systems_of(C1) == {CASBIN}
        raise RuntimeError("the admin request failed after the save")
    assert role_rows() == initial
    assert runs() == []
    assert not flags.is_authz_enabled(C1)


# --- the global flag -----------------------------------------------------------------------


@override_settings(AUTHZ_MIGRATION_GLOBAL_FLIP_PINS=False)
def test_with_flip_pins_off_global_flag_on_with_legacy_rows_left_records_a_skipped_instance_run(
    org_roles, automatic, global_flag, caplog
):
    initial = role_rows()
    global_flag(True)

    assert role_rows() == initial  # never moves data
    (run,) = runs()
    assert (run.scope_type, run.scope_key, run.status) == ("instance", "", "skipped")
    assert (run.migration_type, run.trigger) == ("forward", "global_flag")
    assert "sync --all" in str(run.metadata)
    assert "sync --all" in caplog.text


@override_settings(AUTHZ_MIGRATION_GLOBAL_FLIP_PINS=False)
def test_with_flip_pins_off_global_flag_off_with_casbin_rows_left_records_a_skipped_rollback_run(
    make_user, automatic, global_flag
):
    make_user("alice")
    casbin_grant("alice", "course_staff", C1)
    global_flag(True)  # nothing in legacy: nothing to say
    assert runs() == []

    global_flag(False)

    (run,) = runs()
    assert (run.scope_type, run.migration_type, run.status) == ("instance", "rollback", "skipped")
    assert "sync --all" in str(run.metadata)
    assert systems_of(C1) == {CASBIN}


def test_global_flag_change_with_nothing_left_behind_records_nothing(
    make_user, grant, automatic, global_flag
):
    grant(make_user("alice"), C1, "finance_admin")  # unmapped: never moves, never "behind"
    global_flag(True)
    global_flag(False)
    assert runs() == []


def test_global_flag_change_with_automatic_off_records_nothing(org_roles, global_flag):
    initial = role_rows()
    global_flag(True)
    assert role_rows() == initial
    assert runs() == []


def test_global_flag_save_without_a_change_records_nothing(org_roles, global_flag):
    global_flag(True)  # automatic off
    with automatic_on:
        global_flag(True)
    assert runs() == []


def test_another_global_flag_records_nothing(org_roles, automatic):
    from waffle import get_waffle_flag_model

    get_waffle_flag_model().objects.create(name="some.other_flag", everyone=True)
    assert runs() == []


def test_global_flag_on_does_not_warn_about_rows_their_overrides_keep_in_legacy(
    org_roles, automatic, global_flag, org_override, course_override
):
    org_override(ORG, "off")
    course_override(OTHER_ORG_COURSE, "off")
    course_override(PREFIX_ORG_COURSE, "off")
    assert runs() == []
    assert all(not flags.is_authz_enabled(c) for c in (C1, OTHER_ORG_COURSE, PREFIX_ORG_COURSE))

    global_flag(True)  # every legacy row is pinned to legacy by an override: nothing behind

    assert runs() == []


def test_deleting_the_global_flag_reports_casbin_rows_left_behind(
    make_user, automatic, global_flag
):
    make_user("alice")
    casbin_grant("alice", "course_staff", C1)
    global_flag(True)
    assert runs() == []

    global_flag(None)  # deletes the Flag row: the global state is now off

    # The org is held on by a cutover pin until `authz_migrate cutover --to legacy` runs.
    assert flags.is_authz_enabled(C1)
    assert flags.org_effective_state("OrgA").source == flags.ORG_OVERRIDE
    assert [r.status for r in runs(scope_type="instance")] == ["skipped"]


# --- atomicity under a real database fault -------------------------------------------------

POISON = "user^poison"
TRIGGER = "authz_test_poison"


def _trigger_sql() -> tuple[list[str], list[str]]:
    """(create, drop) statements of a trigger rejecting Casbin rows of user ``poison``."""
    if connection.vendor == "postgresql":
        return (
            [
                f"CREATE FUNCTION {TRIGGER}() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'poison row rejected'; END; $$ LANGUAGE plpgsql",
                f"CREATE TRIGGER {TRIGGER} BEFORE INSERT ON casbin_rule FOR EACH ROW "
                f"WHEN (NEW.v0 = '{POISON}') EXECUTE FUNCTION {TRIGGER}()",
            ],
            [
                f"DROP TRIGGER IF EXISTS {TRIGGER} ON casbin_rule",
                f"DROP FUNCTION IF EXISTS {TRIGGER}()",
            ],
        )
    if connection.vendor == "mysql":
        return (
            [
                f"CREATE TRIGGER {TRIGGER} BEFORE INSERT ON casbin_rule FOR EACH ROW BEGIN "
                f"IF NEW.v0 = '{POISON}' THEN SIGNAL SQLSTATE '45000' "
                "SET MESSAGE_TEXT = 'poison row rejected'; END IF; END"
            ],
            [f"DROP TRIGGER IF EXISTS {TRIGGER}"],
        )
    return (
        [
            f"CREATE TRIGGER {TRIGGER} BEFORE INSERT ON casbin_rule "
            f"WHEN NEW.v0 = '{POISON}' BEGIN SELECT RAISE(ABORT, 'poison row rejected'); END"
        ],
        [f"DROP TRIGGER IF EXISTS {TRIGGER}"],
    )


@contextmanager
def poisoned_casbin_table() -> Iterator[None]:
    create, drop = _trigger_sql()
    with connection.cursor() as cursor:
        for statement in create:
            cursor.execute(statement)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for statement in drop:
                cursor.execute(statement)


@pytest.fixture
def poison_roles(make_user, grant):
    alice, poison = make_user("alice"), make_user("poison")
    admin = make_user("admin", is_staff=True)
    grant(alice, C1, "staff")
    grant(alice, C2, "instructor")
    grant(poison, C2, "staff")  # the row the trigger rejects, after others were written
    grant(alice, "", "staff", org=ORG)
    return admin


def newest_org_override():
    return (
        org_override_model()
        .objects.filter(waffle_flag=FLAG, org=ORG)
        .order_by("-change_date", "-id")
        .first()
    )


def test_the_trigger_really_rejects_the_poison_row(transactional_db):
    with poisoned_casbin_table(), pytest.raises(DatabaseError, match="poison"):
        with transaction.atomic():
            casbin_grant("poison", "course_staff", C1)
    assert not CasbinRule.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("previous", [None, "off"], ids=["no-previous-override", "forced-off"])
def test_failed_org_move_rolls_back_and_restores_the_flag(
    poison_roles, org_override, caplog, previous
):
    admin = poison_roles
    if previous:
        org_override(ORG, previous)  # automatic off: just the flag
    initial = role_rows()

    with poisoned_casbin_table(), automatic_on:
        with transaction.atomic():  # as the admin saves
            row = org_override(ORG, "on", changed_by=admin)

    # Every data change of the move is gone.
    assert role_rows() == initial
    assert not CasbinRule.objects.exists()
    # The failure is on record, with its cause.
    (run,) = runs()
    assert (run.status, run.migration_type, run.scope_type, run.scope_key) == (
        "failed",
        "forward",
        "org",
        ORG,
    )
    assert (run.trigger, run.triggered_by) == ("signal", admin)
    assert "poison" in run.metadata["error"]
    assert "Traceback" in run.metadata["traceback"]
    assert result_of(row).failed
    # The flag change did not take effect: a compensating row, newer than the save, restores
    # the previous state.
    assert not flags.is_authz_enabled(C1)
    assert flags.org_override_state(ORG) is (False if previous else None)
    restore = newest_org_override()
    assert restore.pk != row.pk
    assert restore.pk > row.pk
    assert f"run #{run.pk}" in restore.note
    assert restore.enabled is bool(previous)
    assert org_override_model().objects.filter(org=ORG).count() == (3 if previous else 2)
    assert "failed" in caplog.text

    # With the fault gone, the same save works.
    with automatic_on:
        again = org_override(ORG, "on", changed_by=admin)
    assert result_of(again).outcome.status == "completed"
    assert flags.is_authz_enabled(C1)
    assert systems_of(C1) == systems_of(C2) == systems_of(ORG) == {CASBIN}
    assert roles_anywhere() == Counter({key[1:]: n for key, n in initial.items()})
    assert [r.status for r in runs()] == ["failed", "completed"]


@pytest.mark.django_db(transaction=True)
def test_failed_course_move_rolls_back_and_restores_the_flag(poison_roles, course_override):
    initial = role_rows()

    with poisoned_casbin_table(), automatic_on:
        row = course_override(C2, "on")

    assert role_rows() == initial
    (run,) = runs()
    assert (run.status, run.scope_type, run.scope_key) == ("failed", "course", C2)
    assert {"error", "traceback"} <= set(run.metadata)
    assert result_of(row).failed
    assert not flags.is_authz_enabled(C2)
    assert flags.course_override_state(C2) is None

    with automatic_on:
        course_override(C2, "on")
    assert systems_of(C2) == {CASBIN}
    assert systems_of(C1) == {LEGACY}
