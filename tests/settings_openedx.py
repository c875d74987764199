"""Settings of the Open edX-shaped test host (tests/openedx): the suite's settings plus
``student.CourseAccessRole`` and ``waffle_utils``'s override models on django-config-models,
with the app's model settings pointing at them, as the Open edX plugin settings set them.

    DJANGO_SETTINGS_MODULE=tests.settings_openedx python -m pytest tests/openedx
"""

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [  # noqa: F405
    *INSTALLED_APPS,  # noqa: F405
    "config_models",
    "tests.openedx.student.apps.StudentConfig",
    "tests.openedx.waffle_utils.apps.WaffleUtilsConfig",
]

AUTHZ_MIGRATION_LEGACY_ROLE_MODEL = "student.CourseAccessRole"
AUTHZ_MIGRATION_COURSE_OVERRIDE_MODEL = "waffle_utils.WaffleFlagCourseOverrideModel"
AUTHZ_MIGRATION_ORG_OVERRIDE_MODEL = "waffle_utils.WaffleFlagOrgOverrideModel"

# ConfigurationModel caches current() in the default cache (through TieredCache): give the
# host a real, local one so the tests can show the app never decides from it.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "authz-migration-openedx-host",
    }
}
