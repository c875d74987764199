"""The instance cutover: the whole instance moved to one system with no outage
(docs/decisions/0013).

1. **Pin and flip**, in one transaction: every org with course-authoring roles (in either
   store) and no enabled org override gets a cutover pin holding it on its current state
   (:mod:`authz_migration.pins`; nothing moves, no effective flag changes), and the global
   flag is set to the target.
2. **Release**, one org per transaction: a release row un-sets the org's pin and the move it
   calls for is made by the path an admin save takes (``automatic.save_org_override`` ->
   ``orchestrator.execute_planned``); the org's parity is proved in the same transaction
   (nothing that follows the org is left in the source store but rows that cannot move), or
   everything of that org rolls back and it stays pinned.

So at every committed instant every course's roles sit in the system its effective flag
names. The cutover finds its work from the database each time: a run killed at any point is
finished by the same command (pinned orgs are not pinned twice; a released org is not
released again). Overrides an operator wrote (org or course) are never changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import router, transaction

from . import automatic, estimate, flags, guard, pins, verify
from .conf import get_setting, org_override_model
from .models import MigrationRun
from .orchestrator import Move, Options, Outcome, record
from .stores import Selection

PLAN = "plan"
PINNED = "pinned"
RELEASED = "released"
LEFT = "left"  # no longer the cutover's pin when its turn came: left alone
FAILED = "failed"
INTERRUPTED = "interrupted"
KINDS = (PLAN, PINNED, RELEASED, LEFT, FAILED, INTERRUPTED)


def _system(authz: bool) -> str:
    return "casbin" if authz else "legacy"


@dataclass
class Plan:
    """What a cutover to ``to_authz`` will do, read from the committed state."""

    to_authz: bool
    global_before: bool
    census: dict[str, verify.OrgRoles]
    to_pin: list[str]
    to_release: list[str]
    operator_pinned: dict[str, bool]
    pinned_courses: list[str]

    def rows_to_move(self, org: str) -> int:
        roles = self.census.get(org)
        if roles is None:
            return 0
        return roles.legacy_rows if self.to_authz else roles.casbin_rows

    def describe(self, sleep: float = 0.0) -> dict:
        """The plan as a document; ``estimate`` is its time with ``sleep`` seconds between
        two orgs (:mod:`authz_migration.estimate`)."""
        limit = get_setting("METADATA_LIST_LIMIT")
        rows = sum(self.rows_to_move(org) for org in self.to_release)
        return {
            "to": "authz" if self.to_authz else "legacy",
            "global_flag": {"before": self.global_before, "after": self.to_authz},
            "pin": self.to_pin,
            "release": [
                {
                    "org": org,
                    "legacy_rows": self.census.get(org, verify.OrgRoles()).legacy_rows,
                    "casbin_rows": self.census.get(org, verify.OrgRoles()).casbin_rows,
                }
                for org in self.to_release
            ],
            "rows_to_move": rows,
            "operator_pinned_orgs": {
                org: _system(state) for org, state in sorted(self.operator_pinned.items())
            },
            "pinned_courses": {
                "count": len(self.pinned_courses),
                "items": self.pinned_courses[:limit],
                "more": max(0, len(self.pinned_courses) - limit),
            },
            "estimate": estimate.cutover(rows, len(self.to_release), sleep),
        }


@dataclass
class Step:
    """One thing the cutover did (or, for ``plan``, will do), for progress and reports."""

    kind: str
    org: str = ""
    detail: dict = field(default_factory=dict)
    run: MigrationRun | None = None
    outcome: Outcome | None = None

    @property
    def moved(self) -> int:
        return self.outcome.moved if self.outcome is not None else 0


@dataclass(frozen=True)
class RunOptions:
    """How :func:`run` works: ``pause()`` is called between two releases (False: stop, as
    after Ctrl-C during a ``--sleep``); ``should_stop()`` before each release."""

    trigger: str
    user: Any = None
    dry_run: bool = False
    sleep: float = 0.0  # the seconds pause() sleeps, for the plan's estimate
    should_stop: Callable[[], bool] = lambda: False
    pause: Callable[[], bool] = lambda: True


def plan(to_authz: bool, orgs: list[str] | None = None) -> Plan:
    """The cutover's plan: the orgs to pin (when the global flag is not yet ``to_authz``),
    the orgs to release (its pins, only those of ``orgs`` when given), and what it leaves
    alone: orgs forced by an operator's override, courses with their own override."""
    census = verify.org_census()
    current = flags.current_org_rows()
    operator = pins.operator_pinned(current)
    ours = {org for org, row in current.items() if pins.is_pin(row)}
    global_before = flags.global_state()
    to_pin = []
    if global_before != to_authz:
        to_pin = [org for org in census if org not in ours and org not in operator]
    release = sorted(ours | set(to_pin))
    if orgs is not None:
        wanted = set(orgs)
        release = [org for org in release if org in wanted]
    courses, _ = flags.overridden_keys()
    return Plan(to_authz, global_before, census, to_pin, release, operator, sorted(courses))


def run(the_plan: Plan, options: RunOptions) -> Iterator[Step]:
    """Carry out ``the_plan``, yielding a :class:`Step` for the plan, the pins and each org
    released; stops at the first org that fails (it stays pinned, its failed run recorded)
    and when ``options`` say so. A dry run yields the plan only."""
    yield Step(PLAN, detail=the_plan.describe(options.sleep))
    if options.dry_run:
        return
    if the_plan.global_before != the_plan.to_authz:
        pinned = pin_and_flip(the_plan.to_authz, the_plan.to_pin, options.user)
        yield Step(PINNED, detail={"orgs": pinned, "global_flag": the_plan.to_authz})
    for index, org in enumerate(the_plan.to_release):
        # Between two orgs the pause asks should_stop() itself (Ctrl-C during a --sleep).
        if not (options.pause() if index else not options.should_stop()):
            yield Step(INTERRUPTED, detail={"left": the_plan.to_release[index:]})
            return
        step = release(org, options.trigger, options.user)
        yield step
        if step.kind == FAILED:
            return


