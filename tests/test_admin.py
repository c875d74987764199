"""The admin experience (issue 6), with Django's test client: permissions, the override list
(current rows, effective flag, history), the override form, the "Verify" and "Sync now"
actions, and the read-only run pages.

tests/test_admin_basic.py covers registration and the basic pages; tests/test_admin_feedback.py
what a save tells its author; tests/test_admin_browser.py the whole flow in a real browser.
"""

from __future__ import annotations

import re

import pytest
from casbin_adapter.models import CasbinRule
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import DatabaseError, connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from authz_migration import flags, moves
from authz_migration.admin import FlagOverrideAdminMixin, format_duration, run_report
from authz_migration.conf import legacy_role_model
from authz_migration.models import CourseFlagOverride, MigrationRun, OrgFlagOverride, ScopeLock
from tests.conftest import FLAG

pytestmark = pytest.mark.django_db

ORG = "OrgA"
C1 = "course-v1:OrgA+C1+2024"
C2 = "course-v1:OrgA+C2+2024"
BAD_KEY = "course-v1:OrgA+Intro to CS+2024"  # a legacy row no move can carry
automatic_on = override_settings(AUTHZ_MIGRATION_AUTOMATIC=True)


def url(model: str, view: str, *args) -> str:
    return reverse(f"admin:authz_migration_{model}_{view}", args=args)


