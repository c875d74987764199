"""Settings applied when the app is installed into Open edX as a plugin.

edx-django-utils' plugin machinery calls :func:`plugin_settings` with the LMS's or Studio's
settings module (``AuthzMigrationConfig.plugin_app`` says when: settings types ``common`` and
``production`` of ``lms.djangoapp`` and ``cms.djangoapp``). It points the app at Open edX's own
tables and fills in what the app needs, without overriding anything the deployment set
itself: installing the package then needs no settings beyond ``AUTHZ_MIGRATION_AUTOMATIC``.
"""

from __future__ import annotations

from typing import Any

from authz_migration import CASBIN_MODEL_PATH

#: The Open edX tables behind the app's swappable model settings.
OPENEDX_MODELS = {
    "AUTHZ_MIGRATION_LEGACY_ROLE_MODEL": "student.CourseAccessRole",
    "AUTHZ_MIGRATION_COURSE_OVERRIDE_MODEL": "waffle_utils.WaffleFlagCourseOverrideModel",
    "AUTHZ_MIGRATION_ORG_OVERRIDE_MODEL": "waffle_utils.WaffleFlagOrgOverrideModel",
}

#: How openedx-authz adds casbin_adapter to INSTALLED_APPS; the same entry, so that whichever
#: plugin runs second sees it and the app label is never listed twice.
CASBIN_ADAPTER_APP = "casbin_adapter.apps.CasbinAdapterConfig"


def _unset(settings: Any, name: str) -> bool:
    return getattr(settings, name, None) in (None, "")


def plugin_settings(settings: Any) -> None:
    """Set the Open edX defaults on ``settings`` (a settings module or any namespace object).

    Only settings the deployment has not set are filled in, so explicit values (in
    ``lms.yml``, a Tutor patch, ...) win whether they come before or after this call.
    """
    for name, model in OPENEDX_MODELS.items():
        if _unset(settings, name):
            setattr(settings, name, model)
    # openedx-authz sets its own model file; when it is absent, the app's own model reads the
    # rows this app writes.
    if _unset(settings, "CASBIN_MODEL"):
        settings.CASBIN_MODEL = CASBIN_MODEL_PATH
    installed = getattr(settings, "INSTALLED_APPS", None)
    if installed is None:
        return
    if not any(app == "casbin_adapter" or app.startswith("casbin_adapter.") for app in installed):
        if isinstance(installed, list):
            installed.append(CASBIN_ADAPTER_APP)
        else:
            settings.INSTALLED_APPS = [*installed, CASBIN_ADAPTER_APP]
