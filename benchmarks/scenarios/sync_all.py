"""Section ``sync-all``: ``authz_migrate sync --all`` (or ``api.sync_instance``) over N legacy
rows after the global flag is switched on: rows/second and peak RSS (run in a child process so
the other sections do not inflate its RSS)."""

from __future__ import annotations

import gc
import io
import json
import os
import signal
import subprocess
import sys
from time import perf_counter

from benchmarks import instruments
from benchmarks.fixtures import FLAG, ROLES
from benchmarks.instruments import (
    StatementCounter,
    enforcer_policy_size,
    measure,
    peak_rss_mib,
    prepare_enforcer,
    reset_peak_rss,
    rss_mib,
)
from benchmarks.report import REPO, table
from benchmarks.sql import Sql


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
    instruments.ENFORCER_TIMER.reset()
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
        "enforcer_seconds": instruments.ENFORCER_TIMER.read(),
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


def sync_in_child(args, out, section: str = "sync-all") -> dict:
    """Run the sync-all (or another) section in a fresh interpreter, so that its ru_maxrss is
    its own.

    Linux keeps ru_maxrss across execve, and a child forked from this process starts with
    this process's RSS: the interpreter is therefore started by a shell that forks it (the
    ``; exit`` keeps the shell from exec'ing it in place), from the shell's small memory."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks",
        "--db",
        args.db,
        "--only",
        section,
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
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)  # noqa: S603
    if done.returncode:
        sys.stderr.write(done.stderr)
        raise RuntimeError(f"{section} child failed with exit code {done.returncode}")
    return json.loads(done.stdout)["sections"][section]
