"""The project's targets (issue 18's acceptance; benchmarks/README.rst, "Targets"), as data,
and the run's figures next to them. A missed target is reported, never an error: timings
depend on the machine."""

from __future__ import annotations

TARGETS = {
    # org moves of these sizes: forward and rollback each within this ratio to the SQL floor,
    # by the state of the in-process enforcer (issue 18)
    "org_rows": (25000, 100000),
    "org_max_ratio_to_floor": {"cold": 1.5, "loaded": 2.0},
    # ... and under this many seconds, for the sizes named
    "org_max_seconds": {25000: 1},
    # course override save with automatic moves: what the receiver adds
    "toggle_max_receiver_queries": 15,
    "toggle_max_added_ms": 20,
    # added ms with the most unrelated casbin rows / with the fewest
    "toggle_max_growth": 1.5,
    # authz_migrate sync --all, by database vendor (issue 18; none is set for SQLite)
    "sync_min_rows_per_second": {"postgresql": 100000, "mysql": 60000},
    "sync_max_peak_rss_mb": 200,
    # authz_migrate cutover: at least this share of sync --all's rows/s on the same data
    "cutover_min_share_of_sync": 0.5,
    "cutover_max_peak_rss_mb": 200,
}

MIB_PER_MB = 1.048576

# Django's vendor names, as the targets are keyed, by the servers' own names.
SERVER_NAMES = {"postgresql": "PostgreSQL", "mysql": "MariaDB/MySQL", "sqlite": "SQLite"}


def server_name(vendor: str) -> str:
    return SERVER_NAMES.get(vendor, vendor)


def mark(ok: bool) -> str:
    return "met" if ok else "MISSED"


def verdicts(report: dict, targets: dict = TARGETS) -> list[str]:
    """One line per target the run has figures for: the figure, the target, met or MISSED."""
    t = targets
    lines = []
    sections = report["sections"]
    org = sections.get("org", {})
    for entry in org.get("rows", []):
        if entry["size"] not in t["org_rows"]:
            continue
        enforcer = org["enforcer"]
        most = t["org_max_ratio_to_floor"][enforcer]
        seconds = t["org_max_seconds"].get(entry["size"])
        for d in ("forward", "rollback"):
            e = entry[d]
            ok = e["ratio_to_floor"] <= most and (seconds is None or e["seconds"] < seconds)
            under = "" if seconds is None else f" and under {seconds} s"
            lines.append(
                f"org of {entry['size']:,} rows, {d}, enforcer {enforcer}: {e['seconds']:.2f} s, "
                f"{e['ratio_to_floor']}x the floor (target: within {most}x{under}): {mark(ok)}"
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
        most_queries = t["toggle_max_receiver_queries"]
        lines.append(
            f"toggle: receiver adds at most {worst_q} queries ({worst_total} in the whole save) "
            f"(target: at most {most_queries}): {mark(worst_q <= most_queries)}"
        )
        lines.append(
            f"toggle: receiver adds at most {worst_ms:.1f} ms "
            f"(target: under {t['toggle_max_added_ms']} ms): "
            f"{mark(worst_ms < t['toggle_max_added_ms'])}"
        )
        if ratios and s["largest"] != s["smallest"]:
            growth = t["toggle_max_growth"]
            lines.append(
                f"toggle: {s['largest']:,} vs {s['smallest']:,} casbin rows, added ms x"
                f"{max(ratios)} (target: flat within {growth}x): {mark(max(ratios) <= growth)}"
            )
    sync = sections.get("sync-all")
    if sync:
        database = report["environment"]["database"]
        least = t["sync_min_rows_per_second"].get(database)
        server = server_name(database)
        if least is None:
            lines.append(f"sync --all: {sync['rows_per_second']:,} rows/s (no target on {server})")
        else:
            fast = (sync["rows_per_second"] or 0) >= least and sync["ok"]
            lines.append(
                f"sync --all: {sync['rows_per_second']:,} rows/s over {sync['moved']:,} rows "
                f"(target on {server}: >= {least:,}): {mark(fast)}"
            )
        most = t["sync_max_peak_rss_mb"]
        lines.append(
            f"sync --all: peak RSS {sync['peak_rss_mib']} MiB (target: < {most} MB): "
            f"{mark(sync['peak_rss_mib'] * MIB_PER_MB < most)}"
        )
    lines += _cutover_verdicts(sections, t)
    return lines


def _cutover_verdicts(sections: dict, t: dict) -> list[str]:
    cut, sync = sections.get("cutover"), sections.get("sync-all")
    if not cut:
        return []
    lines = []
    if sync and sync.get("rows_per_second"):
        share = (cut["rows_per_second"] or 0) / sync["rows_per_second"]
        least = t["cutover_min_share_of_sync"]
        lines.append(
            f"cutover: {cut['rows_per_second']:,} rows/s, {share:.2f} of sync --all's "
            f"(target: >= {least}): {mark(share >= least and cut['ok'])}"
        )
    most = t["cutover_max_peak_rss_mb"]
    peak = cut["peak_rss_during_cutover_mib"] or cut["peak_rss_mib"]
    lines.append(
        f"cutover: peak RSS {peak} MiB (target: < {most} MB): {mark(peak * MIB_PER_MB < most)}"
    )
    lines.append(f"cutover: longest org transaction {cut['longest_org_transaction_seconds']} s")
    return lines
