"""The move engine end to end, on every database: round trips, the exact Casbin row format,
idempotency, rows that cannot move, excluded courses, org prefixes, capped metadata, dry runs,
flag contradictions, failures that roll back, small batches and instance-wide syncs.

Everything goes through the public API (or ``orchestrator.execute`` for moves the API does not
expose) against the real tables; nothing in the database is mocked.
"""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import override_settings

from authz_migration import api, moves, orchestrator
from authz_migration.conf import legacy_role_model
from authz_migration.models import MigrationRun
from authz_migration.orchestrator import FORWARD, ORG, ROLLBACK, Move, Options
from tests.helpers import (
    ROLE_MAP,
    ROLES,
    add_casbin,
    add_casbin_role,
    casbin_count,
    casbin_rows,
    g,
    legacy_count,
    legacy_rows_by_user_id,
    org_glob,
)

ORG_A = "OrgA"
C1 = "course-v1:OrgA+C1+2024"
C2 = "course-v1:OrgA+C2+2024"
C3 = "course-v1:OrgA+C3+2024"
B1 = "course-v1:OrgB+B1+2024"

COMPLETED = MigrationRun.Status.COMPLETED
PARTIAL = MigrationRun.Status.PARTIAL_SUCCESS
FAILED = MigrationRun.Status.FAILED


def run_statuses():
    return list(MigrationRun.objects.order_by("id").values_list("status", flat=True))


# --- round trips ----------------------------------------------------------------------------


def test_course_round_trip_restores_the_legacy_rows(people, grant, course_override):
    alice, bob = people["alice"], people["bob"]
    grant(alice, C1, "instructor")
    grant(bob, C1, "staff")
    grant(alice, C1, "beta_testers")
    grant(bob, C2, "staff")  # another course of the org: not part of this move
    grant(alice, "", "staff", org=ORG_A)  # org-wide: not part of a course move
    before = legacy_rows_by_user_id()

    course_override(C1, "on")
    [forward] = api.sync_course(C1)

    assert (forward.status, forward.moved) == (COMPLETED, 3)
    assert casbin_rows() == {
        g("alice", "course_admin", C1),
        g("bob", "course_staff", C1),
        g("alice", "course_beta_tester", C1),
    }
    assert legacy_rows_by_user_id() == {
        (bob.pk, ORG_A, C2, "staff"),
        (alice.pk, ORG_A, "", "staff"),
    }
    run = MigrationRun.objects.get(pk=forward.run.pk)
    assert (run.migration_type, run.scope_type, run.scope_key, run.status, run.trigger) == (
        FORWARD,
        "course",
        C1,
        COMPLETED,
        "api",
    )
    assert run.metadata["counts"]["moved"] == 3

    course_override(C1, "off")
    [back] = api.sync_course(C1)

    assert (back.status, back.moved, back.move.direction) == (COMPLETED, 3, ROLLBACK)
    assert legacy_rows_by_user_id() == before
    assert casbin_count() == 0


def test_round_trip_of_values_holding_the_array_separator(make_user, grant, course_override):
    """PostgreSQL receives lists as one string split on U+001F; a username holding that
    character (nothing validates usernames at the database) must still move intact, as must
    an org-wide row next to it (a blank course key, the empty-string edge of the split)."""
    odd, plain = make_user("odd\x1fname"), make_user("plain")
    grant(odd, C1, "staff")
    grant(plain, C1, "instructor")
    grant(plain, "", "staff", org=ORG_A)
    before = legacy_rows_by_user_id()

    course_override(C1, "on")
    [forward] = api.sync_course(C1)
    assert (forward.status, forward.moved) == (COMPLETED, 2)
    assert casbin_rows() == {g("odd\x1fname", "course_staff", C1), g("plain", "course_admin", C1)}

    course_override(C1, "off")
    [back] = api.sync_course(C1)
    assert (back.status, back.moved) == (COMPLETED, 2)
    assert legacy_rows_by_user_id() == before


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_org_wide_rows_alone_round_trip(rows, make_user, grant, org_override):
    """Batches whose every course key is blank (org-wide roles only)."""
    users = [make_user(f"u{i}") for i in range(rows)]
    for user in users:
        grant(user, "", "staff", org=ORG_A)
    before = legacy_rows_by_user_id()

    org_override(ORG_A, "on")
    [forward] = api.sync_org(ORG_A)
    assert (forward.status, forward.moved) == (COMPLETED, rows)
    org_override(ORG_A, "off")
    [back] = api.sync_org(ORG_A)
    assert (back.status, back.moved) == (COMPLETED, rows)
    assert legacy_rows_by_user_id() == before


