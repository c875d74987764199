"""``authz_migrate sync --all`` killed or interrupted half way, on PostgreSQL and MariaDB.

DESIGN.md, "Management command": each batch is its own transaction and its own run, so a
process that dies at any point leaves whole batches behind, never half a batch, never a
``running`` run, never a lock; re-running the same command finds less to do and finishes.

The command runs in a child process (``python -m django authz_migrate ...``) against the test
database, over ~3,000 roles in 30 courses of 3 orgs with mixed flags: the global flag on, one
org forced off, and courses pinned against their org in both directions. The child is killed
with SIGKILL (no cleanup at all), or sent SIGINT (Ctrl-C: finish the batch, exit 130), once a
few batches have committed and while it is inside the next one: the child
(``tests/kill_child.py``) says so through a pipe and waits there, so the test never depends
on how fast either process runs.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from casbin_adapter.models import CasbinRule
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Count

from authz_migration import api, guard
from authz_migration.conf import legacy_role_model
from authz_migration.models import MigrationRun
from tests.helpers import ROLE_MAP, casbin_roles, legacy_roles

pytestmark = [pytest.mark.server_db, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent

ROLES = list(ROLE_MAP)

ORGS = ["OrgA", "OrgB", "OrgC"]
COURSES_PER_ORG = 10
USERS = 100  # one role per user and course: 3,000 course roles
ORG_WIDE_USERS = 10  # plus 10 org-wide roles per org
FORCED_OFF_ORG = "OrgC"
PINNED = {
    "course-v1:OrgA+C03+R": False,  # pinned to the legacy table while OrgA is on
    "course-v1:OrgB+C07+R": False,
    "course-v1:OrgC+C05+R": True,  # pinned to Casbin while OrgC is forced off
}
STRAY_CASBIN_COURSES = ["course-v1:OrgC+C01+R", "course-v1:OrgC+C02+R", "course-v1:OrgA+C03+R"]
STRAY_USERS = 20  # Casbin rows for courses whose flag names the legacy table: to roll back

COMMAND = ["sync", "--all", "--batch-size", "50", "--no-input"]
RUNS_BEFORE_STOPPING = 5
TIMEOUT = 120


def course_key(org: str, number: int) -> str:
    return f"course-v1:{org}+C{number:02d}+R"


def expected_system(scope: str) -> bool:
    """True when the flags put ``scope`` (a course key or ``org:ORG``) in Casbin."""
    if scope in PINNED:
        return PINNED[scope]
    org = scope[4:] if scope.startswith("org:") else scope.split(":", 1)[1].split("+", 1)[0]
    return org != FORCED_OFF_ORG


# --- both systems --------------------------------------------------------------------------


def duplicate_casbin_rows() -> list:
    return list(
        CasbinRule.objects.values("ptype", "v0", "v1", "v2", "v3", "v4", "v5")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )


def misplaced() -> list:
    """Roles sitting in the system their flag does not name."""
    wrong = [("legacy", *key) for key in legacy_roles() if expected_system(key[2])]
    wrong += [("casbin", *key) for key in casbin_roles() if not expected_system(key[2])]
    return sorted(wrong)


def moved_by_runs(direction: str, count: str) -> int:
    runs = MigrationRun.objects.filter(migration_type=direction)
    return sum(r.metadata.get("counts", {}).get(count, 0) for r in runs)


def assert_consistent(seeded: Counter, seeded_legacy: int, seeded_casbin: int) -> None:
    """Nothing lost, nothing duplicated, no run left ``running``, and the committed runs
    account for exactly the rows that moved."""
    assert duplicate_casbin_rows() == []
    assert legacy_roles() + casbin_roles() == seeded
    assert not MigrationRun.objects.filter(status="running").exists()
    assert set(MigrationRun.objects.values_list("status", flat=True)) <= {"completed"}
    # A batch's run row commits with the batch or not at all: the runs tell what moved.
    forward_moved = moved_by_runs("forward", "moved")
    forward_created = moved_by_runs("forward", "created")
    back_moved = moved_by_runs("rollback", "moved")
    back_created = moved_by_runs("rollback", "created")
    assert legacy_role_model().objects.count() == seeded_legacy - forward_moved + back_created
    assert CasbinRule.objects.count() == seeded_casbin + forward_created - back_moved


# --- the population ------------------------------------------------------------------------


@pytest.fixture
def population(server_db, global_flag, org_override, course_override):
    """~3,000 legacy roles and a few stray Casbin rows; returns what was seeded."""
    global_flag(True)
    org_override(FORCED_OFF_ORG, "off")
    for course, state in PINNED.items():
        course_override(course, "on" if state else "off")

    user_model = get_user_model()
    user_model.objects.bulk_create(
        [user_model(username=f"u{i:03d}") for i in range(USERS)]
        + [user_model(username=f"stray{i:02d}") for i in range(STRAY_USERS)]
    )
    users = list(user_model.objects.filter(username__startswith="u").order_by("username"))
    model = legacy_role_model()
    rows = []
    for o, org in enumerate(ORGS):
        for c in range(COURSES_PER_ORG):
            course = course_key(org, c)
            for i, user in enumerate(users):
                rows.append(model(user=user, org=org, course_id=course, role=ROLES[(i + c) % 6]))
        for i, user in enumerate(users[:ORG_WIDE_USERS]):
            rows.append(model(user=user, org=org, course_id="", role=ROLES[(i + o) % 6]))
    model.objects.bulk_create(rows, batch_size=1000)
    CasbinRule.objects.bulk_create(
        [
            CasbinRule(
                ptype="g",
                v0=f"user^stray{i:02d}",
                v1=f"role^{ROLE_MAP[ROLES[i % 6]]}",
                v2=f"course-v1^{course}",
            )
            for course in STRAY_CASBIN_COURSES
            for i in range(STRAY_USERS)
        ]
    )
    seeded = legacy_roles() + casbin_roles()
    assert (
        seeded.total()
        == len(ORGS) * (COURSES_PER_ORG * USERS + ORG_WIDE_USERS)
        + len(STRAY_CASBIN_COURSES) * STRAY_USERS
    )
    assert misplaced()  # there is work to do
    return seeded, legacy_role_model().objects.count(), CasbinRule.objects.count()


# --- the child process ---------------------------------------------------------------------


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["AUTHZ_TEST_DB"] = settings.DB
    # The child opens the test database itself (it runs no tests, so its NAME is used).
    name = connection.settings_dict["NAME"]
    env["AUTHZ_TEST_PG_NAME" if connection.vendor == "postgresql" else "AUTHZ_TEST_MYSQL_NAME"] = (
        name
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Child:
    """``authz_migrate`` in a child process (``tests/kill_child.py``) that stops inside the
    batch of its ``pause_at``-th run, with ``pause_at - 1`` runs committed, and tells us."""

    def __init__(self, tmp_path: Path, name: str, pause_at: int, command=COMMAND):
        self.out, self.err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        event_r, event_w = os.pipe()
        resume_r, resume_w = os.pipe()
        env = child_env()
        env.update(
            AUTHZ_KILL_PAUSE_AT_RUN=str(pause_at),
            AUTHZ_KILL_EVENT_FD=str(event_w),
            AUTHZ_KILL_RESUME_FD=str(resume_r),
        )
        with self.out.open("w") as stdout, self.err.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(REPO / "tests" / "kill_child.py"), *command],
                env=env,
                cwd=REPO,
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                pass_fds=(event_w, resume_r),
            )
        os.close(event_w)
        os.close(resume_r)
        self.events = os.fdopen(event_r, "rb", buffering=0)
        self.resume = os.fdopen(resume_w, "wb", buffering=0)

    def wait_until_inside_a_batch(self) -> None:
        """Block until the child says it is inside a batch's transaction. The timeout is a
        safety net for a hung child, not part of the test: a child that ends first closes
        the pipe, and the test fails at once with its stderr."""
        ready, _, _ = select.select([self.events], [], [], TIMEOUT)
        line = self.events.readline() if ready else b""
        if line != b"IN_BATCH\n":
            self.process.kill()
            self.process.wait(TIMEOUT)
            why = "ended before its batch" if ready else f"said nothing for {TIMEOUT}s"
            pytest.fail(f"child {why}: {self.err.read_text()}")

    def let_the_batch_finish(self) -> None:
        self.resume.write(b"go\n")

    def close(self) -> None:
        self.process.kill()
        self.process.wait(TIMEOUT)
        self.events.close()
        self.resume.close()


def run_to_completion(tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "django", "authz_migrate", *COMMAND],
        env=child_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    (tmp_path / f"{name}.out").write_text(done.stdout)
    (tmp_path / f"{name}.err").write_text(done.stderr)
    return done


def wait_until_locks_are_free() -> None:
    """Block until nothing holds the instance lock: a killed child's transaction is rolled
    back by the server once it notices the connection is gone."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '30s'")
        guard.acquire(instance=True, wait=True)