def msgs(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


def perms(*codenames: str) -> list[Permission]:
    return [
        Permission.objects.get(content_type__app_label="authz_migration", codename=codename)
        for codename in codenames
    ]


@pytest.fixture(autouse=True)
def _lock_rows():
    """The guard's lock rows, created in the test's transaction: on PostgreSQL and MariaDB the
    guard would otherwise create them on a side connection, committed, outliving the test."""
    keys = ["instance", f"org:{ORG}"]
    ScopeLock.objects.bulk_create([ScopeLock(key=key) for key in keys], ignore_conflicts=True)


@pytest.fixture
def login(client, make_user):
    """login(*codenames, superuser=False) -> the logged-in staff user with those permissions."""

    def login_(*codenames: str, superuser: bool = False):
        user = make_user(is_staff=True, is_superuser=superuser)
        user.user_permissions.set(perms(*codenames))
        client.force_login(user)
        return user

    return login_


@pytest.fixture
def roles(make_user, grant):
    """OrgA: two courses with authoring roles, an org-wide role, a non-authoring role; OrgB:
    one course."""
    alice, bob = make_user("alice"), make_user("bob")
    grant(alice, C1, "instructor")
    grant(bob, C1, "staff")
    grant(bob, C2, "staff")
    grant(alice, "", "staff", org=ORG)
    grant(bob, C1, "finance_admin")  # not an authoring role: never moves
    grant(alice, "course-v1:OrgB+X1+2024", "staff")
    return alice, bob


def where(course_or_org: str) -> set[str]:
    """The systems holding roles of a course (or of an org's org-wide roles)."""
    systems = set()
    legacy = legacy_role_model().objects.filter(role__in=["instructor", "staff"])
    if (
        legacy.filter(course_id=course_or_org).exists()
        or legacy.filter(course_id="", org=course_or_org).exists()
    ):
        systems.add("legacy")
    scope = course_or_org if ":" in course_or_org else f"course-v1:{course_or_org}+*"
    if CasbinRule.objects.filter(v2=f"course-v1^{scope}").exists():
        systems.add("casbin")
    return systems


def post_action(client, model: str, action: str, rows, **extra):
    data = {"action": action, admin.helpers.ACTION_CHECKBOX_NAME: [row.pk for row in rows]}
    data.update(extra)
    return client.post(url(model, "changelist"), data, follow=True)


def add_org(client, org=ORG, choice="on", enabled=True, flag=FLAG):
    data = {"waffle_flag": flag, "org": org, "override_choice": choice, "note": "test"}
    if enabled:
        data["enabled"] = "on"
    return client.post(url("orgflagoverride", "add"), data)


# --- permissions ----------------------------------------------------------------------------

OVERRIDE_PAGES = [
    ("courseflagoverride", "changelist"),
    ("courseflagoverride", "add"),
    ("orgflagoverride", "changelist"),
    ("orgflagoverride", "add"),
]


@pytest.mark.parametrize("model,view", [*OVERRIDE_PAGES, ("migrationrun", "changelist")])
def test_staff_without_permissions_is_refused(client, login, model, view):
    login()
    assert client.get(url(model, view)).status_code == 403


def test_staff_without_permissions_cannot_see_a_run_or_toggle(client, login):
    run = MigrationRun.objects.create(migration_type="forward", scope_type="org", scope_key=ORG)
    login()
    assert client.get(url("migrationrun", "change", run.pk)).status_code == 403
    assert add_org(client).status_code == 403
    assert not OrgFlagOverride.objects.exists()
    index = client.get(reverse("admin:index")).content.decode()
    assert url("orgflagoverride", "add") not in index
    assert url("migrationrun", "changelist") not in index


def test_view_permission_on_runs_shows_them_read_only(client, login, superuser_run):
    login("view_migrationrun")
    changelist = client.get(url("migrationrun", "changelist"))
    assert changelist.status_code == 200
    assert changelist.context["cl"].result_count == 1
    assert url("migrationrun", "add") not in changelist.content.decode()
    detail = client.get(url("migrationrun", "change", superuser_run.pk))
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()
    assert not detail.context["has_delete_permission"]

    before = MigrationRun.objects.values().get()
    # Add and delete URLs send a reader back with a word on why, rather than a bare 403.
    for response in (
        client.get(url("migrationrun", "add")),
        client.post(url("migrationrun", "add"), {"status": "failed"}),
    ):
        assert response.status_code == 302
        assert response.url == url("migrationrun", "changelist")
    assert "Runs are not added by hand" in msgs(client.get(response.url))[0][1]
    change = client.post(url("migrationrun", "change", superuser_run.pk), {"status": "failed"})
    assert change.status_code == 403
    delete = client.post(url("migrationrun", "delete", superuser_run.pk), {"post": "yes"})
    assert delete.status_code == 302
    assert delete.url == url("migrationrun", "change", superuser_run.pk)
    assert "Runs are not deleted" in msgs(client.get(delete.url))[0][1]
    assert MigrationRun.objects.values().get() == before
    # Runs only: the overrides stay out of reach.
    assert client.get(url("orgflagoverride", "changelist")).status_code == 403


def test_the_change_permission_on_runs_does_not_show_them(client, login, superuser_run):
    login("change_migrationrun")
    assert client.get(url("migrationrun", "changelist")).status_code == 403
    assert client.get(url("migrationrun", "change", superuser_run.pk)).status_code == 403


@pytest.mark.parametrize("superuser", [False, True], ids=["view-perm", "superuser"])
def test_nobody_adds_edits_or_deletes_runs(client, login, superuser_run, superuser):
    login("view_migrationrun", superuser=superuser)
    run_admin = admin.site._registry[MigrationRun]
    request = client.get(url("migrationrun", "changelist")).wsgi_request
    assert run_admin.has_view_permission(request)
    assert not run_admin.has_add_permission(request)
    assert not run_admin.has_change_permission(request, superuser_run)
    assert not run_admin.has_delete_permission(request, superuser_run)
    assert "delete_selected" not in run_admin.get_actions(request)


@pytest.fixture
def superuser_run(make_user):
    return MigrationRun.objects.create(
        migration_type="forward",
        scope_type="org",
        scope_key=ORG,
        trigger="signal",
        status="completed",
        triggered_by=make_user("root", is_staff=True, is_superuser=True),
        metadata={"counts": {"moved": 3, "could_not_move": 0}, "duration_seconds": 0.25},
    )


def test_change_permission_on_overrides_can_toggle(client, login):
    user = login("change_orgflagoverride")
    assert client.get(url("orgflagoverride", "add")).status_code == 200
    response = add_org(client)
    assert response.status_code == 302
    row = OrgFlagOverride.objects.get()
    assert (row.org, row.override_choice, row.enabled, row.changed_by) == (ORG, "on", True, user)
    # The course overrides are another model, with their own permission.
    assert client.get(url("courseflagoverride", "add")).status_code == 403


def test_the_add_permission_alone_does_not_toggle(client, login):
    login("add_orgflagoverride", "view_orgflagoverride")
    assert client.get(url("orgflagoverride", "add")).status_code == 403
    assert add_org(client).status_code == 403
    assert not OrgFlagOverride.objects.exists()
    changelist = client.get(url("orgflagoverride", "changelist")).content.decode()
    assert url("orgflagoverride", "add") not in changelist


def test_view_permission_on_overrides_offers_verify_but_not_sync(client, login, org_override):
    row = org_override(ORG, "on")
    login("view_orgflagoverride")
    response = client.get(url("orgflagoverride", "changelist"))
    assert response.status_code == 200
    actions = dict(response.context["action_form"].fields["action"].choices)
    assert "verify_scopes" in actions
    assert "sync_scopes" not in actions
    # Posting the action anyway does nothing.
    response = post_action(client, "orgflagoverride", "sync_scopes", [row])
    assert ("warning", "No action selected.") in msgs(response)
    assert not MigrationRun.objects.exists()


def test_nobody_deletes_override_rows(client, login, org_override):
    row = org_override(ORG, "on")
    login(superuser=True)
    assert client.post(url("orgflagoverride", "delete", row.pk), {"post": "yes"}).status_code == 403
    response = client.get(url("orgflagoverride", "changelist"))
    actions = dict(response.context["action_form"].fields["action"].choices)
    assert "delete_selected" not in actions
    assert {"verify_scopes", "sync_scopes"} <= set(actions)
    assert OrgFlagOverride.objects.filter(pk=row.pk).exists()


def test_run_link_in_save_message_only_for_who_can_see_runs(client, login, roles):
    login("change_orgflagoverride")
    with automatic_on:
        response = add_org(client)
    run = MigrationRun.objects.get()
    text = next(text for level, text in msgs(response) if "Moved" in text)
    assert f"run #{run.pk}" in text
    assert url("migrationrun", "change", run.pk) not in text


# --- the override list ------------------------------------------------------------------------


def results(response) -> list:
    return list(response.context["cl"].result_list)


def info(row):
    """What the changelist computed for a row (current, effective flag)."""
    return row._authz_migration_row


def test_the_list_shows_the_current_row_per_key_and_history_on_request(client, login, org_override):
    login(superuser=True)
    first = org_override(ORG, "on")
    newest = org_override(ORG, "off")
    other = org_override("OrgB", "on")
    other_flag = org_override(ORG, "on", flag="some.other.flag")

    current = results(client.get(url("orgflagoverride", "changelist")))
    assert {row.pk for row in current} == {newest.pk, other.pk, other_flag.pk}
    assert all(info(row).current for row in current)
    everything = results(client.get(url("orgflagoverride", "changelist"), {"show_history": "1"}))
    assert len(everything) == 4
    assert {row.pk for row in everything if not info(row).current} == {first.pk}


def test_the_history_link_lists_every_row_of_one_key(client, login, course_override):
    login(superuser=True)
    rows = [course_override(C1, "on"), course_override(C1, "off"), course_override(C1, "on")]
    course_override(C2, "on")
    page = client.get(url("courseflagoverride", "changelist")).content.decode()
    links = re.findall(r'href="([^"]*show_history=1[^"]*course_id=[^"]*C1[^"]*)"', page)
    assert links, page
    history = client.get(links[0].replace("&amp;", "&"))
    assert [row.pk for row in results(history)] == [row.pk for row in reversed(rows)]
    current = [info(row).current for row in results(history)]
    assert current == [True, False, False]
    # The sidebar names the key and offers the way back.
    assert "All keys" in history.content.decode()


def test_the_effective_flag_column_agrees_with_the_flags(
    client, login, global_flag, org_override, course_override
):
    login(superuser=True)
    global_flag(False)
    org_override(ORG, "on")
    course_override(C1, "off")
    course_override(C2, "off", enabled=False)  # unset: falls through to the org
    course_override("course-v1:OrgB+X1+2024", "on", enabled=False)  # falls through to global

    response = client.get(url("courseflagoverride", "changelist"))
    shown = {row.course_id: info(row).effective for row in results(response)}
    for course, state in shown.items():
        assert state == flags.effective_state(course), course
    assert shown[C1] == flags.EffectiveFlag(False, flags.COURSE_OVERRIDE)
    assert shown[C2] == flags.EffectiveFlag(True, flags.ORG_OVERRIDE)
    page = response.content.decode()
    assert '<strong>on</strong> (Casbin)<br><small class="quiet">by org override</small>' in page
    assert (
        '<strong>off</strong> (legacy table)<br><small class="quiet">by global flag</small>' in page
    )

    orgs = client.get(url("orgflagoverride", "changelist"))
    (org_row,) = results(orgs)
    assert info(org_row).effective == flags.org_effective_state(ORG)


def test_rows_of_other_flags_and_invalid_keys_have_no_effective_flag(
    client, login, course_override
):
    login(superuser=True)
    course_override("not a course key", "on")
    course_override(C1, "on", flag="some.other.flag")
    page = client.get(url("courseflagoverride", "changelist")).content.decode()
    assert "invalid key" in page
    assert "is not a course key of the form" in page  # the reason, as a tooltip


def test_the_list_takes_a_fixed_number_of_queries_per_page(
    client, login, org_override, course_override
):
    login(superuser=True)

    def queries(model: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url(model, "changelist")).status_code == 200
        return len(captured)

    org_override("Org0", "on")
    course_override("course-v1:Org0+C+R", "on")
    few = queries("orgflagoverride"), queries("courseflagoverride")
    for i in range(1, 25):
        org_override(f"Org{i}", "on" if i % 2 else "off")
        org_override(f"Org{i}", "on", enabled=bool(i % 3))
        course_override(f"course-v1:Org{i}+C+R", "off")
    many = queries("orgflagoverride"), queries("courseflagoverride")
    assert many == few


# --- the override form ----------------------------------------------------------------------


def test_the_add_form_starts_with_the_watched_flag_and_radio_choices(client, login):
    login(superuser=True)
    response = client.get(url("orgflagoverride", "add"))
    form = response.context["adminform"].form
    assert form.initial["waffle_flag"] == FLAG
    page = response.content.decode()
    assert 'type="radio" name="override_choice" value="on"' in page
    assert "Force on" in page and "Force off" in page


@pytest.mark.parametrize(
    "model,field,value",
    [
        ("courseflagoverride", "course_id", "not a course key"),
        ("courseflagoverride", "course_id", "course-v1:OrgA+Intro to CS+2024"),
        ("orgflagoverride", "org", "Org A"),
        ("orgflagoverride", "org", "OrgA+"),
    ],
)
def test_a_malformed_key_is_a_form_error(client, login, model, field, value):
    login(superuser=True)
    data = {"waffle_flag": FLAG, field: value, "override_choice": "on", "enabled": "on"}
    with automatic_on:
        response = client.post(url(model, "add"), data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    assert value in str(errors[field])
    assert not CourseFlagOverride.objects.exists() and not OrgFlagOverride.objects.exists()
    assert not MigrationRun.objects.exists()


def test_keys_of_other_flags_are_not_this_app_s_business(client, login):
    login(superuser=True)
    data = {"waffle_flag": "some.other.flag", "course_id": "anything", "override_choice": "on"}
    assert client.post(url("courseflagoverride", "add"), data).status_code == 302


# --- actions --------------------------------------------------------------------------------


def test_verify_shows_drift_and_sync_now_fixes_it(client, login, roles, org_override):
    user = login(superuser=True)
    row = org_override(ORG, "on")  # automatic moves are off: the roles stay behind

    response = post_action(client, "orgflagoverride", "verify_scopes", [row])
    ((level, text),) = msgs(response)
    assert level == "warning"
    assert "Drift in 3 scopes" in text
    assert f"<br>• {C1}: flag on, so roles belong in Casbin; 2 still in the legacy table" in text
    assert f"<br>• {ORG} (org-wide): flag on" in text
    assert "OrgB" not in text

    response = post_action(client, "orgflagoverride", "sync_scopes", [row])
    run = MigrationRun.objects.get()
    assert (run.trigger, run.triggered_by, run.scope_type, run.scope_key) == (
        "admin",
        user,
        "org",
        ORG,
    )
    assert run.migration_type == "forward" and run.status == "completed"
    ((level, text),) = msgs(response)
    assert level == "success"
    assert f"Sync of org {ORG}: moved 4 role(s) to Casbin" in text
    assert f'<a href="{url("migrationrun", "change", run.pk)}">run #{run.pk}</a>' in text
    assert "not migrated: 1" in text
    assert where(C1) == where(C2) == where(ORG) == {"casbin"}
    assert where("course-v1:OrgB+X1+2024") == {"legacy"}

    response = post_action(client, "orgflagoverride", "verify_scopes", [row])
    assert msgs(response) == [
        ("success", f"No drift: every role of {ORG} sits in the system its flag points to.")
    ]


def test_sync_now_with_nothing_to_move_says_so_and_records_no_run(
    client, login, roles, course_override
):
    # The rule of the command too (reporting.is_empty_pass): an empty pass records no run.
    login(superuser=True)
    row = course_override(C1, "off")  # the global flag is off too: nothing to move
    response = post_action(client, "courseflagoverride", "sync_scopes", [row])
    assert not MigrationRun.objects.exists()
    ((level, text),) = msgs(response)
    assert level == "info"
    assert f"Sync of course {C1}: nothing to move to the legacy table" in text
    assert "(no run recorded)" in text


def test_sync_now_of_many_scopes_stops_its_messages_after_twenty(client, login, org_override):
    login(superuser=True)
    rows = [org_override(f"Org{i:02d}", "off") for i in range(22)]
    response = post_action(client, "orgflagoverride", "sync_scopes", rows)
    found = msgs(response)
    assert [level for level, _text in found] == ["info"] * 21
    assert found[0][1].startswith("Sync of org Org00: nothing to move")
    assert found[-1][1] == "… and 2 more runs, under Migration runs."


def test_sync_now_of_an_org_with_a_course_pinned_the_other_way(
    client, login, roles, org_override, course_override
):
    login(superuser=True)
    course_override(C2, "off")
    row = org_override(ORG, "on")
    response = post_action(client, "orgflagoverride", "sync_scopes", [row])
    assert where(C1) == {"casbin"} and where(C2) == {"legacy"}
    texts = [text for _, text in msgs(response)]
    assert len(texts) == 2 and MigrationRun.objects.count() == 1
    assert any("moved 3 role(s) to Casbin" in text for text in texts), texts
    assert any("nothing to move to the legacy table" in text for text in texts), texts


def test_a_failed_sync_is_an_error_message(client, login, roles, org_override, monkeypatch):
    login(superuser=True)
    row = org_override(ORG, "on")

    def broken(*args, **kwargs):
        raise DatabaseError("injected failure")

    monkeypatch.setattr(moves, "insert_casbin", broken)
    response = post_action(client, "orgflagoverride", "sync_scopes", [row])
    assert response.status_code == 200
    ((level, text),) = msgs(response)
    assert level == "error"
    assert "failed; nothing moved" in text and "injected failure" in text
    assert MigrationRun.objects.get().status == "failed"
    assert where(C1) == {"legacy"}


def test_actions_leave_out_other_flags_and_invalid_keys(client, login, course_override):
    login(superuser=True)
    rows = [course_override("not a course key", "on"), course_override(C1, "on", flag="x.y")]
    response = post_action(client, "courseflagoverride", "sync_scopes", rows)
    levels = dict(msgs(response))
    assert "not a course key" in levels["error"]
    assert "x.y" in levels["info"]
    assert not MigrationRun.objects.exists()
    response = post_action(client, "courseflagoverride", "verify_scopes", rows)
    assert response.status_code == 200


def test_a_course_and_its_org_selected_together_are_verified_once(
    client, login, roles, org_override, course_override
):
    login(superuser=True)
    rows = [org_override(ORG, "on")]
    response = post_action(client, "orgflagoverride", "verify_scopes", rows)
    org_text = msgs(response)[0][1]
    rows = [course_override(C1, "on")]
    response = post_action(client, "courseflagoverride", "verify_scopes", rows)
    course_text = msgs(response)[0][1]
    assert org_text.count(C1) == course_text.count(C1) == 1


# --- runs -----------------------------------------------------------------------------------


@pytest.fixture
def real_runs(client, login, roles, course_override, grant, make_user):
    """A partial-success org run with an excluded course and an org-wide split, made through
    the admin, and a failed one."""
    login(superuser=True)
    grant(make_user("carol"), BAD_KEY, "staff", org=ORG)
    course_override(C2, "off")
    with automatic_on:
        add_org(client, ORG, "on")
    partial = MigrationRun.objects.get()
    return partial


def test_the_run_list_shows_what_a_reader_needs(client, real_runs):
    page = client.get(url("migrationrun", "changelist")).content.decode()
    assert '<span class="authz-status authz-status-partial_success">Partial success</span>' in page
    row = re.search(r"<tr>.*?</tr>", page.split("<tbody>")[1], re.S).group(0)
    cells = [
        re.sub(r"<(?!br>)[^>]+>", "", cell).strip()
        for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)
    ]
    # id, status (moved, could not move), scope (direction), trigger (who), when (how long),
    # and no checkbox: there is no action on runs

    assert cells[0] == str(real_runs.pk)
    assert cells[1] == "Partial success<br>3 moved · 1 could not move"
    assert '3 moved · <span class="authz-stuck">1 could not move</span>' in page
    assert cells[2] == f"org {ORG}<br>legacy → Casbin"
    assert cells[3] == f"Override saved<br>by {real_runs.triggered_by.username}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d<br>\d+\.\d{3} s", cells[4]), cells[4]


