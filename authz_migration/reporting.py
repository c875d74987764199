"""What the management command shows: a progress display while batches run, and a summary.

Kept out of the command so that the command stays a thin door into :mod:`api`.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from .models import MigrationRun, scope_label
from .orchestrator import Outcome


@dataclass
class _ScopeTotals:
    direction: str
    scope: str
    batches: int = 0
    moved: int = 0
    not_migrated: int = 0
    could_not_move: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    run_ids: list[int] = field(default_factory=list)


def is_empty_pass(outcome: Outcome) -> bool:
    """A batch that found nothing to move, write or report. The rule, for the command and
    the admin's "Sync now" alike: such a pass records no run, and is reported as "nothing
    to move" rather than as a completed run."""
    return outcome.status == MigrationRun.Status.COMPLETED and not outcome.did_something


def describe_outcome(outcome: Outcome) -> str:
    """One line per batch (the command's ``--verbosity 2``)."""
    move, counts = outcome.move, outcome.counts
    run = f"run #{outcome.run.pk}" if outcome.run is not None else "no run recorded"
    if is_empty_pass(outcome):
        state = "nothing to move"
    else:
        state = MigrationRun.Status(outcome.status).label.lower()
    return (
        f"  {move.direction} {scope_label(move.scope_type, move.scope_key)}: read "
        f"{counts.get('scanned', 0)}, moved {counts.get('moved', 0)}, could not move "
        f"{counts.get('could_not_move', 0)}; {state} ({run})"
    )


class Summary:
    """Totals per (direction, scope) across the batches of a command. A scope's batches
    that found nothing to move (:func:`is_empty_pass`) count neither as batches nor under
    a status: a scope with nothing at all to move shows 0 batches, no status, no run."""

    def __init__(self) -> None:
        self.scopes: dict[tuple[str, str, str], _ScopeTotals] = {}
        self.moved = 0
        self.rows_read = 0
        self.statuses: Counter = Counter()
        self.errors: list[str] = []

    def add(self, outcome: Outcome) -> None:
        move = outcome.move
        key = (move.direction, move.scope_type, move.scope_key)
        totals = self.scopes.get(key)
        if totals is None:
            # Compact, one token per word, for the table: "instance", "org OrgA".
            label = f"{move.scope_type} {move.scope_key}" if move.scope_key else move.scope_type
            totals = self.scopes[key] = _ScopeTotals(move.direction, label)
        counts = outcome.counts
        self.rows_read += counts.get("scanned", 0) + counts.get("excluded", 0)
        if is_empty_pass(outcome):
            return
        totals.batches += 1
        totals.moved += counts.get("moved", 0)
        totals.not_migrated += counts.get("not_migrated", 0)
        for reason, detail in outcome.metadata.get("could_not_move", {}).items():
            totals.could_not_move[reason] += detail["count"]
        totals.statuses[outcome.status] += 1
        if outcome.run is not None:
            totals.run_ids.append(outcome.run.pk)
        self.moved += counts.get("moved", 0)
        self.statuses[outcome.status] += 1
        if outcome.status == MigrationRun.Status.FAILED:
            self.errors.append(outcome.metadata.get("error", "unknown error"))
        if outcome.status == MigrationRun.Status.SKIPPED:
            self.errors.append(outcome.metadata.get("reason", "skipped"))

    @property
    def could_not_move(self) -> int:
        return sum(sum(t.could_not_move.values()) for t in self.scopes.values())

    def rows(self) -> list[dict]:
        return [
            {
                "direction": t.direction,
                "scope": t.scope,
                "batches": t.batches,
                "moved": t.moved,
                "not_migrated": t.not_migrated,
                "could_not_move": dict(t.could_not_move),
                "statuses": dict(t.statuses),
                "run_ids": t.run_ids,
                "nothing_to_move": t.batches == 0,
            }
            for t in self.scopes.values()
        ]

    def lines(self) -> list[str]:
        """The summary table, one string per line."""
        headers = (
            "direction",
            "scope",
            "batches",
            "moved",
            "not migrated",
            "could not move",
            "runs",
        )
        table = [headers]
        for row in self.rows():
            problems = ", ".join(f"{r}: {n}" for r, n in sorted(row["could_not_move"].items()))
            table.append(
                (
                    row["direction"],
                    row["scope"],
                    str(row["batches"]),
                    str(row["moved"]),
                    str(row["not_migrated"]),
                    problems or "0",
                    _ids(row["run_ids"]) if row["batches"] else "nothing to move",
                )
            )
        if len(table) == 1 or all(row["nothing_to_move"] for row in self.rows()):
            return ["Nothing to move: the selected roles already sit where their flags point."]
        widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
        lines = [
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in table
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return lines


def _ids(ids: list[int]) -> str:
    if not ids:
        return "-"
    if len(ids) <= 3:
        return ", ".join(f"#{i}" for i in ids)
    return f"#{ids[0]} .. #{ids[-1]} ({len(ids)} runs)"


class Progress:
    """Rows moved, batches, rate and ETA: one rewritten line on a terminal, a plain line
    every ``interval`` seconds otherwise (logs, CI). ``out`` is a command's ``OutputWrapper``
    (its ``write`` takes ``ending``)."""

    def __init__(self, out: TextIO, total: int, tty: bool, interval: float = 5.0):
        self.out, self.total, self.tty, self.interval = out, total, tty, interval
        self.started = self.last_print = time.monotonic()
        self.batches = 0

    def update(self, summary: Summary) -> None:
        self.batches += 1
        now = time.monotonic()
        if not self.tty and now - self.last_print < self.interval:
            return
        self.last_print = now
        elapsed = max(now - self.started, 1e-6)
        rate = summary.rows_read / elapsed
        remaining = max(self.total - summary.rows_read, 0)
        eta = f"{remaining / rate:.0f}s" if rate and self.total else "?"
        line = (
            f"{summary.rows_read}/{self.total} rows read, {summary.moved} moved, "
            f"{self.batches} batches, {rate:.0f} rows/s, ETA {eta}"
        )
        if self.tty:
            self.out.write("\r" + line.ljust(79), ending="")
        else:
            self.out.write(line, ending="\n")
        self.out.flush()

    def finish(self) -> None:
        if self.tty and self.batches:
            self.out.write("", ending="\n")
