"""The public Python API: what the override receivers, the management command and host code
call. Every function that moves rows goes through :func:`orchestrator.execute`, so each move
is guarded and recorded as a :class:`~authz_migration.models.MigrationRun`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from . import flags, lookup, stores
from . import verify as verify_module
from .models import MigrationRun
from .orchestrator import COURSE, FORWARD, INSTANCE, ORG, ROLLBACK, Move, Outcome, execute
from .roles import normalize_course_key, validate_org
from .stores import Selection

__all__ = [
    "FlagContradiction",
    "Outcome",
    "is_authz_enabled",
    "migrate_course",
    "migrate_org",
    "plan",
    "run_in_batches",
    "source_rows",
    "sync_course",
    "sync_instance",
    "sync_org",
    "unknown_scopes",
    "verify",
    "verify_scope",
]

is_authz_enabled = flags.is_authz_enabled
unknown_scopes = lookup.unknown_scopes
API = MigrationRun.Trigger.API


class FlagContradiction(Exception):
    """A directed move would put roles in the system their course's flag does not name."""

    def __init__(self, direction: str, placements: list[verify_module.Placement]):
        self.direction = direction
        self.placements = placements
        super().__init__(self.describe("force=True moves them anyway"))

    def describe(self, how_to_force: str) -> str:
        """The refusal in one line, ending with ``how_to_force`` (each door names its own
        way: ``force=True`` here, ``--force`` in the command)."""
        names = ", ".join(p.scope for p in self.placements[:20])
        more = f" and {len(self.placements) - 20} more" if len(self.placements) > 20 else ""
        system = "Casbin" if self.direction == FORWARD else "the legacy table"
        return (
            f"{self.direction} would move the roles of {names}{more} into {system}, against "
            f"their effective flag (their permission checks would fail); {how_to_force}"
        )


def _direction(forward: bool) -> str:
    return FORWARD if forward else ROLLBACK


def sync_course(
    course_key: Any, *, trigger: str = API, user: Any = None, **options
) -> list[Outcome]:
    """Move the course's roles to the system its effective flag names (one run)."""
    course = normalize_course_key(course_key)
    move = Move(_direction(flags.is_authz_enabled(course)), COURSE, course)
    return [execute(move, trigger=trigger, triggered_by=user, **options)]


def sync_org(org: str, *, trigger: str = API, user: Any = None, **options) -> list[Outcome]:
    """Move every course of ``org``, and its org-wide roles, to the system each one's flag
    names: one run in the org's direction, and one the other way when courses pinned by a
    course override point there."""
    org = validate_org(org)
    org_state = flags.org_effective_state(org).enabled
    moves = [Move(_direction(org_state), ORG, org)]
    if any(state != org_state for state in flags.pinned_courses(org).values()):
        moves.append(Move(_direction(not org_state), ORG, org))
    return [execute(move, trigger=trigger, triggered_by=user, **options) for move in moves]


def plan(
    action: str,
    *,
    courses: list[str] | tuple[str, ...] = (),
    orgs: list[str] | tuple[str, ...] = (),
    everything: bool = False,
    force: bool = False,
) -> list[Move]:
    """The moves that ``action`` ("sync", "forward" or "rollback") needs for the selection.

    Raises :class:`FlagContradiction` when a directed move would carry roles against their
    course's flag and ``force`` is not set; invalid keys raise ``InvalidCourseKey`` /
    ``InvalidOrg`` before anything moves.
    """
    courses = [normalize_course_key(c) for c in courses]
    orgs = [validate_org(o) for o in orgs]
    if action == "sync":
        if everything:
            # Each pass reads the rows its source table held when the sync was planned: the
            # rows the forward pass writes into Casbin are in place by construction, and
            # re-reading them in the rollback pass would double the work. A row written
            # after planning is its writer's business (a receiver moves what an override
            # save flips) or the next sync's.
            return [
                Move(FORWARD, INSTANCE, until=stores.last_pk(legacy=True)),
                Move(ROLLBACK, INSTANCE, until=stores.last_pk(legacy=False)),
            ]
        moves = [Move(_direction(flags.is_authz_enabled(c)), COURSE, c) for c in courses]
        for org in orgs:
            org_state = flags.org_effective_state(org).enabled
            moves.append(Move(_direction(org_state), ORG, org))
            if any(state != org_state for state in flags.pinned_courses(org).values()):
                moves.append(Move(_direction(not org_state), ORG, org))
        return moves
    if action not in ("forward", "rollback"):
        raise ValueError(f"unknown action {action!r}")
    forward = action == "forward"
    if not force:
        selections = (
            [Selection(everything=True)]
            if everything
            else ([Selection(courses=tuple(courses))] if courses else [])
            + [Selection(org=org) for org in orgs]
        )
        clashes = [p for sel in selections for p in verify_module.scan(sel).contradictions(forward)]
        if clashes:
            raise FlagContradiction(_direction(forward), clashes)
    if everything:
        return [Move(_direction(forward), INSTANCE, follow_flags=False)]
    return [Move(_direction(forward), COURSE, c, follow_flags=False) for c in courses] + [
        Move(_direction(forward), ORG, o, follow_flags=False) for o in orgs
    ]


