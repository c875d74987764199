"""Installing beside openedx-authz: both packages' Open edX plugin settings, applied in either
order through edx-django-utils, give a project that starts and passes ``manage.py check``
with openedx-authz's own model file; the system checks name what would go wrong; one override
save makes one move."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.test import override_settings
from openedx_authz import ROOT_DIRECTORY
from openedx_authz.models import AuthzCourseAuthoringMigrationRun

import authz_migration
from authz_migration import checks
from authz_migration.models import MigrationRun

REPOSITORY = Path(__file__).resolve().parents[2]
OPENEDX_AUTHZ_MODEL = os.path.join(ROOT_DIRECTORY, "engine", "config", "model.conf")
REPORT = """
import json, django
PLUGINS = ("AuthzMigrationConfig", "OpenedxAuthzConfig")
from django.conf import settings
from django.core.management import call_command
django.setup()
call_command("check", fail_level="WARNING")
casbin = [a for a in settings.INSTALLED_APPS if "asbin" in a]
print(json.dumps({"model": settings.CASBIN_MODEL, "casbin_apps": casbin,
    "plugins": [a for a in settings.INSTALLED_APPS if a.endswith(PLUGINS)]}))
"""


@pytest.mark.parametrize("project_type", ["lms.djangoapp", "cms.djangoapp"])
@pytest.mark.parametrize("order", ["authz-first", "ours-first"])
def test_both_plugins_give_a_project_that_passes_check(order, project_type):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.openedx_authz.plugin_project",
        "AUTHZ_TEST_PLUGIN_ORDER": order,
        "AUTHZ_TEST_PROJECT_TYPE": project_type,
        "PYTHONPATH": str(REPOSITORY),
    }
    done = subprocess.run(
        [sys.executable, "-c", REPORT], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["model"] == OPENEDX_AUTHZ_MODEL
    assert report["casbin_apps"] == ["openedx_authz.engine.apps.CasbinAdapterConfig"]
    expected = [
        "authz_migration.apps.AuthzMigrationConfig",
        "openedx_authz.apps.OpenedxAuthzConfig",
    ]
    assert sorted(report["plugins"]) == expected
    first = report["plugins"][0]
    assert first.startswith("authz_migration" if order == "ours-first" else "openedx_authz")


def ids(errors):
    return sorted(error.id for error in errors)


def test_the_test_project_passes_every_check():
    assert [e for e in run_checks() if e.id.startswith("authz_migration")] == []


def test_both_automatic_migrations_on_is_an_error():
    with override_settings(
        AUTHZ_MIGRATION_AUTOMATIC=True, ENABLE_AUTOMATIC_AUTHZ_COURSE_AUTHORING_MIGRATION=True
    ):
        errors = checks.check_openedx_authz()
    assert ids(errors) == ["authz_migration.E007"]
    assert "ENABLE_AUTOMATIC_AUTHZ_COURSE_AUTHORING_MIGRATION = False" in errors[0].hint


def test_this_app_s_model_file_beside_openedx_authz_is_an_error():
    with override_settings(CASBIN_MODEL=authz_migration.CASBIN_MODEL_PATH):
        assert ids(checks.check_openedx_authz()) == ["authz_migration.E008"]


@pytest.mark.parametrize("version", ["1.34.2", "2.0.0"])
def test_an_untested_openedx_authz_version_is_a_warning(monkeypatch, version):
    monkeypatch.setattr(checks, "version", lambda name: version)
    assert ids(checks.check_openedx_authz()) == ["authz_migration.W001"]


def test_the_installed_version_is_a_tested_one():
    assert checks._openedx_authz_version() >= (1, 35)
    assert ids(checks.check_openedx_authz()) == []


@pytest.mark.django_db(transaction=True)
def test_one_override_save_makes_one_move(course_override, caplog):
    from django.contrib.auth import get_user_model
    from openedx.core.djangoapps.waffle_utils.models import WaffleFlagCourseOverrideModel
    from openedx_authz import handlers

    from authz_migration.conf import legacy_role_model

    # openedx-authz's own receiver is connected to the same model (it imports it from
    # edx-platform's path: tests/openedx_authz/edx_platform).
    assert handlers.WaffleFlagCourseOverrideModel is WaffleFlagCourseOverrideModel
    user = get_user_model().objects.create(username="one")
    course = "course-v1:OrgA+C1+2024"
    legacy_role_model().objects.create(user=user, org="OrgA", course_id=course, role="staff")
    with override_settings(AUTHZ_MIGRATION_AUTOMATIC=True), caplog.at_level("INFO"):
        assert ids(checks.check_openedx_authz()) == []
        course_override(course, "on")

    assert "ENABLE_AUTOMATIC_AUTHZ_COURSE_AUTHORING_MIGRATION is set to False" in caplog.text
    assert MigrationRun.objects.count() == 1
    assert AuthzCourseAuthoringMigrationRun.objects.count() == 0
    assert not legacy_role_model().objects.exists()
