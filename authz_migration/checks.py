"""System checks for the app's settings. Ids are stable: documentation and hosts refer to them.

- E001  a model setting names no installed model
- E002  a configured model lacks a field the app reads or writes
- E003  ``casbin_adapter`` is not in INSTALLED_APPS
- E004  ``CASBIN_MODEL`` is unset or names no file
- E005  ``AUTHZ_MIGRATION_ROLE_MAP`` is not a one-to-one map of non-empty strings
- E006  ``AUTHZ_MIGRATION_FLAG_NAME`` is not a non-empty string
- E007  this app's and openedx-authz's automatic migrations are both on
- E008  openedx-authz is installed but ``CASBIN_MODEL`` is this app's model file
- W001  the installed openedx-authz is outside the versions this app was tested with
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

from django.apps import apps
from django.conf import settings
from django.core import checks

from . import CASBIN_MODEL_PATH, peer
from .conf import PREFIX, get_setting

REQUIRED_FIELDS = {
    "LEGACY_ROLE_MODEL": ("user", "org", "course_id", "role"),
    "COURSE_OVERRIDE_MODEL": (
        "waffle_flag",
        "course_id",
        "override_choice",
        "enabled",
        "change_date",
    ),
    "ORG_OVERRIDE_MODEL": ("waffle_flag", "org", "override_choice", "enabled", "change_date"),
}


@checks.register()
def check_models(app_configs=None, **kwargs):
    errors = []
    for name, fields in REQUIRED_FIELDS.items():
        label = get_setting(name)
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError, AttributeError, TypeError):
            errors.append(
                checks.Error(
                    f"{PREFIX}{name} refers to {label!r}, which is not an installed model.",
                    hint="Use 'app_label.ModelName' of a model in INSTALLED_APPS.",
                    id="authz_migration.E001",
                )
            )
            continue
        present = {f.name for f in model._meta.fields}  # own columns, not reverse relations
        missing = [f for f in fields if f not in present]
        if missing:
            errors.append(
                checks.Error(
                    f"{PREFIX}{name} model {label} lacks the field(s) {', '.join(missing)}.",
                    hint="Its fields must match Open edX's names (see README, 'Settings').",
                    obj=model,
                    id="authz_migration.E002",
                )
            )
    return errors


@checks.register()
def check_casbin(app_configs=None, **kwargs):
    errors = []
    if not apps.is_installed("casbin_adapter"):
        errors.append(
            checks.Error(
                "casbin_adapter is not in INSTALLED_APPS; its casbin_rule table is the Casbin "
                "store this app writes to.",
                hint="Add 'casbin_adapter' to INSTALLED_APPS.",
                id="authz_migration.E003",
            )
        )
    model_path = getattr(settings, "CASBIN_MODEL", None)
    if not model_path or not os.path.isfile(str(model_path)):
        errors.append(
            checks.Error(
                f"CASBIN_MODEL is {model_path!r}: it must name a Casbin model file.",
                hint="Set CASBIN_MODEL = authz_migration.CASBIN_MODEL_PATH, or your own model.",
                id="authz_migration.E004",
            )
        )
    return errors


@checks.register()
def check_settings(app_configs=None, **kwargs):
    errors = []
    role_map = get_setting("ROLE_MAP")
    valid = isinstance(role_map, dict) and all(
        isinstance(k, str) and isinstance(v, str) and k.strip() == k and v.strip() == v and k and v
        for k, v in role_map.items()
    )
    if not valid or len(set(role_map.values())) != len(role_map):
        errors.append(
            checks.Error(
                f"{PREFIX}ROLE_MAP must map legacy role names to distinct Casbin role names "
                "(non-empty strings without surrounding spaces).",
                hint="Two legacy roles mapped to one Casbin role could not be rolled back.",
                id="authz_migration.E005",
            )
        )
    flag = get_setting("FLAG_NAME")
    if not isinstance(flag, str) or not flag.strip():
        errors.append(
            checks.Error(
                f"{PREFIX}FLAG_NAME must be a non-empty string.",
                id="authz_migration.E006",
            )
        )
    return errors


#: openedx-authz's own switch for its automatic course-authoring migration.
OPENEDX_AUTHZ_AUTOMATIC = "ENABLE_AUTOMATIC_AUTHZ_COURSE_AUTHORING_MIGRATION"


@checks.register()
def check_openedx_authz(app_configs=None, **kwargs):
    """Beside openedx-authz: one mover per override save, its model file, a tested version."""
    if not peer.installed():
        return []
    errors = []
    if get_setting("AUTOMATIC") and getattr(settings, OPENEDX_AUTHZ_AUTOMATIC, False):
        errors.append(
            checks.Error(
                f"{PREFIX}AUTOMATIC and openedx-authz's {OPENEDX_AUTHZ_AUTOMATIC} are both on: "
                "every override save would move the same roles twice, once unguarded.",
                hint=f"Set {OPENEDX_AUTHZ_AUTOMATIC} = False (see docs/openedx.rst).",
                id="authz_migration.E007",
            )
        )
    model_path = getattr(settings, "CASBIN_MODEL", None)
    if model_path and os.path.isfile(str(model_path)) and _same_file(model_path, CASBIN_MODEL_PATH):
        errors.append(
            checks.Error(
                "CASBIN_MODEL is this app's model file, but openedx-authz is installed: its "
                "enforcer would lose its staff and superuser rule.",
                hint="Leave CASBIN_MODEL to openedx-authz's plugin settings (its model.conf).",
                id="authz_migration.E008",
            )
        )
    installed = _openedx_authz_version()
    low, high = peer.TESTED_VERSIONS
    if installed is not None and not low <= installed < high:
        errors.append(
            checks.Warning(
                f"openedx-authz {'.'.join(map(str, installed))} is installed; this app was "
                f"tested with {low[0]}.{low[1]} up to (not including) {high[0]}.{high[1]}.",
                hint="Moves write openedx-authz's rows as those versions do; test before use.",
                id="authz_migration.W001",
            )
        )
    return errors


def _same_file(one, other) -> bool:
    try:
        return os.path.samefile(str(one), str(other))
    except OSError:
        return False


def _openedx_authz_version() -> tuple[int, ...] | None:
    try:
        text = version("openedx-authz")
    except PackageNotFoundError:
        return None
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)
