"""Section ``cutover``: ``authz_migrate cutover --to authz`` (``api.cutover``) over N legacy
rows in up to 200 orgs, the global flag off: total time, rows/second, the longest single org
transaction (a release, its move and its parity proof), peak RSS. Next to ``sync-all`` on
the same shape of data when both sections run."""

from __future__ import annotations

import gc
from time import perf_counter

from benchmarks.fixtures import FLAG, ROLES
from benchmarks.instruments import peak_rss_mib, prepare_enforcer, reset_peak_rss, rss_mib
from benchmarks.report import table
from benchmarks.sql import Sql

MAX_ORGS = 200
PER_COURSE = 50


def _seed(sql: Sql, roles: int, enforcer: str) -> dict:
    from waffle import get_waffle_flag_model

    courses = max(1, -(-roles // PER_COURSE))
    shape = {
        "roles": roles,
        "courses": courses,
        "orgs": max(1, min(MAX_ORGS, courses)),
        "users": max(PER_COURSE, roles // 20),
    }
    sql.reset()
    started = perf_counter()
    sql.seed_users(shape["users"])
    sql.seed_legacy(
        roles,
        shape["users"],
        PER_COURSE,
        shape["orgs"],
        lambda expr: sql.concat("'CutOrg'", expr),
    )
    sql.analyze()
    shape["seed_seconds"] = round(perf_counter() - started, 1)
    get_waffle_flag_model().objects.update_or_create(name=FLAG, defaults={"everyone": False})
    prepare_enforcer(enforcer)
    return shape


def _timed(steps):
    """Each step with the seconds since the previous one (for a release: its transaction)."""
    last = perf_counter()
    for step in steps:
        now = perf_counter()
        yield step, now - last
        last = now


def _cut_over() -> dict:
    """Run the cutover; the time between two yielded releases is one org's transaction."""
    from authz_migration import api
    from authz_migration.cutover import RELEASED
    from authz_migration.enforcer import watcher_only

    longest, longest_org, released, moved = 0.0, "", 0, 0
    started = perf_counter()
    # As the command runs it: its process serves no permission checks, so only the watcher
    # is told (authz_migrate does the same for sync --all).
    with watcher_only():
        for step, seconds in _timed(api.cutover(True)):
            if step.kind == RELEASED:
                released += 1
                moved += step.moved
                if seconds > longest:
                    longest, longest_org = seconds, step.org
    return {
        "seconds": perf_counter() - started,
        "orgs_released": released,
        "moved_by_runs": moved,
        "longest_org_transaction_seconds": round(longest, 3),
        "longest_org": longest_org,
    }


def run_cutover(sql: Sql, roles: int, enforcer: str, out) -> dict:
    from authz_migration import flags

    shape = _seed(sql, roles, enforcer)
    gc.collect()
    rss_before = rss_mib()
    hwm_reset = reset_peak_rss()
    done = _cut_over()
    hwm = peak_rss_mib() if hwm_reset else None
    mapped = ", ".join(f"'{r}'" for r in ROLES)
    legacy_left = sql.scalar(f"SELECT COUNT(*) FROM {sql.legacy} WHERE role IN ({mapped})")
    casbin_now = sql.scalar(f"SELECT COUNT(*) FROM {sql.casbin}")
    seconds = done.pop("seconds")
    result = {
        **shape,
        **done,
        "seconds": round(seconds, 2),
        "moved": casbin_now,
        "rows_per_second": round(casbin_now / seconds) if seconds else None,
        "rss_before_mib": round(rss_before, 1),
        "peak_rss_mib": round(rss_mib(), 1),
        "peak_rss_during_cutover_mib": round(hwm, 1) if hwm else None,
        "legacy_rows_left": legacy_left,
        "casbin_rows_after": casbin_now,
        "global_flag_on": flags.global_state(),
        "ok": legacy_left == 0 and casbin_now == roles and flags.global_state(),
    }
    sql.reset()
    prepare_enforcer(enforcer)
    return result


def print_cutover(result: dict, out) -> None:
    r = result
    check = (
        "ok"
        if r["ok"]
        else (
            f"MISMATCH (legacy left {r['legacy_rows_left']}, casbin {r['casbin_rows_after']}, "
            f"global flag on: {r['global_flag_on']})"
        )
    )
    table(
        [
            "roles",
            "orgs",
            "released",
            "moved",
            "seconds",
            "rows/s",
            "longest org txn s",
            "ru_maxrss after MiB",
            "VmHWM during cutover MiB",
            "check",
        ],
        [
            [
                r["roles"],
                r["orgs"],
                r["orgs_released"],
                r["moved"],
                r["seconds"],
                r["rows_per_second"],
                r["longest_org_transaction_seconds"],
                r["peak_rss_mib"],
                r["peak_rss_during_cutover_mib"],
                check,
            ]
        ],
        out,
    )
    print(f"  seeding took {r['seed_seconds']} s; longest org: {r['longest_org']}", file=out)
