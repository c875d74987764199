"""Override keys: parsing a course key / org name into its scope, and the form error for a
key of the watched flag that is not one."""

from __future__ import annotations

from django.utils.translation import gettext as _

from ..flags import flag_name
from ..roles import InvalidCourseKey, InvalidOrg, normalize_course_key, org_of, validate_org


def _parse_scope(key_field: str, key: str) -> tuple[str, str | None]:
    """(org, course) of an override key; raises InvalidCourseKey / InvalidOrg."""
    if key_field == "course_id":
        course = normalize_course_key(key)
        return org_of(course), course
    return validate_org(key), None


def _validate_key(form, key_field: str) -> None:
    """A form error, not a crash and not a row that can never move anything, for a key of the
    watched flag that is not a course key / org name."""
    data = form.cleaned_data
    value = data.get(key_field)
    flag = data.get("waffle_flag", getattr(form.instance, "waffle_flag", None))
    if value in (None, "") or flag != flag_name():
        return
    try:
        _parse_scope(key_field, str(value))
    except (InvalidCourseKey, InvalidOrg) as exc:
        if key_field == "course_id":
            message = _("%(error)s (letters, digits and - _ ~ . : in each part).")
        else:
            message = _("%(error)s: use letters, digits and - _ ~ . : only.")
        form.add_error(key_field, message % {"error": exc})
