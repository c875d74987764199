"""Role map, course keys and the Casbin key format (byte-compatible with openedx-authz)."""

from __future__ import annotations

import pytest
from django.test import override_settings

from authz_migration import roles
from authz_migration.conf import DEFAULT_ROLE_MAP
from authz_migration.roles import InvalidCourseKey, InvalidOrg
from tests.helpers import ROLE_MAP

COURSE = "course-v1:OpenedX+CS101+2024"

# --- the Casbin key format: exact strings ---------------------------------------------------


def test_subject_key():
    assert roles.subject_key("alice") == "user^alice"


def test_role_key():
    assert roles.role_key("course_admin") == "role^course_admin"


def test_course_scope_key():
    assert roles.course_scope_key(COURSE) == "course-v1^course-v1:OpenedX+CS101+2024"


def test_org_scope_key_is_the_org_glob():
    assert roles.org_scope_key("OpenedX") == "course-v1^course-v1:OpenedX+*"


def test_org_scope_prefix_covers_courses_and_glob_but_not_prefix_orgs():
    prefix = roles.org_scope_prefix("OpenedX")
    assert prefix == "course-v1^course-v1:OpenedX+"
    assert roles.course_scope_key(COURSE).startswith(prefix)
    assert roles.org_scope_key("OpenedX").startswith(prefix)
    assert not roles.course_scope_key("course-v1:OpenedXB+CS101+2024").startswith(prefix)
    assert not roles.org_scope_key("OpenedXB").startswith(prefix)


def test_course_key_prefix():
    assert roles.course_key_prefix("OpenedX") == "course-v1:OpenedX+"
    assert COURSE.startswith(roles.course_key_prefix("OpenedX"))
    assert not "course-v1:OpenedXB+CS101+2024".startswith(roles.course_key_prefix("OpenedX"))


def test_namespaces():
    assert roles.SUBJECT_NAMESPACE == "user^"
    assert roles.ROLE_NAMESPACE == "role^"
    assert roles.SCOPE_NAMESPACE == "course-v1^"


@pytest.mark.parametrize(
    ("value", "namespace", "expected"),
    [
        ("user^alice", "user^", "alice"),
        ("role^course_admin", "role^", "course_admin"),
        ("user^", "user^", None),  # nothing after the namespace
        ("role^alice", "user^", None),
        ("alice", "user^", None),
        ("", "user^", None),
        ("user^user^alice", "user^", "user^alice"),  # only one namespace is stripped
    ],
)
def test_strip_namespace(value, namespace, expected):
    assert roles.strip_namespace(value, namespace) == expected


# --- parse_scope ----------------------------------------------------------------------------

COURSE_KEYS = [
    COURSE,
    "course-v1:Open.edX+CS-101+2024_T1",
    "course-v1:Org~x+C:1+R.2",
    "course-v1:A+B+C",
    "course-v1:ÉcoleX+Cours+2024",  # edx-opaque-keys allows Unicode word characters
]


@pytest.mark.parametrize("course_key", COURSE_KEYS)
def test_parse_scope_round_trips_a_course_scope(course_key):
    org = course_key[len("course-v1:") :].split("+", 1)[0]
    assert roles.parse_scope(roles.course_scope_key(course_key)) == (org, course_key)
    assert roles.org_of(course_key) == org


@pytest.mark.parametrize("org", ["OpenedX", "Open.edX", "Org-1", "org_a", "Org~x", "ÉcoleX"])
def test_parse_scope_round_trips_an_org_glob(org):
    assert roles.parse_scope(roles.org_scope_key(org)) == (org, None)


@pytest.mark.parametrize(
    "scope",
    [
        "",
        "course-v1^",
        "user^alice",
        "role^course_admin",
        COURSE,  # no namespace
        "course-v1:OpenedX+*",  # glob without namespace
        "lib^lib:OpenedX:lib1",
        "course-v1^course-v1:OpenedX+CS101",  # two parts
        "course-v1^course-v1:OpenedX+CS101+2024+extra",
        "course-v1^OpenedX/CS101/2024",  # old-style slash key
        "course-v1^course-v1:Open edX+CS101+2024",
        "course-v1^course-v1:+*",  # empty org
        "course-v1^OpenedX+*",  # glob without the course-v1: prefix
        "course-v1^course-v1:Open edX+*",
        "course-v1^course-v1:A+B+*",  # a glob is org-wide only
        "course-v1^course-v1:OpenedX+CS101+*",
        "course-v1^course-v1:OpenedX*",
        "course-v1^*",
    ],
)
def test_parse_scope_rejects(scope):
    assert roles.parse_scope(scope) is None


