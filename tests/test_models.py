"""The app's models: append-only override history, the legacy table's uniqueness, runs."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from authz_migration.models import (
    CourseAccessRole,
    CourseFlagOverride,
    MigrationRun,
    OrgFlagOverride,
    OverrideChoice,
    ScopeLock,
)
from tests.conftest import FLAG

COURSE = "course-v1:OrgA+C1+2024"

# --- override history is append-only -------------------------------------------------------


def _override(model, **kw):
    if model is CourseFlagOverride:
        kw.setdefault("course_id", COURSE)
    else:
        kw.setdefault("org", "OrgA")
    kw.setdefault("waffle_flag", FLAG)
    return model(**kw)


@pytest.mark.parametrize("model", [CourseFlagOverride, OrgFlagOverride])
def test_editing_an_override_inserts_a_new_row(db, model):
    row = _override(model, override_choice="on", enabled=True, note="first")
    row.save()
    first_pk = row.pk
    first = model.objects.values().get(pk=first_pk)

    row.enabled = False
    row.override_choice = OverrideChoice.OFF
    row.note = "second"
    row.save()

    assert row.pk != first_pk
    assert model.objects.count() == 2
    # The old row is exactly as it was.
    assert model.objects.values().get(pk=first_pk) == first
    new = model.objects.get(pk=row.pk)
    assert (new.enabled, new.override_choice, new.note) == (False, "off", "second")
    assert new.change_date >= first["change_date"]


@pytest.mark.parametrize("model", [CourseFlagOverride, OrgFlagOverride])
@pytest.mark.parametrize(
    "save_kwargs",
    [{"update_fields": ["enabled"]}, {"force_update": True}],
    ids=["update_fields", "force_update"],
)
def test_update_style_saves_still_insert(db, model, save_kwargs):
    row = _override(model, enabled=True)
    row.save()
    first_pk = row.pk
    row.enabled = False
    row.save(**save_kwargs)
    assert row.pk != first_pk
    assert list(model.objects.order_by("id").values_list("enabled", flat=True)) == [True, False]


@pytest.mark.parametrize("model", [CourseFlagOverride, OrgFlagOverride])
def test_objects_create_inserts_one_row(db, model):
    kw = {"course_id": COURSE} if model is CourseFlagOverride else {"org": "OrgA"}
    row = model.objects.create(waffle_flag=FLAG, enabled=True, **kw)
    assert model.objects.count() == 1
    assert row.change_date is not None and timezone.is_aware(row.change_date)


@pytest.mark.parametrize("model", [CourseFlagOverride, OrgFlagOverride])
def test_each_save_gets_a_new_change_date(db, model):
    row = _override(model, enabled=True)
    row.save()
    old_date = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    model.objects.filter(pk=row.pk).update(change_date=old_date)
    row.refresh_from_db()
    row.save()
    assert row.change_date > old_date
    assert model.objects.filter(change_date=old_date).count() == 1


@pytest.mark.parametrize("model", [CourseFlagOverride, OrgFlagOverride])
def test_override_defaults(model):
    row = _override(model)
    assert row.override_choice == OverrideChoice.ON
    assert row.enabled is False
    assert row.note == ""
    assert row.changed_by_id is None


@pytest.mark.parametrize("model", [CourseFlagOverride, OrgFlagOverride])
def test_newest_first_ordering(db, model):
    rows = []
    for _ in range(3):
        row = _override(model, enabled=True)
        row.save()
        rows.append(row.pk)
    same = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    model.objects.update(change_date=same)
    assert list(model.objects.values_list("pk", flat=True)) == rows[::-1]


def test_changed_by_is_not_editable_and_protected():
    field = CourseFlagOverride._meta.get_field("changed_by")
    assert field.editable is False
    assert field.null is True
    assert field.remote_field.on_delete.__name__ == "PROTECT"


# --- __str__ --------------------------------------------------------------------------------


def test_course_access_role_str(make_user):
    user = make_user("alice")
    course_role = CourseAccessRole(user=user, org="OrgA", course_id=COURSE, role="staff")
    org_role = CourseAccessRole(user=user, org="OrgA", course_id="", role="instructor")
    unscoped = CourseAccessRole(user=user, org="", course_id="", role="support")
    assert str(course_role) == f"{user.pk} staff {COURSE}"
    assert str(org_role) == f"{user.pk} instructor OrgA"
    assert str(unscoped) == f"{user.pk} support (no scope)"


def test_override_str():
    course = CourseFlagOverride(
        waffle_flag=FLAG, course_id=COURSE, override_choice="off", enabled=True
    )
    org = OrgFlagOverride(waffle_flag=FLAG, org="OrgA", override_choice="on", enabled=False)
    assert str(course) == f"{FLAG} for {COURSE}: force off"
    assert str(org) == f"{FLAG} for OrgA: not enabled (force on)"


def test_migration_run_str(db):
    run = MigrationRun.objects.create(
        migration_type=MigrationRun.MigrationType.FORWARD,
        scope_type=MigrationRun.ScopeType.COURSE,
        scope_key=COURSE,
        trigger=MigrationRun.Trigger.SIGNAL,
        status=MigrationRun.Status.COMPLETED,
    )
    assert str(run) == f"Run #{run.pk}: forward of course {COURSE}, completed"
    instance = MigrationRun(
        migration_type="rollback", scope_type="instance", scope_key="", trigger="command"
    )
    assert str(instance) == "Run #None: rollback of the whole instance, running"


def test_scope_lock_str():
    assert str(ScopeLock(key="org:OrgA")) == "org:OrgA"


# --- CourseAccessRole -----------------------------------------------------------------------


def test_course_access_role_is_not_swapped_in_the_test_settings():
    assert not CourseAccessRole._meta.swapped
    assert not CourseFlagOverride._meta.swapped
    assert not OrgFlagOverride._meta.swapped


def test_course_access_role_unique(make_user):
    user = make_user()
    CourseAccessRole.objects.create(user=user, org="OrgA", course_id=COURSE, role="staff")
    with pytest.raises(IntegrityError), transaction.atomic():
        CourseAccessRole.objects.create(user=user, org="OrgA", course_id=COURSE, role="staff")
    assert CourseAccessRole.objects.count() == 1


def test_course_access_role_unique_org_wide(make_user):
    user = make_user()
    CourseAccessRole.objects.create(user=user, org="OrgA", course_id="", role="staff")
    with pytest.raises(IntegrityError), transaction.atomic():
        CourseAccessRole.objects.create(user=user, org="OrgA", course_id="", role="staff")


def test_course_access_role_differing_rows_coexist(make_user):
    alice, bob = make_user(), make_user()
    rows = [
        (alice, "OrgA", COURSE, "staff"),
        (alice, "OrgA", COURSE, "instructor"),
        (alice, "OrgA", "", "staff"),
        (alice, "OrgA", "course-v1:OrgA+C2+2024", "staff"),
        (alice, "OrgB", "", "staff"),
        (bob, "OrgA", COURSE, "staff"),
    ]
    for user, org, course_id, role in rows:
        CourseAccessRole.objects.create(user=user, org=org, course_id=course_id, role=role)
    assert CourseAccessRole.objects.count() == len(rows)


def test_course_access_role_rows_go_with_their_user(make_user, grant):
    user = make_user()
    grant(user, COURSE)
    user.delete()
    assert CourseAccessRole.objects.count() == 0


# --- MigrationRun ---------------------------------------------------------------------------


def test_migration_run_defaults(db):
    before = timezone.now()
    run = MigrationRun.objects.create(
        migration_type="forward", scope_type="org", scope_key="OrgA", trigger="command"
    )
    run.refresh_from_db()
    assert run.status == MigrationRun.Status.RUNNING
    assert run.metadata == {}
    assert run.completed_at is None
    assert run.triggered_by is None
    assert run.created_at >= before - dt.timedelta(seconds=1)
    assert run.updated_at >= run.created_at
    assert run.duration_seconds is None


def test_migration_run_metadata_defaults_are_not_shared(db):
    a = MigrationRun(migration_type="forward", scope_type="org", trigger="api")
    b = MigrationRun(migration_type="forward", scope_type="org", trigger="api")
    a.metadata["x"] = 1
    assert b.metadata == {}


def test_migration_run_duration_and_json_round_trip(db):
    metadata = {"duration_seconds": 1.5, "counts": {"moved": 3}, "unmoved": {"no_scope": ["u"]}}
    run = MigrationRun.objects.create(
        migration_type="rollback", scope_type="course", trigger="api", metadata=metadata
    )
    run.refresh_from_db()
    assert run.metadata == metadata
    assert run.duration_seconds == 1.5


def test_migration_run_triggered_by_is_set_null_when_the_user_goes(make_user):
    user = make_user()
    run = MigrationRun.objects.create(
        migration_type="forward", scope_type="instance", trigger="command", triggered_by=user
    )
    user.delete()
    run.refresh_from_db()
    assert run.triggered_by is None


def test_migration_run_updated_at_moves_on_save(db):
    run = MigrationRun.objects.create(migration_type="forward", scope_type="org", trigger="api")
    old = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    MigrationRun.objects.filter(pk=run.pk).update(updated_at=old, created_at=old)
    run.refresh_from_db()
    run.status = MigrationRun.Status.COMPLETED
    run.save()
    run.refresh_from_db()
    assert run.updated_at > old
    assert run.created_at == old


def test_migration_run_choices():
    assert set(MigrationRun.MigrationType.values) == {"forward", "rollback"}
    assert set(MigrationRun.ScopeType.values) == {"course", "org", "instance"}
    assert set(MigrationRun.Status.values) == {
        "running",
        "completed",
        "partial_success",
        "failed",
        "skipped",
    }
    assert set(MigrationRun.Trigger.values) == {"signal", "command", "api", "admin", "global_flag"}


def test_scope_lock_key_is_unique(db):
    # A key of its own: lock rows that other tests' moves committed on a side connection
    # (guard.ensure_lock_rows) outlive those tests.
    ScopeLock.objects.create(key="org:UniqueKeyTest")
    with pytest.raises(IntegrityError), transaction.atomic():
        ScopeLock.objects.create(key="org:UniqueKeyTest")
