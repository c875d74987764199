"""System checks E001-E006: each fires for its bad setting, none fire for the test settings.

Model settings are only changed around direct calls of the check functions: running Django's
full model checks with a swappable setting changed would cache the swap on the model's
``_meta`` for the rest of the session.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core import checks as django_checks
from django.test import override_settings

from authz_migration import checks

MODEL_SETTINGS = [
    "AUTHZ_MIGRATION_LEGACY_ROLE_MODEL",
    "AUTHZ_MIGRATION_COURSE_OVERRIDE_MODEL",
    "AUTHZ_MIGRATION_ORG_OVERRIDE_MODEL",
]


def ids(errors) -> list[str]:
    return [e.id for e in errors]


def all_check_ids() -> list[str]:
    return ids(checks.check_models() + checks.check_casbin() + checks.check_settings())


# --- the test settings are clean ------------------------------------------------------------


def test_no_errors_with_the_test_settings():
    assert checks.check_models() == []
    assert checks.check_casbin() == []
    assert checks.check_settings() == []


def test_run_checks_reports_nothing_of_this_app():
    messages = django_checks.run_checks()
    assert [m for m in messages if (m.id or "").startswith("authz_migration.")] == []


def test_the_checks_are_registered():
    # A bad non-model setting shows up through Django's own entry point.
    with override_settings(AUTHZ_MIGRATION_FLAG_NAME=""):
        messages = django_checks.run_checks()
    assert "authz_migration.E006" in ids(messages)


# --- E001: a model setting names no installed model -----------------------------------------


@pytest.mark.parametrize("setting", MODEL_SETTINGS)
@pytest.mark.parametrize("label", ["nope.Model", "authz_migration.Nope", "not-a-label", "a.b.c"])
def test_e001_unknown_model(setting, label):
    with override_settings(**{setting: label}):
        errors = checks.check_models()
    assert ids(errors) == ["authz_migration.E001"]
    assert setting in errors[0].msg
    assert repr(label) in errors[0].msg
    assert isinstance(errors[0], django_checks.Error)


def test_e001_model_setting_that_is_not_a_string():
    with override_settings(AUTHZ_MIGRATION_LEGACY_ROLE_MODEL=None):
        errors = checks.check_models()
    assert ids(errors) == ["authz_migration.E001"]


# --- E002: a configured model lacks a field -------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "label", "missing"),
    [
        ("AUTHZ_MIGRATION_LEGACY_ROLE_MODEL", "auth.Group", "org, course_id, role"),
        ("AUTHZ_MIGRATION_LEGACY_ROLE_MODEL", "authz_migration.CourseFlagOverride", "user, org"),
        ("AUTHZ_MIGRATION_COURSE_OVERRIDE_MODEL", "authz_migration.OrgFlagOverride", "course_id"),
        ("AUTHZ_MIGRATION_ORG_OVERRIDE_MODEL", "authz_migration.CourseFlagOverride", "org"),
        (
            "AUTHZ_MIGRATION_ORG_OVERRIDE_MODEL",
            "authz_migration.MigrationRun",
            "waffle_flag, org, override_choice, enabled, change_date",
        ),
    ],
)
def test_e002_model_lacks_fields(setting, label, missing):
    with override_settings(**{setting: label}):
        errors = checks.check_models()
    assert ids(errors) == ["authz_migration.E002"]
    assert missing in errors[0].msg


def test_e002_a_reverse_relation_does_not_count_as_a_field():
    with override_settings(AUTHZ_MIGRATION_LEGACY_ROLE_MODEL="auth.Group"):
        errors = checks.check_models()
    assert "user, org, course_id, role" in errors[0].msg


def test_e001_and_e002_are_reported_per_setting():
    with override_settings(
        AUTHZ_MIGRATION_LEGACY_ROLE_MODEL="nope.Model",
        AUTHZ_MIGRATION_COURSE_OVERRIDE_MODEL="auth.Group",
        AUTHZ_MIGRATION_ORG_OVERRIDE_MODEL="authz_migration.OrgFlagOverride",
    ):
        assert ids(checks.check_models()) == ["authz_migration.E001", "authz_migration.E002"]


# --- E003 / E004: the Casbin side -----------------------------------------------------------


def test_e003_casbin_adapter_not_installed():
    apps_without = [app for app in settings.INSTALLED_APPS if app != "casbin_adapter"]
    with override_settings(INSTALLED_APPS=apps_without):
        errors = checks.check_casbin()
    assert ids(errors) == ["authz_migration.E003"]


@pytest.mark.parametrize("value", [None, "", "/nonexistent/casbin_model.conf"])
def test_e004_casbin_model_names_no_file(value):
    with override_settings(CASBIN_MODEL=value):
        errors = checks.check_casbin()
    assert ids(errors) == ["authz_migration.E004"]
    assert repr(value) in errors[0].msg


def test_e004_casbin_model_is_a_directory(tmp_path):
    with override_settings(CASBIN_MODEL=str(tmp_path)):
        assert ids(checks.check_casbin()) == ["authz_migration.E004"]


def test_e004_casbin_model_unset():
    with override_settings():
        del settings.CASBIN_MODEL
        assert not hasattr(settings, "CASBIN_MODEL")
        assert ids(checks.check_casbin()) == ["authz_migration.E004"]


def test_e004_accepts_any_existing_model_file(tmp_path):
    model = tmp_path / "model.conf"
    model.write_text("[request_definition]\nr = sub, obj, act\n")
    with override_settings(CASBIN_MODEL=str(model)):
        assert checks.check_casbin() == []


# --- E005: the role map ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "role_map",
    [
        pytest.param({"instructor": "course_admin", "staff": "course_admin"}, id="not-one-to-one"),
        pytest.param({"": "course_admin"}, id="empty-legacy"),
        pytest.param({"instructor": ""}, id="empty-casbin"),
        pytest.param({" instructor": "course_admin"}, id="space-legacy"),
        pytest.param({"instructor": "course_admin "}, id="space-casbin"),
        pytest.param({"instructor": 1}, id="non-string-casbin"),
        pytest.param({1: "course_admin"}, id="non-string-legacy"),
        pytest.param({"instructor": None}, id="none-casbin"),
        pytest.param([("instructor", "course_admin")], id="list"),
        pytest.param(None, id="none"),
        pytest.param("instructor:course_admin", id="string"),
    ],
)
def test_e005_bad_role_map(role_map):
    with override_settings(AUTHZ_MIGRATION_ROLE_MAP=role_map):
        errors = checks.check_settings()
    assert ids(errors) == ["authz_migration.E005"]


def test_e005_accepts_a_custom_one_to_one_map():
    with override_settings(AUTHZ_MIGRATION_ROLE_MAP={"instructor": "course_admin"}):
        assert checks.check_settings() == []


def test_e005_accepts_an_empty_map():
    with override_settings(AUTHZ_MIGRATION_ROLE_MAP={}):
        assert checks.check_settings() == []


# --- E006: the flag name --------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["", "   ", None, 42, ["authz.enable_course_authoring"]])
def test_e006_bad_flag_name(flag):
    with override_settings(AUTHZ_MIGRATION_FLAG_NAME=flag):
        errors = checks.check_settings()
    assert ids(errors) == ["authz_migration.E006"]


def test_e006_accepts_another_flag_name():
    with override_settings(AUTHZ_MIGRATION_FLAG_NAME="my.flag"):
        assert checks.check_settings() == []


@pytest.mark.parametrize("number", range(1, 7))
def test_every_id_is_documented_in_the_module(number):
    assert f"E00{number}" in checks.__doc__