def test_org_round_trip_with_every_role_and_org_wide_rows(people, grant, org_override):
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    grant(alice, C1, "instructor")
    grant(alice, C1, "staff")
    grant(bob, C1, "limited_staff")
    grant(bob, C2, "data_researcher")
    grant(carol, C2, "beta_testers")
    grant(carol, C1, "ccx_coach")
    grant(alice, "", "staff", org=ORG_A)  # org-wide
    grant(bob, "", "instructor", org=ORG_A)  # org-wide
    grant(carol, B1, "staff")  # another org
    before = legacy_rows_by_user_id()

    org_override(ORG_A, "on")
    [forward] = api.sync_org(ORG_A)

    assert (forward.status, forward.moved) == (COMPLETED, 8)
    assert forward.counts["created"] == 8
    # Byte-exact rows as openedx-authz reads them; v3..v5 are empty strings.
    assert casbin_rows() == {
        ("g", "user^alice", "role^course_admin", "course-v1^course-v1:OrgA+C1+2024", "", "", ""),
        ("g", "user^alice", "role^course_staff", "course-v1^course-v1:OrgA+C1+2024", "", "", ""),
        (
            "g",
            "user^bob",
            "role^course_limited_staff",
            "course-v1^course-v1:OrgA+C1+2024",
            "",
            "",
            "",
        ),
        (
            "g",
            "user^bob",
            "role^course_data_researcher",
            "course-v1^course-v1:OrgA+C2+2024",
            "",
            "",
            "",
        ),
        (
            "g",
            "user^carol",
            "role^course_beta_tester",
            "course-v1^course-v1:OrgA+C2+2024",
            "",
            "",
            "",
        ),
        ("g", "user^carol", "role^ccx_coach", "course-v1^course-v1:OrgA+C1+2024", "", "", ""),
        ("g", "user^alice", "role^course_staff", "course-v1^course-v1:OrgA+*", "", "", ""),
        ("g", "user^bob", "role^course_admin", "course-v1^course-v1:OrgA+*", "", "", ""),
    }
    assert legacy_rows_by_user_id() == {(carol.pk, "OrgB", B1, "staff")}

    org_override(ORG_A, "off")
    [back] = api.sync_org(ORG_A)

    assert (back.status, back.moved) == (COMPLETED, 8)
    assert legacy_rows_by_user_id() == before
    assert casbin_count() == 0


def test_instance_round_trip_over_several_orgs(people, grant, global_flag):
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    grant(alice, C1, "instructor")
    grant(bob, C2, "staff")
    grant(carol, B1, "limited_staff")
    grant(alice, "", "staff", org=ORG_A)
    grant(bob, "", "beta_testers", org="OrgB")
    grant(carol, "course-v1:OrgC+X+1", "ccx_coach")
    finance = grant(alice, C1, "finance_admin")  # not a course-authoring role: stays
    before = legacy_rows_by_user_id()

    global_flag(True)
    outcomes = list(api.sync_instance())

    assert sum(o.moved for o in outcomes) == 6
    assert {o.status for o in outcomes} == {COMPLETED}
    assert casbin_rows() == {
        g("alice", "course_admin", C1),
        g("bob", "course_staff", C2),
        g("carol", "course_limited_staff", B1),
        g("alice", "course_staff", org_glob(ORG_A)),
        g("bob", "course_beta_tester", org_glob("OrgB")),
        g("carol", "ccx_coach", "course-v1:OrgC+X+1"),
    }
    assert legacy_rows_by_user_id() == {(alice.pk, ORG_A, C1, "finance_admin")}
    assert legacy_role_model().objects.filter(pk=finance.pk).exists()
    assert api.verify_scope(everything=True) == []

    global_flag(False)
    outcomes = list(api.sync_instance())

    assert sum(o.moved for o in outcomes) == 6
    assert legacy_rows_by_user_id() == before
    assert casbin_count() == 0
    assert api.verify_scope(everything=True) == []


# --- idempotency ----------------------------------------------------------------------------


def test_forward_does_not_duplicate_a_casbin_row_already_there(people, grant, org_override):
    alice, bob = people["alice"], people["bob"]
    grant(alice, C1, "staff")
    grant(bob, C1, "instructor")
    add_casbin_role("alice", "course_staff", C1)  # e.g. a run that died after inserting

    org_override(ORG_A, "on")
    [out] = api.sync_org(ORG_A)

    assert out.status == COMPLETED
    assert (out.counts["moved"], out.counts["created"], out.counts["already_present"]) == (2, 1, 1)
    assert casbin_count() == 2
    assert casbin_rows() == {g("alice", "course_staff", C1), g("bob", "course_admin", C1)}
    assert legacy_count() == 0  # the source row is removed all the same


def test_rollback_does_not_duplicate_a_legacy_row_already_there(people, grant, org_override):
    alice, bob = people["alice"], people["bob"]
    grant(alice, C1, "staff")
    add_casbin_role("alice", "course_staff", C1)
    add_casbin_role("bob", "course_admin", C1)
    add_casbin_role("bob", "course_admin", org_glob(ORG_A))

    org_override(ORG_A, "off")
    [out] = api.sync_org(ORG_A)

    assert out.status == COMPLETED
    assert (out.counts["moved"], out.counts["created"], out.counts["already_present"]) == (3, 2, 1)
    assert legacy_count() == 3
    assert legacy_rows_by_user_id() == {
        (alice.pk, ORG_A, C1, "staff"),
        (bob.pk, ORG_A, C1, "instructor"),
        (bob.pk, ORG_A, "", "instructor"),
    }
    assert casbin_count() == 0


def test_a_second_sync_finds_nothing_to_move(people, grant, org_override):
    grant(people["alice"], C1, "staff")
    org_override(ORG_A, "on")
    api.sync_org(ORG_A)
    after_first = (legacy_rows_by_user_id(), casbin_rows())

    [again] = api.sync_org(ORG_A)

    assert (again.status, again.moved, again.counts["created"]) == (COMPLETED, 0, 0)
    assert (legacy_rows_by_user_id(), casbin_rows()) == after_first


def test_a_run_that_found_nothing_still_has_every_count(people, org_override):
    org_override(ORG_A, "on")

    [out] = api.sync_org(ORG_A)

    stored = MigrationRun.objects.get(pk=out.run.pk).metadata["counts"]
    for name in ("scanned", "moved", "created", "already_present", "not_migrated"):
        assert stored[name] == 0


