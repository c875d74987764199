"""The public Python API: what the override receivers, the management command and host code
call. Every function that moves rows goes through :func:`orchestrator.execute`, so each move
is guarded and recorded as a :class:`~authz_migration.models.MigrationRun`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from . import cutover as cutover_module
from . import flags, lookup, stores
from . import verify as verify_module
from .models import MigrationRun
from .orchestrator import COURSE, FORWARD, INSTANCE, ORG, ROLLBACK, Move, Options, Outcome, execute
from .roles import normalize_course_key, validate_org
from .stores import Selection

__all__ = [
    "FlagContradiction",
    "cutover",
    "cutover_plan",
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


def _options(trigger: str, user: Any, options: dict) -> Options:
    """The orchestrator's options from the API's keywords (an unknown one is a TypeError)."""
    return Options(trigger=trigger, triggered_by=user, **options)


def sync_course(
    course_key: Any, *, trigger: str = API, user: Any = None, **options
) -> list[Outcome]:
    """Move the course's roles to the system its effective flag names (one run). Keyword
    options are :class:`~authz_migration.orchestrator.Options`' (``dry_run``, ``wait``,
    ``batch_size``, ...)."""
    run = _options(trigger, user, options)
    return [execute(move, run) for move in plan("sync", courses=[course_key])]


def sync_org(org: str, *, trigger: str = API, user: Any = None, **options) -> list[Outcome]:
    """Move every course of ``org``, and its org-wide roles, to the system each one's flag
    names: one run in the org's direction, and one the other way when courses pinned by a
    course override point there."""
    run = _options(trigger, user, options)
    return [execute(move, run) for move in plan("sync", orgs=[org])]


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
        return _plan_sync(courses, orgs, everything)
    if action not in ("forward", "rollback"):
        raise ValueError(f"unknown action {action!r}")
    forward = action == "forward"
    if not force:
        _refuse_against_the_flag(forward, courses, orgs, everything)
    if everything:
        return [Move(_direction(forward), INSTANCE, follow_flags=False)]
    return [Move(_direction(forward), COURSE, c, follow_flags=False) for c in courses] + [
        Move(_direction(forward), ORG, o, follow_flags=False) for o in orgs
    ]


def _plan_sync(courses: list[str], orgs: list[str], everything: bool) -> list[Move]:
    if everything:
        # Each pass reads the rows its source table held when the sync was planned: the
        # rows the forward pass writes into Casbin are in place by construction, and
        # re-reading them in the rollback pass would double the work. A row written after
        # planning is its writer's business (a receiver moves what an override save flips)
        # or the next sync's.
        return [
            Move(FORWARD, INSTANCE, until=stores.last_pk(legacy=True)),
            Move(ROLLBACK, INSTANCE, until=stores.last_pk(legacy=False)),
        ]
    moves = [Move(_direction(flags.is_authz_enabled(c)), COURSE, c) for c in courses]
    for org in orgs:
        # One run in the org's direction, and one the other way when courses pinned by a
        # course override point there.
        org_state = flags.org_effective_state(org).enabled
        moves.append(Move(_direction(org_state), ORG, org))
        if any(state != org_state for state in flags.pinned_courses(org).values()):
            moves.append(Move(_direction(not org_state), ORG, org))
    return moves


def _refuse_against_the_flag(forward: bool, courses, orgs, everything: bool) -> None:
    """Raise :class:`FlagContradiction` when a move in this direction would carry roles
    against their course's flag."""
    if everything:
        selections = [Selection(everything=True)]
    else:
        selections = [Selection(courses=tuple(courses))] if courses else []
        selections += [Selection(org=org) for org in orgs]
    clashes = [p for sel in selections for p in verify_module.scan(sel).contradictions(forward)]
    if clashes:
        raise FlagContradiction(_direction(forward), clashes)


