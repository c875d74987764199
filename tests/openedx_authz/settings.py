"""Settings of the test project with the real openedx-authz beside this app (Python 3.12+,
``tox -e openedx-authz-py312-{sqlite,postgres}``): the Open edX-shaped host of tests/openedx,
openedx-authz's apps and model file, stand-ins for the two edx-platform models its migrations
reference, and edx-platform's import paths for its handlers and commands (edx_platform/).

The apps and Casbin settings are what both packages' Open edX plugin settings give
(tests/openedx_authz/test_plugins.py checks that through edx-django-utils)."""

import os
import sys
import tempfile

from openedx_authz import ROOT_DIRECTORY

from tests.settings import *  # noqa: F403

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "edx_platform"))

INSTALLED_APPS = [  # noqa: F405
    *(app for app in INSTALLED_APPS if app != "casbin_adapter"),  # noqa: F405
    "openedx_authz.engine.apps.CasbinAdapterConfig",
    "openedx_authz.apps.OpenedxAuthzConfig",
    "config_models",
    "tests.openedx.student.apps.StudentConfig",
    "tests.openedx.waffle_utils.apps.WaffleUtilsConfig",
    "organizations",
    "tests.openedx_authz.stubs.apps.StubsConfig",
]

AUTHZ_MIGRATION_LEGACY_ROLE_MODEL = "student.CourseAccessRole"
AUTHZ_MIGRATION_COURSE_OVERRIDE_MODEL = "waffle_utils.WaffleFlagCourseOverrideModel"
AUTHZ_MIGRATION_ORG_OVERRIDE_MODEL = "waffle_utils.WaffleFlagOrgOverrideModel"

CASBIN_MODEL = os.path.join(ROOT_DIRECTORY, "engine", "config", "model.conf")
CASBIN_AUTO_LOAD_POLICY_INTERVAL = 0
CASBIN_AUTO_SAVE_POLICY = True
CASBIN_LOG_LEVEL = "WARNING"
OPENEDX_AUTHZ_COURSE_OVERVIEW_MODEL = "authz_stubs.CourseOverview"
OPENEDX_AUTHZ_CONTENT_LIBRARY_MODEL = "authz_stubs.ContentLibrary"
ENABLE_AUTOMATIC_AUTHZ_COURSE_AUTHORING_MIGRATION = False

# A second process must see the test database: on SQLite that takes a file.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.path.join(
            tempfile.gettempdir(), f"authz_migration_openedx_authz_{os.getpid()}.db"
        )
    }

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "authz-migration-openedx-authz",
    }
}

# The worker process of test_enforcers.py opens the parent's test database by name.
if os.environ.get("AUTHZ_TEST_SQLITE_NAME"):
    DATABASES["default"]["NAME"] = os.environ["AUTHZ_TEST_SQLITE_NAME"]  # noqa: F405