def test_the_run_list_is_searchable_and_filterable(client, login, superuser_run):
    login(superuser=True)
    MigrationRun.objects.create(
        migration_type="rollback", scope_type="course", scope_key=C1, status="failed"
    )
    search = client.get(url("migrationrun", "changelist"), {"q": "C1"})
    assert [run.scope_key for run in results(search)] == [C1]
    for params, count in [
        ({"status__exact": "failed"}, 1),
        ({"migration_type__exact": "forward"}, 1),
        ({"scope_type__exact": "org"}, 1),
        ({"trigger__exact": "signal"}, 1),
        ({"created_at__gte": "2000-01-01 00:00:00+00:00"}, 2),
    ]:
        response = client.get(url("migrationrun", "changelist"), params)
        assert response.context["cl"].result_count == count, params


def test_the_run_list_takes_a_fixed_number_of_queries(client, login, make_user):
    login(superuser=True)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            client.get(url("migrationrun", "changelist"))
        return len(captured)

    def runs(n):
        for i in range(n):
            MigrationRun.objects.create(
                migration_type="forward",
                scope_type="org",
                scope_key=f"Org{i}",
                triggered_by=make_user(),
                metadata={"counts": {"moved": i}},
            )

    runs(2)
    few = queries()
    runs(20)
    assert queries() == few


