"""The scope guard under real concurrency: threads with their own database connections, and a
process killed while it holds a lock.

Runs whose row sets can overlap (two moves of one org, a course and its org, anything and an
instance-wide run) never execute at once; different orgs never wait for each other; a dead
process never leaves a scope locked; ``wait=False`` on a busy scope records a ``skipped`` run.

Row locks mean nothing on SQLite (one writer at a time), so the concurrent tests need
PostgreSQL or MariaDB (``server_db``); the others run on every database.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection, transaction

from authz_migration import api, guard, moves, orchestrator
from authz_migration.models import MigrationRun
from tests.helpers import (
    ROLE_MAP,
    ROLES,
    add_casbin_role,
    duplicate_casbin_rows,
    in_thread,
    legacy_rows_by_user_id,
    org_glob,
    role_multiset,
)

ORG_A, ORG_B = "OrgA", "OrgB"
A1, A2, A3 = (f"course-v1:OrgA+C{i}+2024" for i in (1, 2, 3))
B1, B2 = (f"course-v1:OrgB+C{i}+2024" for i in (1, 2))
LOCK_A, LOCK_B = guard.org_lock_key(ORG_A), guard.org_lock_key(ORG_B)
SKIPPED = MigrationRun.Status.SKIPPED
COMPLETED = MigrationRun.Status.COMPLETED
REPO = Path(__file__).resolve().parents[1]

concurrent = pytest.mark.django_db(transaction=True)


@pytest.fixture
def lock_rows(transactional_db):
    """The lock rows, committed (as after the first move ever made in each scope)."""
    guard.ensure_lock_rows([guard.INSTANCE, LOCK_A, LOCK_B])


@contextmanager
def held(org_keys=(), instance=False):
    """Another connection holds ``guard.acquire(org_keys, instance=instance)`` in an open
    transaction for the length of the block."""
    taken, release = threading.Event(), threading.Event()

    def hold():
        with transaction.atomic():
            guard.acquire(list(org_keys), instance=instance)
            taken.set()
            release.wait(30)

    thread, box = in_thread(hold)
    try:
        assert taken.wait(10), box.get("error", "the holder did not get the lock")
        yield
    finally:
        release.set()
        thread.join(30)
    assert "error" not in box, box["error"]


def try_acquire(org_keys=(), instance=False) -> bool:
    """Whether this connection gets the lock at once (released again straight away)."""
    try:
        with transaction.atomic():
            guard.acquire(list(org_keys), instance=instance, wait=False)
    except guard.ScopeBusy:
        return False
    return True


# --- (a) who blocks whom --------------------------------------------------------------------


@concurrent
def test_an_org_lock_blocks_that_org_and_instance_runs_only(server_db, lock_rows):
    with held([LOCK_A]):
        with pytest.raises(guard.ScopeBusy):
            with transaction.atomic():
                guard.acquire([LOCK_A], wait=False)
        assert try_acquire([LOCK_B])  # different orgs never block each other
        assert try_acquire([LOCK_B, "org:OrgAB"])
        assert not try_acquire([LOCK_A, LOCK_B])
        assert not try_acquire([], instance=True)
        assert try_acquire([])  # a shared instance lock is compatible with org locks

    assert try_acquire([LOCK_A])
    assert try_acquire([], instance=True)


@concurrent
def test_holding_many_orgs_locks_each_and_creates_missing_rows_first(server_db, lock_rows):
    """The cutover's pins hold many orgs at once; an org without a lock row yet, and
    ``orga`` beside ``OrgA`` (one row under MariaDB's _ci collation, two on PostgreSQL), are
    held too, without waiting on the holder's own lock."""
    orgs = [ORG_A, "OrgNew", "orga"]
    taken, release = threading.Event(), threading.Event()

    def hold_many():
        with transaction.atomic():
            guard.hold_orgs(orgs)
            taken.set()
            release.wait(30)

    thread, box = in_thread(hold_many)
    try:
        assert taken.wait(20), box.get("error", "hold_orgs did not return")
        for org in orgs:
            assert not try_acquire([guard.org_lock_key(org)])
        assert try_acquire([LOCK_B])
        assert try_acquire([])  # the instance is shared
    finally:
        release.set()
        thread.join(30)
    assert "error" not in box, box["error"]
    assert all(try_acquire([guard.org_lock_key(org)]) for org in orgs)


@concurrent
def test_an_instance_lock_blocks_every_scope(server_db, lock_rows):
    with held(instance=True):
        assert not try_acquire([LOCK_A])
        assert not try_acquire([LOCK_B])
        assert not try_acquire([], instance=True)

    assert try_acquire([LOCK_B])


@concurrent
def test_a_course_move_excludes_its_org_and_sibling_courses_only(
    server_db, lock_rows, make_user, grant, course_override, monkeypatch
):
    """While a course move runs, its org and the org's other courses are busy; another org's
    courses are not."""
    alice = make_user("alice")
    for course in (A1, A2, B1):
        grant(alice, course, "staff")
        course_override(course, "on")
    inside, release = threading.Event(), threading.Event()
    holder: dict = {}
    real = moves.forward_batch

    def paused_in_holder(*args, **kwargs):
        if threading.get_ident() == holder.get("thread"):
            inside.set()
            release.wait(10)
        return real(*args, **kwargs)

    def course_move():
        holder["thread"] = threading.get_ident()
        return api.sync_course(A1, wait=True)

    monkeypatch.setattr(moves, "forward_batch", paused_in_holder)
    thread, box = in_thread(course_move)
    try:
        assert inside.wait(10)
        org_runs = api.sync_org(ORG_A, wait=False)
        [sibling] = api.sync_course(A2, wait=False)
        [other_org] = api.sync_course(B1, wait=False)
    finally:
        release.set()
        thread.join(30)

    assert org_runs and {o.status for o in org_runs} == {SKIPPED}
    assert sibling.status == SKIPPED
    assert (other_org.status, other_org.moved) == (COMPLETED, 1)
    assert [(o.status, o.moved) for o in box["result"]] == [(COMPLETED, 1)]
    assert legacy_rows_by_user_id() == {(alice.pk, ORG_A, A2, "staff")}


@concurrent
def test_wait_true_waits_for_the_holder_and_then_gets_the_lock(server_db, lock_rows):
    got = threading.Event()

    def waiter():
        with transaction.atomic():
            guard.acquire([LOCK_A], wait=True)
            got.set()

    with held([LOCK_A]):
        thread, box = in_thread(waiter)
        assert not got.wait(0.5), "acquired while another transaction held the org"
    assert got.wait(10)
    thread.join(10)
    assert "error" not in box


def _is_deadlock(error: BaseException) -> bool:
    cause = error.__cause__ or error
    return getattr(cause, "args", (None,))[0] == 1213 or getattr(cause, "sqlstate", "") == "40P01"


@concurrent
def test_moves_of_two_orgs_at_once_both_complete(
    server_db, lock_rows, make_user, grant, org_override, monkeypatch
):
    """Different orgs never wait for each other, so neither may fail because of the other.

    The interleaving is forced: OrgB's rollback has written its legacy rows and is about to
    delete its Casbin rows when OrgA's forward move writes its Casbin rows and deletes its
    legacy rows. The users hold roles in both orgs, as staff commonly do. On MariaDB this
    deadlocks (each DELETE by primary key scans, and waits on, the rows the other move just
    inserted): the victim must be retried, not surface as an error.
    """
    users = [make_user(f"u{i}") for i in range(4)]
    for i, user in enumerate(users):
        grant(user, f"course-v1:OrgA+C{i}+2024", "staff")
        add_casbin_role(user.username, "course_staff", f"course-v1:OrgB+C{i}+2024")
    org_override(ORG_A, "on")
    org_override(ORG_B, "off")
    before = role_multiset()
    b_inserted, go = threading.Event(), threading.Event()
    real_delete = moves.delete_casbin

    def delete_after_a_moved(pks):
        b_inserted.set()
        go.wait(10)
        return real_delete(pks)

    monkeypatch.setattr(moves, "delete_casbin", delete_after_a_moved)
    thread_b, box_b = in_thread(api.sync_org, ORG_B, wait=True)
    assert b_inserted.wait(10)
    thread_a, box_a = in_thread(api.sync_org, ORG_A, wait=True)
    time.sleep(0.5)  # OrgA's move runs up to wherever it has to wait, if anywhere
    go.set()
    thread_b.join(30)
    thread_a.join(30)

    assert "error" not in box_a, box_a.get("error")
    assert "error" not in box_b, box_b.get("error")
    assert [o.status for o in box_a["result"] + box_b["result"]] == [COMPLETED, COMPLETED]
    assert api.verify_scope(orgs=[ORG_A, ORG_B]) == []
    assert role_multiset() == before


# --- (d) wait=False on a busy scope ---------------------------------------------------------


@pytest.fixture
def roles_in_org_a(make_user, grant, org_override):
    alice = make_user("alice")
    grant(alice, A1, "staff")
    grant(alice, B1, "staff")
    org_override(ORG_A, "on")
    org_override(ORG_B, "on")
    return alice


@concurrent
def test_wait_false_on_a_busy_scope_records_a_skipped_run(server_db, lock_rows, roles_in_org_a):
    alice = roles_in_org_a
    with held([LOCK_A]):
        [org_run] = api.sync_org(ORG_A, wait=False)
        course_run = api.migrate_course(A1, True, wait=False)
        instance_runs = list(api.sync_instance(wait=False))
        [other_org] = api.sync_org(ORG_B, wait=False)

        assert legacy_rows_by_user_id() == {(alice.pk, ORG_A, A1, "staff")}  # nothing of OrgA moved

    for outcome in (org_run, course_run):
        assert outcome.status == SKIPPED
        assert "scope busy" in outcome.metadata["reason"]
    # The instance sync is skipped in both directions (forward, then rollback).
    assert instance_runs and {o.status for o in instance_runs} == {SKIPPED}
    assert (other_org.status, other_org.moved) == (COMPLETED, 1)
    stored = list(
        MigrationRun.objects.order_by("id").values_list("scope_type", "scope_key", "status")
    )
    assert stored == [
        ("org", ORG_A, SKIPPED),
        ("course", A1, SKIPPED),
        *[("instance", "", SKIPPED)] * len(instance_runs),
        ("org", ORG_B, COMPLETED),
    ]
    # Re-running once the scope is free does the work.
    [again] = api.sync_org(ORG_A, wait=False)
    assert (again.status, again.moved) == (COMPLETED, 1)


@concurrent
def test_wait_false_inside_the_callers_transaction_is_skipped(server_db, lock_rows, roles_in_org_a):
    with held([LOCK_A]):
        with transaction.atomic():
            [outcome] = api.sync_org(ORG_A, wait=False)
            assert outcome.status == SKIPPED
    assert MigrationRun.objects.get().status == SKIPPED


@concurrent
def test_wait_false_never_waits_for_a_move_creating_its_lock_row(
    server_db, make_user, grant, org_override, monkeypatch
):
    """The first move ever made in an org creates its lock row; a run that does not wait must
    not queue behind that move's uncommitted insert."""
    grant(make_user("alice"), A1, "staff")
    org_override(ORG_A, "on")
    # No lock rows yet: this is the first move ever made in OrgA.
    inside, release = threading.Event(), threading.Event()
    real = moves.forward_batch

    def slow_batch(*args, **kwargs):
        inside.set()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(moves, "forward_batch", slow_batch)
    thread, box = in_thread(api.sync_org, ORG_A, wait=True)
    try:
        assert inside.wait(10)
        timer = threading.Timer(3, release.set)  # unblocks a waiting call, failing the test
        timer.start()
        started = time.monotonic()
        [outcome] = api.sync_org(ORG_A, wait=False)
        elapsed = time.monotonic() - started
        timer.cancel()
    finally:
        release.set()
        thread.join(30)
    assert "error" not in box
    assert outcome.status == SKIPPED
    assert elapsed < 1


# --- (c) no scope stays locked --------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import time
    import django
    django.setup()
    from django.db import transaction
    from authz_migration import guard
    with transaction.atomic():
        guard.acquire([{lock!r}])
        print("locked", flush=True)
        time.sleep(120)
    """
)


def _child_env() -> dict:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["AUTHZ_TEST_DB"] = "postgres" if connection.vendor == "postgresql" else "mariadb"
    name = connection.settings_dict["NAME"]  # the test database, test_<name>
    env["AUTHZ_TEST_PG_NAME" if connection.vendor == "postgresql" else "AUTHZ_TEST_MYSQL_NAME"] = (
        name
    )
    return env


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline().strip() if ready else ""


@concurrent
def test_a_killed_process_does_not_keep_its_scope_locked(server_db, lock_rows, roles_in_org_a):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(lock=LOCK_A)],
        cwd=REPO,
        env=_child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = _read_line(child, 60)
        assert line == "locked", child.stderr.read() if child.poll() is not None else line
        # The child really holds OrgA: a run that does not wait is skipped.
        [busy] = api.sync_org(ORG_A, wait=False)
        assert busy.status == SKIPPED

        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        child.stdout.close()
        child.stderr.close()

    deadline = time.monotonic() + 5
    while True:
        [outcome] = api.sync_org(ORG_A, wait=False)
        if outcome.status != SKIPPED or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (outcome.status, outcome.moved) == (COMPLETED, 1)


@pytest.mark.django_db
def test_a_running_run_left_by_a_crashed_process_blocks_nothing(roles_in_org_a):
    """Runs are not locks: a ``running`` row (what an old process would leave) is history."""
    for scope_type, key in (("org", ORG_A), ("course", A1), ("instance", "")):
        MigrationRun.objects.create(
            migration_type="forward",
            scope_type=scope_type,
            scope_key=key,
            trigger="command",
            status=MigrationRun.Status.RUNNING,
        )

    [org_run] = api.sync_org(ORG_A, wait=False)
    instance_runs = list(api.sync_instance(wait=False))

    assert (org_run.status, org_run.moved) == (COMPLETED, 1)
    assert [(o.status, o.moved) for o in instance_runs] == [(COMPLETED, 1), (COMPLETED, 0)]
    assert api.verify_scope(everything=True) == []


# --- (b) many concurrent moves --------------------------------------------------------------


class OverlapRecorder:
    """Records, per thread, when each batch of a move ran and which scope the move locked."""

    def __init__(self, monkeypatch, pause: float = 0.002):
        self.pause = pause
        self.local = threading.local()
        self.mutex = threading.Lock()
        self.intervals: list[tuple[tuple, int, float, float]] = []
        self.deadlocked: set[int] = set()  # indexes into intervals
        apply_ = orchestrator._apply

        def scoped_apply(move, *args, **kwargs):
            # The rows a move touches, worked out here rather than taken from the code
            # under test: an instance move touches everything, a course move its org's.
            if move.scope_type == orchestrator.INSTANCE:
                self.local.scope = ("instance",)
            elif move.scope_type == orchestrator.COURSE:
                self.local.scope = ("org", move.scope_key.split(":", 1)[1].split("+", 1)[0])
            else:
                self.local.scope = ("org", move.scope_key)
            return apply_(move, *args, **kwargs)

        monkeypatch.setattr(orchestrator, "_apply", scoped_apply)
        monkeypatch.setattr(moves, "forward_batch", self._timed(moves.forward_batch))
        monkeypatch.setattr(moves, "rollback_batch", self._timed(moves.rollback_batch))

    def _timed(self, batch):
        def timed(*args, **kwargs):
            enter = time.perf_counter()
            time.sleep(self.pause)  # widen the window a broken guard would let others into
            deadlocked = False
            try:
                return batch(*args, **kwargs)
            except Exception as exc:
                deadlocked = _is_deadlock(exc)
                raise
            finally:
                if not deadlocked:
                    time.sleep(self.pause)
                with self.mutex:
                    self.intervals.append(
                        (self.local.scope, threading.get_ident(), enter, time.perf_counter())
                    )
                    if deadlocked:
                        self.deadlocked.add(len(self.intervals) - 1)

        return timed

    def overlaps(self) -> list:
        """Pairs of batches of conflicting scopes, in different threads, that ran at once.

        A batch that ended in a deadlock is left out: the database rolled back its whole
        transaction, discarding its writes and releasing its scope lock, at a moment before
        the thread could note the batch's end."""
        found = []
        kept = [iv for i, iv in enumerate(self.intervals) if i not in self.deadlocked]
        for i, (scope_a, thread_a, enter_a, exit_a) in enumerate(kept):
            for scope_b, thread_b, enter_b, exit_b in kept[i + 1 :]:
                if thread_a == thread_b:
                    continue
                conflict = "instance" in (scope_a[0], scope_b[0]) or scope_a == scope_b
                if conflict and enter_a < exit_b and enter_b < exit_a:
                    found.append((scope_a, scope_b))
        return found


@pytest.fixture
def shared_roles(make_user, grant):
    """Roles of two orgs spread over both systems, org-wide ones included."""
    users = [make_user(f"u{i}") for i in range(6)]
    for i, user in enumerate(users):
        for j, course in enumerate((A1, A2, A3, B1, B2)):
            role = ROLES[(i + j) % len(ROLES)]
            if (i + j) % 2:
                grant(user, course, role)
            else:
                add_casbin_role(user.username, ROLE_MAP[role], course)
        org = (ORG_A, ORG_B)[i % 2]
        if i % 3:
            grant(user, "", "staff", org=org)
        else:
            add_casbin_role(user.username, "course_staff", org_glob(org))
    return users


def run_round(operations) -> list:
    """Start every operation at once, each in its own thread; return their errors."""
    barrier = threading.Barrier(len(operations))

    def start(operation):
        barrier.wait(10)
        return operation()

    started = [in_thread(start, operation) for operation in operations]
    errors = []
    for thread, box in started:
        thread.join(60)
        assert not thread.is_alive(), "a move never finished (deadlock?)"
        if "error" in box:
            errors.append(box["error"])
    return errors


def _concurrent_rounds(rounds, global_flag, org_override, course_override, seed=7) -> list:
    """Rounds of six moves at once over two orgs and the instance; returns the errors."""
    rng = random.Random(seed)
    errors = []
    for _ in range(rounds):
        # Between rounds, flip the flags so that the syncs have work to do.
        global_flag(rng.random() < 0.5)
        org_override(ORG_A, rng.choice(["on", "off"]), enabled=rng.random() < 0.8)
        org_override(ORG_B, rng.choice(["on", "off"]), enabled=rng.random() < 0.8)
        course_override(A2, rng.choice(["on", "off"]), enabled=rng.random() < 0.5)
        forward_a, forward_b = rng.random() < 0.5, rng.random() < 0.5
        errors += run_round(
            [
                lambda: api.sync_org(ORG_A, wait=True),
                lambda f=forward_a: api.migrate_course(A1, f, force=True, wait=True),
                lambda: list(api.sync_instance(wait=True, batch_size=7)),
                lambda: api.sync_org(ORG_B, wait=True),
                lambda f=forward_b: api.migrate_org(ORG_B, f, force=True, wait=True),
                lambda: api.sync_course(A2, wait=True),
            ]
        )
    return errors


@concurrent
@pytest.mark.slow
def test_concurrent_moves_never_overlap_lose_or_duplicate_a_role(
    server_db, shared_roles, monkeypatch, global_flag, org_override, course_override
):
    before = role_multiset()
    assert before and max(before.values()) == 1
    recorder = OverlapRecorder(monkeypatch)

    errors = _concurrent_rounds(30, global_flag, org_override, course_override)

    assert errors == []
    assert recorder.overlaps() == []
    scopes = Counter(scope[0] for scope, *_ in recorder.intervals)
    assert scopes["instance"] > 0 and scopes["org"] > 0  # both kinds really ran
    assert duplicate_casbin_rows() == []
    assert role_multiset() == before
    runs = list(MigrationRun.objects.values_list("status", "metadata"))
    assert [(status, meta.get("error")) for status, meta in runs if status != COMPLETED] == []
    assert sum(meta["counts"]["moved"] for status, meta in runs if status == COMPLETED) > 0
    # Once everything has settled, a last sync puts every role where its flag points.
    list(api.sync_instance(wait=True))
    assert api.verify_scope(everything=True) == []
    assert role_multiset() == before


@concurrent
def test_the_overlap_recorder_sees_moves_the_guard_does_not_separate(
    server_db, shared_roles, monkeypatch, global_flag, org_override, course_override
):
    """The check above can fail: with the guard switched off, the same rounds overlap."""
    recorder = OverlapRecorder(monkeypatch, pause=0.02)
    monkeypatch.setattr(guard, "acquire", lambda *args, **kwargs: None)

    _concurrent_rounds(2, global_flag, org_override, course_override)  # errors are expected

    assert recorder.overlaps() != []
