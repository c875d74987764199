from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _

# Open edX's plugin machinery (edx-django-utils) calls plugin_settings(settings) of
# authz_migration/plugin_settings.py for these project and settings types.
_PLUGIN_SETTINGS = {
    "common": {"relative_path": "plugin_settings"},
    "production": {"relative_path": "plugin_settings"},
}


class AuthzMigrationConfig(AppConfig):
    name = "authz_migration"
    verbose_name = _("Authorization migration")
    default_auto_field = "django.db.models.BigAutoField"

    # Read by edx-django-utils when the package is installed into Open edX: the entry points
    # lms.djangoapp / cms.djangoapp (setup.cfg) add this app to INSTALLED_APPS, and this
    # configuration applies its settings (docs/openedx.rst).
    plugin_app = {
        "settings_config": {
            "lms.djangoapp": _PLUGIN_SETTINGS,
            "cms.djangoapp": _PLUGIN_SETTINGS,
        },
    }

    def ready(self) -> None:
        # Registers the system checks and connects the receivers; never touches the database.
        # (Imported here: the modules import models, which are not loaded before ready().)
        from . import checks, receivers  # noqa: F401

        receivers.connect()