def test_the_run_page_renders_the_metadata(client, real_runs):
    response = client.get(url("migrationrun", "change", real_runs.pk))
    page = response.content.decode()
    assert response.status_code == 200
    assert (
        f"Moved 3 role(s) of org {ORG} from the legacy table to Casbin; 1 row(s) could not move"
        in page
    )
    # The flag change, the counts, the rows that could not move by reason.
    assert (
        "Before the change: off (the legacy table, global flag). "
        "After it: on (Casbin, org override)."
    ) in page
    report = run_report(real_runs)
    counts = {str(label): value for label, value, _ in report["counts"]}
    assert counts["Moved"] == 3
    assert counts["Could not move"] == 1
    assert counts["Not migrated"] == 1
    assert counts["Excluded"] == 1
    assert 'data-reason="malformed_course_key"' in page
    assert "Course key is not course-v1:ORG+COURSE+RUN (1)" in page
    assert f"<td>{BAD_KEY}</td>" in page
    assert '<th scope="row">finance_admin</th>' in page
    # The excluded course and the org-wide roles it no longer sees.
    assert re.search(rf'id="run-excluded">.*?<li>{re.escape(C2)}</li>', page, re.S)
    assert re.search(rf'id="run-org-wide-split">.*?<li>{re.escape(C2)}</li>', page, re.S)
    # The raw JSON stays, collapsed.
    assert re.search(r"<details>\s*<summary>Raw metadata \(JSON\)</summary>\s*<pre>", page)
    assert "&quot;counts&quot;" in page


