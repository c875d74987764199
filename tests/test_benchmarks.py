"""The benchmark's verdicts (``benchmarks/``): a failed correctness check fails the run, a
missed timing target never does. The benchmark itself runs in CI (``.ci/run``) and with
``tox -e benchmarks``; these tests only check its judgement, on made-up figures."""

from __future__ import annotations

import copy

from benchmarks.cli import failed_checks
from benchmarks.targets import TARGETS, verdicts


def org_entry(
    size: int = 25000, seconds: float = 0.5, legacy_after: int = 0, ratio: float = 1.4
) -> dict:
    def direction(after: tuple[int, int]) -> dict:
        return {
            "seconds": seconds,
            "ratio_to_floor": ratio,
            "queries": 13,
            "statements_counted_in_timed_pass": 12,
            "org_rows_after": {"legacy": after[0], "casbin": after[1]},
        }

    return {
        "size": size,
        "forward": direction((legacy_after, size - legacy_after)),
        "rollback": direction((size, 0)),
        "same_result_as_floor": True,
        "restored": True,
        "other_org_untouched": True,
    }


REPORT = {
    "environment": {"database": "postgresql"},
    "sections": {
        "org": {"rows": [org_entry()], "enforcer": "cold"},
        "toggle": {
            "rows": [
                {
                    "casbin_rows": 0,
                    "rows_moved_as_expected": True,
                    "receiver_queries_forward": 10,
                    "receiver_queries_rollback": 11,
                    "queries": {"auto_on": 15, "auto_off": 16},
                    "added_ms_forward": 4.0,
                    "added_ms_rollback": 5.0,
                }
            ],
            "summary": {"largest": 0, "smallest": 0},
        },
        "sync-all": {
            "ok": True,
            "stopped": None,
            "legacy_rows_left": 0,
            "casbin_rows_after": 10,
            "rows_per_second": 10,  # far below the target: not a failure
            "moved": 10,
            "peak_rss_mib": 50.0,
        },
    },
}


def test_a_slow_but_correct_run_passes():
    assert failed_checks(REPORT) == []
    lines = verdicts(REPORT)
    assert any("rows/s" in line and line.endswith("MISSED") for line in lines)


def test_rows_left_behind_fail_the_run():
    report = copy.deepcopy(REPORT)
    report["sections"]["org"]["rows"] = [org_entry(legacy_after=3)]
    report["sections"]["toggle"]["rows"][0]["rows_moved_as_expected"] = False
    report["sections"]["sync-all"].update(ok=False, legacy_rows_left=4)
    failed = failed_checks(report)
    assert len(failed) == 3, failed
    assert failed[0].startswith("org of 25,000 rows, forward: org rows legacy=3")


def test_a_sync_stopped_by_its_time_budget_is_not_a_failure():
    report = copy.deepcopy(REPORT)
    report["sections"]["sync-all"].update(ok=False, stopped="command stopped: interrupted")
    assert failed_checks(report) == []


def test_targets_are_data():
    targets = dict(TARGETS, org_max_seconds={25000: 0.1})
    [forward, rollback] = [line for line in verdicts(REPORT, targets) if line.startswith("org")]
    assert forward.endswith("under 0.1 s): MISSED")
    assert all(line.endswith("met") for line in verdicts(REPORT)[:2])


def org_verdicts(enforcer: str, *entries: dict) -> list[str]:
    report = dict(REPORT, sections={"org": {"rows": list(entries), "enforcer": enforcer}})
    return verdicts(report)


def test_org_moves_are_judged_at_both_sizes_by_the_enforcers_state():
    """Issue 18: 25,000 and 100,000 roles, within 1.5x the floor with the enforcer cold and
    2x with it loaded; the one-second bound is the 25,000-role move's alone."""
    entries = [org_entry(25000, ratio=1.8), org_entry(100000, seconds=3.0, ratio=1.8)]
    cold, loaded = org_verdicts("cold", *entries), org_verdicts("loaded", *entries)

    assert [line.rsplit(": ", 1)[1] for line in cold] == ["MISSED"] * 4
    assert [line.rsplit(": ", 1)[1] for line in loaded] == ["met"] * 4
    assert loaded[2].startswith("org of 100,000 rows, forward, enforcer loaded: 3.00 s, 1.8x")
    assert "under" not in loaded[2] and "under 1 s" in loaded[0]
    assert org_verdicts("cold", org_entry(5000, ratio=9.0)) == []  # no target at that size


def sync_verdict(database: str, rows_per_second: int) -> str:
    sync = dict(REPORT["sections"]["sync-all"], rows_per_second=rows_per_second)
    report = {"environment": {"database": database}, "sections": {"sync-all": sync}}
    return verdicts(report)[0]


def test_sync_all_is_judged_by_its_databases_target():
    assert sync_verdict("postgresql", 61000).endswith("(target on PostgreSQL: >= 100,000): MISSED")
    assert sync_verdict("mysql", 61000).endswith("(target on MariaDB/MySQL: >= 60,000): met")
    assert sync_verdict("sqlite", 61000) == "sync --all: 61,000 rows/s (no target on SQLite)"
