"""System checks for the app's settings. Ids are stable: documentation and hosts refer to them.

- E001  a model setting names no installed model
- E002  a configured model lacks a field the app reads or writes
- E003  ``casbin_adapter`` is not in INSTALLED_APPS
- E004  ``CASBIN_MODEL`` is unset or names no file
- E005  ``AUTHZ_MIGRATION_ROLE_MAP`` is not a one-to-one map of non-empty strings
- E006  ``AUTHZ_MIGRATION_FLAG_NAME`` is not a non-empty string
"""

from __future__ import annotations

import os

from django.apps import apps
from django.conf import settings
from django.core import checks

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