@automatic_on
def test_the_page_of_a_failed_run_shows_the_error_and_traceback(client, login, roles, monkeypatch):
    login(superuser=True)

    def broken(*args, **kwargs):
        raise DatabaseError("injected <failure>")

    monkeypatch.setattr(moves, "insert_casbin", broken)
    add_org(client, ORG, "on")
    run = MigrationRun.objects.get()
    page = client.get(url("migrationrun", "change", run.pk)).content.decode()
    assert "Failed: every change of this run was rolled back" in page
    assert "<strong>DatabaseError: injected &lt;failure&gt;</strong>" in page
    assert re.search(r'<pre class="authz-traceback">Traceback \(most recent call last\)', page)
    assert "injected <failure>" not in page


def test_the_page_of_a_skipped_run_says_why(client, login):
    login(superuser=True)
    run = MigrationRun.objects.create(
        migration_type="forward",
        scope_type="instance",
        status="skipped",
        metadata={"reason": "the global flag is now on", "action": "authz_migrate sync --all"},
    )
    page = client.get(url("migrationrun", "change", run.pk)).content.decode()
    assert "Skipped: nothing moved for the whole instance." in page
    assert f"Run #{run.pk}: forward of the whole instance, skipped" in page
    assert "instance instance" not in page
    # Read-only: no help text of the edit form.
    assert "blank for the instance" not in page
    assert "the global flag is now on" in page
    assert "<code>authz_migrate sync --all</code>" in page


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"counts": "many", "could_not_move": ["x"], "excluded_courses": 5, "flag": "on"},
        {"counts": {"moved": True, "weird": 2}, "could_not_move": {"r": {"rows": [1, {"a": 1}]}}},
        {"excluded_courses": {"items": ["<b>x</b>"], "count": "1"}, "duration_seconds": "1"},
    ],
)
def test_the_run_page_survives_metadata_of_any_shape(client, login, metadata):
    login(superuser=True)
    run = MigrationRun.objects.create(
        migration_type="forward", scope_type="org", scope_key=ORG, metadata=metadata
    )
    response = client.get(url("migrationrun", "change", run.pk))
    assert response.status_code == 200
    assert "<b>x</b>" not in response.content.decode()
    assert client.get(url("migrationrun", "changelist")).status_code == 200


