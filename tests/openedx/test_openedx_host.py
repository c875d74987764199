"""The automatic moves, the command and the admin against the Open edX-shaped host.

Collected only under ``DJANGO_SETTINGS_MODULE=tests.settings_openedx`` (see conftest.py):
``student.CourseAccessRole`` stores ``course_id`` in a ``CourseKeyField`` (read back as a
``CourseKey``, blank read back as None) and the overrides are django-config-models
``ConfigurationModel`` rows (every save inserts, ``current()`` is cached). Course keys are
given both as ``CourseKey`` objects, as Open edX code passes them, and as strings.
"""

from __future__ import annotations

import re
from collections import Counter
from io import StringIO

import pytest
from casbin_adapter.models import CasbinRule
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.models.signals import post_save
from django.test import override_settings
from django.urls import reverse
from opaque_keys.edx.django.models import CourseKeyField
from opaque_keys.edx.keys import CourseKey

from authz_migration import api, cutover, flags, moves
from authz_migration.automatic import RESULT_ATTRIBUTE
from authz_migration.conf import course_override_model, legacy_role_model, org_override_model
from authz_migration.models import MigrationRun
from tests.helpers import CASBIN_TO_LEGACY
from tests.openedx.conftest import OPENEDX_SETTINGS, openedx_host

if not openedx_host():  # conftest.py keeps the module out; this covers an explicit path
    pytest.skip(f"needs DJANGO_SETTINGS_MODULE={OPENEDX_SETTINGS}", allow_module_level=True)

from tests.openedx.student.models import CourseAccessRole  # noqa: E402
from tests.openedx.waffle_utils.models import (  # noqa: E402
    WaffleFlagCourseOverrideModel,
    WaffleFlagOrgOverrideModel,
)

pytestmark = pytest.mark.django_db

FLAG = "authz.enable_course_authoring"
ORG = "OrgA"
C1 = CourseKey.from_string("course-v1:OrgA+C1+2024")
C2 = CourseKey.from_string("course-v1:OrgA+C2+2024")
C3 = CourseKey.from_string("course-v1:OrgA+C3+2024")
OTHER = CourseKey.from_string("course-v1:OrgB+X1+2024")
PREFIX = CourseKey.from_string("course-v1:OrgAB+Y1+2024")  # must never be taken for OrgA

automatic_on = override_settings(AUTHZ_MIGRATION_AUTOMATIC=True)


# --- reading the host's tables --------------------------------------------------------------


def legacy_rows() -> set[tuple]:
    """Every legacy row as the host's ORM reads it: (username, org, course_id, role) with
    ``course_id`` a ``CourseKey`` or None (blank)."""
    return {
        (row.user.username, row.org, row.course_id, row.role)
        for row in CourseAccessRole.objects.select_related("user")
    }


def where(scope) -> set[str]:
    """Where the movable roles of a course key (object) or an org's org-wide roles live."""
    found = set()
    for _, org, course_id, role in legacy_rows():
        owner = course_id if course_id is not None else org
        if owner == scope and role in CASBIN_TO_LEGACY.values():
            found.add("legacy")
    for v2 in CasbinRule.objects.filter(ptype="g").values_list("v2", flat=True):
        key = v2.removeprefix("course-v1^")
        owner = key.removeprefix("course-v1:")[:-2] if key.endswith("+*") else key
        if owner == str(scope):
            found.add("casbin")
    return found


def casbin_g() -> set[tuple[str, str, str]]:
    return set(CasbinRule.objects.filter(ptype="g").values_list("v0", "v1", "v2"))


def runs(**filters) -> list[MigrationRun]:
    return list(MigrationRun.objects.filter(**filters).order_by("id"))


