"""Rows this app writes are read by openedx-authz as the legacy roles meant (runs under either
test settings, on every database).

A Casbin enforcer is built from openedx-authz's model definitions (request, policy, role and
matcher; ``keyMatch`` as g's domain matching function, as openedx-authz configures it) and
loads ``casbin_rule`` through casbin-django-orm-adapter, as openedx-authz does: the role
assignments a real forward move wrote, plus role -> permission policies stored beside them.
Every user is then allowed exactly what the legacy role allowed, in the course, in every course
of the org for an org-wide role, and nothing in another org (OrgAB is not OrgA).
"""

from __future__ import annotations

import itertools

import casbin
import pytest
from casbin.util import key_match
from casbin_adapter.adapter import Adapter
from casbin_adapter.models import CasbinRule
from django.test import override_settings

from authz_migration import api
from authz_migration.conf import legacy_role_model
from authz_migration.models import MigrationRun
from tests.helpers import ROLE_MAP

pytestmark = pytest.mark.django_db

# openedx-authz's model (openedx_authz/engine/config/model.conf), its custom_check() hook left
# out: r = sub, act, scope; p = sub, act, scope, eft; scoped roles; action grouping.
OPENEDX_AUTHZ_MODEL = """
[request_definition]
r = sub, act, scope

[policy_definition]
p = sub, act, scope, eft

[role_definition]
g = _, _, _
g2 = _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = (g(r.sub, p.sub, r.scope) || g(r.sub, p.sub, "*")) && keyMatch(r.scope, p.scope) \
&& (r.act == p.act || g2(p.act, r.act))
"""

# Role -> permission policies as openedx-authz stores them, and action grouping (g2).
POLICIES = [
    ("role^course_admin", "act^courses.manage", "course-v1^*", "allow"),
    ("role^course_staff", "act^courses.view_course", "course-v1^*", "allow"),
    ("role^course_staff", "act^courses.edit_course", "course-v1^*", "allow"),
    ("role^course_limited_staff", "act^courses.view_course", "course-v1^*", "allow"),
    ("role^course_data_researcher", "act^courses.view_data", "course-v1^*", "allow"),
    ("role^course_beta_tester", "act^courses.view_beta", "course-v1^*", "allow"),
    ("role^ccx_coach", "act^courses.coach_ccx", "course-v1^*", "allow"),
]
ACTION_GROUPS = [
    ("act^courses.manage", "act^courses.view_course"),
    ("act^courses.manage", "act^courses.edit_course"),
]

# What each legacy role allowed, written out independently of the policies above.
LEGACY_ALLOWS = {
    "instructor": {"manage", "view_course", "edit_course"},
    "staff": {"view_course", "edit_course"},
    "limited_staff": {"view_course"},
    "data_researcher": {"view_data"},
    "beta_testers": {"view_beta"},
    "ccx_coach": {"coach_ccx"},
    "finance_admin": set(),  # not a course-authoring role: no authoring permission anywhere
}
ACTIONS = sorted(set().union(*LEGACY_ALLOWS.values()) | {"delete_course"})

A1, A2, A3 = "course-v1:OrgA+C1+2024", "course-v1:OrgA+C2+2024", "course-v1:OrgA+C3+2024"
AB1, AB2 = "course-v1:OrgAB+Y1+2024", "course-v1:OrgAB+Y2+2024"
B1 = "course-v1:OrgB+X1+2024"
COURSES = [A1, A2, A3, AB1, AB2, B1]  # A3 and AB2 have no role of their own

# (username, course key or "" for org-wide, org, legacy role)
LEGACY = [
    ("alice", A1, "OrgA", "staff"),
    ("bob", A1, "OrgA", "instructor"),
    ("carol", "", "OrgA", "staff"),  # every course of OrgA, none of OrgAB
    ("dave", A2, "OrgA", "data_researcher"),
    ("dave", A2, "OrgA", "ccx_coach"),
    ("erin", AB1, "OrgAB", "beta_testers"),
    ("frank", A2, "OrgA", "limited_staff"),
    ("frank", "", "OrgB", "instructor"),
    ("grace", A1, "OrgA", "finance_admin"),
    ("heidi", "", "OrgAB", "instructor"),  # every course of OrgAB, none of OrgA
]
USERS = sorted({username for username, *_ in LEGACY})


def org_of(course: str) -> str:
    return course.split(":", 1)[1].split("+", 1)[0]


def legacy_allows(username: str, action: str, course: str) -> bool:
    return any(
        action in LEGACY_ALLOWS[role]
        for user, course_id, org, role in LEGACY
        if user == username and (course_id == course or (course_id == "" and org == org_of(course)))
    )


def openedx_authz_enforcer() -> casbin.Enforcer:
    """An enforcer over casbin_rule, configured as openedx-authz configures its own."""
    enforcer = casbin.Enforcer(casbin.Enforcer.new_model(text=OPENEDX_AUTHZ_MODEL), Adapter())
    enforcer.add_named_domain_matching_func("g", key_match)
    enforcer.load_policy()  # role links rebuilt with the domain matching function in place
    return enforcer