def run_in_batches(
    moves: list[Move],
    *,
    trigger: str = API,
    user: Any = None,
    pause: float = 0.0,
    should_stop: Callable[[], bool] = lambda: False,
    **options,
) -> Iterator[Outcome]:
    """Run ``moves`` one batch per transaction (and per recorded run), yielding each batch's
    outcome. Batches with nothing to do record no run. ``pause`` seconds pass between
    batches (throttling); ``should_stop`` is asked before each batch (Ctrl-C). Keyword
    options are :class:`~authz_migration.orchestrator.Options`' (``batch_size``,
    ``dry_run``, ``wait``, default False: a busy scope is skipped).

    Each batch takes its lock and re-reads the flags, so stopping, crashing or re-running at
    any point loses and duplicates nothing: a re-run simply finds less to do. A move whose
    batch is skipped (scope busy) or fails is abandoned; the others go on.
    """
    if not 0 <= pause < float("inf"):  # NaN fails both comparisons
        raise ValueError(f"pause must be a finite number of seconds, at least 0 (got {pause!r})")
    options = {"wait": False, **options, "max_batches": 1, "record_empty": False}
    first = True
    for move in moves:
        cursor = absent_since = None
        while True:
            if should_stop() or not (first or _pause(pause, should_stop)):
                return  # Ctrl-C, or Ctrl-C during the pause: start nothing new
            first = False
            batch = {**options, "after": cursor, "absent_since": absent_since}
            outcome = execute(move, _options(trigger, user, batch))
            yield outcome
            if outcome.status in (MigrationRun.Status.SKIPPED, MigrationRun.Status.FAILED):
                break
            if outcome.finished:
                break
            cursor = outcome.cursor
            # A forward move that found no targets in Casbin at its first batch need not
            # probe again (it would find this move's own rules) while no other move ran.
            absent_since = outcome.run.pk if outcome.targets_absent and outcome.run else None


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
    [move] = plan(_direction(forward), courses=[course_key], force=force)
    return execute(move, _options(trigger, user, options))


def migrate_org(
    org: str, forward: bool, *, force: bool = False, trigger: str = API, user: Any = None, **options
) -> Outcome:
    """Move every role of ``org`` in one direction. Raises :class:`FlagContradiction`, naming
    the courses, when that contradicts any course's effective flag, unless ``force``."""
    [move] = plan(_direction(forward), orgs=[org], force=force)
    return execute(move, _options(trigger, user, options))


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


def cutover_plan(to_authz: bool, *, orgs: list[str] | None = None) -> cutover_module.Plan:
    """What :func:`cutover` would do now (it changes nothing)."""
    return cutover_module.plan(to_authz, [validate_org(o) for o in orgs] if orgs else None)


def cutover(
    to_authz: bool,
    *,
    orgs: list[str] | None = None,
    pause: float = 0.0,
    dry_run: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    **options,
) -> Iterator[cutover_module.Step]:
    """Move the whole instance to Casbin (``to_authz``) or the legacy table with no outage
    (docs/decisions/0013): pin every org with roles and no override of its own on its
    state, flip the global flag, then release the pins one org per transaction, each with
    its move and its parity proof. Yields a :class:`~authz_migration.cutover.Step` for the
    plan, the pins, and each org; stops at the first org that fails (it stays pinned) or
    when ``should_stop()`` says so. ``orgs`` releases only those orgs; ``pause`` seconds
    pass between two releases; ``dry_run`` yields the plan only. Keyword options:
    ``user``, ``trigger``. Re-running finishes an interrupted cutover."""
    if not 0 <= pause < float("inf"):
        raise ValueError(f"pause must be a finite number of seconds, at least 0 (got {pause!r})")
    run_options = cutover_module.RunOptions(
        trigger=options.pop("trigger", API),
        user=options.pop("user", None),
        dry_run=dry_run,
        sleep=pause,
        should_stop=should_stop,
        pause=lambda: _pause(pause, should_stop),
    )
    if options:
        raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(options))}")
    return cutover_module.run(cutover_plan(to_authz, orgs=orgs), run_options)