# --- rows that cannot move ------------------------------------------------------------------


def test_legacy_row_without_org_or_course_stays_as_no_scope(people, grant, global_flag):
    alice = people["alice"]
    stray = grant(alice, "", "staff", org="")
    grant(alice, "", "course_creator_group", org="")  # a global role: not migrated, no problem
    grant(alice, C1, "staff")
    global_flag(True)

    forward = list(api.sync_instance())[0]

    assert forward.move.direction == FORWARD
    assert forward.status == PARTIAL
    assert forward.moved == 1
    problems = forward.metadata["could_not_move"]
    assert list(problems) == ["no_scope"]
    assert problems["no_scope"]["count"] == 1
    assert [row["id"] for row in problems["no_scope"]["rows"]] == [stray.pk]
    assert forward.counts["could_not_move"] == 1
    assert forward.metadata["not_migrated_by_role"] == {"course_creator_group": 1}
    assert legacy_rows_by_user_id() == {
        (alice.pk, "", "", "staff"),
        (alice.pk, "", "", "course_creator_group"),
    }
    assert MigrationRun.objects.get(pk=forward.run.pk).status == PARTIAL


@pytest.mark.parametrize(
    "bad_key",
    ["course-v1:OrgA+C1", "course-v1:OrgA+C 1+2024", "course-v1:OrgA+C1+2024+extra"],
)
def test_malformed_course_key_stays_in_the_legacy_table(people, grant, org_override, bad_key):
    alice = people["alice"]
    bad = grant(alice, bad_key, "staff", org=ORG_A)
    grant(alice, C1, "staff")
    org_override(ORG_A, "on")

    [out] = api.sync_org(ORG_A)

    assert (out.status, out.moved) == (PARTIAL, 1)
    problem = out.metadata["could_not_move"]["malformed_course_key"]
    assert problem["count"] == 1
    assert problem["rows"][0]["id"] == bad.pk
    assert problem["rows"][0]["scope"] == bad_key
    assert legacy_rows_by_user_id() == {(alice.pk, ORG_A, bad_key, "staff")}
    assert casbin_rows() == {g("alice", "course_staff", C1)}


def test_casbin_row_of_an_unknown_user_stays_in_casbin(people, org_override):
    ghost = add_casbin_role("ghost", "course_staff", C1)
    add_casbin_role("alice", "course_staff", C1)
    org_override(ORG_A, "off")

    [out] = api.sync_org(ORG_A)

    assert (out.status, out.moved) == (PARTIAL, 1)
    problem = out.metadata["could_not_move"]["unknown_user"]
    assert problem["count"] == 1
    assert problem["rows"] == [{"id": ghost.pk, "user": "ghost", "scope": "course-v1^" + C1}]
    assert casbin_rows() == {g("ghost", "course_staff", C1)}
    assert legacy_rows_by_user_id() == {(people["alice"].pk, ORG_A, C1, "staff")}


MALFORMED_CASBIN = {
    "extra_column_v3": ("user^alice", "role^course_staff", "course-v1^" + C1, "x", "", ""),
    "extra_column_v5": ("user^alice", "role^course_staff", "course-v1^" + C1, "", "", "x"),
    "subject_without_namespace": ("alice", "role^course_staff", "course-v1^" + C1, "", "", ""),
    "empty_subject": ("user^", "role^course_staff", "course-v1^" + C1, "", "", ""),
    "role_without_namespace": ("user^alice", "course_staff", "course-v1^" + C1, "", "", ""),
    "scope_not_a_course_key": ("user^alice", "role^course_staff", "course-v1^course-v1:OrgA+C1")
    + ("", "", ""),
    "scope_with_four_parts": (
        "user^alice",
        "role^course_staff",
        "course-v1^course-v1:OrgA+C1+2024+x",
        "",
        "",
        "",
    ),
}


@pytest.mark.parametrize("columns", MALFORMED_CASBIN.values(), ids=MALFORMED_CASBIN.keys())
def test_malformed_casbin_row_stays_in_casbin(people, org_override, columns):
    bad = add_casbin(*columns)
    add_casbin_role("bob", "course_staff", C1)
    org_override(ORG_A, "off")
    casbin_before = casbin_rows()

    [out] = api.sync_org(ORG_A)

    assert (out.status, out.moved) == (PARTIAL, 1)
    problem = out.metadata["could_not_move"]["malformed_casbin_row"]
    assert problem["count"] == 1
    assert problem["rows"][0]["id"] == bad.pk
    assert casbin_rows() == casbin_before - {g("bob", "course_staff", C1)}
    assert legacy_rows_by_user_id() == {(people["bob"].pk, ORG_A, C1, "staff")}


def test_invalid_org_and_too_long_values_stay_in_the_legacy_table(people, grant, global_flag):
    alice = people["alice"]
    bad_org = grant(alice, "", "staff", org="Org A")  # a space cannot be part of a course key
    # Fits the legacy column (255) but not casbin_rule.v2 once "course-v1^" is in front.
    long_key = "course-v1:OrgL+" + "C" * (255 - len("course-v1:OrgL+") - 2) + "+R"
    assert len(long_key) == 255
    too_long = grant(alice, long_key, "staff")
    grant(alice, C1, "staff")
    global_flag(True)

    forward = list(api.sync_instance())[0]

    assert (forward.status, forward.moved) == (PARTIAL, 1)
    problems = forward.metadata["could_not_move"]
    assert [r["id"] for r in problems["invalid_org"]["rows"]] == [bad_org.pk]
    assert [r["id"] for r in problems["value_too_long"]["rows"]] == [too_long.pk]
    assert legacy_rows_by_user_id() == {
        (alice.pk, "Org A", "", "staff"),
        (alice.pk, "OrgL", long_key, "staff"),
    }
    assert casbin_rows() == {g("alice", "course_staff", C1)}