def command(*args) -> tuple[int, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("authz_migrate", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, out.getvalue() + err.getvalue() + str(exc)
    return 0, out.getvalue() + err.getvalue()


def course_override(course_id, choice="on", enabled=True, **kw):
    """Save a course override as Open edX code does (a new ConfigurationModel row)."""
    row = WaffleFlagCourseOverrideModel(
        waffle_flag=kw.pop("flag", FLAG),
        course_id=course_id,
        override_choice=choice,
        enabled=enabled,
        **kw,
    )
    row.save()
    return row


def org_override(org, choice="on", enabled=True, **kw):
    row = WaffleFlagOrgOverrideModel(
        waffle_flag=kw.pop("flag", FLAG), org=org, override_choice=choice, enabled=enabled, **kw
    )
    row.save()
    return row


def result_of(row):
    return getattr(row, RESULT_ATTRIBUTE)


@pytest.fixture
def automatic():
    with automatic_on:
        yield


@pytest.fixture
def roles(make_user):
    """Open edX-style role rows: course keys given as objects and as strings, an org-wide role
    written as Open edX's OrgRole writes it (course_id None), global and library roles that
    are not course-authoring roles, and neighbours in OrgB and OrgAB."""
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    dave = make_user("dave")
    create = CourseAccessRole.objects.create
    create(user=alice, org=ORG, course_id=C1, role="staff")
    create(user=bob, org=ORG, course_id=str(C1), role="instructor")
    create(user=alice, org=ORG, course_id=C2, role="instructor")
    create(user=carol, org=ORG, course_id=str(C2), role="beta_testers")
    create(user=bob, org=ORG, course_id=C3, role="data_researcher")
    create(user=carol, org=ORG, course_id=C3, role="finance_admin")  # never moves
    create(user=carol, org=ORG, course_id=None, role="staff")  # org-wide
    create(user=dave, org=ORG, course_id=CourseKeyField.Empty, role="org_course_creator_group")
    create(user=dave, org="", course_id=None, role="course_creator_group")  # global role
    create(user=dave, org=ORG, course_id="library-v1:OrgA+Lib1", role="library_user")
    create(user=alice, org="OrgB", course_id=OTHER, role="staff")
    create(user=bob, org="OrgAB", course_id=PREFIX, role="staff")
    return {"alice": alice, "bob": bob, "carol": carol, "dave": dave}


def assert_neighbours_untouched():
    assert where(OTHER) == {"legacy"}
    assert where(PREFIX) == {"legacy"}


# --- the host itself ------------------------------------------------------------------------


def test_the_app_creates_no_tables_for_its_swapped_models():
    tables = set(connection.introspection.table_names())
    assert (
        not {
            "authz_migration_courseaccessrole",
            "authz_migration_courseflagoverride",
            "authz_migration_orgflagoverride",
        }
        & tables
    )
    assert {
        "authz_migration_migrationrun",
        "authz_migration_scopelock",
        "student_courseaccessrole",
        "waffle_utils_waffleflagcourseoverridemodel",
        "waffle_utils_waffleflagorgoverridemodel",
        "casbin_rule",
    } <= tables
    assert legacy_role_model() is CourseAccessRole
    assert course_override_model() is WaffleFlagCourseOverrideModel
    assert org_override_model() is WaffleFlagOrgOverrideModel


def test_system_checks_are_clean_and_no_migration_is_missing():
    out = StringIO()
    call_command("check", stdout=out)
    assert "no issues" in out.getvalue()
    # Swapped models need no migration of their own, and the host's are complete.
    call_command("makemigrations", "--check", "--dry-run", stdout=StringIO())


def test_course_keys_read_back_as_key_objects_and_blank_as_none(roles):
    stored = {(org, course_id, role) for _, org, course_id, role in legacy_rows()}
    assert (ORG, C1, "instructor") in stored  # written as a string, read as a key
    assert (ORG, None, "staff") in stored
    assert all(c is None or isinstance(c, CourseKey) for _, c, _ in stored)


# --- course overrides -----------------------------------------------------------------------


@pytest.mark.parametrize("as_key", [True, False], ids=["CourseKey", "string"])
def test_course_override_moves_the_course_forward_and_back(roles, automatic, as_key):
    initial = legacy_rows()
    key = C1 if as_key else str(C1)

    on = course_override(key, "on")

    assert where(C1) == {"casbin"}
    assert where(C2) == where(C3) == where(ORG) == {"legacy"}
    assert casbin_g() == {
        ("user^alice", "role^course_staff", "course-v1^course-v1:OrgA+C1+2024"),
        ("user^bob", "role^course_admin", "course-v1^course-v1:OrgA+C1+2024"),
    }
    (forward,) = runs()
    assert (forward.migration_type, forward.scope_type, forward.scope_key) == (
        "forward",
        "course",
        str(C1),
    )
    assert (forward.status, forward.trigger) == ("completed", "signal")
    assert forward.metadata["counts"]["moved"] == 2
    assert result_of(on).outcome.run == forward
    assert flags.is_authz_enabled(C1)

    off = course_override(key, "off")

    assert where(C1) == {"legacy"}
    assert not casbin_g()
    assert legacy_rows() == initial  # exact round trip, course keys as key objects again
    rollback = runs()[-1]
    assert (rollback.migration_type, rollback.scope_key) == ("rollback", str(C1))
    assert result_of(off).outcome.run == rollback
    assert_neighbours_untouched()


def test_unsetting_a_course_override_falls_back_to_the_org(roles, automatic):
    org_override(ORG, "on")
    course_override(C2, "off")
    assert where(C2) == {"legacy"}

    course_override(C2, "off", enabled=False)  # enabled=False: "unset", the org's "on" applies

    assert where(C2) == {"casbin"}
    run = runs()[-1]
    assert run.metadata["flag"]["after_source"] == "org override"


def test_the_app_agrees_with_open_edx_override_value(roles, automatic):
    """The app's view of a course's and an org's override equals Open edX's own runtime
    check (``override_value``) after every kind of save."""
    steps = [
        ("course", "on", True),
        ("org", "off", True),
        ("course", "on", False),
        ("org", "on", True),
        ("course", "off", True),
        ("org", "on", False),
    ]
    expected = {"on": True, "off": False, "unset": None}
    for kind, choice, enabled in steps:
        if kind == "course":
            course_override(C1, choice, enabled=enabled)
        else:
            org_override(ORG, choice, enabled=enabled)
        assert (
            flags.course_override_state(C1)
            is expected[WaffleFlagCourseOverrideModel.override_value(FLAG, C1)]
        )
        assert (
            flags.org_override_state(ORG)
            is expected[WaffleFlagOrgOverrideModel.override_value(FLAG, ORG)]
        )
        # And the roles are where that flag points.
        assert where(C1) == {"casbin" if flags.is_authz_enabled(C1) else "legacy"}


def test_course_override_without_change_moves_nothing(roles, automatic):
    initial = legacy_rows()
    row = course_override(C1, "off")  # global flag off already
    assert legacy_rows() == initial
    assert runs() == []
    assert result_of(row).outcome is None


def test_automatic_off_moves_nothing(roles):
    initial = legacy_rows()
    course_override(C1, "on")
    org_override(ORG, "on")
    assert legacy_rows() == initial
    assert runs() == []


# --- org overrides --------------------------------------------------------------------------


def test_org_override_moves_the_org_minus_pinned_courses_and_back(roles, automatic):
    initial = legacy_rows()
    course_override(C2, "off")  # pinned to legacy; global off: no move

    org_override(ORG, "on")

    assert where(C1) == where(C3) == where(ORG) == {"casbin"}
    assert where(C2) == {"legacy"}
    assert_neighbours_untouched()
    (forward,) = runs()
    assert (forward.migration_type, forward.scope_type, forward.scope_key) == (
        "forward",
        "org",
        ORG,
    )
    assert forward.metadata["excluded_courses"]["items"] == [str(C2)]
    assert forward.metadata["org_wide_roles_split"]["items"] == [str(C2)]
    # Non-authoring roles stay, counted, never as problems.
    assert forward.status == "completed"
    assert forward.metadata["not_migrated_by_role"] == {
        "finance_admin": 1,
        "org_course_creator_group": 1,
    }
    assert ("user^carol", "role^course_staff", "course-v1^course-v1:OrgA+*") in casbin_g()

    org_override(ORG, "off")

    assert legacy_rows() == initial
    assert not casbin_g()
    rollback = runs()[-1]
    assert (rollback.migration_type, rollback.status) == ("rollback", "completed")


def test_org_override_in_a_prefix_org_touches_nothing_of_the_other(roles, automatic):
    org_override("OrgAB", "on")
    assert where(PREFIX) == {"casbin"}
    assert where(C1) == where(ORG) == {"legacy"}
    assert where(OTHER) == {"legacy"}


# --- the command ----------------------------------------------------------------------------


def test_a_global_flip_holds_the_orgs_and_the_cutover_finishes(roles, automatic, global_flag):
    initial = legacy_rows()
    course_override(C3, "off")  # stays in legacy whatever the global flag says
    global_flag(True)  # pins the orgs it would strand: nothing moves, nothing is misplaced
    assert legacy_rows() == initial
    (told,) = runs()
    assert (told.status, told.scope_type) == ("skipped", "instance")
    assert told.metadata["pinned_orgs"]
    assert command("verify", "--all")[0] == 0

    code, out = command("cutover", "--to", "authz", "--no-input")
    assert code == 0, out

    assert where(C1) == where(C2) == where(ORG) == where(OTHER) == where(PREFIX) == {"casbin"}
    assert where(C3) == {"legacy"}
    assert command("verify", "--all")[0] == 0


@override_settings(AUTHZ_MIGRATION_GLOBAL_FLIP_PINS=False)  # the flip only warns
def test_sync_all_and_verify_after_a_global_flip(roles, automatic, global_flag):
    initial = legacy_rows()
    course_override(C3, "off")  # stays in legacy whatever the global flag says
    global_flag(True)  # never moves data by itself
    assert legacy_rows() == initial
    (told,) = runs()
    assert (told.status, told.scope_type) == ("skipped", "instance")

    code, out = command("verify", "--all")
    assert code == 5, out
    assert str(C1) in out and str(C3) not in out

    code, out = command("sync", "--all", "--batch-size", "3")
    assert code == 0, out

    assert where(C1) == where(C2) == where(ORG) == where(OTHER) == where(PREFIX) == {"casbin"}
    assert where(C3) == {"legacy"}
    assert command("verify", "--all")[0] == 0
    # Global and library roles are not course-authoring roles: they stay, as no problem.
    left = {(user, role) for user, _, _, role in legacy_rows()}
    assert {
        ("dave", "course_creator_group"),
        ("dave", "library_user"),
        ("dave", "org_course_creator_group"),
        ("carol", "finance_admin"),
        ("bob", "data_researcher"),
    } == left
    assert {r.status for r in runs(trigger="command")} == {"completed"}

    global_flag(False)
    assert command("sync", "--all")[0] == 0
    assert legacy_rows() == initial
    assert not casbin_g()


def test_sync_course_and_org_through_the_command(roles, global_flag):
    course_override(C1, "on")  # automatic off: only the flag
    org_override("OrgB", "on")
    assert command("verify", "--course", str(C1))[0] == 5

    assert command("sync", "--course", str(C1), "--org", "OrgB")[0] == 0

    assert where(C1) == where(OTHER) == {"casbin"}
    assert where(C2) == {"legacy"}
    assert command("verify", "--all")[0] == 0
    assert command("rollback", "--course", str(C1), "--no-input")[0] == 3  # against the flag


def test_api_accepts_course_key_objects(roles, global_flag):
    course_override(C1, "on")
    (out,) = api.sync_course(C1)
    assert out.status == "completed"
    assert where(C1) == {"casbin"}
    assert api.verify_scope(courses=[C1]) == []


def test_dry_run_writes_nothing(roles, global_flag):
    global_flag(True)
    initial = legacy_rows()
    code, out = command("sync", "--all", "--dry-run")
    assert code == 0, out
    assert legacy_rows() == initial
    assert not casbin_g()


# --- ConfigurationModel's cache -------------------------------------------------------------


def test_the_app_never_decides_from_configuration_model_cache(roles, automatic):
    """``current()`` is cached; ``save()`` clears that cache only after post_save, so inside
    the receiver the cache still holds the previous row. The app reads the table."""
    before = WaffleFlagCourseOverrideModel.current(FLAG, C1)  # warms the cache: no row yet
    assert before.pk is None
    seen_in_receiver = []

    def spy(sender, instance, **kwargs):
        seen_in_receiver.append(sender.current(FLAG, C1).pk)

    post_save.connect(spy, sender=WaffleFlagCourseOverrideModel, dispatch_uid="test-spy")
    try:
        row = course_override(C1, "on")
    finally:
        post_save.disconnect(sender=WaffleFlagCourseOverrideModel, dispatch_uid="test-spy")

    assert seen_in_receiver == [None]  # stale while the app decided...
    assert where(C1) == {"casbin"}  # ...and the app moved anyway
    assert WaffleFlagCourseOverrideModel.current(FLAG, C1).pk == row.pk  # cleared after


def test_a_stale_cached_override_does_not_mislead_the_app(roles, automatic):
    org_override(ORG, "on")
    assert WaffleFlagOrgOverrideModel.current(FLAG, ORG).override_choice == "on"  # cached
    # A row written without save() (a bulk load, another tool) leaves the cache stale.
    WaffleFlagOrgOverrideModel.objects.bulk_create(
        [WaffleFlagOrgOverrideModel(waffle_flag=FLAG, org=ORG, override_choice="off", enabled=True)]
    )
    assert WaffleFlagOrgOverrideModel.current(FLAG, ORG).override_choice == "on"  # stale
    assert flags.org_override_state(ORG) is False  # the app reads the table

    # A course save now decides against the org's real state ("off"), not the cached "on".
    course_override(C1, "on")
    course_override(C1, "on", enabled=False)
    assert where(C1) == {"legacy"}
    assert runs()[-1].metadata["flag"] == {
        "before": True,
        "before_source": "course override",
        "after": False,
        "after_source": "org override",
    }


# --- transactions ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_save_outside_a_transaction_still_moves(roles):
    """Open edX's ConfigurationModel.save() opens no transaction (unlike the app's own
    override model): the row commits first, then the receiver moves in its own transaction."""
    with automatic_on:
        org_override(ORG, "on")
    assert where(C1) == where(ORG) == {"casbin"}
    assert runs()[-1].status == "completed"


def test_a_failed_move_restores_the_flag_with_a_configuration_model_row(
    roles, automatic, monkeypatch
):
    initial = legacy_rows()

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(moves, "insert_casbin", broken)
    with transaction.atomic():
        row = course_override(C1, "on", note="go")

    assert result_of(row).failed
    assert legacy_rows() == initial
    assert not casbin_g()
    (failed,) = runs()
    assert failed.status == "failed"
    newest = WaffleFlagCourseOverrideModel.objects.order_by("-change_date", "-id").first()
    assert newest.pk > row.pk and not newest.enabled
    assert newest.course_id == C1
    assert "Restored by authz_migration" in newest.note
    assert WaffleFlagCourseOverrideModel.override_value(FLAG, C1) == "unset"
    assert WaffleFlagCourseOverrideModel.current(FLAG, C1).pk == newest.pk
    assert not flags.is_authz_enabled(C1)


# --- the admin ------------------------------------------------------------------------------

COURSE_ADD = "admin:waffle_utils_waffleflagcourseoverridemodel_add"
ORG_ADD = "admin:waffle_utils_waffleflagorgoverridemodel_add"


@pytest.fixture
def admin_client_(client, make_user):
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


def post_override(client, url_name, key_field, key, choice="on", enabled=True):
    data = {"waffle_flag": FLAG, key_field: key, "override_choice": choice, "note": "via admin"}
    if enabled:
        data["enabled"] = "on"
    response = client.post(reverse(url_name), data)
    messages = [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]
    return response, messages


def test_the_hosts_org_override_admin_tells_the_cutovers_pins_and_progress(
    roles, automatic, global_flag, admin_client_
):
    """Open edX's own org override admin with MigrationFeedbackMixin (docs/openedx.rst):
    the progress atop its list, and a pin's page saying whose it is."""
    global_flag(True)  # pins the orgs it would strand
    held = cutover.progress()["pinned"]
    assert ORG in held
    changelist = reverse("admin:waffle_utils_waffleflagorgoverridemodel_changelist")
    response = admin_client_.get(changelist)
    assert response.status_code == 200
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert [text for text in shown if text.startswith("Cutover in progress: 0 orgs released")]
    assert any(f"({', '.join(held)})" in text for text in shown), shown
    pin = org_override_model().objects.filter(org=ORG).order_by("-change_date", "-id").first()
    page = admin_client_.get(
        reverse("admin:waffle_utils_waffleflagorgoverridemodel_change", args=[pin.pk])
    )
    shown = [str(m) for m in get_messages(page.wsgi_request)]
    assert [text for text in shown if text.startswith("This row is a cutover pin")], shown


def test_admin_course_override_save_reports_the_move(roles, automatic, admin_client_):
    response, messages = post_override(admin_client_, COURSE_ADD, "course_id", str(C1))

    assert response.status_code == 302, response.content[:2000]
    run = MigrationRun.objects.get()
    assert run.triggered_by.username == "root"
    assert where(C1) == {"casbin"}
    success = [text for level, text in messages if level == "success" and "Moved" in text]
    assert success, messages
    assert f"Moved 2 role(s) of course {C1} to Casbin" in success[0]
    assert reverse("admin:authz_migration_migrationrun_change", args=[run.pk]) in success[0]
    row = WaffleFlagCourseOverrideModel.objects.get()
    assert (row.changed_by.username, row.course_id) == ("root", C1)


def test_admin_org_override_save_reports_excluded_courses(roles, automatic, admin_client_):
    course_override(C2, "off")
    _, messages = post_override(admin_client_, ORG_ADD, "org", ORG)

    text = next(text for level, text in messages if "Moved" in text)
    assert re.search(r"Moved 4 role\(s\) of org OrgA to Casbin .*of 1 course pinned", text)
    assert where(C2) == {"legacy"}


def test_admin_says_why_nothing_moved(roles, automatic, admin_client_):
    _, messages = post_override(admin_client_, COURSE_ADD, "course_id", str(C1), "off")
    assert any(
        level == "warning" and "effective flag did not change" in text for level, text in messages
    ), messages
    assert runs() == []


def test_admin_with_automatic_off_says_to_run_sync(roles, admin_client_):
    _, messages = post_override(admin_client_, ORG_ADD, "org", ORG)
    assert any("authz_migrate sync" in text for _, text in messages), messages
    assert where(C1) == {"legacy"}


def test_admin_refuses_an_invalid_course_key(roles, automatic, admin_client_):
    response, _ = post_override(admin_client_, COURSE_ADD, "course_id", "not a course key")
    assert response.status_code == 200  # the form shows the error
    assert not WaffleFlagCourseOverrideModel.objects.exists()
    assert runs() == []


def test_admin_changelist_of_the_host_overrides_renders(roles, automatic, admin_client_):
    course_override(C1, "on")
    url = reverse("admin:waffle_utils_waffleflagcourseoverridemodel_changelist")
    assert admin_client_.get(url).status_code == 200
    run = MigrationRun.objects.get()
    url = reverse("admin:authz_migration_migrationrun_change", args=[run.pk])
    assert admin_client_.get(url).status_code == 200


def test_every_role_survives_a_full_cycle(roles, automatic):
    """Forward and back through course and org saves: the multiset of roles, counted across
    both systems, never changes."""

    def everywhere() -> Counter:
        found = Counter((u, r, str(c) if c else o) for u, o, c, r in legacy_rows())
        for v0, v1, v2 in casbin_g():
            key = v2.removeprefix("course-v1^")
            owner = key.removeprefix("course-v1:")[:-2] if key.endswith("+*") else key
            found[
                (v0.removeprefix("user^"), CASBIN_TO_LEGACY[v1.removeprefix("role^")], owner)
            ] += 1
        return found

    initial, initial_rows = everywhere(), legacy_rows()
    for save in (
        lambda: course_override(C1, "on"),
        lambda: org_override(ORG, "on"),
        lambda: course_override(C3, "off"),
        lambda: org_override(ORG, "off"),
        lambda: course_override(C1, "off", enabled=False),
        lambda: course_override(C3, "on", enabled=False),
    ):
        save()
        assert everywhere() == initial
    assert where(C1) == where(C3) == where(ORG) == {"legacy"}
    assert legacy_rows() == initial_rows
