"""During a 25,000-row org move, another org's saves and role inserts do not wait on the move's
locks (issue 14; DESIGN.md, "A move locks only what it moves").

The move runs in a thread whose transaction is held open once the move is done (the override
save's transaction, before its commit). Meanwhile, one at a time and each on its own
connection, another org whose courses share every user with the moving org saves a course
override that moves roles forward, saves one that moves roles back, and grants legacy roles.
In the unique key (user, org, course_id, role) each user's rows of the two orgs are
neighbours.

Deterministic, without clocks: an operation that needed one of the move's locks could not
finish before the move commits, and the move commits only after every operation has finished.
While an operation runs, the server's lock-wait views (``INNODB_LOCK_WAITS`` on MariaDB,
``pg_blocking_pids`` on PostgreSQL) are polled; an operation seen waiting on the move's
connection fails the test at once, naming the statement that waits.
"""

from __future__ import annotations

import threading
import time

import pytest
from casbin_adapter.models import CasbinRule
from django.db import connection, connections, transaction
from django.test import override_settings

from authz_migration.conf import course_override_model, legacy_role_model, org_override_model
from tests.conftest import FLAG
from tests.helpers import in_thread, make_users

pytestmark = [pytest.mark.server_db, pytest.mark.slow]

BIG, SMALL = "BigOrg", "SmallOrg"
USERS = 50
BIG_COURSES = 500  # x 50 users = 25,000 roles
SMALL_FORWARD = "course-v1:SmallOrg+Forward+2024"
SMALL_BACK = "course-v1:SmallOrg+Back+2024"
SMALL_GRANTS = "course-v1:SmallOrg+Granted+2024"
TIMEOUT = 120


def big_course(i: int) -> str:
    return f"course-v1:{BIG}+C{i}+2024"


def backend_id() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_backend_pid()"
            if connection.vendor == "postgresql"
            else "SELECT CONNECTION_ID()"
        )
        return cursor.fetchone()[0]


def waiting_on(blocker: int) -> list[str]:
    """Statements of other connections waiting for a lock held by connection ``blocker``."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT query FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                [blocker],
            )
        else:
            cursor.execute(
                "SELECT r.trx_query FROM information_schema.INNODB_LOCK_WAITS w "
                "JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id "
                "JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id "
                "WHERE b.trx_mysql_thread_id = %s",
                [blocker],
            )
        return [str(row[0])[:300] for row in cursor.fetchall()]


def save_override(model, choice: str, **key) -> None:
    with transaction.atomic():
        model(waffle_flag=FLAG, override_choice=choice, enabled=True, **key).save()


def grant_legacy(users) -> None:
    model = legacy_role_model()
    with transaction.atomic():
        for user in users:
            model.objects.create(user=user, org=SMALL, course_id=SMALL_GRANTS, role="staff")


def casbin_role(user, course: str) -> CasbinRule:
    return CasbinRule(
        ptype="g", v0=f"user^{user.username}", v1="role^course_staff", v2=f"course-v1^{course}"
    )


@pytest.fixture
def population(global_flag):
    """25,000 BigOrg roles (legacy or Casbin), and SmallOrg roles of the same 50 users: one
    course in the legacy table, one (pinned on) in Casbin."""
    global_flag(False)

    def seed(big_in_casbin: bool):
        users = make_users("lw", USERS)
        legacy = legacy_role_model()
        if big_in_casbin:
            CasbinRule.objects.bulk_create(
                [casbin_role(u, big_course(i)) for i in range(BIG_COURSES) for u in users],
                batch_size=5000,
            )
            save_override(org_override_model(), "on", org=BIG)  # automatic moves are off
        else:
            legacy.objects.bulk_create(
                [
                    legacy(user=u, org=BIG, course_id=big_course(i), role="staff")
                    for i in range(BIG_COURSES)
                    for u in users
                ],
                batch_size=5000,
            )
        legacy.objects.bulk_create(
            [legacy(user=u, org=SMALL, course_id=SMALL_FORWARD, role="staff") for u in users]
        )
        CasbinRule.objects.bulk_create([casbin_role(u, SMALL_BACK) for u in users])
        save_override(course_override_model(), "on", course_id=SMALL_BACK)
        return users

    return seed


class HeldMove(threading.Thread):
    """Saves BigOrg's override (the move runs in that save's transaction), then keeps the
    transaction open until released."""

    def __init__(self, choice: str):
        super().__init__(daemon=True)
        self.choice = choice
        self.moved, self.release = threading.Event(), threading.Event()
        self.backend: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with transaction.atomic():
                self.backend = backend_id()
                org_override_model()(
                    waffle_flag=FLAG, org=BIG, override_choice=self.choice, enabled=True
                ).save()
                self.moved.set()
                self.release.wait(TIMEOUT)
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.moved.set()
        finally:
            connections.close_all()


def run_beside(move: HeldMove, name: str, target, *args) -> None:
    """Run ``target`` on its own connection while ``move`` holds its transaction; fail if it
    is seen waiting on the move's connection."""
    thread, box = in_thread(target, *args)
    deadline = time.monotonic() + TIMEOUT
    while thread.is_alive():
        waits = waiting_on(move.backend)
        assert waits == [], f"{name} waits on the move's locks: {waits}"
        assert time.monotonic() < deadline, f"{name} did not finish"
        # MariaDB refreshes its INNODB_TRX / INNODB_LOCK_WAITS snapshot only when it has not
        # been read for 0.1 s: polling faster would keep reading the first snapshot.
        thread.join(0.25)
    assert "error" not in box, f"{name} failed: {box.get('error')!r}"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("direction", ["forward", "rollback"])
def test_another_org_does_not_wait_during_a_large_org_move(server_db, population, direction):
    users = population(big_in_casbin=direction == "rollback")
    move = HeldMove("on" if direction == "forward" else "off")
    with override_settings(AUTHZ_MIGRATION_AUTOMATIC=True):
        move.start()
        try:
            assert move.moved.wait(TIMEOUT) and move.error is None, move.error
            overrides = course_override_model()
            run_beside(
                move,
                "a course override save moving SmallOrg roles forward",
                lambda: save_override(overrides, "on", course_id=SMALL_FORWARD),
            )
            run_beside(
                move,
                "a course override save moving SmallOrg roles back",
                lambda: save_override(overrides, "off", course_id=SMALL_BACK),
            )
            run_beside(move, "legacy role grants in SmallOrg", grant_legacy, users)
        finally:
            move.release.set()
            move.join(TIMEOUT)
    assert move.error is None, move.error

    legacy = legacy_role_model().objects
    big_legacy = legacy.filter(org=BIG).count()
    big_casbin = CasbinRule.objects.filter(v2__startswith=f"course-v1^course-v1:{BIG}+").count()
    expected = (0, 25000) if direction == "forward" else (25000, 0)
    assert (big_legacy, big_casbin) == expected
    assert not legacy.filter(course_id=SMALL_FORWARD).exists()
    assert legacy.filter(course_id=SMALL_BACK).count() == USERS
    assert legacy.filter(course_id=SMALL_GRANTS).count() == USERS