def test_instance_rollback_leaves_other_casbin_rows_alone(people, global_flag):
    keep = {
        ("p", "role^course_admin", "act^edit", "course-v1^*", "allow", "", ""),
        ("g", "user^alice", "role^library_admin", "lib^lib:OrgA:L1", "", "", ""),
        ("g2", "act^edit", "act^view", "", "", "", ""),
    }
    for row in keep:
        add_casbin(*row[1:], ptype=row[0])
    add_casbin_role("alice", "course_staff", C1)
    global_flag(False)

    outcomes = list(api.sync_instance())

    rollback = [o for o in outcomes if o.move.direction == ROLLBACK]
    assert [(o.status, o.moved, o.counts["scanned"]) for o in rollback] == [(COMPLETED, 1, 1)]
    assert casbin_rows() == keep
    assert legacy_rows_by_user_id() == {(people["alice"].pk, ORG_A, C1, "staff")}


def test_a_move_stopped_after_some_batches_resumes_where_it_stopped(make_user, grant):
    users = [make_user(f"u{i}") for i in range(5)]
    for user in users:
        grant(user, C1, "staff")
    move = Move(FORWARD, ORG, ORG_A, follow_flags=False)

    first = orchestrator.execute(move, Options(trigger="api", batch_size=2, max_batches=2))

    assert (first.finished, first.moved) == (False, 4)
    assert legacy_count() == 1

    rest = orchestrator.execute(move, Options(trigger="api", batch_size=2, after=first.cursor))

    assert (rest.finished, rest.moved) == (True, 1)
    assert legacy_count() == 0
    assert casbin_rows() == {g(u.username, "course_staff", C1) for u in users}
    assert run_statuses() == [COMPLETED, COMPLETED]


def test_rollback_meeting_a_legacy_row_equal_but_for_case(make_user, grant, org_override):
    """MariaDB compares the legacy table's unique key case-insensitively, so a legacy row of
    org ``orga`` collides there with the row a rollback of ``OrgA`` writes. Whatever the
    database, that row is either moved or left in Casbin and reported, never a failed run,
    and the rest of the org moves all the same."""
    alice, bob = make_user("alice"), make_user("bob")
    grant(alice, "", "staff", org="orga")
    clash = add_casbin_role("alice", "course_staff", org_glob(ORG_A))
    add_casbin_role("bob", "course_staff", C1)
    add_casbin_role("bob", "course_admin", C2)
    org_override(ORG_A, "off")

    [out] = api.sync_org(ORG_A)

    moved_bob = {(bob.pk, ORG_A, C1, "staff"), (bob.pk, ORG_A, C2, "instructor")}
    if connection.vendor != "mysql":  # the unique key compares case: no clash there
        assert (out.status, out.moved) == (COMPLETED, 3)
        assert casbin_count() == 0
    else:
        assert (out.status, out.moved) == (PARTIAL, 2)
        [row] = out.metadata["could_not_move"]["conflicting_row"]["rows"]
        assert row["id"] == clash.pk
        assert casbin_rows() == {g("alice", "course_staff", org_glob(ORG_A))}
    assert moved_bob | {(alice.pk, "orga", "", "staff")} <= legacy_rows_by_user_id()


# --- roles outside the role map ---------------------------------------------------------------


def test_legacy_roles_outside_the_map_stay_and_are_counted(people, grant, org_override):
    alice = people["alice"]
    grant(alice, C1, "finance_admin")
    grant(alice, C2, "finance_admin")
    grant(alice, "", "sales_admin", org=ORG_A)
    grant(alice, C1, "staff")
    org_override(ORG_A, "on")

    [out] = api.sync_org(ORG_A)

    assert (out.status, out.moved) == (COMPLETED, 1)
    assert out.counts["not_migrated"] == 3
    assert out.metadata["not_migrated_by_role"] == {"finance_admin": 2, "sales_admin": 1}
    assert out.metadata["could_not_move"] == {}
    assert legacy_rows_by_user_id() == {
        (alice.pk, ORG_A, C1, "finance_admin"),
        (alice.pk, ORG_A, C2, "finance_admin"),
        (alice.pk, ORG_A, "", "sales_admin"),
    }
    assert casbin_rows() == {g("alice", "course_staff", C1)}


def test_casbin_roles_outside_the_map_stay_and_are_counted(people, org_override):
    add_casbin_role("alice", "something_else", C1)
    add_casbin_role("alice", "course_staff", C1)
    org_override(ORG_A, "off")

    [out] = api.sync_org(ORG_A)

    assert (out.status, out.moved) == (COMPLETED, 1)
    assert out.counts["not_migrated"] == 1
    assert out.metadata["not_migrated_by_role"] == {"something_else": 1}
    assert casbin_rows() == {g("alice", "something_else", C1)}
    assert legacy_rows_by_user_id() == {(people["alice"].pk, ORG_A, C1, "staff")}


# --- excluded (pinned) courses --------------------------------------------------------------


