"""One batch of a move: ask :mod:`~authz_migration.placement` where each source row belongs,
write the missing targets, confirm them, delete the sources. A fixed number of queries per
batch, whatever its size.

``decide(org, course_key)`` tells where a row's course belongs: True (Casbin), False
(legacy), or None (leave it alone: the course is excluded from this move). ``course_key`` is
None for an org-wide role.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from . import peer, placement
from .placement import CANNOT_MOVE, EXCLUDED, MOVES, NOT_MIGRATED, STAYS, Decide
from .roles import ROLE_NAMESPACE
from .stores import (
    CasbinRow,
    LegacyRow,
    delete_casbin,
    delete_legacy,
    existing_casbin,
    existing_legacy,
    insert_casbin,
    insert_legacy,
)

REASONS = placement.REASONS


@dataclass
class BatchResult:
    """What one batch did. Lists of rows hold small dicts with usernames, never emails."""

    scanned: int = 0
    moved: int = 0
    created: int = 0
    already_present: int = 0
    in_place: int = 0
    excluded: int = 0
    # Mapped org-wide roles this batch moved or found in place: the roles a course pinned to
    # the other system no longer sees there (docs/decisions/0006).
    org_wide_roles: int = 0
    not_migrated: Counter = field(default_factory=Counter)
    problems: dict[str, list[dict]] = field(default_factory=dict)
    excluded_courses: set[str] = field(default_factory=set)
    # Casbin (v0, v1, v2) written and removed: what an in-memory enforcer must learn.
    casbin_added: list[tuple[str, str, str]] = field(default_factory=list)
    casbin_removed: list[tuple[str, str, str]] = field(default_factory=list)

    def merge(self, other: BatchResult) -> None:
        """Add ``other``'s counts and lists to this result's."""
        for name in _SUMMED:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.not_migrated.update(other.not_migrated)
        for reason, rows in other.problems.items():
            self.problems.setdefault(reason, []).extend(rows)
        self.excluded_courses |= other.excluded_courses
        self.casbin_added.extend(other.casbin_added)
        self.casbin_removed.extend(other.casbin_removed)

    def merge_database(self, done) -> None:
        """Add what :mod:`~authz_migration.sqlmoves` moved: every row it read it moved, and
        a moved row whose target it did not write found its target present."""
        self.scanned += done.moved
        self.moved += done.moved
        self.created += done.created
        self.already_present += done.moved - done.created
        self.casbin_added.extend(done.casbin_added)
        self.casbin_removed.extend(done.casbin_removed)

    def problem(self, reason: str, row: dict) -> None:
        self.problems.setdefault(reason, []).append(row)

    def count(self, verdict: placement.Verdict, role: str, describe) -> bool:
        """Count one row's verdict; True when the row is to move. ``describe(reason)`` says
        what a run records of a row that cannot move."""
        kind = verdict.kind
        if kind == MOVES or kind == STAYS:
            self.org_wide_roles += verdict.org_wide
        if kind == MOVES:
            return True
        if kind == STAYS:
            self.in_place += 1
        elif kind == EXCLUDED:
            self.excluded += 1
            if verdict.course:
                self.excluded_courses.add(verdict.course)
        elif kind == NOT_MIGRATED:
            self.not_migrated[role] += 1
        elif kind == CANNOT_MOVE:
            self.problem(verdict.reason, describe(verdict.reason))
        return False


_SUMMED = (
    "scanned",
    "moved",
    "created",
    "already_present",
    "in_place",
    "excluded",
    "org_wide_roles",
)


def forward_batch(rows: list[LegacyRow], decide: Decide, *, dry_run: bool = False):
    """Move legacy rows whose course belongs in Casbin to Casbin."""
    result = BatchResult(scanned=len(rows))
    planned = [
        (row, verdict.target)
        for row, verdict in zip(rows, placement.legacy_verdicts(rows, decide), strict=True)
        if result.count(verdict, row.role, lambda reason, row=row: placement.describe(row, reason))
    ]
    present = existing_casbin({target for _, target in planned})
    steps = _Steps(insert_casbin, existing_casbin, delete_legacy, lambda row, target: target[2])
    moved, created = _write_then_delete(result, planned, present, steps, dry_run)
    if moved:
        peer.record_assignments((target for _, target in moved), created)
    result.casbin_added = created
    return result


def rollback_batch(rows: list[CasbinRow], decide: Decide, *, dry_run: bool = False):
    """Move Casbin role rows whose course belongs in the legacy table back to it."""
    result = BatchResult(scanned=len(rows))
    planned = [
        (row, verdict.target)
        for row, verdict in zip(rows, placement.casbin_verdicts(rows, decide), strict=True)
        if result.count(
            verdict,
            row.v1[len(ROLE_NAMESPACE) :],
            lambda reason, row=row: placement.describe(row, reason),
        )
    ]
    present, clashing = existing_legacy({target for _, target in planned})
    if clashing:
        for row, target in planned:
            if target in clashing:
                result.problem(
                    placement.CONFLICTING_ROW, placement.describe(row, placement.CONFLICTING_ROW)
                )
        planned = [(row, target) for row, target in planned if target not in clashing]

    def delete(sources: list[CasbinRow]) -> int:
        # openedx-authz's extended rows reference the rules: they go first.
        peer.forget_assignments([(row.pk, row.v0, row.v1, row.v2) for row in sources])
        return delete_casbin([row.pk for row in sources])

    steps = _Steps(
        insert_legacy,
        lambda keys: existing_legacy(keys)[0],
        delete,
        lambda row, target: row.v2,
        in_key_order=True,
    )
    moved, _ = _write_then_delete(result, planned, present, steps, dry_run)
    result.casbin_removed = [(row.v0, row.v1, row.v2) for row, _ in moved]
    return result


@dataclass(frozen=True)
class _Steps:
    """A direction's statements: ``insert`` the targets (returns the count the database
    reports), ``reread`` which targets exist, ``delete`` source rows, and the ``scope`` a
    run names for a (row, target) pair. Targets are written in source order, or sorted with
    ``in_key_order``: concurrent inserts into a unique index (the legacy table's) then take
    its locks in the same order."""

    insert: Callable
    reread: Callable
    delete: Callable
    scope: Callable
    in_key_order: bool = False


def _write_then_delete(result, planned, present, steps: _Steps, dry_run: bool):
    """Write the targets that are missing, confirm them, then delete exactly the source rows
    whose target is confirmed. Returns the (row, target) pairs that moved and the targets
    written, in the order written. Three statements at most; a dry run only counts."""
    # A dict keeps source order (deterministic ids) where a set would not.
    wanted = dict.fromkeys(target for _, target in planned)
    missing = [target for target in wanted if target not in present]
    if dry_run:
        result.created = len(missing)
        result.moved = len(planned)
        # A moved row whose target it did not write (there before, or a twin's).
        result.already_present = result.moved - result.created
        return [], []
    if steps.in_key_order:
        missing.sort()
    inserted = steps.insert(missing)
    # The statement's row count proves the targets exist; only a shortfall (a trigger that
    # silently skipped a row) costs a read to find out which.
    complete = inserted == len(missing)
    moved, created = planned, missing
    if not complete:
        confirmed = steps.reread(set(wanted))
        moved = [(row, target) for row, target in planned if target in confirmed]
        created = [target for target in missing if target in confirmed]
        for row, target in planned:
            if target not in confirmed:
                result.problem(
                    placement.TARGET_NOT_CONFIRMED,
                    {"id": row.pk, "scope": steps.scope(row, target)},
                )
    result.moved = steps.delete([row for row, _ in moved])
    result.created = len(created)
    result.already_present = result.moved - result.created
    return moved, created