def run_in_batches(
    moves: list[Move],
    *,
    trigger: str = API,
    user: Any = None,
    batch_size: int | None = None,
    dry_run: bool = False,
    wait: bool = False,
    pause: float = 0.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[Outcome]:
    """Run ``moves`` one batch per transaction (and per recorded run), yielding each batch's
    outcome. Batches with nothing to do record no run. ``pause`` seconds pass between
    batches (throttling); ``should_stop`` is asked before each batch (Ctrl-C).

    Each batch takes its lock and re-reads the flags, so stopping, crashing or re-running at
    any point loses and duplicates nothing: a re-run simply finds less to do. A move whose
    batch is skipped (scope busy) or fails is abandoned; the others go on.
    """
    if not 0 <= pause < float("inf"):  # NaN fails both comparisons
        raise ValueError(f"pause must be a finite number of seconds, at least 0 (got {pause!r})")
    first = True
    for move in moves:
        cursor = None
        while True:
            if should_stop():
                return
            if not first and pause and not _pause(pause, should_stop):
                return  # Ctrl-C during the pause: start nothing new
            first = False
            outcome = execute(
                move,
                trigger=trigger,
                triggered_by=user,
                batch_size=batch_size,
                max_batches=1,
                after=cursor,
                dry_run=dry_run,
                wait=wait,
                record_empty=False,
            )
            yield outcome
            if outcome.status in (MigrationRun.Status.SKIPPED, MigrationRun.Status.FAILED):
                break
            if outcome.finished:
                break
            cursor = outcome.cursor


# The longest stretch a pause sleeps without asking ``should_stop``: Ctrl-C during a long
# --sleep takes effect within this, not after the whole pause.
PAUSE_SLICE = 0.1


def _pause(seconds: float, should_stop: Callable[[], bool]) -> bool:
    """Sleep ``seconds`` in short slices; False as soon as ``should_stop()`` says so."""
    deadline = time.monotonic() + seconds
    while True:
        if should_stop():
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, PAUSE_SLICE))


def sync_instance(**options) -> Iterator[Outcome]:
    """Move every role of the instance to the system its course's flag names, in batches:
    forward over the legacy table, then back over Casbin (see :func:`run_in_batches`)."""
    return run_in_batches(plan("sync", everything=True), **options)


def source_rows(moves: list[Move]) -> int:
    """How many rows the moves will read (one COUNT per move), for progress and ETA."""
    return sum(stores.count_source(m.selection, m.direction == FORWARD, m.until) for m in moves)


def _directed(scope_type, key, selection, forward, force, trigger, user, options) -> Outcome:
    if not force:
        clashes = verify_module.scan(selection).contradictions(forward)
        if clashes:
            raise FlagContradiction(_direction(forward), clashes)
    move = Move(_direction(forward), scope_type, key, follow_flags=False)
    return execute(move, trigger=trigger, triggered_by=user, **options)


def migrate_course(
    course_key: Any,
    forward: bool,
    *,
    force: bool = False,
    trigger: str = API,
    user: Any = None,
    **options,
) -> Outcome:
    """Move one course's roles in one direction. Raises :class:`FlagContradiction` when that
    contradicts the course's effective flag, unless ``force``."""
    course = normalize_course_key(course_key)
    selection = Selection(courses=(course,))
    return _directed(COURSE, course, selection, forward, force, trigger, user, options)


def migrate_org(
    org: str, forward: bool, *, force: bool = False, trigger: str = API, user: Any = None, **options
) -> Outcome:
    """Move every role of ``org`` in one direction. Raises :class:`FlagContradiction`, naming
    the courses, when that contradicts any course's effective flag, unless ``force``."""
    org = validate_org(org)
    return _directed(ORG, org, Selection(org=org), forward, force, trigger, user, options)


def verify(
    courses: list[str] | None = None, orgs: list[str] | None = None, everything: bool = False
) -> verify_module.Report:
    """Where the selected scopes' roles sit against their flags: ``drift`` (scopes whose rows
    a sync would move) and ``cannot_move`` (rows that belong in the other system but cannot
    move, by reason: no re-run moves them)."""
    if everything:
        return verify_module.scan(Selection(everything=True))
    report = verify_module.Report()
    if courses:
        selection = Selection(courses=tuple(normalize_course_key(c) for c in courses))
        report.merge(verify_module.scan(selection))
    for org in orgs or []:
        report.merge(verify_module.scan(Selection(org=validate_org(org))))
    return report


def verify_scope(
    courses: list[str] | None = None, orgs: list[str] | None = None, everything: bool = False
) -> list[verify_module.Placement]:
    """Scopes whose role rows sit in the system their flag does not name (``verify(...)``'s
    drift)."""
    return verify(courses, orgs, everything).drift