@pytest.mark.parametrize(
    "scope",
    ["course-v1^course-v1:OpenedX+CS101+2024\n", "course-v1^course-v1:OpenedX\n+*"],
    ids=["course", "org-glob"],
)
def test_parse_scope_rejects_a_trailing_newline(scope):
    assert roles.parse_scope(scope) is None


# --- course keys and orgs -------------------------------------------------------------------


def test_normalize_course_key_accepts_an_object_whose_str_is_a_key():
    class CourseKey:  # like opaque_keys' CourseLocator
        def __str__(self):
            return COURSE

    result = roles.normalize_course_key(CourseKey())
    assert result == COURSE
    assert type(result) is str
    assert roles.org_of(CourseKey()) == "OpenedX"


@pytest.mark.parametrize("key", COURSE_KEYS)
def test_normalize_course_key_returns_valid_keys_unchanged(key):
    assert roles.normalize_course_key(key) == key


MALFORMED = [
    "not-a-key",
    "course-v1:OrgA+C1",
    "course-v1:Or g+C+R",
    "",
    "OrgA/C1/R",
    "course-v1:OrgA+C1+R+X",
    "course-v1:+C1+R",
    "Course-V1:OrgA+C1+R",
    " course-v1:OrgA+C1+R",
    "course-v1:OrgA+C1+R ",
    "library-v1:OrgA+L1",
]


@pytest.mark.parametrize("key", MALFORMED)
def test_normalize_course_key_rejects_with_the_value_in_the_message(key):
    with pytest.raises(InvalidCourseKey) as excinfo:
        roles.normalize_course_key(key)
    assert repr(key) in str(excinfo.value)
    with pytest.raises(InvalidCourseKey):
        roles.org_of(key)
    assert roles.try_org_of(key) is None


def test_normalize_course_key_reports_none_as_none():
    with pytest.raises(InvalidCourseKey) as excinfo:
        roles.normalize_course_key(None)
    assert "None" in str(excinfo.value)


def test_normalize_course_key_rejects_none():
    with pytest.raises(InvalidCourseKey):
        roles.normalize_course_key(None)
    assert roles.try_org_of(None) is None


def test_normalize_course_key_rejects_a_trailing_newline():
    with pytest.raises(InvalidCourseKey):
        roles.normalize_course_key("course-v1:OrgA+C1+R\n")


@pytest.mark.parametrize("org", ["OpenedX", "Open.edX", "Org-1", "org_a"])
def test_validate_org_accepts(org):
    assert roles.validate_org(org) == org


@pytest.mark.parametrize("org", ["", None, "Open edX", "OrgA+", "Org/A", "Org*", "+"])
def test_validate_org_rejects(org):
    with pytest.raises(InvalidOrg):
        roles.validate_org(org)


def test_validate_org_rejects_a_trailing_newline():
    with pytest.raises(InvalidOrg):
        roles.validate_org("OrgA\n")


# --- role map -------------------------------------------------------------------------------


def test_default_role_map_is_open_edx_s():
    assert roles.role_map() == ROLE_MAP  # written out in tests/helpers.py
    assert roles.reverse_role_map() == {v: k for k, v in ROLE_MAP.items()}


@pytest.mark.parametrize(
    "legacy", ["finance_admin", "sales_admin", "course_creator_group", "support", "library_user"]
)
def test_non_authoring_roles_are_not_mapped(legacy):
    assert legacy not in roles.role_map()


def test_role_map_returns_a_copy():
    mapping = roles.role_map()
    mapping["instructor"] = "tampered"
    mapping["new"] = "x"
    assert roles.role_map()["instructor"] == "course_admin"
    assert "new" not in roles.role_map()
    assert DEFAULT_ROLE_MAP["instructor"] == "course_admin"


def test_role_map_setting_is_read_lazily():
    custom = {"instructor": "org_course_admin", "auditor": "course_auditor"}
    with override_settings(AUTHZ_MIGRATION_ROLE_MAP=custom):
        assert roles.role_map() == custom
        assert roles.reverse_role_map() == {
            "org_course_admin": "instructor",
            "course_auditor": "auditor",
        }
    assert roles.role_map() == DEFAULT_ROLE_MAP


def test_reverse_role_map_round_trips():
    forward = roles.role_map()
    backward = roles.reverse_role_map()
    assert {backward[casbin] for casbin in forward.values()} == set(forward)
    assert all(backward[forward[legacy]] == legacy for legacy in forward)
