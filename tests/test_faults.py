"""Database faults in the middle of a move, on PostgreSQL and MariaDB.

1. **The connection dies mid-move.** The move runs in a thread with its own connection; a
   store function is made to pause right after its real work (rows inserted, or deleted, but
   not committed); the test thread kills that connection from its own
   (``pg_terminate_backend`` / ``KILL``) and lets the move go on. The caller gets the
   database error; the server rolled the transaction back, so no row was half moved, no run
   is left ``running`` and no scope stays locked; the next attempt moves everything.
2. **A lock wait times out.** Another connection holds a row the move must delete
   (``SELECT ... FOR UPDATE``) and the move's session waits at most a moment
   (``lock_timeout`` / ``innodb_lock_wait_timeout``). The timeout is reported, never hidden:
   a ``failed`` run with the database's error (API and command, exit 1), or, for an override
   save, a failed run plus the compensating override that keeps the flag where it was
   (docs/decisions/0008). Once the lock is gone, the same move succeeds.

SQLite has one writer and no server to kill a connection on: these tests need a server.
"""

from __future__ import annotations

import io
import threading
from contextlib import contextmanager

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.test import override_settings

from authz_migration import api, flags, guard, moves, sqlmoves
from authz_migration.automatic import RESULT_ATTRIBUTE
from authz_migration.conf import legacy_role_model, org_override_model
from authz_migration.models import MigrationRun
from authz_migration.stores import casbin_rule_model
from tests.helpers import SAFETY_NET, in_thread, wait_for

pytestmark = [pytest.mark.server_db, pytest.mark.django_db(transaction=True)]

ORG = "OrgA"
COURSES = [f"course-v1:OrgA+C{i}+2024" for i in range(3)]
OTHER = "course-v1:OrgB+C1+2024"  # another org: never part of these moves
COMPLETED = MigrationRun.Status.COMPLETED
FAILED = MigrationRun.Status.FAILED


@pytest.fixture(autouse=True)
def _server(server_db):
    """Skip on SQLite."""


# --- the data ---------------------------------------------------------------------------------


@pytest.fixture
def legacy_roles(make_user):
    """Six legacy roles in OrgA (three courses, two users) and one in OrgB."""
    users = [make_user(f"u{i}") for i in range(2)]
    for course in COURSES:
        for user in users:
            legacy_role_model().objects.create(user=user, org=ORG, course_id=course, role="staff")
    legacy_role_model().objects.create(user=users[0], org="OrgB", course_id=OTHER, role="staff")
    return users


@pytest.fixture
def casbin_roles(make_user):
    """Six Casbin roles in OrgA, to roll back."""
    for i in range(2):
        make_user(f"u{i}")
        for course in COURSES:
            casbin_rule_model().objects.create(
                ptype="g",
                v0=f"user^u{i}",
                v1="role^course_staff",
                v2=f"course-v1^{course}",
                v3="",
                v4="",
                v5="",
            )


def both_systems() -> tuple[set, set]:
    legacy = set(
        legacy_role_model().objects.values_list("user__username", "org", "course_id", "role")
    )
    casbin = set(casbin_rule_model().objects.values_list("v0", "v1", "v2", "v3", "v4", "v5"))
    return legacy, casbin


def org_is_free() -> bool:
    """Whether a move of OrgA could start right now (nobody holds its lock)."""
    try:
        with transaction.atomic():
            guard.acquire([guard.org_lock_key(ORG)], wait=False)
    except guard.ScopeBusy:
        return False
    return True


def set_org_flag(on: bool) -> None:
    """An OrgA override, saved with automatic moves off (nothing moves)."""
    org_override_model()(
        waffle_flag=flags.flag_name(), org=ORG, override_choice="on" if on else "off", enabled=True
    ).save()


# --- threads, backend ids, kills -------------------------------------------------------------


def backend_id(conn) -> int:
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            cursor.execute("SELECT pg_backend_pid()")
        else:
            cursor.execute("SELECT CONNECTION_ID()")
        return cursor.fetchone()[0]


