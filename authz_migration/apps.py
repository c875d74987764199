from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AuthzMigrationConfig(AppConfig):
    name = "authz_migration"
    verbose_name = _("Authorization migration")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the system checks and connects the receivers; never touches the database.
        from . import checks, signals  # noqa: F401

        signals.connect_receivers()
