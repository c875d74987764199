"""How long a cutover will take, from this site's own recent moves (docs/decisions/0013).

The estimate is rows to move / rows per second, plus a fixed cost per org released (its
lock, two override reads, the run row, the parity scan: not in a run's own duration) plus
``--sleep`` between two orgs. The rate is measured: the moved rows over the durations of the
site's recent completed forward and rollback runs that moved at least :data:`MIN_MOVED`
rows (smaller runs measure their fixed cost, not their rate). A site with no such run gets
:data:`DEFAULT_ROWS_PER_SECOND`, below what the benchmarks measured for a cutover on
MariaDB (about 7,000 rows/s; PostgreSQL about 40,000): an estimate errs long.
"""

from __future__ import annotations

from .models import MigrationRun

DEFAULT_ROWS_PER_SECOND = 5000.0
PER_ORG_SECONDS = 0.2
MIN_MOVED = 1000
RECENT_RUNS = 20
MEASURED = "measured"
DEFAULT = "default"


def _number(value) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def throughput() -> dict:
    """Rows per second of this site's moves, and where the figure comes from: ``measured``
    (over the last :data:`RECENT_RUNS` qualifying runs; one query) or ``default``."""
    metadata = (
        MigrationRun.objects.filter(
            status=MigrationRun.Status.COMPLETED,
            migration_type__in=MigrationRun.MigrationType.values,
            metadata__counts__moved__gte=MIN_MOVED,
        )
        .order_by("-id")
        .values_list("metadata", flat=True)[:RECENT_RUNS]
    )
    moved = seconds = 0.0
    runs = 0
    for data in metadata:
        rows, took = (
            _number(data.get("counts", {}).get("moved")),
            _number(data.get("duration_seconds")),
        )
        if rows is None or took is None or data.get("dry_run") is True:
            continue
        moved, seconds, runs = moved + rows, seconds + took, runs + 1
    if not runs:
        return {"rows_per_second": DEFAULT_ROWS_PER_SECOND, "source": DEFAULT, "runs": 0}
    return {"rows_per_second": round(moved / seconds, 1), "source": MEASURED, "runs": runs}


def cutover(rows: int, orgs: int, sleep: float = 0.0) -> dict:
    """The estimated seconds of a cutover that moves ``rows`` role rows in ``orgs`` releases
    with ``sleep`` seconds between two of them, with its parts and the rate's source."""
    rate = throughput()
    parts = {
        "moving_seconds": round(rows / rate["rows_per_second"], 1),
        "per_org_seconds": round(orgs * PER_ORG_SECONDS, 1),
        "sleep_seconds": round(max(orgs - 1, 0) * sleep, 1),
    }
    return {
        "seconds": round(sum(parts.values()), 1),
        **parts,
        "rows": rows,
        "orgs": orgs,
        "rate": rate,
        "per_org_overhead": PER_ORG_SECONDS,
        "sleep": sleep,
    }