def kill(victim: int) -> None:
    """Kill another session from this thread's connection."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_terminate_backend(%s)", [victim])
            assert cursor.fetchone()[0] is True
        else:
            cursor.execute("KILL %s", [victim])


class Pause:
    """Makes the ``nth`` call of a store function stop after its real work, in the thread that
    runs the move, until the test lets it go on."""

    def __init__(self, monkeypatch, name: str, nth: int = 1):
        self.reached, self.resume = threading.Event(), threading.Event()
        self.victim: int | None = None
        self.calls = 0
        # "sqlmoves.forward": the database's own statements; a bare name: a statement of
        # the Python path, which then takes every row (sqlmoves off).
        if name.startswith("sqlmoves.") and not sqlmoves.usable():
            pytest.skip("no database path here")
        module = sqlmoves if name.startswith("sqlmoves.") else moves
        name = name.removeprefix("sqlmoves.")
        if module is moves:
            monkeypatch.setattr(sqlmoves, "usable", lambda: False)
        real = getattr(module, name)

        def paused(*args, **kwargs):
            result = real(*args, **kwargs)
            self.calls += 1
            if self.calls == nth:
                self.victim = backend_id(connection)  # the move's own connection
                self.reached.set()
                self.resume.wait(SAFETY_NET)
            return result

        monkeypatch.setattr(module, name, paused)


def this_databases_statement(forward: bool = True) -> str:
    """Where a move on this database does its writing: the database's own path, or (where
    there is none) the Python path's delete of the source rows."""
    if sqlmoves.usable():
        return "sqlmoves.forward" if forward else "sqlmoves.rollback"
    return "delete_legacy" if forward else "delete_casbin"


def kill_mid_move(monkeypatch, pause_at: str, move, *, nth: int = 1) -> dict:
    """Run ``move`` in a thread, kill its connection once ``pause_at`` has done its work, let
    it go on; return its box (``error`` is what the caller of the move saw)."""
    pause = Pause(monkeypatch, pause_at, nth)
    thread, box = in_thread(move)
    try:
        wait_for(pause.reached, thread, box, f"the move reaching {pause_at}")
        kill(pause.victim)
    finally:
        pause.resume.set()
        thread.join(SAFETY_NET)
    assert not thread.is_alive()
    monkeypatch.undo()
    return box


def assert_nothing_half_done(before) -> None:
    assert both_systems() == before, "a killed move left partial data"
    assert not MigrationRun.objects.filter(status=MigrationRun.Status.RUNNING).exists()
    assert org_is_free(), "the killed move's scope lock outlived its connection"


# --- 1. a connection killed in the middle of a move -------------------------------------------


@pytest.mark.parametrize("pause_at", ["insert_casbin", "delete_legacy", "sqlmoves.forward"])
def test_api_forward_move_killed_mid_move(pause_at, legacy_roles, monkeypatch):
    set_org_flag(True)
    before = both_systems()

    box = kill_mid_move(monkeypatch, pause_at, lambda: api.sync_org(ORG))

    assert isinstance(box.get("error"), DatabaseError), box
    assert_nothing_half_done(before)
    assert MigrationRun.objects.count() == 0  # the run died with its transaction

    [retry] = api.sync_org(ORG)
    assert (retry.status, retry.moved) == (COMPLETED, 6)
    assert {row[2] for row in both_systems()[0]} == {OTHER}


@pytest.mark.parametrize("pause_at", ["insert_legacy", "delete_casbin", "sqlmoves.rollback"])
def test_api_rollback_killed_mid_move(pause_at, casbin_roles, monkeypatch):
    set_org_flag(False)
    before = both_systems()

    box = kill_mid_move(monkeypatch, pause_at, lambda: api.sync_org(ORG))

    assert isinstance(box.get("error"), DatabaseError), box
    assert_nothing_half_done(before)

    [retry] = api.sync_org(ORG)
    assert (retry.status, retry.moved) == (COMPLETED, 6)
    assert both_systems()[1] == set()


def test_override_save_killed_mid_move_saves_nothing(legacy_roles, monkeypatch):
    """The move runs in the save's transaction: a dead connection takes the override row
    with it, so the flag never points at roles that did not move."""
    before = both_systems()

    def save():
        with override_settings(AUTHZ_MIGRATION_AUTOMATIC=True):
            set_org_flag(True)

    box = kill_mid_move(monkeypatch, this_databases_statement(), save)

    assert isinstance(box.get("error"), DatabaseError), box
    assert_nothing_half_done(before)
    assert not org_override_model().objects.exists()
    assert not flags.org_effective_state(ORG).enabled

    with override_settings(AUTHZ_MIGRATION_AUTOMATIC=True):
        set_org_flag(True)  # the next attempt
    assert flags.org_effective_state(ORG).enabled
    assert {row[2] for row in both_systems()[0]} == {OTHER}
    assert [(r.status, r.metadata["counts"]["moved"]) for r in MigrationRun.objects.all()] == [
        (COMPLETED, 6)
    ]