def assert_finished(seeded: Counter) -> None:
    assert api.verify_scope(everything=True) == []
    assert misplaced() == []
    assert duplicate_casbin_rows() == []
    assert legacy_roles() + casbin_roles() == seeded
    assert not MigrationRun.objects.filter(status="running").exists()


# --- the tests -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_sigkill_mid_sync_loses_nothing_and_a_rerun_finishes(population, tmp_path):
    seeded, seeded_legacy, seeded_casbin = population
    child = Child(tmp_path, "killed", pause_at=RUNS_BEFORE_STOPPING + 1)
    try:
        # Killed in the middle of a batch: its transaction holds the scope lock and has
        # written the batch's rows and its run row, uncommitted.
        child.wait_until_inside_a_batch()
        child.process.send_signal(signal.SIGKILL)
        child.process.wait(TIMEOUT)
    finally:
        child.close()
    assert child.process.returncode == -signal.SIGKILL

    # Partial progress: some batches committed, some work is left (how much depends on the
    # speed of the machine; the batch the kill interrupted is left at least).
    wait_until_locks_are_free()
    assert MigrationRun.objects.count() == RUNS_BEFORE_STOPPING
    assert CasbinRule.objects.count() > seeded_casbin
    assert misplaced()
    assert_consistent(seeded, seeded_legacy, seeded_casbin)

    done = run_to_completion(tmp_path, "rerun")
    assert done.returncode == 0, done.stderr
    assert "Moved" in done.stdout
    assert_finished(seeded)
    assert_consistent(seeded, seeded_legacy, seeded_casbin)
    assert MigrationRun.objects.filter(migration_type="rollback").exists()