def test_org_move_excluding_pinned_courses_leaves_them_alone(
    people, grant, org_override, course_override
):
    alice, bob = people["alice"], people["bob"]
    grant(alice, C1, "staff")  # unpinned: follows the org
    grant(bob, C2, "staff")  # pinned off
    grant(bob, C3, "instructor")  # pinned on: still not this move's business
    grant(alice, "", "instructor", org=ORG_A)  # org-wide: follows the org
    course_override(C2, "off")
    course_override(C3, "on")
    org_override(ORG_A, "on")

    out = orchestrator.execute(
        Move(FORWARD, ORG, ORG_A, exclude_pinned=True), Options(trigger="api")
    )

    assert (out.status, out.moved) == (COMPLETED, 2)
    assert out.counts["excluded"] == 2
    assert out.metadata["excluded_courses"] == {"count": 2, "items": [C2, C3], "more": 0}
    assert legacy_rows_by_user_id() == {
        (bob.pk, ORG_A, C2, "staff"),
        (bob.pk, ORG_A, C3, "instructor"),
    }
    assert casbin_rows() == {
        g("alice", "course_staff", C1),
        g("alice", "course_admin", org_glob(ORG_A)),
    }
    # The org-wide role now lives in Casbin, which C2 (pinned to legacy) does not read: the
    # run must say so rather than let it pass silently.
    split = out.metadata["org_wide_roles_split"]
    assert split["items"] == [C2]
    assert split["count"] == 1
    assert MigrationRun.objects.get(pk=out.run.pk).metadata["excluded_courses"]["items"] == [C2, C3]


def test_sync_org_moves_pinned_courses_to_their_own_side(
    people, grant, org_override, course_override
):
    alice, bob = people["alice"], people["bob"]
    grant(alice, C1, "staff")
    grant(bob, C2, "staff")
    add_casbin_role("carol", "course_admin", C3)
    course_override(C2, "off")  # stays legacy although the org goes to Casbin
    course_override(C3, "off")  # pinned off: must come back from Casbin
    org_override(ORG_A, "on")

    outcomes = api.sync_org(ORG_A)

    assert [o.move.direction for o in outcomes] == [FORWARD, ROLLBACK]
    assert legacy_rows_by_user_id() == {
        (bob.pk, ORG_A, C2, "staff"),
        (people["carol"].pk, ORG_A, C3, "instructor"),
    }
    assert casbin_rows() == {g("alice", "course_staff", C1)}
    assert api.verify_scope(orgs=[ORG_A]) == []


# --- org prefixes ---------------------------------------------------------------------------


def test_moving_an_org_never_touches_orgs_sharing_its_prefix_or_differing_in_case(
    make_user, grant, org_override
):
    users = {name: make_user(name) for name in ("a", "ab", "lower", "ab2", "lower2")}
    grant(users["a"], C1, "staff")
    grant(users["a"], "", "instructor", org=ORG_A)
    grant(users["ab"], "course-v1:OrgAB+C1+2024", "staff")
    grant(users["ab"], "", "instructor", org="OrgAB")
    grant(users["lower"], "course-v1:orga+C1+2024", "staff")
    grant(users["lower"], "", "instructor", org="orga")
    add_casbin_role("ab2", "course_staff", "course-v1:OrgAB+C2+2024")
    add_casbin_role("ab2", "course_admin", org_glob("OrgAB"))
    add_casbin_role("lower2", "course_staff", "course-v1:orga+C2+2024")
    add_casbin_role("lower2", "course_admin", org_glob("orga"))
    others_legacy = {row for row in legacy_rows_by_user_id() if row[0] != users["a"].pk}
    others_casbin = casbin_rows()

    org_override(ORG_A, "on")
    [forward] = api.sync_org(ORG_A)

    assert forward.moved == 2
    assert legacy_rows_by_user_id() == others_legacy
    assert casbin_rows() == others_casbin | {
        g("a", "course_staff", C1),
        g("a", "course_admin", org_glob(ORG_A)),
    }

    org_override(ORG_A, "off")
    [back] = api.sync_org(ORG_A)

    assert back.moved == 2
    assert casbin_rows() == others_casbin
    assert legacy_rows_by_user_id() == others_legacy | {
        (users["a"].pk, ORG_A, C1, "staff"),
        (users["a"].pk, ORG_A, "", "instructor"),
    }


# --- capped metadata ------------------------------------------------------------------------


@override_settings(AUTHZ_MIGRATION_METADATA_LIST_LIMIT=3)
def test_metadata_lists_are_capped_across_batches(people, grant, org_override, course_override):
    alice = people["alice"]
    for i in range(10):
        grant(alice, f"course-v1:OrgA+bad{i}", "staff", org=ORG_A)
    pinned = [f"course-v1:OrgA+P{i}+2024" for i in range(5)]
    for course in pinned:
        grant(alice, course, "staff")
        course_override(course, "off")
    org_override(ORG_A, "on")

    out = orchestrator.execute(
        Move(FORWARD, ORG, ORG_A, exclude_pinned=True), Options(trigger="api", batch_size=4)
    )

    assert out.status == PARTIAL
    assert out.metadata["batches"] == 4
    problem = out.metadata["could_not_move"]["malformed_course_key"]
    assert (problem["count"], len(problem["rows"]), problem["more"]) == (10, 3, 7)
    assert out.counts["could_not_move"] == 10
    assert out.metadata["excluded_courses"] == {"count": 5, "items": pinned[:3], "more": 2}
    stored = MigrationRun.objects.get(pk=out.run.pk).metadata
    assert stored["could_not_move"]["malformed_course_key"]["more"] == 7
    assert len(stored["could_not_move"]["malformed_course_key"]["rows"]) == 3


