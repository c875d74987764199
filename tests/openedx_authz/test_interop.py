"""This app's moves beside the real openedx-authz, judged through openedx-authz's public API
and its own role -> permission schema: a moved role grants exactly what openedx-authz says the
legacy role means, and is, to openedx-authz, a role it assigned itself."""

from __future__ import annotations

import builtins

import pytest
from casbin_adapter.models import CasbinRule
from django.contrib.auth import get_user_model
from django.core.management import call_command
from openedx_authz.api.users import (
    assign_role_to_user_in_scope,
    get_user_role_assignments,
    is_user_allowed,
)
from openedx_authz.constants import permissions as authz_permissions
from openedx_authz.constants import roles as authz_roles
from openedx_authz.models import ExtendedCasbinRule, RoleAssignmentAudit
from openedx_authz.models.subjects import UserSubject

from authz_migration import api
from authz_migration.conf import DEFAULT_ROLE_MAP, legacy_role_model
from authz_migration.models import MigrationRun

pytestmark = pytest.mark.usefixtures("authz_schema", "fresh_enforcer")

A1, A2, A3 = "course-v1:OrgA+C1+2024", "course-v1:OrgA+C2+2024", "course-v1:OrgA+C3+2024"
AB1 = "course-v1:OrgAB+Y1+2024"

# Every course permission openedx-authz defines, and what each of its course roles grants:
# read from the installed package, never written out here.
COURSE_ACTIONS = sorted(
    value.action.external_key
    for value in vars(authz_permissions).values()
    if isinstance(value, authz_permissions.PermissionData)
    and value.action.external_key.startswith(authz_permissions.COURSES_NAMESPACE + ".")
)
GRANTS = {
    role.external_key: {p.action.external_key for p in role.permissions}
    for role in vars(authz_roles).values()
    if isinstance(role, authz_roles.RoleData)
}
EQUIVALENCES = authz_roles.LEGACY_COURSE_ROLE_EQUIVALENCES


def grant(username, course_id="", role="staff", org=None):
    user, _ = get_user_model().objects.get_or_create(username=username)
    org = org if org is not None else course_id.split(":", 1)[1].split("+", 1)[0]
    return legacy_role_model().objects.create(user=user, org=org, course_id=course_id, role=role)


def allowed(username, course_id) -> set[str]:
    return {action for action in COURSE_ACTIONS if is_user_allowed(username, action, course_id)}


def side_rows(username):
    """openedx-authz's rows about the user's assignments, without ids and timestamps."""
    user = get_user_model().objects.get(username=username)
    subject = f"user^{username}"
    extended = sorted(
        (e.casbin_rule_key.replace(subject, "<s>"), e.scope.external_key if e.scope else None)
        for e in ExtendedCasbinRule.objects.filter(casbin_rule_key__contains=f",{subject},")
    )
    audit = sorted(
        RoleAssignmentAudit.objects.filter(subject=subject).values_list(
            "operation", "role", "scope"
        )
    )
    return extended, audit, UserSubject.objects.filter(user=user).count()


def test_the_default_role_map_is_openedx_authz_s_own():
    assert DEFAULT_ROLE_MAP == EQUIVALENCES


@pytest.mark.parametrize("legacy_role", sorted(EQUIVALENCES))
def test_a_moved_role_grants_exactly_what_the_legacy_role_means(legacy_role):
    grant("alice", A1, legacy_role)
    grant("alice", AB1, legacy_role)
    assert allowed("alice", A1) == set()

    outcome = api.migrate_course(A1, forward=True, force=True)

    assert outcome.moved == 1
    assert allowed("alice", A1) == GRANTS[EQUIVALENCES[legacy_role]]
    assert allowed("alice", A2) == set()
    assert allowed("alice", AB1) == set()  # still in the legacy table
    roles = {
        (a.roles[0].external_key, a.scope.external_key) for a in get_user_role_assignments("alice")
    }
    assert roles == {(EQUIVALENCES[legacy_role], A1)}

    api.migrate_course(A1, forward=False, force=True)

    assert allowed("alice", A1) == set()
    assert get_user_role_assignments("alice") == []
    assert legacy_role_model().objects.filter(course_id=A1, role=legacy_role).count() == 1


def test_org_wide_roles_reach_every_course_of_the_org_but_not_a_pinned_one(
    course_override, org_override
):
    grant("olga", "", "staff", org="OrgA")
    grant("pat", A3, "instructor")
    course_override(A3, "off")  # pinned to the legacy table

    with_settings = pytest.MonkeyPatch()
    with_settings.setattr("django.conf.settings.AUTHZ_MIGRATION_AUTOMATIC", True, raising=False)
    try:
        org_override("OrgA", "on")
    finally:
        with_settings.undo()

    staff = GRANTS["course_staff"]
    assert allowed("olga", A1) == staff
    assert allowed("olga", A2) == staff
    assert allowed("olga", AB1) == set()  # OrgAB is not OrgA
    assert allowed("pat", A3) == set()  # its course stays on the legacy side
    run = MigrationRun.objects.get(scope_type="org", scope_key="OrgA")
    assert A3 in run.metadata["excluded_courses"]["items"]
    assert A3 in run.metadata["org_wide_roles_split"]["items"]