def store_permission_policies() -> None:
    """Write the p and g2 rows through casbin's adapter, as openedx-authz stores them."""
    enforcer = casbin.Enforcer(casbin.Enforcer.new_model(text=OPENEDX_AUTHZ_MODEL), Adapter())
    for policy in POLICIES:
        assert enforcer.add_policy(*policy)
    for group in ACTION_GROUPS:
        assert enforcer.add_named_grouping_policy("g2", *group)


def all_rows() -> set[tuple[str, ...]]:
    return set(CasbinRule.objects.values_list("ptype", "v0", "v1", "v2", "v3", "v4", "v5"))


@pytest.fixture
def legacy_roles(make_user):
    users = {name: make_user(name) for name in USERS}
    model = legacy_role_model()
    for username, course_id, org, role in LEGACY:
        model.objects.create(user=users[username], org=org, course_id=course_id, role=role)
    store_permission_policies()
    return users


def forward_by_instance_sync(global_flag, org_override):
    global_flag(True)
    outcomes = list(api.sync_instance())
    assert {o.status for o in outcomes} == {"completed"}


def forward_by_org_saves(global_flag, org_override):
    with override_settings(AUTHZ_MIGRATION_AUTOMATIC=True):
        for org in ("OrgA", "OrgAB", "OrgB"):
            org_override(org, "on")
    assert [r.status for r in MigrationRun.objects.order_by("id")] == ["completed"] * 3


@pytest.mark.parametrize(
    "forward", [forward_by_instance_sync, forward_by_org_saves], ids=["sync-all", "org-saves"]
)
def test_migrated_users_are_allowed_exactly_what_the_legacy_roles_allowed(
    legacy_roles, global_flag, org_override, forward
):
    enforcer = openedx_authz_enforcer()
    # Before the move nobody holds a Casbin role: everything is denied.
    assert not any(
        enforcer.enforce(f"user^{u}", f"act^courses.{a}", f"course-v1^{c}")
        for u, a, c in itertools.product(USERS, ACTIONS, COURSES)
    )

    forward(global_flag, org_override)

    # Only the non-authoring role is left behind.
    assert list(legacy_role_model().objects.values_list("role", flat=True)) == ["finance_admin"]
    enforcer = openedx_authz_enforcer()
    mismatches = [
        (user, action, course, allowed)
        for user, action, course in itertools.product(USERS, ACTIONS, COURSES)
        if (
            allowed := enforcer.enforce(
                f"user^{user}", f"act^courses.{action}", f"course-v1^{course}"
            )
        )
        != legacy_allows(user, action, course)
    ]
    assert mismatches == []
    # The cases that matter most, spelled out.
    check = enforcer.enforce
    assert check("user^carol", "act^courses.edit_course", f"course-v1^{A3}")  # org-wide
    assert not check("user^carol", "act^courses.edit_course", f"course-v1^{AB1}")  # OrgAB
    assert check("user^heidi", "act^courses.view_course", f"course-v1^{AB2}")  # via g2
    assert not check("user^heidi", "act^courses.view_course", f"course-v1^{A1}")
    assert check("user^bob", "act^courses.edit_course", f"course-v1^{A1}")  # manage implies
    assert not check("user^bob", "act^courses.edit_course", f"course-v1^{A2}")
    assert not check("user^grace", "act^courses.view_course", f"course-v1^{A1}")


def test_rows_are_byte_identical_to_what_openedx_authz_writes(legacy_roles, global_flag):
    forward_by_instance_sync(global_flag, None)
    written_by_the_app = all_rows()
    role_rows = {row for row in written_by_the_app if row[0] == "g"}
    assert len(role_rows) == 9  # every mapped legacy row, once
    CasbinRule.objects.filter(ptype="g").delete()

    # The same assignments made through casbin's API and adapter, as openedx-authz makes them.
    enforcer = openedx_authz_enforcer()
    for username, course_id, org, role in LEGACY:
        if role == "finance_admin":
            continue
        casbin_role = ROLE_MAP[role]
        scope = f"course-v1^{course_id}" if course_id else f"course-v1^course-v1:{org}+*"
        assert enforcer.add_role_for_user_in_domain(
            f"user^{username}", f"role^{casbin_role}", scope
        )

    assert all_rows() == written_by_the_app


def test_rollback_returns_the_roles_and_leaves_the_policies(legacy_roles, global_flag):
    policies_before = {row for row in all_rows() if row[0] != "g"}
    legacy_before = set(
        legacy_role_model().objects.values_list("user__username", "org", "course_id", "role")
    )
    forward_by_instance_sync(global_flag, None)

    global_flag(False)
    assert {o.status for o in api.sync_instance()} == {"completed"}

    assert all_rows() == policies_before  # p and g2 rows untouched, no g row left
    assert (
        set(legacy_role_model().objects.values_list("user__username", "org", "course_id", "role"))
        == legacy_before
    )
    enforcer = openedx_authz_enforcer()
    assert not any(
        enforcer.enforce(f"user^{u}", f"act^courses.{a}", f"course-v1^{c}")
        for u, a, c in itertools.product(USERS, ACTIONS, COURSES)
    )