# --- dry runs -------------------------------------------------------------------------------


def _seed_for_dry_run(people, grant):
    alice, bob = people["alice"], people["bob"]
    grant(alice, C1, "staff")
    grant(bob, C2, "instructor")
    grant(alice, "", "staff", org=ORG_A)
    grant(bob, C1, "finance_admin")
    add_casbin_role("alice", "course_staff", C1)  # already present: not created again


@pytest.mark.parametrize(
    "call",
    [
        lambda: api.sync_org(ORG_A, dry_run=True)[0],
        lambda: api.migrate_org(ORG_A, True, dry_run=True),
        lambda: api.sync_course(C1, dry_run=True)[0],
        lambda: list(api.sync_instance(dry_run=True))[0],
    ],
    ids=["sync_org", "migrate_org", "sync_course", "sync_instance"],
)
def test_dry_run_writes_nothing_and_reports_what_it_would_do(people, grant, org_override, call):
    _seed_for_dry_run(people, grant)
    org_override(ORG_A, "on")
    before = (legacy_rows_by_user_id(), casbin_rows())

    out = call()

    assert (legacy_rows_by_user_id(), casbin_rows()) == before
    assert MigrationRun.objects.count() == 0
    assert out.run is None
    assert out.metadata["dry_run"] is True
    assert out.move.direction == FORWARD
    if out.move.scope_type == "course":
        assert (out.moved, out.counts["created"], out.counts["already_present"]) == (1, 0, 1)
    else:
        assert (out.moved, out.counts["created"], out.counts["already_present"]) == (3, 2, 1)
        assert out.counts["not_migrated"] == 1


def test_dry_run_reports_rows_that_could_not_move(people, grant, org_override):
    grant(people["alice"], "course-v1:OrgA+bad", "staff", org=ORG_A)
    org_override(ORG_A, "on")

    [out] = api.sync_org(ORG_A, dry_run=True)

    assert out.status == PARTIAL
    assert out.metadata["could_not_move"]["malformed_course_key"]["count"] == 1
    assert MigrationRun.objects.count() == 0


# --- flag contradictions --------------------------------------------------------------------


def test_migrate_course_against_the_flag_is_refused_unless_forced(people, grant, global_flag):
    grant(people["alice"], C1, "staff")
    global_flag(False)
    before = legacy_rows_by_user_id()

    with pytest.raises(api.FlagContradiction) as info:
        api.migrate_course(C1, True)

    assert C1 in str(info.value)
    assert [p.scope for p in info.value.placements] == [C1]
    assert legacy_rows_by_user_id() == before
    assert casbin_count() == 0
    assert MigrationRun.objects.count() == 0

    out = api.migrate_course(C1, True, force=True)

    assert (out.status, out.moved) == (COMPLETED, 1)
    assert casbin_rows() == {g("alice", "course_staff", C1)}
    assert legacy_count() == 0


def test_migrate_org_against_the_flag_is_refused_unless_forced(
    people, grant, org_override, course_override
):
    alice = people["alice"]
    add_casbin_role("alice", "course_staff", C1)
    add_casbin_role("alice", "course_admin", C2)
    org_override(ORG_A, "on")
    course_override(C2, "off")  # C2 belongs in legacy: rolling it back is no contradiction

    with pytest.raises(api.FlagContradiction) as info:
        api.migrate_org(ORG_A, False)

    assert [p.scope for p in info.value.placements] == [C1]
    assert casbin_count() == 2
    assert MigrationRun.objects.count() == 0

    out = api.migrate_org(ORG_A, False, force=True)

    assert (out.status, out.moved) == (COMPLETED, 2)
    assert legacy_rows_by_user_id() == {
        (alice.pk, ORG_A, C1, "staff"),
        (alice.pk, ORG_A, C2, "instructor"),
    }
    assert casbin_count() == 0


def test_migrate_in_the_flags_direction_needs_no_force(people, grant, org_override):
    grant(people["alice"], C1, "staff")
    org_override(ORG_A, "on")

    out = api.migrate_org(ORG_A, True)

    assert (out.status, out.moved) == (COMPLETED, 1)
    assert casbin_rows() == {g("alice", "course_staff", C1)}


# --- failures roll back ---------------------------------------------------------------------

POISON_TRIGGER = {
    "sqlite": (
        [
            "CREATE TRIGGER authz_test_poison BEFORE INSERT ON casbin_rule "
            "WHEN NEW.v0 = 'user^poison' BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
        ],
        ["DROP TRIGGER IF EXISTS authz_test_poison"],
    ),
    "postgresql": (
        [
            "CREATE FUNCTION authz_test_poison() RETURNS trigger AS $$ BEGIN "
            "IF NEW.v0 = 'user^poison' THEN RAISE EXCEPTION 'injected fault'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER authz_test_poison BEFORE INSERT ON casbin_rule "
            "FOR EACH ROW EXECUTE FUNCTION authz_test_poison()",
        ],
        [
            "DROP TRIGGER IF EXISTS authz_test_poison ON casbin_rule",
            "DROP FUNCTION IF EXISTS authz_test_poison()",
        ],
    ),
    "mysql": (
        [
            "CREATE TRIGGER authz_test_poison BEFORE INSERT ON casbin_rule FOR EACH ROW BEGIN "
            "IF NEW.v0 = 'user^poison' THEN "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected fault'; END IF; END"
        ],
        ["DROP TRIGGER IF EXISTS authz_test_poison"],
    ),
}


