"""The admin in a real browser (headless Chromium, Playwright), end to end: a superuser logs
in, forces an org on, reads the success message with its counts, follows the link to the run
and sees the rows that moved; a staff user without the permission is refused.

The pages come from pytest-django's ``live_server``, which serves the test database (seeded
here with the demo's kind of data), on every supported database. Screenshots go to
``.test-results/screenshots/``: the message and the run page always (to look at), the page as
it was when a test failed.
"""

from __future__ import annotations

import os
import re

import pytest
from casbin_adapter.models import CasbinRule
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import override_settings
from waffle import get_waffle_flag_model

from authz_migration.models import CourseAccessRole, CourseFlagOverride, MigrationRun
from tests.browser import (
    ADMIN_STATIC_SETTINGS,
    chromium_page,
    click_and_load,
    screenshot,
    unavailable,
)
from tests.conftest import FLAG

_missing = unavailable()
if _missing and os.environ.get("CI"):
    raise RuntimeError(f"CI is set, so the browser test must run, but: {_missing}")
pytestmark = [
    pytest.mark.skipif(bool(_missing), reason=f"browser test skipped: {_missing}"),
    pytest.mark.django_db(transaction=True),
]

PASSWORD = "browser-test-password"
CS101 = "course-v1:OpenedX+CS101+2024"
CS102 = "course-v1:OpenedX+CS102+2024"
DS201 = "course-v1:OpenedX+DS201+2025"
INTRO = "course-v1:DemoX+Intro+2024"
# (user, legacy role, org, course_id): the demo's roles (example/demo); blank = org-wide.
LEGACY_ROLES = [
    ("alice", "instructor", "OpenedX", CS101),
    ("bob", "staff", "OpenedX", CS101),
    ("carol", "beta_testers", "OpenedX", CS101),
    ("dave", "finance_admin", "OpenedX", CS101),  # not an authoring role: never moves
    ("bob", "instructor", "OpenedX", CS102),  # CS102 is pinned off: excluded
    ("dave", "staff", "OpenedX", CS102),
    ("carol", "staff", "OpenedX", DS201),
    ("alice", "staff", "OpenedX", ""),
    ("alice", "instructor", "DemoX", INTRO),  # another org: stays
]
MOVED = 5  # CS101 x3, DS201, the org-wide role


@pytest.fixture(scope="session")
def _admin_static():
    """The admin's CSS for the live server, which serves STATIC_ROOT at STATIC_URL; the test
    settings have no static files, and without STATIC_URL the server answers nothing at all.
    It must be in place before the server starts (its handler reads it then)."""
    with override_settings(**ADMIN_STATIC_SETTINGS):
        yield


@pytest.fixture(scope="session")
def live_server(_admin_static, live_server):
    """pytest-django's live server, started with the admin's static files."""
    return live_server


@pytest.fixture
def demo_data(settings):
    """The demo's roles, the global flag off, CS102 pinned off, automatic moves on."""
    settings.AUTHZ_MIGRATION_AUTOMATIC = True
    User = get_user_model()
    users = {name: User.objects.create(username=name) for name in ("alice", "bob", "carol", "dave")}
    for user, role, org, course_id in LEGACY_ROLES:
        CourseAccessRole.objects.create(user=users[user], role=role, org=org, course_id=course_id)
    get_waffle_flag_model().objects.create(name=FLAG, everyone=False)
    CourseFlagOverride(
        waffle_flag=FLAG, course_id=CS102, override_choice="off", enabled=True
    ).save()


