"""The public Python API: what the override receivers, the management command and host code
call. Every function that moves rows goes through :func:`orchestrator.execute`, so each move
is guarded and recorded as a :class:`~authz_migration.models.MigrationRun`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from . import flags, verify
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
    "sync_course",
    "sync_instance",
    "sync_org",
    "verify_scope",
]

is_authz_enabled = flags.is_authz_enabled
API = MigrationRun.Trigger.API


class FlagContradiction(Exception):
    """A directed move would put roles in the system their course's flag does not name."""

    def __init__(self, direction: str, placements: list[verify.Placement]):
        self.direction = direction
        self.placements = placements
        names = ", ".join(p.scope for p in placements[:20])
        more = f" and {len(placements) - 20} more" if len(placements) > 20 else ""
        system = "Casbin" if direction == FORWARD else "the legacy table"
        super().__init__(
            f"{direction} would move roles of {names}{more} into {system}, against their "
            "effective flag (their permission checks would fail); use force to do it anyway"
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


def sync_instance(
    *,
    trigger: str = API,
    user: Any = None,
    batch_size: int | None = None,
    dry_run: bool = False,
    wait: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    start: dict | None = None,
) -> Iterator[Outcome]:
    """Move every role of the instance to the system its course's flag names, one batch per
    transaction (and per recorded run), forward over the legacy table, then back over Casbin.

    Yields each batch's outcome; batches with nothing to do record no run. ``should_stop`` is
    asked between batches (Ctrl-C). Each batch re-reads the flags under its lock, so
    stopping, crashing or re-running at any point loses and duplicates nothing.
    """
    for forward in (True, False):
        move = Move(_direction(forward), INSTANCE)
        cursor = (start or {}).get(move.direction)
        while not should_stop():
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
                return
            if outcome.finished:
                break
            cursor = outcome.cursor


def _directed(scope_type, key, selection, forward, force, trigger, user, options) -> Outcome:
    if not force:
        clashes = verify.scan(selection).contradictions(forward)
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


def verify_scope(
    courses: list[str] | None = None, orgs: list[str] | None = None, everything: bool = False
) -> list[verify.Placement]:
    """Scopes whose role rows sit in the system their flag does not name."""
    if everything:
        return verify.scan(Selection(everything=True)).drift
    found: list[verify.Placement] = []
    if courses:
        selection = Selection(courses=tuple(normalize_course_key(c) for c in courses))
        found += verify.scan(selection).drift
    for org in orgs or []:
        found += verify.scan(Selection(org=validate_org(org))).drift
    return found
