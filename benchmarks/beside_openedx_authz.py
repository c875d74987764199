"""Beside the real openedx-authz: what keeping its enforcers fresh costs (issue 12), and
what an org move costs beside a floor that writes openedx-authz's side rows too (issue 18).

Section ``toggle``: for a ``casbin_rule`` of 10,000 and 1,000,000 role rules (plus
openedx-authz's own schema), prints

- a course toggle (5 roles, an override save with automatic moves on, forward then back),
  wall time and queries, with the policy-cache bump and without it: what the bump adds;
- what the next permission check costs in a worker whose enforcer was loaded before the
  move: openedx-authz reloads its whole policy at that check, against a check without
  reload.

Section ``org``: ``api.migrate_org(org, forward, force=True)`` on an org of N
legacy roles (5 a course, N/5 users, beside another org of N), forward then back, against
the floor of ``benchmarks/side_floor.py`` on identical freshly seeded data (the plain
floor's two statements plus the side rows, set based), passes alternating, the fastest of
``--repeat`` each; checks that the app's rules and side rows equal the floor's and that the
rollback restores the seed and removes the org's extended rules.

Needs Python 3.12+ with openedx-authz installed (``tox -e py312-django52-openedxauthz-postgres
--`` is not the way: run it in that tox environment's interpreter, or any venv with
``.[test]`` and ``openedx-authz==1.35.0``)::

    AUTHZ_TEST_DB=postgres python -m benchmarks.beside_openedx_authz [--rules 10000 1000000]
        [--only toggle|org] [--org-sizes 25000] [--repeat 5]

It creates and drops a test database of its own (the test settings' naming), so it never
touches another database.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import contextmanager
from io import StringIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.openedx_authz.settings")

COURSE = "course-v1:ToggleOrg+T101+2024"
ROLES = ["instructor", "staff", "limited_staff", "data_researcher", "beta_testers"]
ACTION = "courses.edit_course_content"


def seed_rules(count: int) -> None:
    """``count`` "g" rules of other users and courses, set-based, in chunks."""
    from authz_migration.stores import _insert_rows, casbin_rule_model

    chunk = 50_000
    for start in range(0, count, chunk):
        rows = [
            (f"user^seed{n}", "role^course_staff", f"course-v1^course-v1:Seed{n % 500}+C{n}+R")
            for n in range(start, min(count, start + chunk))
        ]
        _insert_rows(
            casbin_rule_model(),
            ("v0", "v1", "v2"),
            rows,
            {"ptype": "g", "v3": "", "v4": "", "v5": ""},
        )


@contextmanager
def counted():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        yield queries
        queries.seconds = time.perf_counter() - started


def toggle(choice: str) -> tuple[float, int]:
    from django.db import transaction
    from django.test import override_settings

    from tests.openedx.waffle_utils.models import WaffleFlagCourseOverrideModel

    with override_settings(AUTHZ_MIGRATION_AUTOMATIC=True), counted() as queries:
        with transaction.atomic():
            WaffleFlagCourseOverrideModel.objects.create(
                waffle_flag="authz.enable_course_authoring",
                course_id=COURSE,
                override_choice=choice,
                enabled=True,
            )
    return queries.seconds, len(queries)


def measure_toggles(reps: int) -> dict:
    """Median wall time and most queries of each toggle, with the policy-cache bump and
    without it, passes alternating so that both see the same machine."""
    from authz_migration import peer

    original = peer.invalidate_enforcers
    runs = {(bump, choice): [] for bump in (True, False) for choice in ("on", "off")}
    try:
        for _ in range(reps):
            for bump in (True, False):
                peer.invalidate_enforcers = original if bump else (lambda: None)
                for choice in ("on", "off"):
                    runs[bump, choice].append(toggle(choice))
    finally:
        peer.invalidate_enforcers = original
    return {
        key: (statistics.median(s for s, _ in found) * 1000, max(q for _, q in found))
        for key, found in runs.items()
    }


def next_check_cost() -> tuple[float, float]:
    """(seconds of the first check after a bump, seconds of a check without reload)."""
    from openedx_authz.api.users import is_user_allowed

    from authz_migration import peer

    is_user_allowed("toggler", ACTION, COURSE)  # loaded
    started = time.perf_counter()
    is_user_allowed("toggler", ACTION, COURSE)
    steady = time.perf_counter() - started
    peer.invalidate_enforcers()
    started = time.perf_counter()
    is_user_allowed("toggler", ACTION, COURSE)
    return time.perf_counter() - started, steady


def run(rules: int, reps: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from authz_migration.conf import legacy_role_model

    name = connection.creation.create_test_db(verbosity=0, keepdb=False)
    try:
        call_load_schema()
        seed_rules(rules)
        user = get_user_model().objects.create(username="toggler")
        for role in ROLES:
            legacy_role_model().objects.create(
                user=user, org="ToggleOrg", course_id=COURSE, role=role
            )
        toggle("on")  # the first move creates the Scope, Subject and lock rows: once
        toggle("off")
        toggles = measure_toggles(reps)
        reload_seconds, steady_seconds = next_check_cost()
    finally:
        connection.creation.destroy_test_db(name, verbosity=0)
    return {
        "rules": rules,
        "toggles": toggles,
        "reload": reload_seconds,
        "steady": steady_seconds,
    }


def run_org(sizes: list[int], repeat: int) -> list[dict]:
    """Section ``org``: the app's org move and the floor with side rows, per size."""
    from django.db import connection, transaction

    from authz_migration import api
    from benchmarks.fixtures import ORG, OTHER_ORG
    from benchmarks.scenarios.org import seed_org_case
    from benchmarks.side_floor import SideFloor
    from benchmarks.sql import Sql

    name = connection.creation.create_test_db(verbosity=0, keepdb=False)
    try:
        call_load_schema()
        sql = Sql()
        side = SideFloor(sql)

        def seed(size: int) -> None:
            side.reset()
            seed_org_case(sql, size, "cold")

        def timed(fn) -> float:
            started = time.perf_counter()
            fn()
            return time.perf_counter() - started

        def floor(statements):
            def call():
                with transaction.atomic():
                    sql.execute(*statements)

            return call

        seed(100)  # warm-up, untimed: imports and the org's lock row
        api.migrate_org(ORG, forward=True, force=True)
        api.migrate_org(ORG, forward=False, force=True)
        results = []
        for size in sizes:
            best = {"app forward": [], "app rollback": [], "floor forward": [], "floor back": []}
            checks = {}
            for attempt in range(repeat):
                seed(size)
                seeded = sql.fingerprint(ORG)
                best["app forward"].append(timed(lambda: api.migrate_org(ORG, True, force=True)))
                app_after = (sql.fingerprint(ORG), side.fingerprint(ORG))
                sql.analyze()
                best["app rollback"].append(timed(lambda: api.migrate_org(ORG, False, force=True)))
                if attempt == 0:
                    checks["rollback restores the seed"] = sql.fingerprint(ORG) == seeded
                    checks["rollback removes extended rules"] = side.extended_rows(ORG) == 0
                    checks["other org untouched"] = sql.org_counts(OTHER_ORG) == (size, 0)
                seed(size)
                best["floor forward"].append(timed(floor(side.forward(ORG))))
                if attempt == 0:
                    floor_after = (sql.fingerprint(ORG), side.fingerprint(ORG))
                    checks["rules and side rows equal the floor's"] = app_after == floor_after
                    checks["floor wrote extended rules"] = side.extended_rows(ORG) == size
                sql.analyze()
                best["floor back"].append(timed(floor(side.rollback(ORG))))
            results.append({"size": size, **{k: min(v) for k, v in best.items()}, "checks": checks})
    finally:
        connection.creation.destroy_test_db(name, verbosity=0)
    return results


