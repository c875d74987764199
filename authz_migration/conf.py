"""Settings of authz_migration: defaults in one place, read lazily.

Every setting is read at call time through :func:`get_setting`, so ``override_settings`` in
tests and per-request settings changes work without extra wiring. Nothing here mutates
``django.conf.settings``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

PREFIX = "AUTHZ_MIGRATION_"

# Legacy role name -> Casbin role name, as Open edX's openedx-authz maps them. Legacy roles
# outside this map are not course-authoring roles: they stay where they are.
DEFAULT_ROLE_MAP = {
    "instructor": "course_admin",
    "staff": "course_staff",
    "limited_staff": "course_limited_staff",
    "data_researcher": "course_data_researcher",
    "beta_testers": "course_beta_tester",
    "ccx_coach": "ccx_coach",
}

DEFAULTS: dict[str, Any] = {
    "FLAG_NAME": "authz.enable_course_authoring",
    "AUTOMATIC": False,
    "LEGACY_ROLE_MODEL": "authz_migration.CourseAccessRole",
    "COURSE_OVERRIDE_MODEL": "authz_migration.CourseFlagOverride",
    "ORG_OVERRIDE_MODEL": "authz_migration.OrgFlagOverride",
    "ROLE_MAP": DEFAULT_ROLE_MAP,
    # With AUTOMATIC on, a change of the global flag holds every org whose roles would be
    # stranded on its previous state with a cutover pin (docs/decisions/0013); off: it only
    # warns, as before.
    "GLOBAL_FLIP_PINS": True,
    # Rows read, written and deleted per statement group; bounds memory and statement size.
    "BATCH_SIZE": 5000,
    # How many entries each list in a run's metadata keeps (the rest are counted).
    "METADATA_LIST_LIMIT": 50,
}


def get_setting(name: str) -> Any:
    """Return ``settings.AUTHZ_MIGRATION_<name>`` or its default."""
    if name not in DEFAULTS:
        raise KeyError(f"unknown authz_migration setting {name!r}")
    return getattr(settings, PREFIX + name, DEFAULTS[name])


def _model(setting: str):
    from django.apps import apps

    return apps.get_model(get_setting(setting), require_ready=False)


def legacy_role_model():
    """The legacy role table named by ``AUTHZ_MIGRATION_LEGACY_ROLE_MODEL``."""
    return _model("LEGACY_ROLE_MODEL")


def course_override_model():
    """The course override model named by ``AUTHZ_MIGRATION_COURSE_OVERRIDE_MODEL``."""
    return _model("COURSE_OVERRIDE_MODEL")


def org_override_model():
    """The org override model named by ``AUTHZ_MIGRATION_ORG_OVERRIDE_MODEL``."""
    return _model("ORG_OVERRIDE_MODEL")
