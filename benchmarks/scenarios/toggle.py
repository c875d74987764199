"""Section ``toggle``: the cost the automatic receiver adds to saving a course override (5 roles
move), with casbin_rule holding 0 ... 1,000,000 unrelated rows."""

from __future__ import annotations

import statistics
from time import perf_counter

from benchmarks import instruments
from benchmarks.fixtures import FLAG, ROLES, TOGGLE_COURSE, TOGGLE_ORG
from benchmarks.instruments import enforcer_policy_size, prepare_enforcer
from benchmarks.report import table
from benchmarks.sql import Sql


def run_toggle(sql: Sql, casbin_sizes: list[int], reps: int, enforcer: str, out) -> dict:
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext, override_settings

    from authz_migration.conf import course_override_model

    model = course_override_model()

    def save(choice: str) -> tuple[float, int, float]:
        row = model(waffle_flag=FLAG, course_id=TOGGLE_COURSE, override_choice=choice, enabled=True)
        instruments.ENFORCER_TIMER.reset()
        with CaptureQueriesContext(connection) as captured:
            started = perf_counter()
            with transaction.atomic():
                row.save()
            elapsed = perf_counter() - started
        return elapsed * 1000, len(captured), instruments.ENFORCER_TIMER.seconds * 1000

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
                k: round(statistics.median(v), 2) if instruments.ENFORCER_TIMER.available else None
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
