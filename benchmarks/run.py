#!/usr/bin/env python
"""Benchmarks of authz_migration against SQLite, PostgreSQL or MariaDB.

    python benchmarks/run.py --db postgres [--sizes 1000,5000,25000,100000]
                             [--only org|toggle|sync-all] [--json]
    python benchmarks/run.py --db sqlite --quick          # smoke check, well under a minute

Sections (see benchmarks/README.rst for what every figure means):

org       ``api.migrate_org(org, forward=True/False, force=True)`` on an org of N role rows,
          next to a hand-written set-based SQL move (one INSERT ... SELECT + one DELETE) on
          identical freshly seeded data: the floor.
toggle    the cost the automatic receiver adds to saving a course override (5 roles move),
          with casbin_rule holding 0 ... 1,000,000 unrelated rows.
sync-all  ``authz_migrate sync --all`` (or ``api.sync_instance``) over N legacy rows after the
          global flag is switched on: rows/second and peak RSS (run in a child process so the
          other sections do not inflate its RSS).

The benchmark owns its database (``authz_migration_bench``): it drops and recreates it (unless
``--keep-db``) and truncates its tables between measurements.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import gc
import hashlib
import io
import json
import os
import platform
import pstats
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import tracemalloc
import warnings
from contextlib import contextmanager
from time import perf_counter

warnings.filterwarnings(
    # casbin_adapter's AppConfig.ready() queries django_migrations; nothing to act on here.
    "ignore",
    message="Accessing the database during app initialization",
    category=RuntimeWarning,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

FLAG = "authz.enable_course_authoring"
ORG = "BenchOrg"
OTHER_ORG = "OtherOrg"
TOGGLE_ORG = "ToggleOrg"
TOGGLE_COURSE = f"course-v1:{TOGGLE_ORG}+T101+2024"
# The five course-authoring roles seeded for every course, in this order (all in the role map).
ROLES = ["instructor", "staff", "limited_staff", "data_researcher", "beta_testers"]

FULL = {
    "sizes": [1000, 5000, 25000, 100000],
    "casbin_sizes": [0, 10000, 100000, 1000000],
    "roles": 1000000,
    "reps": 9,
}
QUICK = {"sizes": [1000, 5000], "casbin_sizes": [0, 10000], "roles": 20000, "reps": 5}
SECTIONS = ("org", "toggle", "sync-all")


# --- database creation (before Django is set up) ---------------------------------------------


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def prepare_database(db: str, name: str, keep: bool, sqlite_path: str | None) -> str:
    """Create the benchmark database (dropping it first unless ``keep``). Returns a
    description. Runs before ``django.setup()``: casbin_adapter loads every casbin_rule row
    into its enforcer at startup, so a database left full by an earlier run would make the
    start slow; a fresh database (or, with ``keep``, an emptied casbin_rule) avoids it."""
    if db == "postgres":
        import psycopg

        params = {
            "host": _env("AUTHZ_BENCH_PG_HOST", "127.0.0.1"),
            "port": _env("AUTHZ_BENCH_PG_PORT", "5432"),
            "user": _env("AUTHZ_BENCH_PG_USER", "postgres"),
            "password": _env("AUTHZ_BENCH_PG_PASSWORD", ""),
        }
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if exists and not keep:
                conn.execute(f'DROP DATABASE "{name}"')
                exists = None
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
                return f"created {name}"
        with psycopg.connect(dbname=name, autocommit=True, **params) as conn:
            if conn.execute("SELECT to_regclass('casbin_rule')").fetchone()[0]:
                conn.execute("TRUNCATE casbin_rule")
        return f"reused {name}"
    if db == "mariadb":
        import MySQLdb

        conn = MySQLdb.connect(
            host=_env("AUTHZ_BENCH_MYSQL_HOST", "127.0.0.1"),
            port=int(_env("AUTHZ_BENCH_MYSQL_PORT", "3306")),
            user=_env("AUTHZ_BENCH_MYSQL_USER", "root"),
            passwd=_env("AUTHZ_BENCH_MYSQL_PASSWORD", ""),
            charset="utf8mb4",
        )
        try:
            cursor = conn.cursor()
            if not keep:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
            created = cursor.execute(
                f"CREATE DATABASE IF NOT EXISTS `{name}` "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.tables "
                "WHERE table_schema = %s AND table_name = 'casbin_rule'",
                [name],
            )
            if cursor.fetchone()[0]:
                cursor.execute(f"TRUNCATE TABLE `{name}`.casbin_rule")
        finally:
            conn.close()
        return f"{'created' if created else 'reused'} {name}"
    # SQLite: a file in a temporary directory unless a path was given.
    if not keep and os.path.exists(sqlite_path):
        os.remove(sqlite_path)
    if os.path.exists(sqlite_path):
        import sqlite3

        conn = sqlite3.connect(sqlite_path)
        try:
            conn.execute("DELETE FROM casbin_rule")
            conn.commit()
        except sqlite3.OperationalError:
            pass
        conn.close()
        return f"reused {sqlite_path}"
    return f"created {sqlite_path}"


def setup_django(args) -> dict:
    os.environ["AUTHZ_BENCH_DB"] = args.db
    os.environ["AUTHZ_BENCH_DB_NAME"] = args.db_name
    if args.db == "sqlite":
        os.environ["AUTHZ_BENCH_SQLITE_PATH"] = args.sqlite_path
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
    how = prepare_database(args.db, args.db_name, args.keep_db, args.sqlite_path)
    import django

    django.setup()
    from django.core.management import call_command

    started = perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    return {"database": how, "migrate_seconds": round(perf_counter() - started, 2)}


# --- SQL helpers (Django is set up from here on) ---------------------------------------------


class Sql:
    """Vendor differences of the raw SQL used for seeding and for the floor."""

    def __init__(self):
        from django.contrib.auth import get_user_model
        from django.db import connection

        from authz_migration.conf import (
            course_override_model,
            legacy_role_model,
            org_override_model,
        )
        from authz_migration.models import MigrationRun

        self.connection = connection
        self.vendor = connection.vendor
        q = connection.ops.quote_name
        self.q = q
        self.legacy = q(legacy_role_model()._meta.db_table)
        self.users = q(get_user_model()._meta.db_table)
        self.casbin = q("casbin_rule")
        self.run_table = q(MigrationRun._meta.db_table)
        user_model = get_user_model()
        # Every table the benchmark writes, children before parents.
        self.reset_tables = [
            "casbin_rule",
            legacy_role_model()._meta.db_table,
            course_override_model()._meta.db_table,
            org_override_model()._meta.db_table,
            MigrationRun._meta.db_table,
            user_model.groups.through._meta.db_table,
            user_model.user_permissions.through._meta.db_table,
        ]
        from waffle import get_waffle_flag_model

        flag_model = get_waffle_flag_model()
        for field in flag_model._meta.many_to_many:
            self.reset_tables.append(field.remote_field.through._meta.db_table)
        self.reset_tables += [flag_model._meta.db_table, user_model._meta.db_table]

    # expressions
    def concat(self, *parts: str) -> str:
        if self.vendor == "mysql":
            return f"CONCAT({', '.join(parts)})"
        return "(" + " || ".join(parts) + ")"

    def idiv(self, a: str, b: str) -> str:
        return f"({a} DIV {b})" if self.vendor == "mysql" else f"({a} / {b})"

    def numbers(self, count: int) -> str:
        """A FROM item ``n`` with one integer column ``i`` = 0 .. count-1."""
        if self.vendor == "postgresql":
            return f"generate_series(0, {count - 1}) AS n(i)"
        if self.vendor == "mysql":
            # MariaDB's SEQUENCE engine; seq_0_to_-1 would be an error, callers skip count 0.
            return f"(SELECT seq AS i FROM seq_0_to_{count - 1}) AS n"
        return (
            f"(WITH RECURSIVE nums(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM nums "
            f"WHERE i < {count - 1}) SELECT i FROM nums) AS n"
        )

    def role_case(self, value: str) -> str:
        whens = " ".join(f"WHEN {k} THEN '{role}'" for k, role in enumerate(ROLES))
        return f"CASE {value} {whens} END"

    # statements
    def execute(self, *statements: str) -> None:
        with self.connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)

    def scalar(self, sql: str):
        with self.connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()[0]

    def reset(self) -> None:
        """Empty every table the benchmark fills (fresh tables, identities restarted)."""
        tables = ", ".join(self.q(t) for t in self.reset_tables)
        if self.vendor == "postgresql":
            self.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        elif self.vendor == "mysql":
            self.execute(
                "SET FOREIGN_KEY_CHECKS = 0",
                *[f"TRUNCATE TABLE {self.q(t)}" for t in self.reset_tables],
                "SET FOREIGN_KEY_CHECKS = 1",
            )
        else:
            self.execute(*[f"DELETE FROM {self.q(t)}" for t in self.reset_tables])
            if self.scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'sqlite_sequence'"):
                self.execute("DELETE FROM sqlite_sequence")

    def analyze(self) -> None:
        """Fresh planner statistics, as a live site would have (never timed)."""
        tables = [self.casbin, self.legacy, self.users]
        if self.vendor == "postgresql":
            self.execute(*[f"ANALYZE {t}" for t in tables])
        elif self.vendor == "mysql":
            self.execute(f"ANALYZE TABLE {', '.join(tables)}")
        else:
            self.execute("ANALYZE")

    def seed_users(self, count: int) -> None:
        """Users with ids 1..count and usernames bench_u<id>."""
        if count <= 0:
            return
        false, true = ("0", "1") if self.vendor == "sqlite" else ("FALSE", "TRUE")
        username = self.concat("'bench_u'", "(n.i + 1)")
        self.execute(
            f"INSERT INTO {self.users} (id, password, last_login, is_superuser, username, "
            "first_name, last_name, email, is_staff, is_active, date_joined) "
            f"SELECT n.i + 1, '', NULL, {false}, {username}, '', '', '', "
            f"{false}, {true}, CURRENT_TIMESTAMP FROM {self.numbers(count)}"
        )
        if self.vendor == "postgresql":
            self.execute(
                f"SELECT setval(pg_get_serial_sequence('{self.users.strip(chr(34))}', 'id'), "
                f"(SELECT MAX(id) FROM {self.users}))"
            )

    def seed_legacy(self, rows: int, users: int, per_course: int, orgs: int, org_name) -> None:
        """``rows`` legacy rows: ``per_course`` rows per course (roles cycling through
        ROLES), courses spread round-robin over ``orgs`` orgs named by ``org_name(expr)``."""
        if rows <= 0:
            return
        course = self.idiv("n.i", str(per_course))
        org = org_name(f"({course} % {orgs})") if orgs > 1 else org_name(None)
        course_id = self.concat("'course-v1:'", org, "'+C'", course, "'+R2024'")
        # A course's rows go to consecutive users: distinct within the course as long as
        # users >= per_course.
        self.execute(
            f"INSERT INTO {self.legacy} (user_id, org, course_id, role) "
            f"SELECT 1 + (n.i % {users}), {org}, {course_id}, {self.role_case('n.i % 5')} "
            f"FROM {self.numbers(rows)}"
        )

    def seed_casbin_unrelated(self, rows: int, orgs: int = 200) -> None:
        """Course role rows of other orgs, in the format the app writes."""
        if rows <= 0:
            return
        course = self.idiv("n.i", "5")
        casbin_roles = " ".join(
            f"WHEN {k} THEN 'role^{role}'"
            for k, role in enumerate(
                [
                    "course_admin",
                    "course_staff",
                    "course_limited_staff",
                    "course_data_researcher",
                    "course_beta_tester",
                ]
            )
        )
        v2 = self.concat(
            "'course-v1^course-v1:CasOrg'", f"({course} % {orgs})", "'+C'", course, "'+R2024'"
        )
        subject = self.concat("'user^other_u'", "(n.i % 50000)")
        self.execute(
            f"INSERT INTO {self.casbin} (ptype, v0, v1, v2, v3, v4, v5) "
            f"SELECT 'g', {subject}, "
            f"CASE n.i % 5 {casbin_roles} END, {v2}, '', '', '' FROM {self.numbers(rows)}"
        )

    # the floor: one INSERT ... SELECT and one DELETE, in one transaction
    def floor_forward(self, org: str) -> list[str]:
        from authz_migration.roles import role_map

        mapping = role_map()
        case = (
            "CASE r.role " + " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in mapping.items()) + " END"
        )
        roles = ", ".join(f"'{k}'" for k in mapping)
        where = f"r.course_id LIKE 'course-v1:{org}+%' AND r.role IN ({roles})"
        subject = self.concat("'user^'", "u.username")
        role = self.concat("'role^'", case)
        scope = self.concat("'course-v1^'", "r.course_id")
        return [
            f"INSERT INTO {self.casbin} (ptype, v0, v1, v2, v3, v4, v5) "
            f"SELECT 'g', {subject}, {role}, {scope}, '', '', '' "
            f"FROM {self.legacy} r JOIN {self.users} u ON u.id = r.user_id WHERE {where}",
            f"DELETE FROM {self.legacy} WHERE {where.replace('r.', '')}",
        ]

    def floor_rollback(self, org: str) -> list[str]:
        from authz_migration.roles import reverse_role_map

        back = reverse_role_map()
        case = (
            "CASE c.v1 " + " ".join(f"WHEN 'role^{k}' THEN '{v}'" for k, v in back.items()) + " END"
        )
        roles = ", ".join(f"'role^{k}'" for k in back)
        where = (
            f"c.ptype = 'g' AND c.v2 LIKE 'course-v1^course-v1:{org}+%' AND c.v1 IN ({roles}) "
            "AND c.v3 = '' AND c.v4 = '' AND c.v5 = ''"
        )
        return [
            f"INSERT INTO {self.legacy} (user_id, org, course_id, role) "
            f"SELECT u.id, '{org}', SUBSTR(c.v2, 11), {case} "
            f"FROM {self.casbin} c JOIN {self.users} u ON u.username = SUBSTR(c.v0, 6) "
            f"WHERE {where}",
            f"DELETE FROM {self.casbin} WHERE {where.replace('c.', '')}",
        ]

    # checks
    def org_counts(self, org: str) -> tuple[int, int]:
        legacy = self.scalar(
            f"SELECT COUNT(*) FROM {self.legacy} WHERE course_id LIKE 'course-v1:{org}+%'"
        )
        casbin = self.scalar(
            f"SELECT COUNT(*) FROM {self.casbin} WHERE v2 LIKE 'course-v1^course-v1:{org}+%'"
        )
        return legacy, casbin

    def fingerprint(self, org: str) -> str:
        """A digest of the org's role data in both stores, independent of row ids."""
        digest = hashlib.sha256()
        with self.connection.cursor() as cursor:
            cursor.execute(
                f"SELECT u.username, r.org, r.course_id, r.role FROM {self.legacy} r "
                f"JOIN {self.users} u ON u.id = r.user_id "
                f"WHERE r.course_id LIKE 'course-v1:{org}+%'"
            )
            digest.update(repr(sorted(cursor.fetchall())).encode())
            cursor.execute(
                f"SELECT ptype, v0, v1, v2, v3, v4, v5 FROM {self.casbin} "
                f"WHERE v2 LIKE 'course-v1^course-v1:{org}+%'"
            )
            digest.update(repr(sorted(cursor.fetchall())).encode())
        return digest.hexdigest()[:12]