def call_load_schema() -> None:
    from django.core.management import call_command

    call_command("load_authz_schema", stdout=StringIO())


def print_org(results: list[dict]) -> bool:
    """Print the org section; True when every check passed."""
    print(f"{'org rows':>9}  {'move':>8}  {'app s':>7}  {'floor s':>7}  {'app/floor':>9}")
    ok = True
    for r in results:
        for move, app, floor in (
            ("forward", r["app forward"], r["floor forward"]),
            ("rollback", r["app rollback"], r["floor back"]),
        ):
            print(f"{r['size']:>9,}  {move:>8}  {app:7.3f}  {floor:7.3f}  {app / floor:8.2f}x")
        for check, passed in r["checks"].items():
            ok = ok and passed
            print(f"  check: {check}: {'ok' if passed else 'FAILED'}")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["toggle", "org"], help="one section (default both)")
    parser.add_argument("--rules", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--org-sizes", type=int, nargs="+", default=[25_000])
    parser.add_argument("--repeat", type=int, default=5, help="org: passes of app and floor")
    args = parser.parse_args(argv)
    import django

    django.setup()
    from django.db import connection

    ok = True
    if args.only != "toggle":
        print(
            f"database: {connection.vendor}; org moves beside openedx-authz: fastest of "
            f"{args.repeat} passes each"
        )
        ok = print_org(run_org(args.org_sizes, args.repeat))
    if args.only == "org":
        return 0 if ok else 1
    print(f"database: {connection.vendor}; toggles: median of {args.reps}, 5 roles")
    print(
        f"{'rules':>9}  {'toggle on ms (q)':>17}  {'bump adds':>15}  {'toggle off ms (q)':>18}"
        f"  {'bump adds':>15}  {'next check after a move':>24}  {'check':>8}"
    )
    for rules in args.rules:
        r = run(rules, args.reps)
        cells = []
        for choice in ("on", "off"):
            ms, q = r["toggles"][True, choice]
            base_ms, base_q = r["toggles"][False, choice]
            cells.append(f"{ms:8.1f} ({q:2d})")
            cells.append(f"{ms - base_ms:+6.1f} ms {q - base_q:+d} q")
        print(
            f"{rules:>9}  {cells[0]:>17}  {cells[1]:>15}  {cells[2]:>18}  {cells[3]:>15}"
            f"  {r['reload']:>22.2f} s  {r['steady'] * 1000:>5.2f} ms"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
