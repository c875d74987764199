"""Role map, course keys, orgs and the Casbin key format.

Casbin rows are byte-compatible with openedx-authz: a namespace, ``^``, then the external key,
for example ``g, user^alice, role^course_admin, course-v1^course-v1:OpenedX+CS101+2024``. An
org-wide legacy role becomes the glob scope ``course-v1^course-v1:OpenedX+*``.
"""

from __future__ import annotations

import re
from typing import Any

from .conf import get_setting

#: The Casbin policy type of a role assignment ("grouping" rule): g, subject, role, scope.
ROLE_PTYPE = "g"
SUBJECT_NAMESPACE = "user^"
ROLE_NAMESPACE = "role^"
SCOPE_NAMESPACE = "course-v1^"
COURSE_KEY_PREFIX = "course-v1:"

# The characters edx-opaque-keys allows in each part of a course key. Anything else would make
# a key that openedx-authz cannot parse, so such keys are refused here rather than written.
_ID_PART = r"[\w\-~.:]+"
_COURSE_KEY_RE = re.compile(rf"course-v1:(?P<org>{_ID_PART})\+({_ID_PART})\+({_ID_PART})")
_ORG_RE = re.compile(_ID_PART)


class InvalidCourseKey(ValueError):
    """A course key that is not ``course-v1:ORG+COURSE+RUN``."""


class InvalidOrg(ValueError):
    """An org name that cannot be part of a course key."""


def normalize_course_key(course_key: Any) -> str:
    """Return the canonical string of a course key (a string or an opaque-keys object).

    Raises :class:`InvalidCourseKey` with the offending value when it is not a course key.
    """
    text = str(course_key) if course_key is not None else ""
    if not _COURSE_KEY_RE.fullmatch(text):
        raise InvalidCourseKey(
            f"{course_key!r} is not a course key of the form course-v1:ORG+COURSE+RUN"
        )
    return text


def org_of(course_key: Any) -> str:
    """The org of a course key (``course-v1:ORG+COURSE+RUN`` -> ``ORG``)."""
    match = _COURSE_KEY_RE.fullmatch(normalize_course_key(course_key))
    return match.group("org")


def try_org_of(course_key: str) -> str | None:
    match = _COURSE_KEY_RE.fullmatch(course_key or "")
    return match.group("org") if match else None


def validate_org(org: Any) -> str:
    text = str(org) if org is not None else ""
    if not _ORG_RE.fullmatch(text):
        raise InvalidOrg(f"{org!r} is not a valid org name")
    return text


def course_key_prefix(org: str) -> str:
    """The prefix every course key of ``org`` starts with; ``+`` keeps OrgA from matching
    OrgAB."""
    return f"{COURSE_KEY_PREFIX}{org}+"


# --- role map -------------------------------------------------------------------------------


def role_map() -> dict[str, str]:
    """Legacy role -> Casbin role, from ``AUTHZ_MIGRATION_ROLE_MAP``."""
    return dict(get_setting("ROLE_MAP"))


def reverse_role_map() -> dict[str, str]:
    """Casbin role -> legacy role. The system check E005 guarantees it is one-to-one."""
    return {casbin: legacy for legacy, casbin in role_map().items()}


# --- Casbin keys ----------------------------------------------------------------------------


def subject_key(username: str) -> str:
    return f"{SUBJECT_NAMESPACE}{username}"


def role_key(casbin_role: str) -> str:
    return f"{ROLE_NAMESPACE}{casbin_role}"


def course_scope_key(course_key: str) -> str:
    return f"{SCOPE_NAMESPACE}{course_key}"


def org_scope_key(org: str) -> str:
    """The scope of an org-wide role: every course of the org."""
    return f"{SCOPE_NAMESPACE}{course_key_prefix(org)}*"


def org_scope_prefix(org: str) -> str:
    """Every Casbin scope of the org (its courses and its glob) starts with this."""
    return f"{SCOPE_NAMESPACE}{course_key_prefix(org)}"


def strip_namespace(value: str, namespace: str) -> str | None:
    """``value`` without ``namespace``, or None when it is not in that namespace."""
    if value.startswith(namespace) and len(value) > len(namespace):
        return value[len(namespace) :]
    return None


def parse_scope(scope: str) -> tuple[str, str | None] | None:
    """``(org, course_key)`` for a course scope, ``(org, None)`` for an org glob, else None."""
    key = strip_namespace(scope, SCOPE_NAMESPACE)
    if key is None:
        return None
    if key.endswith("+*"):
        org = key[len(COURSE_KEY_PREFIX) : -2] if key.startswith(COURSE_KEY_PREFIX) else ""
        return (org, None) if _ORG_RE.fullmatch(org) else None
    org = try_org_of(key)
    return (org, key) if org else None
