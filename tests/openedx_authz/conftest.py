"""The real openedx-authz beside this app. Collected only under
``DJANGO_SETTINGS_MODULE=tests.openedx_authz.settings`` (tox -e openedx-authz-py312-*), where
openedx-authz is installed; elsewhere nothing here is imported."""

from __future__ import annotations

from django.conf import settings

SETTINGS = "tests.openedx_authz.settings"

collect_ignore_glob = [] if settings.SETTINGS_MODULE == SETTINGS else ["*"]


import pytest  # noqa: E402


@pytest.fixture
def authz_schema(transactional_db):
    """openedx-authz's own role -> permission schema, loaded by its own command into the
    test database (each transactional test starts from empty tables)."""
    from io import StringIO

    from django.core.management import call_command

    call_command("load_authz_schema", stdout=StringIO())


@pytest.fixture
def fresh_enforcer():
    """openedx-authz's enforcer as a just-started worker has it: none loaded yet. Its
    singleton outlives a test; the next check loads the committed policy."""
    from openedx_authz.engine.enforcer import AuthzEnforcer

    AuthzEnforcer._last_policy_loaded_version = None
    yield AuthzEnforcer
    AuthzEnforcer._last_policy_loaded_version = None