@pytest.fixture
def poison_trigger(transactional_db):
    """A database trigger that refuses to insert the Casbin row of user ``poison``: a real
    database error in the middle of a move."""
    create, drop = POISON_TRIGGER[connection.vendor]
    with connection.cursor() as cursor:
        for sql in create:
            cursor.execute(sql)
    yield
    with connection.cursor() as cursor:
        for sql in drop:
            cursor.execute(sql)


@pytest.mark.django_db(transaction=True)
def test_database_error_mid_move_rolls_back_every_batch(
    poison_trigger, make_user, grant, org_override, python_path
):
    users = [make_user(f"u{i}") for i in range(6)]
    for i, user in enumerate(users):
        grant(user, f"course-v1:OrgA+C{i}+2024", "staff")
    grant(make_user("poison"), C1, "instructor")  # highest pk: the fourth batch of two
    org_override(ORG_A, "on")
    before = (legacy_rows_by_user_id(), casbin_rows())

    [out] = api.sync_org(ORG_A, batch_size=2)

    assert out.status == FAILED
    assert (legacy_rows_by_user_id(), casbin_rows()) == before
    assert casbin_count() == 0
    run = MigrationRun.objects.get()
    assert run.pk == out.run.pk
    assert run.status == FAILED
    assert "injected fault" in run.metadata["error"]
    assert "Traceback" in run.metadata["traceback"]
    assert "insert_casbin" in run.metadata["traceback"]
    assert run.completed_at is not None

    # Nothing is stuck: with the fault gone, the same sync moves everything.
    with connection.cursor() as cursor:
        for sql in POISON_TRIGGER[connection.vendor][1]:
            cursor.execute(sql)
    [retry] = api.sync_org(ORG_A, batch_size=2)
    assert (retry.status, retry.moved) == (COMPLETED, 7)
    assert legacy_count() == 0


def test_error_after_a_delete_rolls_back_the_rollback(
    people, grant, org_override, monkeypatch, python_path
):
    """The error strikes after the second batch has deleted its Casbin rows for real."""
    for i, name in enumerate(("alice", "bob", "carol")):
        add_casbin_role(name, "course_staff", f"course-v1:OrgA+C{i}+2024")
        add_casbin_role(name, "course_admin", f"course-v1:OrgA+C{i}+2024")
    grant(people["alice"], C3, "staff")  # unrelated legacy row
    org_override(ORG_A, "off")
    before = (legacy_rows_by_user_id(), casbin_rows())
    real_delete = moves.delete_casbin
    calls = []

    def delete_then_fail(pks):
        deleted = real_delete(pks)
        calls.append(deleted)
        if len(calls) == 2:
            raise DatabaseError("injected")
        return deleted

    monkeypatch.setattr(moves, "delete_casbin", delete_then_fail)

    [out] = api.sync_org(ORG_A, batch_size=2)

    assert calls == [2, 2]
    assert out.status == FAILED
    assert (legacy_rows_by_user_id(), casbin_rows()) == before
    run = MigrationRun.objects.get()
    assert (run.status, run.migration_type) == (FAILED, ROLLBACK)
    assert run.metadata["error"] == "DatabaseError: injected"
    assert "delete_then_fail" in run.metadata["traceback"]


def test_failed_run_survives_when_called_inside_a_transaction(
    people, grant, monkeypatch, python_path
):
    """A caller's transaction goes on after a failed move: the move's changes are gone, the
    ``failed`` run is there, and the caller's own writes are kept."""
    grant(people["alice"], C1, "staff")
    real_insert = moves.insert_casbin

    def insert_then_fail(keys):
        real_insert(keys)
        raise DatabaseError("injected")

    monkeypatch.setattr(moves, "insert_casbin", insert_then_fail)

    with transaction.atomic():
        grant(people["bob"], C2, "staff")
        out = api.migrate_course(C1, True, force=True)

    assert out.status == FAILED
    assert casbin_count() == 0
    assert legacy_rows_by_user_id() == {
        (people["alice"].pk, ORG_A, C1, "staff"),
        (people["bob"].pk, ORG_A, C2, "staff"),
    }
    assert run_statuses() == [FAILED]


# --- batches --------------------------------------------------------------------------------


def test_batches_smaller_than_the_row_count_move_everything(make_user, grant, org_override):
    users = [make_user(f"u{i}") for i in range(7)]
    for i, user in enumerate(users):
        grant(user, f"course-v1:OrgA+C{i % 3}+2024", "staff")
    before = legacy_rows_by_user_id()
    org_override(ORG_A, "on")

    [forward] = api.sync_org(ORG_A, batch_size=2)

    assert (forward.status, forward.moved, forward.metadata["batches"]) == (COMPLETED, 7, 4)
    assert legacy_count() == 0
    assert casbin_count() == 7

    org_override(ORG_A, "off")
    [back] = api.sync_org(ORG_A, batch_size=2)

    assert (back.status, back.moved, back.metadata["batches"]) == (COMPLETED, 7, 4)
    assert legacy_rows_by_user_id() == before
    assert casbin_count() == 0


