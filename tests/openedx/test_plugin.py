"""Open edX plugin install: edx-django-utils finds the app through its entry points and applies
its ``plugin_settings`` (runs under either test settings; needs the package installed, as
``pip install -e '.[test]'`` does, so that the entry points exist)."""

from __future__ import annotations

import importlib
import sys
import types
from importlib.metadata import entry_points

import pytest
from django.core.exceptions import ImproperlyConfigured

import authz_migration
from authz_migration.apps import AuthzMigrationConfig
from authz_migration.plugin_settings import CASBIN_ADAPTER_APP, OPENEDX_MODELS, plugin_settings

plugins = pytest.importorskip("edx_django_utils.plugins")

PROJECT_TYPES = ("lms.djangoapp", "cms.djangoapp")
APP_CONFIG_PATH = "authz_migration.apps.AuthzMigrationConfig"
EXPECTED_MODELS = {
    "AUTHZ_MIGRATION_LEGACY_ROLE_MODEL": "student.CourseAccessRole",
    "AUTHZ_MIGRATION_COURSE_OVERRIDE_MODEL": "waffle_utils.WaffleFlagCourseOverrideModel",
    "AUTHZ_MIGRATION_ORG_OVERRIDE_MODEL": "waffle_utils.WaffleFlagOrgOverrideModel",
}


@pytest.fixture
def settings_module(monkeypatch):
    """A fresh importable settings module, as add_plugins() imports LMS/CMS settings by name."""

    def make(**values):
        name = f"tests_openedx_fake_settings_{len(sys.modules)}"
        module = types.ModuleType(name)
        module.INSTALLED_APPS = ["django.contrib.auth", "waffle"]
        for key, value in values.items():
            setattr(module, key, value)
        monkeypatch.setitem(sys.modules, name, module)
        return module

    return make


@pytest.mark.parametrize("project_type", PROJECT_TYPES)
def test_the_entry_points_are_registered(project_type):
    found = {ep.name: ep.value for ep in entry_points(group=project_type)}
    assert found.get("authz_migration") == "authz_migration.apps:AuthzMigrationConfig", (
        f"no {project_type} entry point: install the package (pip install -e '.[test]')"
    )


@pytest.mark.parametrize("project_type", PROJECT_TYPES)
def test_edx_django_utils_discovers_the_app(project_type):
    assert APP_CONFIG_PATH in plugins.get_plugin_apps(project_type)
    configs = list(plugins.get_plugin_app_configs(project_type))
    assert AuthzMigrationConfig in configs


@pytest.mark.parametrize("project_type", PROJECT_TYPES)
@pytest.mark.parametrize("settings_type", ["common", "production"])
def test_add_plugins_applies_the_open_edx_settings(settings_module, project_type, settings_type):
    module = settings_module()

    plugins.add_plugins(module.__name__, project_type, settings_type)

    for name, model in EXPECTED_MODELS.items():
        assert getattr(module, name) == model
    assert module.CASBIN_MODEL == authz_migration.CASBIN_MODEL_PATH
    assert module.INSTALLED_APPS == ["django.contrib.auth", "waffle", CASBIN_ADAPTER_APP]
    # Turning moves on stays the operator's decision.
    assert not hasattr(module, "AUTHZ_MIGRATION_AUTOMATIC")


def test_other_settings_types_are_left_alone(settings_module):
    module = settings_module()
    plugins.add_plugins(module.__name__, "lms.djangoapp", "devstack")
    assert not hasattr(module, "AUTHZ_MIGRATION_LEGACY_ROLE_MODEL")


def test_explicit_host_settings_win(settings_module):
    module = settings_module(
        AUTHZ_MIGRATION_LEGACY_ROLE_MODEL="myroles.Role",
        AUTHZ_MIGRATION_AUTOMATIC=True,
        CASBIN_MODEL="/etc/casbin/model.conf",
    )
    module.INSTALLED_APPS.append("casbin_adapter")

    plugins.add_plugins(module.__name__, "lms.djangoapp", "common")
    plugins.add_plugins(module.__name__, "lms.djangoapp", "production")  # as Open edX does

    assert module.AUTHZ_MIGRATION_LEGACY_ROLE_MODEL == "myroles.Role"
    assert module.AUTHZ_MIGRATION_AUTOMATIC is True
    assert (
        module.AUTHZ_MIGRATION_COURSE_OVERRIDE_MODEL
        == EXPECTED_MODELS["AUTHZ_MIGRATION_COURSE_OVERRIDE_MODEL"]
    )
    assert module.CASBIN_MODEL == "/etc/casbin/model.conf"
    assert module.INSTALLED_APPS == ["django.contrib.auth", "waffle", "casbin_adapter"]


@pytest.mark.parametrize(
    "entry",
    ["casbin_adapter", "casbin_adapter.apps.CasbinAdapterConfig", "x.apps.CasbinAdapterConfig"],
)
def test_an_existing_casbin_adapter_entry_in_any_form_is_not_added_again(settings_module, entry):
    module = settings_module()
    module.INSTALLED_APPS.append(entry)
    plugin_settings(module)
    assert module.INSTALLED_APPS == ["django.contrib.auth", "waffle", entry]


def test_casbin_adapter_listed_twice_is_named_before_django_refuses_to_start(settings_module):
    module = settings_module()
    module.INSTALLED_APPS += ["casbin_adapter", "openedx_authz.engine.apps.CasbinAdapterConfig"]
    with pytest.raises(ImproperlyConfigured, match="installs casbin_adapter 2 times"):
        plugin_settings(module)


# Beside the real openedx-authz (either plugin order, through edx-django-utils):
# tests/openedx_authz/test_settings.py, on Python 3.12 with openedx-authz installed.


def test_plugin_settings_accepts_a_namespace_with_a_tuple_of_apps():
    namespace = types.SimpleNamespace(INSTALLED_APPS=("waffle",))
    plugin_settings(namespace)
    plugin_settings(namespace)  # idempotent
    assert namespace.INSTALLED_APPS == ["waffle", CASBIN_ADAPTER_APP]
    assert namespace.AUTHZ_MIGRATION_ORG_OVERRIDE_MODEL == "waffle_utils.WaffleFlagOrgOverrideModel"


def test_the_plugin_configuration_is_what_edx_django_utils_reads():
    config = AuthzMigrationConfig.plugin_app[plugins.PluginSettings.CONFIG]
    for project_type in PROJECT_TYPES:
        for settings_type in ("common", "production"):
            relative = config[project_type][settings_type][plugins.PluginSettings.RELATIVE_PATH]
            module = importlib.import_module(f"{AuthzMigrationConfig.name}.{relative}")
            assert module.plugin_settings is plugin_settings


def test_the_test_host_uses_the_settings_the_plugin_sets():
    host = importlib.import_module("tests.settings_openedx")
    assert OPENEDX_MODELS == EXPECTED_MODELS
    assert {name: getattr(host, name) for name in EXPECTED_MODELS} == EXPECTED_MODELS