@pytest.mark.django_db(transaction=True)
def test_ctrl_c_mid_sync_finishes_the_batch_exits_130_and_a_rerun_finishes(population, tmp_path):
    seeded, seeded_legacy, seeded_casbin = population
    child = Child(tmp_path, "interrupted", pause_at=RUNS_BEFORE_STOPPING + 1)
    try:
        # Ctrl-C in the middle of a batch: that batch finishes, no other starts.
        child.wait_until_inside_a_batch()
        child.process.send_signal(signal.SIGINT)
        child.let_the_batch_finish()
        child.process.wait(TIMEOUT)
    finally:
        child.close()
    output = child.out.read_text() + child.err.read_text()
    assert child.process.returncode == 130, output
    assert MigrationRun.objects.count() == RUNS_BEFORE_STOPPING + 1
    assert "interrupted" in output
    assert "Traceback" not in output
    assert "direction  scope" in child.out.read_text()  # the summary of what was done

    # Stopped cleanly: no lock held, and part of the work is left.
    with transaction.atomic():
        guard.acquire(instance=True, wait=False)
    assert misplaced()
    assert_consistent(seeded, seeded_legacy, seeded_casbin)

    done = run_to_completion(tmp_path, "rerun")
    assert done.returncode == 0, done.stderr
    assert_finished(seeded)
    assert_consistent(seeded, seeded_legacy, seeded_casbin)
