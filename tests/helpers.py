"""Helpers shared by the tests: the default role map written out, both role stores read as
plain sets, Casbin rows written, role data seeded in bulk, threads with their own
connection and waits on their events, lock rows made in the test's transaction."""

from __future__ import annotations

import threading
import time
from collections import Counter

from django.contrib.auth import get_user_model
from django.db import connection, connections

from authz_migration.conf import legacy_role_model
from authz_migration.roles import reverse_role_map
from authz_migration.stores import casbin_rule_model

# Default role map, written out (DESIGN.md) rather than imported: the tests check the app
# against it.
ROLE_MAP = {
    "instructor": "course_admin",
    "staff": "course_staff",
    "limited_staff": "course_limited_staff",
    "data_researcher": "course_data_researcher",
    "beta_testers": "course_beta_tester",
    "ccx_coach": "ccx_coach",
}
ROLES = list(ROLE_MAP)
CASBIN_TO_LEGACY = {casbin: legacy for legacy, casbin in ROLE_MAP.items()}


def in_thread(target, *args, **kwargs) -> tuple[threading.Thread, dict]:
    """Start ``target`` in a thread with its own connection; the dict gets its result or
    error. The thread closes its connections when it ends."""
    box: dict = {}

    def run():
        try:
            box["result"] = target(*args, **kwargs)
        except BaseException as exc:  # handed to the test, which asserts on it
            box["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


# How long a test waits for an event before it calls the wait a hang. Only a hung test gets
# there: no outcome depends on how fast a machine is.
SAFETY_NET = 300


def wait_for(event: threading.Event, thread: threading.Thread, box: dict, what: str) -> None:
    """Block until ``event`` is set by ``thread`` (from :func:`in_thread`); fail at once if the
    thread ends without setting it (with the error it raised), or after :data:`SAFETY_NET`."""
    deadline = time.monotonic() + SAFETY_NET
    while not event.wait(0.05):
        if not thread.is_alive() and not event.is_set():
            raise AssertionError(f"{what}: the thread ended first ({box.get('error')!r})")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {SAFETY_NET}s; the thread hangs")


def lock_rows_in_test_transaction(monkeypatch) -> None:
    """On PostgreSQL and MariaDB the guard creates missing lock rows on a side connection,
    committed: in a test that rolls back they would outlive it. This makes them in the
    test's own transaction instead (the path SQLite and autocommit callers take anyway)."""
    from authz_migration import guard
    from authz_migration.models import ScopeLock

    def ensure(keys):
        rows = [ScopeLock(key=key) for key in sorted(set(keys))]
        ScopeLock.objects.bulk_create(rows, ignore_conflicts=True)

    monkeypatch.setattr(guard, "ensure_lock_rows", ensure)


def email_of(username: str) -> str:
    """The email address the ``people`` fixture (conftest.py) gives a user. Its local part
    is not the username, so a test can tell a leaked address from a username."""
    return f"{username}.mail@example.org"


def legacy_rows_by_user_id() -> set[tuple[int, str, str, str]]:
    """Every legacy row as (user_id, org, course_id, role)."""
    rows = legacy_role_model().objects.values_list("user_id", "org", "course_id", "role")
    return {(uid, org, str(course), role) for uid, org, course, role in rows}


def legacy_rows_by_username() -> set[tuple[str, str, str, str]]:
    """Every legacy row as (username, org, course_id, role)."""
    rows = legacy_role_model().objects.values_list("user__username", "org", "course_id", "role")
    return {(user, org, str(course), role) for user, org, course, role in rows}


def legacy_count() -> int:
    return legacy_role_model().objects.count()


def casbin_rows() -> set[tuple[str, str, str, str, str, str, str]]:
    """Every casbin_rule row as (ptype, v0, v1, v2, v3, v4, v5)."""
    return set(casbin_rule_model().objects.values_list("ptype", "v0", "v1", "v2", "v3", "v4", "v5"))


def casbin_count() -> int:
    return casbin_rule_model().objects.count()


def g(username: str, casbin_role: str, scope: str) -> tuple[str, ...]:
    """The exact casbin_rule row the app must write for one role (openedx-authz format)."""
    return ("g", f"user^{username}", f"role^{casbin_role}", f"course-v1^{scope}", "", "", "")


def org_glob(org: str) -> str:
    """The Casbin scope of an org-wide role, without the namespace."""
    return f"course-v1:{org}+*"


def add_casbin(v0: str, v1: str, v2: str, v3: str = "", v4: str = "", v5: str = "", ptype="g"):
    return casbin_rule_model().objects.create(ptype=ptype, v0=v0, v1=v1, v2=v2, v3=v3, v4=v4, v5=v5)


def add_casbin_role(username: str, casbin_role: str, scope: str):
    """A well-formed Casbin role row (``scope`` without the ``course-v1^`` namespace)."""
    return add_casbin(f"user^{username}", f"role^{casbin_role}", f"course-v1^{scope}")


def make_users(prefix: str, count: int) -> list:
    model = get_user_model()
    model.objects.bulk_create([model(username=f"{prefix}{i}") for i in range(count)])
    return list(model.objects.filter(username__startswith=prefix).order_by("id"))


def seed_legacy(org: str, courses: int, users: list, roles_per_course: int = 5) -> int:
    """``roles_per_course`` legacy rows in each of ``courses`` courses of ``org`` (bulk);
    returns how many rows were written."""
    model = legacy_role_model()
    objs = []
    for c in range(courses):
        course = f"course-v1:{org}+C{c}+R"
        for r in range(roles_per_course):
            user = users[(c + r) % len(users)]
            objs.append(model(user=user, org=org, course_id=course, role=ROLES[r % len(ROLES)]))
    model.objects.bulk_create(objs)
    return len(objs)


def role_multiset() -> Counter:
    """Every course-authoring role across both systems as (username, legacy role, scope),
    where scope is a course key or ``org:<ORG>`` for an org-wide role. A role present in both
    systems counts twice; one lost from both counts zero."""
    names = dict(get_user_model().objects.values_list("pk", "username"))
    found: Counter = Counter()
    for uid, org, course, role in legacy_role_model().objects.values_list(
        "user_id", "org", "course_id", "role"
    ):
        if role in ROLE_MAP:
            found[(names[uid], role, str(course) or f"org:{org}")] += 1
    reverse = reverse_role_map()
    for v0, v1, v2 in casbin_rule_model().objects.values_list("v0", "v1", "v2"):
        scope = v2.removeprefix("course-v1^")
        if scope.endswith("+*"):
            scope = "org:" + scope.removeprefix("course-v1:").removesuffix("+*")
        found[(v0.removeprefix("user^"), reverse[v1.removeprefix("role^")], scope)] += 1
    return found


def legacy_roles() -> Counter:
    """(username, role, scope) of every legacy row; scope is the course key or org:ORG."""
    rows = legacy_role_model().objects.values_list("user__username", "org", "course_id", "role")
    return Counter((user, role, str(course) or f"org:{org}") for user, org, course, role in rows)


def casbin_roles() -> Counter:
    """(username, legacy role, scope) of every Casbin row, mapped back with the role map
    (a Casbin role outside it is kept as it is)."""
    reverse = reverse_role_map()
    found: Counter = Counter()
    for v0, v1, v2 in casbin_rule_model().objects.values_list("v0", "v1", "v2"):
        scope = v2.removeprefix("course-v1^")
        if scope.endswith("+*"):
            scope = "org:" + scope.removeprefix("course-v1:").removesuffix("+*")
        role = reverse.get(v1.removeprefix("role^"), v1)
        found[(v0.removeprefix("user^"), role, scope)] += 1
    return found


def duplicate_casbin_rows() -> list:
    """(ptype, v0, v1, v2) groups that occur more than once in casbin_rule."""
    from django.db.models import Count

    return list(
        casbin_rule_model()
        .objects.values("ptype", "v0", "v1", "v2")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )


def vendor() -> str:
    return connection.vendor


def fill_casbin_since_analyze(cursor, org: str, rows: int = 50000) -> None:
    """``casbin_rule`` analyzed empty, then given ``rows`` role rows of ``org`` (PostgreSQL):
    a table a first sync fills, whose statistics still say it is empty."""
    cursor.execute("ANALYZE casbin_rule")
    cursor.execute(
        "INSERT INTO casbin_rule (ptype, v0, v1, v2, v3, v4, v5) "
        "SELECT 'g', 'user^u' || i, 'role^course_staff', "
        "'course-v1^course-v1:' || %s || '+C' || (i / 5) || '+R', '', '', '' "
        "FROM generate_series(1, %s) AS i",
        [org, rows],
    )
