"""What the admin tells a person who saves an override (messages after the redirect)."""

import pytest
from django.contrib.messages import get_messages
from django.db import DatabaseError
from django.test import override_settings
from django.urls import reverse

from authz_migration import flags, moves
from authz_migration.models import MigrationRun, OrgFlagOverride
from authz_migration.stores import casbin_rule_model

pytestmark = pytest.mark.django_db
ORG_ADD = "admin:authz_migration_orgflagoverride_add"


@pytest.fixture
def admin_client_(client, make_user):
    admin = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(admin)
    return client


def _save_org(client, org, choice="on", enabled=True):
    data = {
        "waffle_flag": flags.flag_name(),
        "org": org,
        "override_choice": choice,
        "note": "test",
    }
    if enabled:
        data["enabled"] = "on"
    response = client.post(reverse(ORG_ADD), data)
    return response, [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


@override_settings(AUTHZ_MIGRATION_AUTOMATIC=True)
def test_success_names_counts_and_links_the_run(admin_client_, make_user, grant):
    grant(make_user("alice"), "course-v1:OrgA+C1+R", "staff")
    response, msgs = _save_org(admin_client_, "OrgA")
    assert response.status_code == 302
    run = MigrationRun.objects.get()
    success = [text for level, text in msgs if level == "success" and "Moved" in text]
    assert success, msgs
    assert "Moved 1 role(s) of org OrgA to Casbin" in success[0]
    assert reverse("admin:authz_migration_migrationrun_change", args=[run.pk]) in success[0]
    assert run.triggered_by.username == "root"


@override_settings(AUTHZ_MIGRATION_AUTOMATIC=True)
def test_no_change_says_why(admin_client_, global_flag):
    global_flag(True)
    _, msgs = _save_org(admin_client_, "OrgA", "on")
    assert any(
        level == "warning" and "effective flag did not change" in text for level, text in msgs
    ), msgs
    assert not MigrationRun.objects.exists()


def test_automatic_off_says_to_run_sync(admin_client_):
    _, msgs = _save_org(admin_client_, "OrgA", "on")
    assert any("authz_migrate sync" in text for _, text in msgs), msgs


@override_settings(AUTHZ_MIGRATION_AUTOMATIC=True)
def test_failure_is_an_error_message_and_the_change_is_undone(
    admin_client_, make_user, grant, monkeypatch
):
    grant(make_user("alice"), "course-v1:OrgA+C1+R", "staff")

    def broken(*args, **kwargs):
        raise DatabaseError("injected failure")

    monkeypatch.setattr(moves, "insert_casbin", broken)
    response, msgs = _save_org(admin_client_, "OrgA", "on")
    assert response.status_code == 302  # not a server error page
    assert any(level == "error" and "injected failure" in text for level, text in msgs), msgs
    assert flags.is_authz_enabled("course-v1:OrgA+C1+R") is False
    assert not casbin_rule_model().objects.exists()
    failed = MigrationRun.objects.get(status=MigrationRun.Status.FAILED)
    assert "injected failure" in failed.metadata["error"]
    # The history shows the change and the row that restored the previous state.
    newest = OrgFlagOverride.objects.order_by("-change_date", "-id").first()
    assert newest.enabled is False and "Restored by authz_migration" in newest.note
