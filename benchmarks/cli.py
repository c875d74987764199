"""Benchmarks of authz_migration against SQLite, PostgreSQL or MariaDB.

    python -m benchmarks --db postgres [--sizes 1000,5000,25000,100000]
                         [--only org|toggle|sync-all|cutover] [--json]
    python -m benchmarks --db sqlite --quick          # smoke check, well under a minute

Sections (see benchmarks/README.rst for what every figure means):

org       ``api.migrate_org(org, forward=True/False, force=True)`` on an org of N role rows,
          next to a hand-written set-based SQL move (one INSERT ... SELECT + one DELETE) on
          identical freshly seeded data: the floor.
toggle    the cost the automatic receiver adds to saving a course override (5 roles move),
          with casbin_rule holding 0 ... 1,000,000 unrelated rows.
sync-all  ``authz_migrate sync --all`` (or ``api.sync_instance``) over N legacy rows after the
          global flag is switched on: rows/second and peak RSS (run in a child process so the
          other sections do not inflate its RSS).
cutover   ``authz_migrate cutover --to authz`` (``api.cutover``) over the same number of legacy
          rows in up to 200 orgs: rows/second, the longest org transaction, peak RSS (also in
          a child process).

The benchmark owns its database (``authz_migration_bench``): it drops and recreates it (unless
``--keep-db``) and truncates its tables between measurements. The exit status is 1 when a
correctness check failed (a ``check`` column that is not ``ok``), whatever the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings

from benchmarks import instruments
from benchmarks.database import setup_django
from benchmarks.report import environment, section
from benchmarks.scenarios.cutover import print_cutover, run_cutover
from benchmarks.scenarios.org import org_check, print_org, run_org
from benchmarks.scenarios.sync_all import print_sync, run_sync_all, sync_in_child
from benchmarks.scenarios.toggle import print_toggle, run_toggle
from benchmarks.sql import Sql
from benchmarks.targets import server_name, verdicts

warnings.filterwarnings(
    # casbin_adapter's AppConfig.ready() queries django_migrations; nothing to act on here.
    "ignore",
    message="Accessing the database during app initialization",
    category=RuntimeWarning,
)

FULL = {
    "sizes": [1000, 5000, 25000, 100000],
    "casbin_sizes": [0, 10000, 100000, 1000000],
    "roles": 1000000,
    "reps": 9,
}


QUICK = {"sizes": [1000, 5000], "casbin_sizes": [0, 10000], "roles": 20000, "reps": 5}


SECTIONS = ("org", "toggle", "sync-all", "cutover")


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
        help="comma-separated sections: org, toggle, sync-all, cutover (default: all)",
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
    p.add_argument(
        "--roles", type=int, help="legacy role rows for sync-all and cutover (default 1000000)"
    )
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


def main(argv=None) -> int:
    args = parse_args(argv)
    out = None if args.json else sys.stdout
    setup = setup_django(args)
    instruments.install_enforcer_timer()
    sql = Sql()
    report = {"environment": environment(sql), "setup": setup, "sections": {}}
    if out:
        env = report["environment"]
        print(
            f"authz_migration benchmarks on {env['server']}, {env['server_cache']} "
            f"(python {env['python']}, "
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
    if "cutover" in args.only:
        with section(f"cutover: {args.roles:,} legacy rows, global flag off -> on", out):
            if len(args.only) > 1 and not args.sync_in_process:
                result = sync_in_child(args, out, section="cutover")
            else:
                result = run_cutover(sql, args.roles, args.enforcer, out)
            report["sections"]["cutover"] = result
            if out:
                print_cutover(result, out)
    report["targets"] = verdicts(report)
    if out and report["targets"]:
        print(
            f"\n== targets (this run: {server_name(report['environment']['database'])},"
            f" enforcer {args.enforcer}) ==",
            file=out,
        )
        for line in report["targets"]:
            print(f"  {line}", file=out)
    report["failed_checks"] = failed_checks(report)
    if out:
        print(
            f"\n== correctness checks: {len(report['failed_checks'])} failed ==",
            file=out,
        )
        for line in report["failed_checks"]:
            print(f"  {line}", file=out)
    if args.json:
        json.dump(report, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    return 1 if report["failed_checks"] else 0


def failed_checks(report: dict) -> list[str]:
    """Every correctness check of the run that failed (timings are never checked): the
    ``check`` columns of the tables. A sync stopped by ``--time-budget`` is not a failure."""
    failed = []
    sections = report["sections"]
    for entry in sections.get("org", {}).get("rows", []):
        for name in ("forward", "rollback"):
            check = org_check(entry, name)
            if check != "ok":
                failed.append(f"org of {entry['size']:,} rows, {name}: {check}")
    for entry in sections.get("toggle", {}).get("rows", []):
        if not entry["rows_moved_as_expected"]:
            failed.append(f"toggle with {entry['casbin_rows']:,} casbin rows: rows did not move")
    sync = sections.get("sync-all")
    if sync and not sync["ok"] and not sync["stopped"]:
        failed.append(
            f"sync-all: {sync['legacy_rows_left']} legacy rows left, "
            f"{sync['casbin_rows_after']} casbin rows"
        )
    cutover = sections.get("cutover")
    if cutover and not cutover["ok"]:
        failed.append(
            f"cutover: {cutover['legacy_rows_left']} legacy rows left, "
            f"{cutover['casbin_rows_after']} casbin rows, global flag on: "
            f"{cutover['global_flag_on']}"
        )
    return failed
