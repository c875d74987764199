from django.apps import AppConfig


class StubsConfig(AppConfig):
    """Stand-ins for the two edx-platform models openedx-authz's migrations reference."""

    name = "tests.openedx_authz.stubs"
    label = "authz_stubs"
    default_auto_field = "django.db.models.AutoField"
