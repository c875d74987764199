"""Section ``org``: ``api.migrate_org(org, forward=True/False, force=True)`` on an org of N role
rows, next to a hand-written set-based SQL move (one INSERT ... SELECT + one DELETE) on
identical freshly seeded data: the floor."""

from __future__ import annotations

from benchmarks.fixtures import ORG, OTHER_ORG
from benchmarks.instruments import measure, prepare_enforcer, rss_mib
from benchmarks.report import table
from benchmarks.sql import Sql


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
    return {"rows": results, "profiles": profiles, "enforcer": enforcer}


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


def org_check(entry, name) -> str:
    """The ``check`` cell of a row: ``ok``, or what went wrong."""
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
    return "; ".join(problems) or "ok"


def _org_line(entry, name):
    e = entry[name]
    return [
        entry["size"],
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
        org_check(entry, name),
    ]


def print_org(result: dict, out) -> None:
    rows = [_org_line(e, n) for e in result["rows"] for n in ("forward", "rollback")]
    table(ORG_HEADERS, rows, out)
