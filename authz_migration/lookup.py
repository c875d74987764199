"""Whether a course key or org that someone typed names anything this site knows, and how it
is spelled where it does: the hint behind "no roles or overrides found for org 'openedx'; did
you mean 'OpenedX'?".

Keys are exact everywhere else in the app (``OpenedX`` and ``openedx`` are two orgs to Open
edX), so a wrong-case key selects nothing and moves nothing, silently. These look-ups only
read, and compare spellings in Python: SQLite's ``LIKE`` and MariaDB's usual collations
ignore case, PostgreSQL's comparisons do not. The exact look-up runs first, on indexed
columns; the case-insensitive one, which may scan, only when the exact one found nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from .conf import course_override_model, legacy_role_model, org_override_model
from .flags import flag_name
from .roles import (
    ROLE_PTYPE,
    course_key_prefix,
    course_scope_key,
    org_scope_prefix,
    parse_scope,
    try_org_of,
)
from .stores import casbin_rule_model

# Spellings fetched per source: a hint names a few, never a list.
_SAMPLE = 5


def _values(queryset, field: str) -> set[str]:
    return {str(v) for v in queryset.values_list(field, flat=True).distinct()[:_SAMPLE]}


def _org_spellings(org: str, exact: bool) -> set[str]:
    """Orgs spelled like ``org`` (case-insensitively unless ``exact``) in the legacy table,
    Casbin rows, org overrides and course overrides of the watched flag."""
    eq, starts = ("exact", "startswith") if exact else ("iexact", "istartswith")
    found = _values(legacy_role_model().objects.filter(**{f"org__{eq}": org}), "org")
    found |= _values(
        org_override_model().objects.filter(waffle_flag=flag_name(), **{f"org__{eq}": org}), "org"
    )
    courses = _values(
        course_override_model().objects.filter(
            waffle_flag=flag_name(), **{f"course_id__{starts}": course_key_prefix(org)}
        ),
        "course_id",
    )
    found |= {o for o in map(try_org_of, courses) if o}
    scopes = _values(
        casbin_rule_model().objects.filter(
            ptype=ROLE_PTYPE, **{f"v2__{starts}": org_scope_prefix(org)}
        ),
        "v2",
    )
    found |= {parsed[0] for parsed in map(parse_scope, scopes) if parsed}
    return found


def _course_spellings(course: str, exact: bool) -> set[str]:
    eq = "exact" if exact else "iexact"
    found = _values(legacy_role_model().objects.filter(**{f"course_id__{eq}": course}), "course_id")
    found |= _values(
        course_override_model().objects.filter(
            waffle_flag=flag_name(), **{f"course_id__{eq}": course}
        ),
        "course_id",
    )
    scopes = _values(
        casbin_rule_model().objects.filter(
            ptype=ROLE_PTYPE, **{f"v2__{eq}": course_scope_key(course)}
        ),
        "v2",
    )
    found |= {parsed[1] for parsed in map(parse_scope, scopes) if parsed and parsed[1]}
    return found


def _hint(kind: str, key: str, spellings) -> str | None:
    if key in spellings(key, True):
        return None
    others = sorted(spellings(key, False) - {key})
    message = f"no roles or overrides found for {kind} {key!r}"
    if others:
        message += "; did you mean " + " or ".join(repr(o) for o in others[:3]) + "?"
    return message


def unknown_scopes(courses: Iterable[str] = (), orgs: Iterable[str] = ()) -> list[str]:
    """One message per valid key that no role row or override of the watched flag names,
    with the spellings the site does know when only the case differs."""
    hints = [_hint("course", c, _course_spellings) for c in courses]
    hints += [_hint("org", o, _org_spellings) for o in orgs]
    return [h for h in hints if h]