def log_in(page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")


def test_a_superuser_forces_an_org_on_and_follows_the_run(live_server, demo_data, request):
    get_user_model().objects.create_superuser("admin", "admin@example.com", PASSWORD)

    with chromium_page(request.node.name) as page:
        log_in(page, live_server.url, "admin")
        overrides = page.locator("#content-main").get_by_role("link", name="Org flag overrides")
        click_and_load(page, overrides, "**/admin/authz_migration/orgflagoverride/")
        add = page.locator(".object-tools").get_by_role("link", name="Add org flag override")
        # Loaded, its autofocus done: typing before that could land in the field Django's
        # admin focuses on load (waffle_flag), as it once did.
        click_and_load(page, add, "**/admin/authz_migration/orgflagoverride/add/")
        assert page.input_value("#id_waffle_flag") == FLAG
        page.fill("#id_org", "OpenedX")
        page.check("input[name=override_choice][value=on]")
        assert page.is_checked("#id_enabled")  # a new override is meant to force something
        page.fill("#id_note", "Pilot: OpenedX authors in Casbin")
        click_and_load(page, "input[name=_save]", "**/admin/authz_migration/orgflagoverride/")

        # A warning, not a success: CS102, pinned off, lost the org-wide role (the split).
        success = page.locator(".messagelist .warning", has_text="Moved")
        text = success.inner_text()
        assert re.search(rf"Moved {MOVED} role\(s\) of org OpenedX to Casbin \(run #\d+\)", text)
        assert "not migrated: 1, could not move: 0." in text
        assert (
            f"Left alone: 2 role row(s) of 1 course pinned by its own override ({CS102})." in text
        )
        assert (
            f"1 course pinned to the legacy table ({CS102}) no longer sees the org-wide roles "
            "of OpenedX, which now live in Casbin" in text
        )
        screenshot(page, "01-org-override-saved")

        link = success.locator("a", has_text="run #")
        run_id = int(link.inner_text().removeprefix("run #"))
        click_and_load(page, link, f"**/admin/authz_migration/migrationrun/{run_id}/change/")
        assert page.inner_text("#content h2") == f"Run #{run_id}: forward of org OpenedX, completed"
        assert "blank for the instance" not in page.inner_text("#content")
        assert page.inner_text("#run-headline") == (
            f"Moved {MOVED} role(s) of org OpenedX from the legacy table to Casbin."
        )
        counts = {
            row.locator("th").inner_text(): row.locator("td.authz-number").inner_text()
            for row in page.locator("#run-counts tbody tr").all()
        }
        assert counts["Moved"] == str(MOVED)
        assert counts["Not migrated"] == "1"
        assert counts["Could not move"] == "0"
        assert CS102 in page.inner_text("#run-excluded")
        # Rows, the counts table's unit, beside courses: each labelled.
        assert page.inner_text("#run-excluded h2") == "Excluded: 1 course (2 role rows)"
        assert CS102 in page.inner_text("#run-org-wide-split")
        assert "finance_admin" in page.inner_text("#run-not-migrated")
        assert re.search(r"Before the change: off .* After it: on", page.inner_text("#run-flag"))
        # The raw JSON is there, collapsed.
        assert not page.is_visible("#run-metadata pre")
        page.click("#run-metadata summary")
        assert f'"moved": {MOVED}' in page.inner_text("#run-metadata pre")
        page.click("#run-metadata summary")
        screenshot(page, "02-run-page")

    # What the pages said is what happened.
    run = MigrationRun.objects.get()
    assert (run.pk, run.status, run.triggered_by.username) == (run_id, "completed", "admin")
    assert CasbinRule.objects.filter(v2__startswith="course-v1^course-v1:OpenedX+").count() == MOVED
    assert set(CourseAccessRole.objects.values_list("course_id", flat=True)) == {
        CS101,
        CS102,
        INTRO,
    }


def test_saving_the_global_flag_warns_about_roles_left_behind(live_server, demo_data, request):
    get_user_model().objects.create_superuser("admin", "admin@example.com", PASSWORD)
    flag = get_waffle_flag_model().objects.get(name=FLAG)

    with chromium_page(request.node.name) as page:
        log_in(page, live_server.url, "admin")
        page.goto(f"{live_server.url}/admin/waffle/flag/{flag.pk}/change/")
        page.select_option("#id_everyone", label="Yes")
        click_and_load(page, "input[name=_save]", "**/admin/waffle/flag/")

        warning = page.locator(".messagelist .warning")
        text = warning.inner_text()
        assert f"The global flag {FLAG} is now on; " in text
        assert "whose roles still sit in the legacy table are held on their previous state" in text
        assert "run `authz_migrate cutover --to authz`" in text
        assert "Nothing moved automatically" in text
        screenshot(page, "03-global-flag-saved")
        link = warning.locator("a", has_text="run #")
        run_id = int(link.inner_text().removeprefix("run #"))
        click_and_load(page, link, f"**/admin/authz_migration/migrationrun/{run_id}/change/")
        assert "Global flag changed" in page.inner_text("#content")
        assert page.inner_text("#run-headline") == "Skipped: nothing moved for the whole instance."

    run = MigrationRun.objects.get()
    assert (run.pk, run.status, run.trigger, run.scope_type) == (
        run_id,
        "skipped",
        "global_flag",
        "instance",
    )
    assert not CasbinRule.objects.exists()  # nothing moved inside the request


def test_a_staff_user_without_the_permission_is_refused(live_server, demo_data, request):
    clerk = get_user_model().objects.create_user("clerk", password=PASSWORD, is_staff=True)
    # May look at the overrides, not toggle them; no permission on runs.
    clerk.user_permissions.set([Permission.objects.get(codename="view_orgflagoverride")])

    with chromium_page(request.node.name) as page:
        log_in(page, live_server.url, "clerk")
        overrides = page.locator("#content-main").get_by_role("link", name="Org flag overrides")
        click_and_load(page, overrides, "**/admin/authz_migration/orgflagoverride/")
        assert page.locator(".object-tools a.addlink").count() == 0
        assert page.get_by_role("link", name="Add org flag override").count() == 0
        response = page.goto(f"{live_server.url}/admin/authz_migration/orgflagoverride/add/")
        assert response.status == 403
        response = page.goto(f"{live_server.url}/admin/authz_migration/migrationrun/")
        assert response.status == 403

    assert not MigrationRun.objects.exists()
    assert not CasbinRule.objects.exists()