def test_format_duration():
    assert format_duration(0.01234) == "0.012 s"
    assert format_duration(12.34) == "12.3 s"
    assert format_duration(125) == "2 min 5 s"
    assert format_duration(None) == format_duration("3") == format_duration(True) == ""


# --- a host's override admin ----------------------------------------------------------------


class HostBaseAdmin(admin.ModelAdmin):
    """Stands in for django-config-models' admin: its own get_actions, its own columns."""

    list_display = ("org", "enabled")

    def get_actions(self, request):
        return {"revert": (lambda *a: None, "revert", "Revert")}


class HostOrgOverrideAdmin(FlagOverrideAdminMixin, HostBaseAdmin):
    pass


def test_the_mixin_on_a_host_s_admin(rf, make_user, org_override):
    site = admin.AdminSite(name="host")
    host_admin = HostOrgOverrideAdmin(OrgFlagOverride, site)
    assert host_admin.check() == []
    request = rf.get("/")
    request.user = make_user(is_staff=True, is_superuser=True)
    assert host_admin.get_list_display(request) == [
        "org",
        "enabled",
        "is_current",
        "set_by",
        "effective_flag",
        "history_link",
    ]
    assert set(host_admin.get_actions(request)) == {"revert", "verify_scopes", "sync_scopes"}
    assert host_admin.has_add_permission(request) and not host_admin.has_delete_permission(request)
    row = org_override(ORG, "on")
    # Outside a changelist page the columns still work, computed for the one row.
    assert host_admin.is_current(row) is True
    assert "by org override" in host_admin.effective_flag(row)
