from django.apps import AppConfig


class WaffleUtilsConfig(AppConfig):
    """Label ``waffle_utils``, as in Open edX."""

    name = "tests.openedx.waffle_utils"
    label = "waffle_utils"
    default_auto_field = "django.db.models.AutoField"