def test_moved_rows_are_the_rows_openedx_authz_writes_itself():
    grant("moved", A1, "instructor")
    api.migrate_course(A1, forward=True, force=True)
    get_user_model().objects.create(username="assigned")
    assert assign_role_to_user_in_scope("assigned", "course_admin", A1)

    def rule(username):
        return list(
            CasbinRule.objects.filter(v0=f"user^{username}").values_list(
                "ptype", "v1", "v2", "v3", "v4", "v5"
            )
        )

    assert rule("moved") == rule("assigned")
    assert side_rows("moved") == side_rows("assigned")
    extended = ExtendedCasbinRule.objects.get(casbin_rule__v0="user^moved")
    assert extended.scope.external_key == A1
    assert UserSubject.objects.get(pk=extended.subject_id).user.username == "moved"


def test_openedx_authz_rolls_back_what_this_app_moved(monkeypatch):
    grant("rita", A1, "staff")
    grant("rita", "", "instructor", org="OrgA")
    api.migrate_org("OrgA", forward=True, force=True)
    assert CasbinRule.objects.filter(v0="user^rita").count() == 2

    monkeypatch.setattr(builtins, "input", lambda prompt="": "yes")
    call_command("authz_rollback_course_authoring", "--course-id-list", A1, "--delete")

    assert legacy_role_model().objects.filter(user__username="rita", course_id=A1).count() == 1
    assert not CasbinRule.objects.filter(v0="user^rita", v2=f"course-v1^{A1}").exists()
    assert allowed("rita", A1) == GRANTS["course_admin"]  # the org-wide role is still there


def test_this_app_rolls_back_what_openedx_authz_assigned():
    get_user_model().objects.create(username="studio")
    assert assign_role_to_user_in_scope("studio", "course_staff", A1)
    assert allowed("studio", A1) == GRANTS["course_staff"]

    outcome = api.migrate_course(A1, forward=False, force=True)

    assert outcome.status == MigrationRun.Status.COMPLETED
    assert outcome.moved == 1
    assert legacy_role_model().objects.filter(user__username="studio", role="staff").count() == 1
    assert not CasbinRule.objects.filter(v0="user^studio").exists()
    assert not ExtendedCasbinRule.objects.filter(casbin_rule_key__contains="user^studio").exists()
    operations = RoleAssignmentAudit.objects.filter(subject="user^studio").values_list(
        "operation", flat=True
    )
    assert sorted(operations) == ["created", "deleted"]
    assert allowed("studio", A1) == set()


def test_a_move_that_rolls_back_writes_no_side_row(monkeypatch):
    grant("vera", A1, "staff")
    from authz_migration import moves

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(moves, "delete_legacy", fail)
    outcome = api.migrate_course(A1, forward=True, force=True)

    assert outcome.status == MigrationRun.Status.FAILED
    assert not CasbinRule.objects.filter(v0="user^vera").exists()
    assert not ExtendedCasbinRule.objects.exists()
    assert not RoleAssignmentAudit.objects.exists()
    assert not UserSubject.objects.exists()


def test_a_rule_whose_openedx_authz_key_would_not_fit_stays_and_is_reported():
    name = "n" * 150  # the longest username Django allows
    course = "course-v1:OrgA+" + "C" * 40 + "+2024"
    grant(name, course, "data_researcher")

    outcome = api.migrate_course(course, forward=True, force=True)

    assert outcome.status == MigrationRun.Status.PARTIAL_SUCCESS
    assert outcome.metadata["could_not_move"]["value_too_long"]["count"] == 1
    assert legacy_role_model().objects.filter(course_id=course).count() == 1
    assert not CasbinRule.objects.filter(v0=f"user^{name}").exists()


def test_a_move_links_the_subject_and_scope_openedx_authz_already_has():
    """A user's existing subject, and a course's scope written before openedx-authz kept
    scope keys (found through its course overview only), are the ones the moved rule gets."""
    from openedx_authz.models.scopes import CourseScope

    from tests.openedx_authz.stubs.models import CourseOverview

    scope = CourseScope.objects.create(course_overview=CourseOverview.objects.create(id=A1))
    CourseScope.objects.filter(pk=scope.pk).update(external_key=None)
    subject = UserSubject.objects.create(user=get_user_model().objects.create(username="kept"))
    grant("kept", A1, "staff")

    api.migrate_course(A1, forward=True, force=True)

    extended = ExtendedCasbinRule.objects.get(casbin_rule__v0="user^kept")
    assert (extended.scope_id, extended.subject_id) == (scope.pk, subject.pk)
    assert CourseScope.objects.count() == 1
    assert UserSubject.objects.count() == 1
    assert allowed("kept", A1) == GRANTS[EQUIVALENCES["staff"]]