def test_instance_sync_in_small_batches_moves_everything(make_user, grant, global_flag):
    users = [make_user(f"u{i}") for i in range(7)]
    for i, user in enumerate(users):
        grant(user, f"course-v1:Org{i % 3}+C+2024", "staff")
    before = legacy_rows_by_user_id()
    global_flag(True)

    outcomes = list(api.sync_instance(batch_size=2))

    forward = [o for o in outcomes if o.move.direction == FORWARD]
    assert [o.moved for o in forward] == [2, 2, 2, 1]
    assert legacy_count() == 0
    assert casbin_count() == 7
    # One recorded run per batch that moved something.
    assert run_statuses() == [COMPLETED] * 4

    global_flag(False)
    outcomes = list(api.sync_instance(batch_size=2))

    assert sum(o.moved for o in outcomes) == 7
    assert legacy_rows_by_user_id() == before


def test_instance_sync_reads_the_rows_each_table_held_when_it_was_planned(
    make_user, grant, global_flag, course_override
):
    """The rollback pass does not re-read what the forward pass just wrote, and a row written
    after planning is left to its writer or to the next sync."""
    alice, bob = make_user("alice"), make_user("bob")
    global_flag(True)
    course_override(B1, "off")
    grant(alice, C1, "staff")
    grant(bob, C2, "instructor")
    add_casbin_role("bob", "course_staff", B1)  # flag off: the rollback pass moves it back
    moves_ = api.plan("sync", everything=True)
    late = grant(alice, C2, "staff")  # written after planning

    outcomes = list(api.run_in_batches(moves_, batch_size=1))

    forward = [o for o in outcomes if o.move.direction == FORWARD]
    back = [o for o in outcomes if o.move.direction == ROLLBACK]
    assert sum(o.counts["scanned"] for o in forward) == 2
    assert sum(o.counts["scanned"] for o in back) == 1  # the B1 row only, not C1 and C2
    assert (sum(o.moved for o in forward), sum(o.moved for o in back)) == (2, 1)
    assert casbin_rows() == {g("alice", "course_staff", C1), g("bob", "course_admin", C2)}
    assert legacy_role_model().objects.filter(pk=late.pk).exists()

    [again] = [o for o in api.sync_instance() if o.move.direction == FORWARD]
    assert again.moved == 1  # the next sync picks the late row up
    assert api.verify_scope(everything=True) == []


# --- instance sync with mixed flags ---------------------------------------------------------


def test_instance_sync_puts_every_course_where_its_flag_points(
    make_user, grant, global_flag, org_override, course_override
):
    users = [make_user(f"u{i}") for i in range(4)]
    global_flag(True)  # OrgC has no override: it follows the global flag
    org_override("OrgA", "on")
    org_override("OrgB", "off")
    course_override("course-v1:OrgA+PINNED+R", "off")
    course_override("course-v1:OrgB+PINNED+R", "on")
    course_override("course-v1:OrgC+PINNED+R", "off", enabled=False)  # unset: falls through
    flag = {  # where each course's roles belong: True = Casbin
        "OrgA": {"X": True, "Y": True, "PINNED": False, None: True},
        "OrgB": {"X": False, "Y": False, "PINNED": True, None: False},
        "OrgC": {"X": True, "Y": True, "PINNED": True, None: True},
    }
    expected_legacy, expected_casbin = set(), set()
    for org, courses in flag.items():
        for name, on in courses.items():
            course = f"course-v1:{org}+{name}+R" if name else ""
            for i, user in enumerate(users):
                role = ROLES[i % 3]
                scope = course or org_glob(org)
                # Start half of the rows in each system, so some are wrong whatever the flag.
                if i % 2:
                    grant(user, course, role, org=org)
                else:
                    add_casbin_role(user.username, ROLE_MAP[role], scope)
                if on:
                    expected_casbin.add(g(user.username, ROLE_MAP[role], scope))
                else:
                    expected_legacy.add((user.pk, org, course, role))
    assert api.verify_scope(everything=True) != []

    outcomes = list(api.sync_instance(batch_size=5))

    assert {o.status for o in outcomes} == {COMPLETED}
    assert api.verify_scope(everything=True) == []
    assert legacy_rows_by_user_id() == expected_legacy
    assert casbin_rows() == expected_casbin


@pytest.mark.parametrize("org", ["Org_A", "OrgA"])
def test_an_org_move_takes_exactly_its_org_not_look_alikes(org, make_user, grant):
    """Orgs equal but for case, or matched by a LIKE wildcard (``_``), are other orgs: each
    database's filter plus the app's exact comparison must leave them alone, both ways. (One
    user per org: MariaDB's _ci unique key holds "OrgA" and "orga" rows of one user equal.)"""
    orgs = ["Org_A", "OrgXA", "OrgA", "orga", "ORG_A"]
    users = {name: make_user(f"user{i}") for i, name in enumerate(orgs)}
    for name in orgs:
        grant(users[name], f"course-v1:{name}+C1+R", "staff")
        grant(users[name], "", "instructor", org=name)
    others = {row for row in legacy_rows_by_user_id() if row[1] != org}
    mine = users[org].username

    forward = api.migrate_org(org, forward=True, force=True)

    assert (forward.status, forward.moved) == (COMPLETED, 2)
    assert casbin_rows() == {
        g(mine, "course_staff", f"course-v1:{org}+C1+R"),
        g(mine, "course_admin", org_glob(org)),
    }
    assert legacy_rows_by_user_id() == others
    for name in orgs:  # the look-alikes' Casbin rows must stay when this org goes back
        if name != org:
            add_casbin_role(users[name].username, "course_staff", f"course-v1:{name}+C2+R")

    back = api.migrate_org(org, forward=False, force=True)

    assert (back.status, back.moved) == (COMPLETED, 2)
    assert casbin_count() == len(orgs) - 1
