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
    admin_client_, make_user, grant, monkeypatch, python_path
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


# --- issue 17: what an operator reads ---------------------------------------------------------


def test_enabled_starts_ticked_on_the_add_forms(admin_client_):
    for model in ("orgflagoverride", "courseflagoverride"):
        response = admin_client_.get(reverse(f"admin:authz_migration_{model}_add"))
        assert response.context["adminform"].form.initial["enabled"] is True


@override_settings(AUTHZ_MIGRATION_AUTOMATIC=True)
def test_force_on_saved_unticked_says_the_override_is_not_enabled(admin_client_, make_user, grant):
    grant(make_user("alice"), "course-v1:OrgA+C1+R", "staff")
    _, msgs = _save_org(admin_client_, "OrgA", "on", enabled=False)
    (text,) = [text for level, text in msgs if level == "warning"]
    assert text.startswith("Saved as not enabled: this override forces nothing")
    assert "tick “Enabled” to force the flag on" in text
    assert "No roles moved: the effective flag did not change" in text
    assert not MigrationRun.objects.exists()


@override_settings(AUTHZ_MIGRATION_AUTOMATIC=True)
def test_org_save_names_pinned_courses_and_the_org_wide_split(
    admin_client_, make_user, grant, course_override
):
    alice, bob = make_user("alice"), make_user("bob")
    grant(alice, "course-v1:OrgA+C1+R", "staff")
    grant(bob, "course-v1:OrgA+C2+R", "staff")
    grant(bob, "course-v1:OrgA+C2+R", "instructor")
    grant(alice, "", "staff", org="OrgA")
    course_override("course-v1:OrgA+C2+R", "off")
    _, msgs = _save_org(admin_client_, "OrgA", "on")
    # A warning, not a success: people of C2 lost a role they had.
    ((level, text),) = [(level, text) for level, text in msgs if "Moved" in text]
    assert level == "warning"
    assert "Moved 2 role(s) of org OrgA to Casbin" in text
    # Rows and courses, each with its unit.
    assert "Left alone: 2 role row(s) of 1 course pinned by its own override" in text
    assert (
        "1 course pinned to the legacy table (course-v1:OrgA+C2+R) no longer sees the org-wide "
        "roles of OrgA, which now live in Casbin" in text
    )


@override_settings(AUTHZ_MIGRATION_AUTOMATIC=True)
def test_saving_the_global_flag_shows_the_warning(admin_client_, make_user, grant, global_flag):
    flag = global_flag(False)
    grant(make_user("alice"), "course-v1:OrgA+C1+R", "staff")
    url = reverse("admin:waffle_flag_change", args=[flag.pk])
    page = admin_client_.get(url).context["adminform"].form.initial
    data = {k: v for k, v in page.items() if isinstance(v, bool | str)}
    data.update({"everyone": "true", "percent": "", "note": "", "languages": ""})
    for field in ("created", "modified"):  # split date and time widgets
        data.update({f"{field}_0": "2026-01-01", f"{field}_1": "00:00:00"})
    response = admin_client_.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    msgs = [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]
    run = MigrationRun.objects.get()
    assert (run.trigger, run.status) == ("global_flag", "skipped")
    warnings = [text for level, text in msgs if level == "warning"]
    assert len(warnings) == 1, msgs
    assert "The global flag authz.enable_course_authoring is now on" in warnings[0]
    assert reverse("admin:authz_migration_migrationrun_change", args=[run.pk]) in warnings[0]
    assert not casbin_rule_model().objects.exists()
    # OrgA is held on its previous state (docs/decisions/0013) and the message says so.
    assert "1 org(s) whose roles still sit in the legacy table are held" in warnings[0]
    assert "run `authz_migrate cutover --to authz` to move them" in warnings[0]
    assert run.metadata["pinned_orgs"]["items"] == ["OrgA"]
    assert not flags.is_authz_enabled("course-v1:OrgA+C1+R")


def test_the_run_list_keeps_course_keys_on_one_line(admin_client_):
    MigrationRun.objects.create(
        migration_type="forward",
        scope_type="course",
        scope_key="course-v1:OrgA+C1+R",
        trigger="admin",
    )
    page = admin_client_.get(reverse("admin:authz_migration_migrationrun_changelist"))
    html = page.content.decode()
    assert 'course <span class="authz-key">course-v1:OrgA+C1+R</span>' in html
    assert ".authz-key { white-space: nowrap;" in html
    assert "Admin action" in html


@override_settings(AUTHZ_MIGRATION_AUTOMATIC=True)
def test_waffles_enable_for_everyone_action_shows_the_warning_too(
    admin_client_, make_user, grant, global_flag
):
    flag = global_flag(False)
    grant(make_user("alice"), "course-v1:OrgA+C1+R", "staff")
    response = admin_client_.post(
        reverse("admin:waffle_flag_changelist"),
        {"action": "enable_for_all", "_selected_action": [flag.pk]},
    )
    assert response.status_code == 302
    msgs = [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]
    assert any(level == "warning" and "is now on" in text for level, text in msgs), msgs
    assert MigrationRun.objects.get().trigger == "global_flag"
