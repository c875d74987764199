"""An LMS-like settings module built the way edx-platform builds its own: a base app list,
then edx-django-utils' plugin machinery adds every installed plugin app (this app and
openedx-authz, found through their entry points) and applies their plugin settings.

``AUTHZ_TEST_PLUGIN_ORDER`` (``authz-first`` or ``ours-first``) orders the plugins: the
machinery's own order is the entry points' and cannot be chosen by a site.
``AUTHZ_TEST_PROJECT_TYPE`` is ``lms.djangoapp`` (default) or ``cms.djangoapp``. Used by
test_plugins.py in a process of its own (settings are read once per process).
"""

import os
import sys

from edx_django_utils.plugins import add_plugins, get_plugin_apps, registry

from tests.settings import MIDDLEWARE, TEMPLATES  # noqa: F401 (the test project's own)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "edx_platform"))

SECRET_KEY = "tests-only-not-secret"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "waffle",
    "organizations",
    "config_models",
    "tests.openedx.student.apps.StudentConfig",
    "tests.openedx.waffle_utils.apps.WaffleUtilsConfig",
    "tests.openedx_authz.stubs.apps.StubsConfig",
]
OPENEDX_AUTHZ_COURSE_OVERVIEW_MODEL = "authz_stubs.CourseOverview"
OPENEDX_AUTHZ_CONTENT_LIBRARY_MODEL = "authz_stubs.ContentLibrary"

PROJECT_TYPE = os.environ.get("AUTHZ_TEST_PROJECT_TYPE", "lms.djangoapp")
_ours_first = os.environ.get("AUTHZ_TEST_PLUGIN_ORDER") == "ours-first"
_discovered = registry.get_plugin_app_configs


def _ordered(project_type):
    configs = list(_discovered(project_type))
    return sorted(configs, key=lambda c: (c.name == "authz_migration") != _ours_first)


registry.get_plugin_app_configs = _ordered

INSTALLED_APPS.extend(get_plugin_apps(PROJECT_TYPE))
add_plugins(__name__, PROJECT_TYPE, "common")
add_plugins(__name__, PROJECT_TYPE, "production")
