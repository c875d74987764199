"""The basic admin: the pages load, runs are read-only, override saves record their author."""

from __future__ import annotations

import importlib.util

import pytest
from django.contrib import admin
from django.db.models.options import Options
from django.urls import reverse
from django.utils.html import escape

from authz_migration.models import (
    CourseAccessRole,
    CourseFlagOverride,
    MigrationRun,
    OrgFlagOverride,
)
from tests.conftest import FLAG

COURSE = "course-v1:OrgA+C1+2024"
MODELS = ["courseaccessrole", "courseflagoverride", "orgflagoverride", "migrationrun"]


@pytest.fixture
def superuser(make_user):
    return make_user("admin", is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(client, superuser):
    client.force_login(superuser)
    return client


@pytest.fixture
def some_rows(make_user, grant, course_override, org_override, superuser):
    user = make_user("alice")
    grant(user, COURSE, "staff")
    grant(user, "", "instructor", org="OrgA")
    course_override(COURSE, "on", changed_by=superuser)
    org_override("OrgA", "off", enabled=False)
    MigrationRun.objects.create(
        migration_type="forward",
        scope_type="course",
        scope_key=COURSE,
        trigger="signal",
        status="partial_success",
        triggered_by=superuser,
        metadata={"counts": {"moved": 1}, "unmoved": {"user gone": ["<b>bob</b>"]}},
    )
    MigrationRun.objects.create(
        migration_type="rollback", scope_type="instance", scope_key="", trigger="command"
    )


def url(model: str, view: str, *args) -> str:
    return reverse(f"admin:authz_migration_{model}_{view}", args=args)


def test_all_four_models_are_registered():
    for model in (CourseAccessRole, CourseFlagOverride, OrgFlagOverride, MigrationRun):
        assert admin.site.is_registered(model)


def test_admin_classes_pass_django_s_admin_checks():
    for model in (CourseAccessRole, CourseFlagOverride, OrgFlagOverride, MigrationRun):
        assert admin.site._registry[model].check() == []


@pytest.mark.parametrize("model", MODELS)
def test_changelists_load(admin_client, some_rows, model):
    response = admin_client.get(url(model, "changelist"))
    assert response.status_code == 200


@pytest.mark.parametrize("model", MODELS)
def test_changelist_search_and_filters_work(admin_client, some_rows, model):
    response = admin_client.get(url(model, "changelist"), {"q": "OrgA"})
    assert response.status_code == 200


def test_run_changelist_filters(admin_client, some_rows):
    response = admin_client.get(url("migrationrun", "changelist"), {"status": "partial_success"})
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1


def test_run_admin_has_no_add_button_and_refuses_add(admin_client, some_rows):
    changelist = admin_client.get(url("migrationrun", "changelist"))
    assert url("migrationrun", "add") not in changelist.content.decode()
    count = MigrationRun.objects.count()
    for response in (
        admin_client.get(url("migrationrun", "add")),
        admin_client.post(url("migrationrun", "add"), {}),
    ):
        assert (response.status_code, response.url) == (302, url("migrationrun", "changelist"))
    assert MigrationRun.objects.count() == count


def test_run_admin_is_view_only(admin_client, some_rows):
    run = MigrationRun.objects.get(scope_type="course")
    response = admin_client.get(url("migrationrun", "change", run.pk))
    assert response.status_code == 200
    page = response.content.decode()
    # Pretty-printed, escaped JSON in a <pre>; no save button.
    assert "<pre>" + escape('{\n  "counts": {\n    "moved": 1\n  },') in page
    assert "&lt;b&gt;bob&lt;/b&gt;" in page
    assert "<b>bob</b>" not in page
    assert 'name="_save"' not in page

    before = MigrationRun.objects.values().get(pk=run.pk)
    response = admin_client.post(url("migrationrun", "change", run.pk), {"status": "completed"})
    assert response.status_code == 403
    assert MigrationRun.objects.values().get(pk=run.pk) == before


def test_run_admin_refuses_delete(admin_client, some_rows):
    run = MigrationRun.objects.first()
    response = admin_client.post(url("migrationrun", "delete", run.pk), {"post": "yes"})
    assert (response.status_code, response.url) == (302, url("migrationrun", "change", run.pk))
    assert MigrationRun.objects.filter(pk=run.pk).exists()


def test_adding_a_course_override_records_who_saved_it(admin_client, superuser):
    response = admin_client.post(
        url("courseflagoverride", "add"),
        {
            "waffle_flag": FLAG,
            "course_id": COURSE,
            "override_choice": "on",
            "enabled": "on",
            "note": "pilot course",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    row = CourseFlagOverride.objects.get()
    assert (row.waffle_flag, row.course_id, row.override_choice, row.enabled) == (
        FLAG,
        COURSE,
        "on",
        True,
    )
    assert row.changed_by == superuser
    assert row.note == "pilot course"


def test_adding_an_org_override_records_who_saved_it(admin_client, superuser):
    response = admin_client.post(
        url("orgflagoverride", "add"),
        {"waffle_flag": FLAG, "org": "OrgA", "override_choice": "off", "enabled": "on"},
    )
    assert response.status_code == 302
    row = OrgFlagOverride.objects.get()
    assert (row.org, row.override_choice, row.enabled) == ("OrgA", "off", True)
    assert row.changed_by == superuser


def test_changing_an_override_in_the_admin_adds_a_history_row(
    admin_client, superuser, course_override
):
    old = course_override(COURSE, "on")
    response = admin_client.post(
        url("courseflagoverride", "change", old.pk),
        {"waffle_flag": FLAG, "course_id": COURSE, "override_choice": "off", "note": ""},
    )
    assert response.status_code == 302
    assert CourseFlagOverride.objects.count() == 2
    old.refresh_from_db()
    assert (old.override_choice, old.enabled, old.changed_by) == ("on", True, None)
    new = CourseFlagOverride.objects.exclude(pk=old.pk).get()
    assert (new.override_choice, new.enabled, new.changed_by) == ("off", False, superuser)


def test_swapped_models_are_not_registered(monkeypatch):
    """A host that swaps a model keeps its own admin for it; ours stays out of the way."""
    site = admin.AdminSite()
    monkeypatch.setattr(admin, "site", site)
    targets = {CourseAccessRole, CourseFlagOverride, OrgFlagOverride}
    original = Options.swapped  # a property on Django 4.2, a cached_property on 5.x

    def swapped(opts):
        return "host.SomeModel" if opts.model in targets else original.__get__(opts)

    monkeypatch.setattr(Options, "swapped", property(swapped))

    # Run the registration (authz_migration/admin/__init__.py) again as a separate module copy,
    # so the real module (which the real admin site holds) stays as it is for other tests. The
    # copy is a plain module inside the real package, so its relative imports resolve to the
    # real submodules.
    import authz_migration.admin

    spec = importlib.util.spec_from_file_location(
        "authz_migration.admin._swapped_copy",
        authz_migration.admin.__file__,
        submodule_search_locations=None,
    )
    spec.loader.exec_module(importlib.util.module_from_spec(spec))

    assert site.is_registered(MigrationRun)
    for model in (CourseAccessRole, CourseFlagOverride, OrgFlagOverride):
        assert not site.is_registered(model)
