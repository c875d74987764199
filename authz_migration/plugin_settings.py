"""Settings applied when the app is installed into Open edX as a plugin.

edx-django-utils' plugin machinery calls :func:`plugin_settings` with the LMS's or Studio's
settings module (``AuthzMigrationConfig.plugin_app`` says when: settings types ``common`` and
``production`` of ``lms.djangoapp`` and ``cms.djangoapp``). It points the app at Open edX's own
tables and fills in what the app needs, without overriding anything the deployment set
itself: installing the package then needs no settings beyond ``AUTHZ_MIGRATION_AUTOMATIC``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from authz_migration import CASBIN_MODEL_PATH

#: The Open edX tables behind the app's swappable model settings.
OPENEDX_MODELS = {
    "AUTHZ_MIGRATION_LEGACY_ROLE_MODEL": "student.CourseAccessRole",
    "AUTHZ_MIGRATION_COURSE_OVERRIDE_MODEL": "waffle_utils.WaffleFlagCourseOverrideModel",
    "AUTHZ_MIGRATION_ORG_OVERRIDE_MODEL": "waffle_utils.WaffleFlagOrgOverrideModel",
}

#: casbin_adapter's entry when openedx-authz is absent; openedx-authz adds its own entry for
#: the same app label (``openedx_authz.engine.apps.CasbinAdapterConfig``).
CASBIN_ADAPTER_APP = "casbin_adapter.apps.CasbinAdapterConfig"


def _unset(settings: Any, name: str) -> bool:
    return getattr(settings, name, None) in (None, "")


def openedx_authz_present() -> bool:
    """Whether openedx-authz is installed; in Open edX its plugin is then in the project."""
    return importlib.util.find_spec("openedx_authz") is not None


def casbin_adapter_entries(installed_apps) -> list[str]:
    """The INSTALLED_APPS entries that install the ``casbin_adapter`` app label: the module,
    its own AppConfig, or another package's AppConfig for it (openedx-authz's)."""
    return [
        app
        for app in installed_apps
        if app == "casbin_adapter"
        or app.startswith("casbin_adapter.")
        or app.endswith(".CasbinAdapterConfig")
    ]


def plugin_settings(settings: Any) -> None:
    """Set the Open edX defaults on ``settings`` (a settings module or any namespace object).

    Only settings the deployment has not set are filled in, so explicit values (in
    ``lms.yml``, a Tutor patch, ...) win whether they come before or after this call. Beside
    openedx-authz, whose own plugin settings add casbin_adapter and set ``CASBIN_MODEL`` to
    its model file (with its staff and superuser rule), this adds neither, whichever of the
    two plugins runs first.
    """
    for name, model in OPENEDX_MODELS.items():
        if _unset(settings, name):
            setattr(settings, name, model)
    installed = getattr(settings, "INSTALLED_APPS", None)
    entries = casbin_adapter_entries(installed or ())
    if len(entries) > 1:
        # Django would refuse to start with a bare "labels aren't unique"; say which.
        raise ImproperlyConfigured(
            f"INSTALLED_APPS installs casbin_adapter {len(entries)} times ({', '.join(entries)});"
            " keep one (beside openedx-authz, its openedx_authz.engine.apps.CasbinAdapterConfig)"
        )
    if openedx_authz_present():
        return
    if _unset(settings, "CASBIN_MODEL"):
        settings.CASBIN_MODEL = CASBIN_MODEL_PATH
    if installed is None or entries:
        return
    if isinstance(installed, list):
        installed.append(CASBIN_ADAPTER_APP)
    else:
        settings.INSTALLED_APPS = [*installed, CASBIN_ADAPTER_APP]