def pin_and_flip(to_authz: bool, orgs: list[str], user: Any = None) -> list[str]:
    """In one transaction: pin ``orgs`` (those without an enabled override by then) on the
    global flag's current state, then set the global flag to ``to_authz``. Nothing moves:
    every pinned org keeps its effective flag. Returns the orgs pinned."""
    with transaction.atomic(using=router.db_for_write(org_override_model())):
        before = flags.global_state()
        if before == to_authz:
            return []  # flipped meanwhile (by another cutover): nothing to hold
        pinned = pins.pin_orgs(
            orgs,
            before,
            "held on its state while the global flag changes; `authz_migrate cutover` releases it",
            user,
        )
        _set_global(to_authz)
    return pinned


def _set_global(enabled: bool) -> None:
    from waffle import get_waffle_flag_model

    model = get_waffle_flag_model()
    name = flags.flag_name()
    flag = next((f for f in model.objects.filter(name=name) if f.name == name), None)
    if flag is None:
        flag = model(name=name)
    flag.everyone = enabled
    flag.save()


class _Stop(Exception):
    """Rolls one org's release back; ``metadata`` is what its failed run records."""

    def __init__(self, move: Move, metadata: dict):
        super().__init__(metadata.get("error", ""))
        self.move = move
        self.metadata = metadata


def release(org: str, trigger: str, user: Any = None) -> Step:
    """Release ``org``'s pin and move its roles, with the parity proof, in one transaction.
    On a failed move or a parity mismatch all of it rolls back (the org stays pinned, its
    roles untouched) and a ``failed`` run is recorded. An org whose newest override is no
    longer the cutover's pin (an operator saved one) is left alone."""
    alias = router.db_for_write(org_override_model())
    try:
        with transaction.atomic(using=alias):
            guard.hold(org)  # an operator's save of this org waits, or is seen here
            current = flags.current_org_rows({org}).get(org)
            if not pins.is_pin(current):
                return Step(LEFT, org, {"reason": "its override is not the cutover's pin"})
            row = pins.release_row(org, current, user)
            result = automatic.save_org_override(row, trigger)
            outcome = result.outcome
            if result.failed:
                raise _Stop(outcome.move, {**outcome.metadata, "cutover": True})
            proof = parity(org)
            if outcome is not None and proof["left_in_source"]:
                raise _Stop(outcome.move, _mismatch(org, proof, outcome))
            if outcome is not None and outcome.run is not None:
                proof["moved"] = outcome.moved
                outcome.run.metadata["cutover"] = {"parity": proof}
                outcome.run.save(update_fields=["metadata"])
    except _Stop as stop:
        failed = record(
            stop.move,
            MigrationRun.Status.FAILED,
            stop.metadata,
            Options(trigger=trigger, triggered_by=user),
        )
        return Step(FAILED, org, {"error": stop.metadata.get("error", "")}, run=failed)
    if outcome is not None and not transaction.get_connection(alias).in_atomic_block:
        # Committed, and the enforcers told (on commit): the Casbin rows it carried are not
        # needed any more, and a cutover of a million roles must not keep them all.
        outcome.casbin_added, outcome.casbin_removed = [], []
    return Step(RELEASED, org, proof, run=outcome.run if outcome else None, outcome=outcome)


def _mismatch(org: str, proof: dict, outcome: Outcome) -> dict:
    return {
        "error": f"parity check failed for {org}: {proof['left_in_source']} role row(s) that "
        f"follow the org are still in the source store after its move; the release and the "
        f"move were rolled back and {org} stays pinned",
        "cutover": {"parity": proof},
        "counts": outcome.counts,
    }


def parity(org: str) -> dict:
    """What is left of the roles that follow ``org`` (its org-wide roles, its courses
    without their own override) in the store its flag no longer names, as :mod:`placement`
    says: ``left_in_source`` must be 0. Rows that cannot move are counted apart, by reason.
    Only the source store is read: the rows the move wrote are counted by its run."""
    state = flags.org_effective_state(org).enabled
    report = verify.scan(Selection(org=org), sides=verify.sides(legacy=state, casbin=not state))
    pinned = flags.pinned_courses(org)
    follows = [p for p in report.placements.values() if p.course not in pinned]
    return {
        "target": _system(state),
        "left_in_source": sum(p.legacy_rows if state else p.casbin_rows for p in follows),
        "cannot_move": dict(report.cannot_move),
        "pinned_courses_left_alone": len(pinned),
    }


def progress() -> dict:
    """Orgs the cutover has released, orgs it still holds (pins of a global flip included),
    and the role rows its releases moved: one query over the org override history, one over
    the runs that carry a parity proof."""
    current = flags.current_org_rows()
    cutover_rows = {org: row for org, row in current.items() if pins.is_cutover_row(row)}
    held = sorted(org for org, row in cutover_rows.items() if row[0])
    runs = MigrationRun.objects.filter(metadata__has_key="cutover", status__in=_MOVED)
    moved = sum(
        m.get("counts", {}).get("moved", 0) for m in runs.values_list("metadata", flat=True)
    )
    return {"released": len(cutover_rows) - len(held), "pinned": held, "rows_moved": moved}


_MOVED = (MigrationRun.Status.COMPLETED, MigrationRun.Status.PARTIAL_SUCCESS)