def test_command_killed_in_its_second_batch_keeps_the_first(legacy_roles, monkeypatch):
    """``sync --all`` works in batches, each its own transaction: a kill in the second batch
    leaves the first committed and the second untouched; re-running finishes the job."""
    from waffle import get_waffle_flag_model

    get_waffle_flag_model().objects.create(name=flags.flag_name(), everyone=True)
    out = io.StringIO()

    def command():
        call_command(
            "authz_migrate", "sync", "--all", "--batch-size", "3", "--no-input", stdout=out
        )

    box = kill_mid_move(monkeypatch, this_databases_statement(), command, nth=2)

    assert isinstance(box.get("error"), DatabaseError), box
    legacy, casbin = both_systems()
    assert len(legacy) == 4 and len(casbin) == 3, "exactly the first batch of three moved"
    assert [(r.status, r.metadata["counts"]["moved"]) for r in MigrationRun.objects.all()] == [
        (COMPLETED, 3)
    ]
    assert not MigrationRun.objects.filter(status=MigrationRun.Status.RUNNING).exists()
    assert org_is_free()

    call_command("authz_migrate", "sync", "--all", "--no-input", stdout=io.StringIO())
    legacy, casbin = both_systems()
    assert (len(legacy), len(casbin)) == (0, 7)
    assert api.verify_scope(everything=True) == []


# --- 2. a lock wait that times out ------------------------------------------------------------


@contextmanager
def short_lock_timeout():
    """This session waits for a row lock about a second at most (MariaDB's minimum is 1s)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET lock_timeout = '500ms'")
        else:
            cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SET lock_timeout = DEFAULT")
            else:
                cursor.execute("SET SESSION innodb_lock_wait_timeout = DEFAULT")


@contextmanager
def row_locked_elsewhere(queryset):
    """Another connection holds ``SELECT ... FOR UPDATE`` on the rows for the block."""
    held, release = threading.Event(), threading.Event()

    def hold():
        with transaction.atomic():
            assert list(queryset.select_for_update())
            held.set()
            release.wait(SAFETY_NET)

    thread, box = in_thread(hold)
    try:
        wait_for(held, thread, box, "the other connection locking the rows")
        yield
    finally:
        release.set()
        thread.join(SAFETY_NET)
    assert "error" not in box, box["error"]


def is_lock_timeout(text: str) -> bool:
    return "lock timeout" in text or "Lock wait timeout exceeded" in text


def test_lock_timeout_fails_the_api_run_and_says_why(legacy_roles, monkeypatch):
    set_org_flag(True)
    before = both_systems()
    held = legacy_role_model().objects.filter(course_id=COURSES[1])

    with short_lock_timeout(), row_locked_elsewhere(held):
        [out] = api.sync_org(ORG)

    assert out.status == FAILED
    run = MigrationRun.objects.get()
    assert run.status == FAILED
    assert is_lock_timeout(run.metadata["error"]), run.metadata["error"]
    # The statement that waited: the write of the source rows.
    where = this_databases_statement()
    if where.startswith("sqlmoves."):
        assert "sqlmoves.py" in run.metadata["traceback"]
        assert "in forward" in run.metadata["traceback"]
    else:
        assert where in run.metadata["traceback"]
    assert both_systems() == before

    [retry] = api.sync_org(ORG)
    assert (retry.status, retry.moved) == (COMPLETED, 6)


def test_lock_timeout_makes_the_command_exit_1_naming_the_error(casbin_roles):
    set_org_flag(False)
    before = both_systems()
    held = casbin_rule_model().objects.filter(v2=f"course-v1^{COURSES[0]}")
    out, err = io.StringIO(), io.StringIO()

    with short_lock_timeout(), row_locked_elsewhere(held):
        with pytest.raises(CommandError) as error:
            call_command(
                "authz_migrate", "sync", "--org", ORG, "--no-input", stdout=out, stderr=err
            )

    assert error.value.returncode == 1
    assert is_lock_timeout(err.getvalue()), err.getvalue()
    assert [r.status for r in MigrationRun.objects.all()] == [FAILED]
    assert both_systems() == before
    call_command("authz_migrate", "sync", "--org", ORG, "--no-input", stdout=io.StringIO())
    assert both_systems()[1] == set()


@override_settings(AUTHZ_MIGRATION_AUTOMATIC=True)
def test_lock_timeout_in_an_override_save_is_a_failed_run_and_the_flag_stays(legacy_roles):
    before = both_systems()
    held = legacy_role_model().objects.filter(course_id=COURSES[2])

    with short_lock_timeout(), row_locked_elsewhere(held):
        row = org_override_model()(
            waffle_flag=flags.flag_name(), org=ORG, override_choice="on", enabled=True
        )
        row.save()

    result = getattr(row, RESULT_ATTRIBUTE)
    assert result.failed
    assert is_lock_timeout(result.outcome.metadata["error"])
    assert [r.status for r in MigrationRun.objects.all()] == [FAILED]
    assert not flags.org_effective_state(ORG).enabled  # the compensating row restored it
    assert org_override_model().objects.count() == 2
    assert both_systems() == before

    row = org_override_model()(
        waffle_flag=flags.flag_name(), org=ORG, override_choice="on", enabled=True
    )
    row.save()
    assert getattr(row, RESULT_ATTRIBUTE).outcome.moved == 6