# --- measuring ------------------------------------------------------------------------------


class StatementCounter:
    """Counts statements through ``connection.execute_wrapper``, and the wall time spent
    inside them (server work plus driver round trip): the statements CaptureQueriesContext
    records, without formatting and keeping their SQL (which costs time and memory when a
    statement carries 35,000 parameters)."""

    def __init__(self):
        self.count = 0
        self.seconds = 0.0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        started = perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += perf_counter() - started


class EnforcerTimer:
    """Times the app's ``migration_run_finished`` receiver (``authz_migration.enforcer.
    follow_moves``: it applies each committed move to the in-process Casbin enforcer), by
    reconnecting it, under the same dispatch_uid, wrapped in a timer. ``available`` is False
    when the app has no such receiver (then nothing is wrapped)."""

    UID = "authz_mig_enforcer"

    def __init__(self):
        self.seconds = 0.0
        self.calls = 0
        self.available = False
        try:
            from authz_migration import enforcer as app_enforcer
            from authz_migration.signals import migration_run_finished
        except ImportError:
            return
        follow = getattr(app_enforcer, "follow_moves", None)
        if follow is None or not migration_run_finished.disconnect(dispatch_uid=self.UID):
            return

        def timed(sender, **kwargs):
            started = perf_counter()
            try:
                return follow(sender, **kwargs)
            finally:
                self.seconds += perf_counter() - started
                self.calls += 1

        self._receiver = timed
        migration_run_finished.connect(timed, dispatch_uid=self.UID, weak=False)
        self.available = True

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def read(self) -> float | None:
        return round(self.seconds, 4) if self.available else None


