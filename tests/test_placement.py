"""One rule for where a row belongs (authz_migration/placement.py): the moves, ``verify``, the
global-flip check and the run reports give the same answer about the same rows. Each test is
a case where copies of the rule used to disagree (issue 15); each runs on every database."""

from __future__ import annotations

import io
import logging

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from authz_migration import api, flags
from authz_migration.conf import legacy_role_model
from authz_migration.models import MigrationRun
from authz_migration.placement import (
    CANNOT_MOVE,
    MALFORMED_COURSE_KEY,
    MOVES,
    NOT_MIGRATED,
    STAYS,
    casbin_verdicts,
    legacy_verdicts,
)
from authz_migration.stores import Selection, read_legacy

pytestmark = pytest.mark.django_db

C1, C2 = "course-v1:OrgA+C1+2024", "course-v1:OrgA+C2+2024"
LIBRARY = "library-v1:OrgA+Lib1"
MALFORMED = "course-v1:OrgA+C3"  # no run
AUTOMATIC = override_settings(AUTHZ_MIGRATION_AUTOMATIC=True)


def command(*args) -> int:
    try:
        call_command("authz_migrate", *args, stdout=io.StringIO())
    except CommandError as error:
        return error.returncode
    return 0


def stored_legacy_rows():
    rows, _, _ = read_legacy(Selection(everything=True), None, 1000)
    return rows


def test_a_library_role_raises_no_global_flip_alarm(people, grant, global_flag, caplog):
    grant(people["alice"], LIBRARY, "staff", org="OrgA")  # left alone: libraries are not courses

    with AUTOMATIC, caplog.at_level(logging.WARNING, logger="authz_migration"):
        global_flag(True)

    assert not MigrationRun.objects.exists()
    assert "authz_migrate sync --all" not in caplog.text
    [verdict] = legacy_verdicts(stored_legacy_rows(), lambda org, course: True)
    assert verdict.kind == NOT_MIGRATED
    assert api.verify(everything=True).drift == []
    assert command("sync", "--all") == 0


def test_a_course_role_left_behind_by_a_global_flip_is_still_reported(
    people, grant, global_flag, course_override
):
    grant(people["alice"], LIBRARY, "staff", org="OrgA")
    grant(people["bob"], C2, "staff")  # follows the global flag
    grant(people["carol"], C1, "staff")
    course_override(C1, "off")  # pinned: not left behind

    with AUTOMATIC:
        global_flag(True)

    [run] = MigrationRun.objects.all()
    assert (run.status, run.scope_type, run.trigger) == ("skipped", "instance", "global_flag")


def test_an_unmapped_org_wide_role_reports_no_split(people, grant, course_override, org_override):
    grant(people["alice"], "", "org_course_creator_group", org="OrgA")  # not authoring
    grant(people["bob"], C2, "staff")
    course_override(C1, "off")

    with AUTOMATIC:
        org_override("OrgA", "on")

    [run] = MigrationRun.objects.filter(scope_type="org")
    assert "org_wide_roles_split" not in run.metadata
    assert run.metadata["not_migrated_by_role"] == {"org_course_creator_group": 1}
    assert run.metadata["counts"]["moved"] == 1


def test_a_mapped_org_wide_role_reports_the_split_and_the_log_names_the_courses(
    people, grant, course_override, org_override, caplog
):
    grant(people["alice"], "", "staff", org="OrgA")
    course_override(C1, "off")

    with AUTOMATIC, caplog.at_level(logging.WARNING, logger="authz_migration"):
        org_override("OrgA", "on")

    [run] = MigrationRun.objects.filter(scope_type="org")
    assert run.metadata["org_wide_roles_split"]["items"] == [C1]
    [line] = [r.getMessage() for r in caplog.records if "org-wide roles of" in r.getMessage()]
    assert C1 in line


def test_verify_and_sync_agree_about_a_row_that_cannot_move(people, grant, org_override):
    grant(people["alice"], C1, "staff")
    grant(people["bob"], MALFORMED, "instructor", org="OrgA")
    org_override("OrgA", "on")  # automatic moves are off: nothing has moved yet

    assert command("sync", "--org", "OrgA") == 6  # moved C1; the malformed row cannot move
    report = api.verify(orgs=["OrgA"])
    assert report.drift == []
    assert dict(report.cannot_move) == {MALFORMED_COURSE_KEY: 1}
    assert report.cannot_move_rows[MALFORMED_COURSE_KEY][0]["scope"] == MALFORMED
    assert command("verify", "--org", "OrgA") == 6  # not "in step", not "re-run"
    assert command("sync", "--org", "OrgA") == 6  # a re-run moves nothing more
    assert legacy_role_model().objects.filter(course_id=MALFORMED).count() == 1


def test_classifying_changes_nothing_and_asks_each_scope_once(people, grant):
    grant(people["alice"], C1, "staff")
    grant(people["bob"], C1, "instructor")
    grant(people["carol"], "", "staff", org="OrgA")
    grant(people["carol"], C2, "finance_admin")
    asked = []

    def decide(org, course):
        asked.append((org, course))
        return course == C1

    verdicts = legacy_verdicts(stored_legacy_rows(), decide)

    assert [v.kind for v in verdicts] == [MOVES, MOVES, STAYS, NOT_MIGRATED]
    assert sorted(asked, key=str) == sorted([("OrgA", C1), ("OrgA", None)], key=str)
    assert verdicts[0].target == ("user^alice", "role^course_staff", f"course-v1^{C1}")
    assert not MigrationRun.objects.exists()


def test_a_casbin_row_of_an_unknown_user_cannot_move_back(db):
    from authz_migration.stores import CasbinRow

    rows = [CasbinRow(1, "user^ghost", "role^course_staff", f"course-v1^{C1}")]
    [verdict] = casbin_verdicts(rows, lambda org, course: False)
    assert (verdict.kind, verdict.reason) == (CANNOT_MOVE, "unknown_user")


def test_the_flag_name_is_compared_exactly(global_flag, course_override, org_override):
    """MariaDB's _ci collations find "AUTHZ.ENABLE_COURSE_AUTHORING" rows for the watched
    flag; they belong to another flag and never decide a course."""
    global_flag(False)
    other = "AUTHZ.ENABLE_COURSE_AUTHORING"
    course_override(C1, "on", flag=other)
    org_override("OrgA", "on", flag=other)

    assert flags.is_authz_enabled(C1) is False
    assert flags.org_effective_state("OrgA").enabled is False
    assert flags.FlagSnapshot({"OrgA"}, {C1}).state("OrgA", C1) is False
    assert flags.pinned_courses("OrgA") == {}