ENFORCER_TIMER: EnforcerTimer | None = None


def enforcer_policy_size() -> int | None:
    from casbin_adapter.enforcer import enforcer

    if not enforcer._initialized:
        return None
    model = enforcer.get_model()
    return sum(
        len(a.policy) for sec in ("p", "g") if sec in model.keys() for a in model[sec].values()
    )


def prepare_enforcer(mode: str) -> None:
    """Put casbin_adapter's in-process enforcer in the state of a process started now.

    "loaded": loaded from casbin_rule as it is (what every Django process of a site does at
    startup once casbin_adapter's migration has run: its AppConfig.ready() loads the whole
    policy); "cold": not loaded (the app then leaves it alone). Never timed.
    """
    from casbin_adapter.enforcer import enforcer, initialize_enforcer

    if mode == "loaded":
        if enforcer._initialized:
            enforcer.load_policy()
        else:
            initialize_enforcer("default")
    elif enforcer._initialized:
        # Forget the loaded policy: follow_moves leaves an enforcer that is not loaded alone.
        enforcer._initialized = False


def rss_mib() -> float:
    """``ru_maxrss``: the process's peak resident set size so far, in MiB (KiB on Linux,
    bytes on macOS). It never goes down, and Linux carries it across ``execve``."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS (Linux >= 4.0:
    ``echo 5 > /proc/self/clear_refs``), so that the next :func:`peak_rss_mib` is the peak of
    what runs in between. False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float | None:
    """VmHWM of /proc/self/status: peak RSS since the last :func:`reset_peak_rss`."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def measure(fn, mode: str):
    """Run ``fn`` once. mode "time": wall seconds (perf_counter) and a cheap statement count;
    "queries": CaptureQueriesContext; "memory": tracemalloc peak (MiB of Python allocations);
    "profile": cProfile stats text."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    gc.collect()
    if mode == "time":
        counter = StatementCounter()
        if ENFORCER_TIMER is not None:
            ENFORCER_TIMER.reset()
        resettable = reset_peak_rss()
        with connection.execute_wrapper(counter):
            started = perf_counter()
            result = fn()
            elapsed = perf_counter() - started
        return {
            "seconds": elapsed,
            "peak_rss_mib": peak_rss_mib() if resettable else None,
            "statements": counter.count,
            "sql_seconds": counter.seconds,
            "enforcer_seconds": ENFORCER_TIMER.read() if ENFORCER_TIMER else None,
            "result": result,
        }
    if mode == "queries":
        with CaptureQueriesContext(connection) as captured:
            result = fn()
        return {"queries": len(captured), "result": result}
    if mode == "memory":
        tracemalloc.start()
        tracemalloc.reset_peak()
        try:
            result = fn()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return {"traced_peak_mib": peak / (1024 * 1024), "result": result}
    if mode == "profile":
        profiler = cProfile.Profile()
        started = perf_counter()
        result = profiler.runcall(fn)
        elapsed = perf_counter() - started
        texts = []
        views = (("cumulative", ()), ("tottime", ()), ("cumulative", ("authz_migration/",)))
        for order, restrict in views:
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats(order).print_stats(*restrict, 15)
            # Drop pstats' preamble up to the column header, keep the table.
            lines = out.getvalue().splitlines()
            start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
            header = next((line.strip() for line in lines if "function calls" in line), "")
            where = f", {restrict[0]} functions only" if restrict else ""
            texts.append(
                f"{header}; top 15 by {order}{where}\n" + "\n".join(lines[start:]).rstrip()
            )
        return {
            "seconds": elapsed,
            "profile": texts[0],
            "profile_tottime": texts[1],
            "profile_app": texts[2],
            "result": result,
        }
    raise ValueError(mode)


@contextmanager
def section(name: str, out):
    started = perf_counter()
    if out is not None:
        print(f"\n== {name} ==", file=out, flush=True)
    yield
    if out is not None:
        print(f"({name}: {perf_counter() - started:.1f} s in all)", file=out, flush=True)


def table(headers: list[str], rows: list[list], out) -> None:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)), file=out)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)
    out.flush()


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if value < 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# --- section 1: org -------------------------------------------------------------------------


def seed_org_case(sql: Sql, size: int, enforcer: str) -> None:
    """An org of ``size`` rows (5 roles per course, size/5 courses, size/5 users) and the
    same again in another org, all in the legacy table; the enforcer as a process started
    now would have it."""
    sql.reset()
    users = max(5, size // 5)
    sql.seed_users(users)
    sql.seed_legacy(size, users, 5, 1, lambda _: f"'{ORG}'")
    sql.seed_legacy(size, users, 5, 1, lambda _: f"'{OTHER_ORG}'")
    sql.analyze()
    prepare_enforcer(enforcer)


def run_org(
    sql: Sql,
    sizes: list[int],
    profile_sizes: set[int],
    enforcer: str,
    repeat: int,
    passes: set[str],
    out,
) -> dict:
    from authz_migration import api

    def app(forward: bool):
        def call():
            outcome = api.migrate_org(ORG, forward=forward, force=True)
            return {"status": outcome.status, "moved": outcome.moved}

        return call

    def floor(statements):
        def call():
            from django.db import transaction

            with transaction.atomic():
                sql.execute(*statements)

        return call

    # Warm-up, untimed: imports, per-process caches and the org's lock row (created by the
    # first move ever of an org) are then what a live site already has.
    seed_org_case(sql, 100, enforcer)
    app(True)()
    app(False)()

    results = []
    profiles = {}
    for size in sizes:
        entry = {"size": size}
        # 1. The app, timed: forward, then rollback from the state forward left; and
        # 2. the floor on identical freshly seeded data. With --repeat, app and floor
        #    alternate and each keeps its fastest pass (the machine's noise only adds time).
        fwd = back = ffwd = fback = None
        for attempt in range(repeat):
            seed_org_case(sql, size, enforcer)
            if attempt == 0:
                seeded = sql.fingerprint(ORG)
            t = measure(app(True), "time")
            fwd = t if fwd is None or t["seconds"] < fwd["seconds"] else fwd
            if attempt == 0:
                after_forward = sql.fingerprint(ORG)
                counts_forward = sql.org_counts(ORG)
            sql.analyze()
            t = measure(app(False), "time")
            back = t if back is None or t["seconds"] < back["seconds"] else back
            if attempt == 0:
                counts_back = sql.org_counts(ORG)
                entry["restored"] = sql.fingerprint(ORG) == seeded
                entry["other_org_untouched"] = sql.org_counts(OTHER_ORG) == (size, 0)
            seed_org_case(sql, size, enforcer)
            t = measure(floor(sql.floor_forward(ORG)), "time")
            ffwd = t if ffwd is None or t["seconds"] < ffwd["seconds"] else ffwd
            if attempt == 0:
                entry["same_result_as_floor"] = sql.fingerprint(ORG) == after_forward
            sql.analyze()
            t = measure(floor(sql.floor_rollback(ORG)), "time")
            fback = t if fback is None or t["seconds"] < fback["seconds"] else fback
        # 3. Queries, through CaptureQueriesContext (a pass of its own: it formats and keeps
        #    every statement's SQL, which would distort time and memory).
        qfwd = qback = {"queries": None}
        if "queries" in passes:
            seed_org_case(sql, size, enforcer)
            qfwd = measure(app(True), "queries")
            sql.analyze()
            qback = measure(app(False), "queries")
        # 4. Memory: tracemalloc peak of Python allocations during the call (own pass:
        #    tracing slows Python down), and the process RSS high-water mark after it.
        mfwd = mback = {"traced_peak_mib": None}
        rss_forward = rss_back = rss_mib()
        if "memory" in passes:
            seed_org_case(sql, size, enforcer)
            mfwd = measure(app(True), "memory")
            rss_forward = rss_mib()
            sql.analyze()
            mback = measure(app(False), "memory")
            rss_back = rss_mib()
        if size in profile_sizes:
            seed_org_case(sql, size, enforcer)
            pf = measure(app(True), "profile")
            sql.analyze()
            pb = measure(app(False), "profile")
            profiles[size] = {
                "forward": pf["profile"],
                "rollback": pb["profile"],
                "forward_tottime": pf["profile_tottime"],
                "rollback_tottime": pb["profile_tottime"],
                "forward_app": pf["profile_app"],
                "rollback_app": pb["profile_app"],
            }
        for name, t, f, q, m, rss, counts in (
            ("forward", fwd, ffwd, qfwd, mfwd, rss_forward, counts_forward),
            ("rollback", back, fback, qback, mback, rss_back, counts_back),
        ):
            entry[name] = {
                "seconds": round(t["seconds"], 4),
                "enforcer_seconds": t["enforcer_seconds"],
                "sql_seconds": round(t["sql_seconds"], 4),
                "queries": q["queries"],
                "statements_counted_in_timed_pass": t["statements"],
                "rows_per_second": round(size / t["seconds"]) if t["seconds"] else None,
                "traced_peak_mib": (
                    round(m["traced_peak_mib"], 1) if m["traced_peak_mib"] is not None else None
                ),
                "peak_rss_mib": round(t["peak_rss_mib"], 1) if t["peak_rss_mib"] else None,
                "ru_maxrss_mib": round(rss, 1),
                "floor_seconds": round(f["seconds"], 4),
                "ratio_to_floor": round(t["seconds"] / f["seconds"], 2) if f["seconds"] else None,
                "outcome": t["result"],
                "org_rows_after": {"legacy": counts[0], "casbin": counts[1]},
            }
        results.append(entry)
        if out is not None:
            f, b = entry["forward"], entry["rollback"]
            print(
                f"  {size:,} rows: forward {f['seconds']:.3f} s ({f['ratio_to_floor']}x floor), "
                f"rollback {b['seconds']:.3f} s ({b['ratio_to_floor']}x floor)",
                file=out,
                flush=True,
            )
    sql.reset()
    return {"rows": results, "profiles": profiles}


ORG_HEADERS = [
    "rows",
    "move",
    "app s",
    "in SQL s",
    "enforcer s",
    "queries",
    "rows/s",
    "traced MiB",
    "peak RSS MiB",
    "floor s",
    "app/floor",
    "moved",
    "check",
]


def _org_line(entry, name):
    e = entry[name]
    legacy, casbin = e["org_rows_after"]["legacy"], e["org_rows_after"]["casbin"]
    size = entry["size"]
    expected = (0, size) if name == "forward" else (size, 0)
    problems = []
    if (legacy, casbin) != expected:
        problems.append(f"org rows legacy={legacy} casbin={casbin}")
    # CaptureQueriesContext also lists the COMMIT (and on some backends BEGIN) that Django
    # logs itself; the execute_wrapper count of the timed pass does not see those.
    if e["queries"] is None:
        pass
    elif not 0 <= e["queries"] - e["statements_counted_in_timed_pass"] <= 2:
        problems.append(f"timed pass ran {e['statements_counted_in_timed_pass']} statements")
    if name == "forward" and not entry["same_result_as_floor"]:
        problems.append("casbin rows differ from the floor's")
    if name == "rollback" and not entry["restored"]:
        problems.append("legacy rows differ from the seed")
    if name == "rollback" and not entry["other_org_untouched"]:
        problems.append("other org touched")
    return [
        size,
        name,
        e["seconds"],
        e["sql_seconds"],
        e["enforcer_seconds"],
        e["queries"],
        e["rows_per_second"],
        e["traced_peak_mib"],
        e["peak_rss_mib"],
        e["floor_seconds"],
        f"{e['ratio_to_floor']:.1f}x",
        e["outcome"]["moved"],
        "; ".join(problems) or "ok",
    ]


def print_org(result: dict, out) -> None:
    rows = [_org_line(e, n) for e in result["rows"] for n in ("forward", "rollback")]
    table(ORG_HEADERS, rows, out)


# --- section 2: toggle ----------------------------------------------------------------------


def run_toggle(sql: Sql, casbin_sizes: list[int], reps: int, enforcer: str, out) -> dict:
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext, override_settings

    from authz_migration.conf import course_override_model

    model = course_override_model()

    def save(choice: str) -> tuple[float, int, float]:
        row = model(waffle_flag=FLAG, course_id=TOGGLE_COURSE, override_choice=choice, enabled=True)
        ENFORCER_TIMER.reset()
        with CaptureQueriesContext(connection) as captured:
            started = perf_counter()
            with transaction.atomic():
                row.save()
            elapsed = perf_counter() - started
        return elapsed * 1000, len(captured), ENFORCER_TIMER.seconds * 1000

    def course_rows() -> tuple[int, int]:
        return (
            sql.scalar(f"SELECT COUNT(*) FROM {sql.legacy} WHERE course_id = '{TOGGLE_COURSE}'"),
            sql.scalar(f"SELECT COUNT(*) FROM {sql.casbin} WHERE v2 = 'course-v1^{TOGGLE_COURSE}'"),
        )

    results = []
    for casbin_rows in casbin_sizes:
        sql.reset()
        sql.seed_users(5)
        sql.execute(
            *[
                f"INSERT INTO {sql.legacy} (user_id, org, course_id, role) "
                f"VALUES ({k + 1}, '{TOGGLE_ORG}', '{TOGGLE_COURSE}', '{role}')"
                for k, role in enumerate(ROLES)
            ]
        )
        started = perf_counter()
        sql.seed_casbin_unrelated(casbin_rows)
        seed_seconds = perf_counter() - started
        sql.analyze()
        started = perf_counter()
        prepare_enforcer(enforcer)
        load_seconds = perf_counter() - started
        policy = enforcer_policy_size()
        samples = {key: [] for key in ("auto_on", "auto_off", "base_on", "base_off")}
        queries = {key: [] for key in samples}
        enforcer_ms = {key: [] for key in samples}
        moved_ok = True
        for rep in range(reps + 1):  # the first round warms caches and is discarded
            with override_settings(AUTHZ_MIGRATION_AUTOMATIC=True):
                on = save("on")
                moved_ok &= course_rows() == (0, 5)
                off = save("off")
                moved_ok &= course_rows() == (5, 0)
            with override_settings(AUTHZ_MIGRATION_AUTOMATIC=False):
                bon = save("on")
                boff = save("off")
                moved_ok &= course_rows() == (5, 0)
            if rep:
                for key, (ms, n, ems) in zip(samples, (on, off, bon, boff), strict=True):
                    samples[key].append(ms)
                    queries[key].append(n)
                    enforcer_ms[key].append(ems)
        med = {key: statistics.median(values) for key, values in samples.items()}
        qmed = {key: int(statistics.median(values)) for key, values in queries.items()}
        entry = {
            "casbin_rows": casbin_rows,
            "seed_seconds": round(seed_seconds, 2),
            "enforcer": enforcer,
            "enforcer_policy_rules": policy,
            "enforcer_load_seconds": round(load_seconds, 2),
            "reps": reps,
            "enforcer_ms": {
                k: round(statistics.median(v), 2) if ENFORCER_TIMER.available else None
                for k, v in enforcer_ms.items()
            },
            "median_ms": {k: round(v, 2) for k, v in med.items()},
            "queries": qmed,
            "added_ms_forward": round(med["auto_on"] - med["base_on"], 2),
            "added_ms_rollback": round(med["auto_off"] - med["base_off"], 2),
            "receiver_queries_forward": qmed["auto_on"] - qmed["base_on"],
            "receiver_queries_rollback": qmed["auto_off"] - qmed["base_off"],
            "rows_moved_as_expected": moved_ok,
        }
        results.append(entry)
        if out is not None:
            loaded = (
                f"enforcer holds {policy:,} rules (loaded in {load_seconds:.1f} s)"
                if policy is not None
                else "enforcer not loaded"
            )
            print(
                f"  casbin_rule = {casbin_rows:,} unrelated rows (seeded in {seed_seconds:.1f} s),"
                f" {loaded}",
                file=out,
                flush=True,
            )
    sql.reset()
    prepare_enforcer(enforcer)  # let go of the unrelated rules (a million of them: ~700 MB)
    summary = {}
    if results:
        first, last = results[0], results[-1]
        for d in ("forward", "rollback"):
            key = f"added_ms_{d}"
            summary[f"ratio_{d}"] = round(last[key] / first[key], 2) if first[key] > 0 else None
            auto = "auto_on" if d == "forward" else "auto_off"
            summary[f"save_ratio_{d}"] = round(
                last["median_ms"][auto] / first["median_ms"][auto], 2
            )
        summary["largest"] = last["casbin_rows"]
        summary["smallest"] = first["casbin_rows"]
    return {"rows": results, "summary": summary}


TOGGLE_HEADERS = [
    "casbin rows",
    "move",
    "save ms (auto)",
    "save ms (off)",
    "added ms",
    "enforcer ms",
    "queries (auto)",
    "queries (off)",
    "receiver queries",
    "check",
]


def print_toggle(result: dict, out) -> None:
    rows = []
    for e in result["rows"]:
        for d, auto, base in (
            ("forward", "auto_on", "base_on"),
            ("rollback", "auto_off", "base_off"),
        ):
            rows.append(
                [
                    e["casbin_rows"],
                    d,
                    e["median_ms"][auto],
                    e["median_ms"][base],
                    e[f"added_ms_{d}"],
                    e["enforcer_ms"][auto],
                    e["queries"][auto],
                    e["queries"][base],
                    e[f"receiver_queries_{d}"],
                    "ok" if e["rows_moved_as_expected"] else "MISMATCH",
                ]
            )
    table(TOGGLE_HEADERS, rows, out)
    s = result["summary"]
    if s and s["largest"] != s["smallest"]:
        print(
            f"  {s['largest']:,} vs {s['smallest']:,} casbin rows: added ms x{s['ratio_forward']} "
            f"(forward), x{s['ratio_rollback']} (rollback); whole save (auto) "
            f"x{s['save_ratio_forward']} / x{s['save_ratio_rollback']}",
            file=out,
        )
    out.flush()


# --- section 3: sync-all --------------------------------------------------------------------


def _seed_sync(sql: Sql, roles: int, enforcer: str) -> dict:
    """``roles`` legacy rows, 50 per course, 100 courses per org, roles/20 users; the
    global flag on. Returns the shape and the seeding time."""
    from waffle import get_waffle_flag_model

    per_course = 50
    shape = {
        "roles": roles,
        "courses": max(1, -(-roles // per_course)),
        "orgs": max(1, max(1, -(-roles // per_course)) // 100),
        "users": max(per_course, roles // 20),
    }
    sql.reset()
    started = perf_counter()
    sql.seed_users(shape["users"])
    sql.seed_legacy(
        roles,
        shape["users"],
        per_course,
        shape["orgs"],
        lambda expr: sql.concat("'SyncOrg'", expr),
    )
    sql.analyze()
    shape["seed_seconds"] = round(perf_counter() - started, 1)
    get_waffle_flag_model().objects.update_or_create(name=FLAG, defaults={"everyone": True})
    prepare_enforcer(enforcer)
    return shape


def _sync(batch_size: int | None, budget: float) -> tuple[str, str | None, int | None]:
    """Run ``authz_migrate sync --all`` (or api.sync_instance). Returns (path, why it stopped
    early or None, batches yielded when the API was used)."""
    from django.core.management import CommandError, call_command, get_commands

    from authz_migration import api

    if "authz_migrate" in get_commands():
        path = 'call_command("authz_migrate", "sync", "--all", "--no-input")'
        argv = ["sync", "--all", "--no-input"]
        if batch_size:
            argv += ["--batch-size", str(batch_size)]
        # Over budget, SIGINT asks the command to stop after its current batch (its own
        # Ctrl-C handling), as an operator would.
        previous = signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
        if budget:
            signal.setitimer(signal.ITIMER_REAL, budget)
        try:
            call_command("authz_migrate", *argv, stdout=io.StringIO(), stderr=io.StringIO())
        except CommandError as exc:
            return path, f"command stopped: {exc}", None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        return path, None, None
    path = f"api.sync_instance(batch_size={batch_size}) (no authz_migrate command)"
    deadline = perf_counter() + budget if budget else None

    def should_stop():
        return deadline is not None and perf_counter() > deadline

    batches = 0
    for _outcome in api.sync_instance(batch_size=batch_size, should_stop=should_stop):
        batches += 1
    return path, ("stopped between batches: time budget spent" if should_stop() else None), batches


def run_sync_all(
    sql: Sql,
    roles: int,
    batch_size: int | None,
    enforcer: str,
    budget: float,
    profile: bool,
    out,
) -> dict:
    from django.db import connection
    from django.db.models import Count

    from authz_migration.models import MigrationRun

    shape = _seed_sync(sql, roles, enforcer)
    gc.collect()
    rss_before = rss_mib()
    hwm_reset = reset_peak_rss()
    counter = StatementCounter()
    ENFORCER_TIMER.reset()
    with connection.execute_wrapper(counter):
        started = perf_counter()
        path, stopped, batches = _sync(batch_size, budget)
        elapsed = perf_counter() - started
    rss_after = rss_mib()
    hwm = peak_rss_mib() if hwm_reset else None
    mapped = ", ".join(f"'{r}'" for r in ROLES)
    legacy_left = sql.scalar(f"SELECT COUNT(*) FROM {sql.legacy} WHERE role IN ({mapped})")
    casbin_now = sql.scalar(f"SELECT COUNT(*) FROM {sql.casbin}")
    runs = MigrationRun.objects.count()
    run_statuses = dict(
        MigrationRun.objects.values_list("status").order_by().annotate(n=Count("id"))
    )
    policy = enforcer_policy_size()
    result = {
        "path": path,
        "enforcer": enforcer,
        "enforcer_policy_rules_after": policy,
        **shape,
        "batch_size": batch_size,
        "time_budget_seconds": budget,
        "stopped": stopped,
        "seconds": round(elapsed, 2),
        "moved": casbin_now,
        "rows_per_second": round(casbin_now / elapsed) if elapsed else None,
        "enforcer_seconds": ENFORCER_TIMER.read(),
        "statements": counter.count,
        "runs_recorded": runs,
        "run_statuses": run_statuses,
        "batches_yielded": batches,
        "rss_before_mib": round(rss_before, 1),
        "peak_rss_mib": round(rss_after, 1),
        "peak_rss_during_sync_mib": round(hwm, 1) if hwm else None,
        "legacy_rows_left": legacy_left,
        "casbin_rows_after": casbin_now,
        "ok": legacy_left == 0 and casbin_now == roles,
    }
    if profile:
        # A second sync on freshly seeded data, under cProfile (after the measured one:
        # the profiler slows Python down and would distort the figures above).
        _seed_sync(sql, roles, enforcer)
        profiled = measure(lambda: _sync(batch_size, budget), "profile")
        result["profile"] = {
            "seconds_under_profiler": round(profiled["seconds"], 2),
            "cumulative": profiled["profile"],
            "tottime": profiled["profile_tottime"],
            "app": profiled["profile_app"],
        }
    sql.reset()
    prepare_enforcer(enforcer)
    return result


def print_sync(result: dict, out) -> None:
    r = result
    print(f"  path: {r['path']}; enforcer {r['enforcer']}", file=out)
    if r["ok"]:
        check = "ok"
    elif r["stopped"]:
        check = f"stopped after --time-budget {r['time_budget_seconds']:g} s"
    else:
        check = f"MISMATCH (legacy left {r['legacy_rows_left']}, casbin {r['casbin_rows_after']})"
    table(
        [
            "roles",
            "courses",
            "orgs",
            "moved",
            "seconds",
            "rows/s",
            "enforcer s",
            "statements",
            "runs",
            "ru_maxrss before MiB",
            "ru_maxrss after MiB",
            "VmHWM during sync MiB",
            "check",
        ],
        [
            [
                r["roles"],
                r["courses"],
                r["orgs"],
                r["moved"],
                r["seconds"],
                r["rows_per_second"],
                r["enforcer_seconds"],
                r["statements"],
                r["runs_recorded"],
                r["rss_before_mib"],
                r["peak_rss_mib"],
                r["peak_rss_during_sync_mib"],
                check,
            ]
        ],
        out,
    )
    print(f"  run statuses: {r['run_statuses']}; seeding took {r['seed_seconds']} s", file=out)
    if r.get("profile"):
        prof = r["profile"]
        print(
            f"\n-- cProfile: sync --all of {r['roles']:,} rows "
            f"({prof['seconds_under_profiler']} s under the profiler) --",
            file=out,
        )
        for view in ("cumulative", "tottime", "app"):
            print(prof[view], file=out)


def sync_in_child(args, out) -> dict:
    """Run the sync-all section in a fresh interpreter, so that its ru_maxrss is its own.

    Linux keeps ru_maxrss across execve, and a child forked from this process starts with
    this process's RSS: the interpreter is therefore started by a shell that forks it (the
    ``; exit`` keeps the shell from exec'ing it in place), from the shell's small memory."""
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--db",
        args.db,
        "--only",
        "sync-all",
        "--roles",
        str(args.roles),
        "--json",
        "--keep-db",
        "--db-name",
        args.db_name,
        "--enforcer",
        args.enforcer,
        "--time-budget",
        str(args.time_budget),
    ]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    if args.profile_sync:
        cmd += ["--profile-sync"]
    if args.db == "sqlite":
        cmd += ["--sqlite-path", args.sqlite_path]
    from django.db import connections

    connections.close_all()
    cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode:
        sys.stderr.write(done.stderr)
        raise RuntimeError(f"sync-all child failed with exit code {done.returncode}")
    return json.loads(done.stdout)["sections"]["sync-all"]


# --- main -----------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--db", choices=["sqlite", "postgres", "mariadb"], default="sqlite")
    p.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help="comma-separated sections: org, toggle, sync-all (default: all)",
    )
    p.add_argument("--quick", action="store_true", help=f"small sizes for a smoke check: {QUICK}")
    p.add_argument(
        "--sizes", type=_ints, help="org sizes in role rows (default 1000,5000,25000,100000)"
    )
    p.add_argument(
        "--casbin-sizes",
        type=_ints,
        help="unrelated casbin_rule rows for toggle (default 0,10000,100000,1000000)",
    )
    p.add_argument("--roles", type=int, help="legacy role rows for sync-all (default 1000000)")
    p.add_argument("--reps", type=int, help="toggle repetitions per size (median; default 9)")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="org: timed passes of app and floor per size; the fastest of each is shown",
    )
    p.add_argument(
        "--profile-sync",
        action="store_true",
        help="sync-all: after the measured sync, run another on fresh data under cProfile",
    )
    p.add_argument(
        "--passes",
        default="time,queries,memory",
        help="org: which passes to run (time always runs; queries: CaptureQueriesContext; "
        "memory: tracemalloc); default all",
    )
    p.add_argument("--batch-size", type=int, help="batch size for sync-all (app default if unset)")
    p.add_argument(
        "--profile",
        type=_ints,
        default=[],
        help="org sizes to profile too (cProfile, top 15 by cumulative time)",
    )
    p.add_argument(
        "--enforcer",
        choices=["loaded", "cold"],
        default="loaded",
        help="casbin_adapter's in-process enforcer: loaded from casbin_rule as in any "
        "started Django process (default), or cold (not loaded: the app skips it)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=900.0,
        help="sync-all: stop after the batch running when this many seconds have "
        "passed (0: no limit; default 900)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    p.add_argument(
        "--keep-db",
        action="store_true",
        help="reuse the benchmark database instead of dropping and recreating it",
    )
    p.add_argument(
        "--db-name", default=os.environ.get("AUTHZ_BENCH_DB_NAME", "authz_migration_bench")
    )
    p.add_argument("--sqlite-path", help="SQLite file (default: in a new temporary directory)")
    p.add_argument(
        "--sync-in-process",
        action="store_true",
        help="run sync-all in this process even with other sections (RSS then includes theirs)",
    )
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.sizes = args.sizes or preset["sizes"]
    args.casbin_sizes = (
        args.casbin_sizes if args.casbin_sizes is not None else preset["casbin_sizes"]
    )
    args.roles = args.roles or preset["roles"]
    args.reps = args.reps or preset["reps"]
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    args.passes = {s.strip() for s in args.passes.split(",") if s.strip()} | {"time"}
    if args.passes - {"time", "queries", "memory"}:
        p.error("--passes takes time, queries and memory")
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        p.error(
            f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}"
        )
    if args.db == "sqlite" and not args.sqlite_path:
        args.sqlite_path = os.path.join(tempfile.mkdtemp(prefix="authz_bench_"), "bench.sqlite3")
    return args


def environment(sql: Sql) -> dict:
    import django

    version = {
        "postgresql": "SELECT version()",
        "mysql": "SELECT version()",
        "sqlite": "SELECT sqlite_version()",
    }[sql.vendor]
    try:
        head = subprocess.run(  # noqa: S603
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603
            ["git", "-C", REPO, "status", "--porcelain", "authz_migration"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        head, dirty = "", ""
    import authz_migration

    package = os.path.dirname(authz_migration.__file__)
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            with open(os.path.join(root, name), "rb") as handle:
                digest.update(name.encode() + handle.read())
    return {
        "database": sql.vendor,
        "app_source_sha256": digest.hexdigest()[:12],
        "server": str(sql.scalar(version)).split(" on ")[0],
        "python": platform.python_version(),
        "django": django.get_version(),
        "git": head + (" (authz_migration/ modified)" if dirty else ""),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def verdicts(report: dict) -> list[str]:
    """The figures next to the project's targets (set for PostgreSQL)."""
    lines = []
    sections = report["sections"]

    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    for entry in sections.get("org", {}).get("rows", []):
        if entry["size"] != 25000:
            continue
        for d in ("forward", "rollback"):
            e = entry[d]
            ok = e["ratio_to_floor"] <= 3 and e["seconds"] < 1
            lines.append(
                f"org of 25,000 rows, {d}: {e['seconds']:.2f} s, {e['ratio_to_floor']}x the floor "
                f"(target: within 3x and under 1 s): {mark(ok)}"
            )
    toggle = sections.get("toggle")
    if toggle and toggle["rows"]:
        rows = toggle["rows"]
        worst_q = max(
            max(r["receiver_queries_forward"], r["receiver_queries_rollback"]) for r in rows
        )
        worst_total = max(max(r["queries"]["auto_on"], r["queries"]["auto_off"]) for r in rows)
        worst_ms = max(max(r["added_ms_forward"], r["added_ms_rollback"]) for r in rows)
        s = toggle["summary"]
        ratios = [x for x in (s.get("ratio_forward"), s.get("ratio_rollback")) if x is not None]
        lines.append(
            f"toggle: receiver adds at most {worst_q} queries ({worst_total} in the whole save) "
            f"(target: at most 15): {mark(worst_q <= 15)}"
        )
        lines.append(
            f"toggle: receiver adds at most {worst_ms:.1f} ms (target: under 20 ms): "
            f"{mark(worst_ms < 20)}"
        )
        if ratios and s["largest"] != s["smallest"]:
            lines.append(
                f"toggle: {s['largest']:,} vs {s['smallest']:,} casbin rows, added ms x"
                f"{max(ratios)} (target: flat within 1.5x): {mark(max(ratios) <= 1.5)}"
            )
    sync = sections.get("sync-all")
    if sync:
        lines.append(
            f"sync --all: {sync['rows_per_second']:,} rows/s over {sync['moved']:,} rows "
            f"(target: >= 50,000): {mark((sync['rows_per_second'] or 0) >= 50000 and sync['ok'])}"
        )
        lines.append(
            f"sync --all: peak RSS {sync['peak_rss_mib']} MiB (target: < 200 MB): "
            f"{mark(sync['peak_rss_mib'] * 1.048576 < 200)}"
        )
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    out = None if args.json else sys.stdout
    setup = setup_django(args)
    global ENFORCER_TIMER
    ENFORCER_TIMER = EnforcerTimer()
    sql = Sql()
    report = {"environment": environment(sql), "setup": setup, "sections": {}}
    if out:
        env = report["environment"]
        print(
            f"authz_migration benchmarks on {env['server']} (python {env['python']}, "
            f"Django {env['django']}, git {env['git']}, app source {env['app_source_sha256']}, "
            f"{env['cpus']} CPUs, load "
            f"{env['load_average']}); database {setup['database']}, migrate "
            f"{setup['migrate_seconds']} s",
            file=out,
            flush=True,
        )
    if "org" in args.only:
        with section("org: api.migrate_org(force=True) vs set-based SQL floor", out):
            result = run_org(
                sql, args.sizes, set(args.profile), args.enforcer, args.repeat, args.passes, out
            )
            report["sections"]["org"] = result
            if out:
                print_org(result, out)
        if out:
            for size, prof in result["profiles"].items():
                for d in ("forward", "rollback"):
                    print(f"\n-- cProfile: org of {size:,} rows, {d} --", file=out)
                    print(prof[d], file=out)
                    print(prof[f"{d}_tottime"], file=out)
                    print(prof[f"{d}_app"], file=out)
    if "toggle" in args.only:
        with section(
            f"toggle: course override save with 5 roles, AUTOMATIC on vs off, median "
            f"of {args.reps}",
            out,
        ):
            result = run_toggle(sql, args.casbin_sizes, args.reps, args.enforcer, out)
            report["sections"]["toggle"] = result
            if out:
                print_toggle(result, out)
    if "sync-all" in args.only:
        with section(f"sync-all: {args.roles:,} legacy rows, global flag on", out):
            if len(args.only) > 1 and not args.sync_in_process:
                result = sync_in_child(args, out)
            else:
                result = run_sync_all(
                    sql,
                    args.roles,
                    args.batch_size,
                    args.enforcer,
                    args.time_budget,
                    args.profile_sync,
                    out,
                )
            report["sections"]["sync-all"] = result
            if out:
                print_sync(result, out)
    report["targets"] = verdicts(report)
    if out and report["targets"]:
        print(
            f"\n== targets (set for PostgreSQL; this run: {report['environment']['database']},"
            f" enforcer {args.enforcer}) ==",
            file=out,
        )
        for line in report["targets"]:
            print(f"  {line}", file=out)
    if args.json:
        json.dump(report, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
