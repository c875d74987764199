"""Plan -> guard -> atomic move -> record the run -> after commit, notify.

Modelled on Django's ``MigrationExecutor``: a :class:`Move` says what to do, :func:`execute`
applies it with :class:`Options`. Every way in (override receiver, management command, Python
API, admin) goes through :func:`execute` or, to plan under the lock, :func:`execute_planned`,
so every move is guarded and recorded the same way.

Transactions: the lock, the run row and the move share one transaction (the caller's when
there is one, as in an override save). The move itself runs in a savepoint: an unexpected
error rolls back every data change of the move, and the ``failed`` run, with its traceback, is
then written in the enclosing transaction, which still holds the scope lock.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from django.db import DatabaseError, connections, router, transaction
from django.utils import timezone

from . import enforcer, flags, guard, moves, peer, placement, sqlmoves
from .conf import get_setting
from .models import MigrationRun
from .roles import org_of
from .signals import migration_run_finished
from .stores import Selection, read_casbin, read_legacy

logger = logging.getLogger(__name__)

FORWARD = MigrationRun.MigrationType.FORWARD
ROLLBACK = MigrationRun.MigrationType.ROLLBACK
COURSE = MigrationRun.ScopeType.COURSE
ORG = MigrationRun.ScopeType.ORG
INSTANCE = MigrationRun.ScopeType.INSTANCE


@dataclass(frozen=True)
class Move:
    """One scope moved in one direction.

    ``follow_flags``: move only rows whose course's effective flag names the target system
    (a sync); otherwise move every selected row (a directed or forced move).
    ``exclude_pinned``: for an org, leave courses with an enabled course override alone and
    list them as excluded (what an org override save does).
    ``until``: read source rows up to this primary key only (see :func:`api.plan`).
    """

    direction: str
    scope_type: str
    scope_key: str = ""
    follow_flags: bool = True
    exclude_pinned: bool = False
    until: int | None = None
    note: dict = field(default_factory=dict, compare=False)

    @property
    def selection(self) -> Selection:
        if self.scope_type == INSTANCE:
            return Selection(everything=True)
        if self.scope_type == ORG:
            return Selection(org=self.scope_key)
        return Selection(courses=(self.scope_key,))

    @property
    def lock_org(self) -> str | None:
        if self.scope_type == ORG:
            return self.scope_key
        if self.scope_type == COURSE:
            return org_of(self.scope_key)
        return None

    def describe(self) -> str:
        return f"{self.direction} {self.scope_type} {self.scope_key or '(all)'}"


@dataclass
class Outcome:
    """What :func:`execute` did. ``run`` is None for dry runs and unrecorded empty moves."""

    move: Move
    status: str
    metadata: dict
    run: MigrationRun | None = None
    cursor: int | None = None  # highest source primary key read; resume after it
    finished: bool = True  # False when max_batches stopped before the scope was exhausted
    casbin_added: list = field(default_factory=list, repr=False)
    casbin_removed: list = field(default_factory=list, repr=False)
    error: Exception | None = field(default=None, repr=False)
    # Forward: no Casbin rule had a course scope of the selection when the move began (or
    # when the first batch of its command began: Options.absent_since), and placement wrote
    # none; run_in_batches passes this on to the next batch of the same move.
    targets_absent: bool = field(default=False, repr=False)

    @property
    def counts(self) -> dict:
        return self.metadata.get("counts", {})

    @property
    def moved(self) -> int:
        return self.counts.get("moved", 0)

    @property
    def did_something(self) -> bool:
        """Whether the run is worth a record: it moved, wrote, or found rows it could not
        move (or it failed)."""
        counts = self.counts
        return self.status == MigrationRun.Status.FAILED or any(
            counts.get(name) for name in ("moved", "created", "could_not_move")
        )


COUNT_NAMES = ("scanned", "moved", "created", "already_present", "in_place", "excluded")


class _Stats:
    """Accumulates batch results into run metadata with capped lists."""

    def __init__(self, limit: int):
        self.limit = limit
        # Every count is present, zero included, whether or not a batch ran.
        self.counts: Counter = Counter(dict.fromkeys(COUNT_NAMES, 0))
        self.not_migrated: Counter = Counter()
        self.problems: dict[str, list[dict]] = {}
        self.problem_counts: Counter = Counter()
        self.excluded_courses: set[str] = set()
        self.org_wide_roles = 0
        self.batches = 0
        self.casbin_added: list = []
        self.casbin_removed: list = []

    def add(self, result: moves.BatchResult) -> None:
        self.batches += 1
        for name in COUNT_NAMES:
            self.counts[name] += getattr(result, name)
        self.not_migrated.update(result.not_migrated)
        for reason, rows in result.problems.items():
            self.problem_counts[reason] += len(rows)
            kept = self.problems.setdefault(reason, [])
            kept.extend(rows[: max(0, self.limit - len(kept))])
        self.excluded_courses |= result.excluded_courses
        self.org_wide_roles += result.org_wide_roles
        self.casbin_added.extend(result.casbin_added)
        self.casbin_removed.extend(result.casbin_removed)

    @property
    def problem_total(self) -> int:
        return sum(self.problem_counts.values())

    def capped(self, items) -> dict:
        items = sorted(items)
        return {
            "count": len(items),
            "items": items[: self.limit],
            "more": max(0, len(items) - self.limit),
        }

    def metadata(self) -> dict:
        counts = dict(self.counts)
        counts["not_migrated"] = sum(self.not_migrated.values())
        counts["could_not_move"] = self.problem_total
        return {
            "counts": counts,
            "not_migrated_by_role": dict(self.not_migrated),
            "could_not_move": {
                reason: {
                    "count": self.problem_counts[reason],
                    "description": placement.REASONS.get(reason, reason),
                    "rows": rows,
                    "more": self.problem_counts[reason] - len(rows),
                }
                for reason, rows in self.problems.items()
            },
            "excluded_courses": self.capped(self.excluded_courses),
            "batches": self.batches,
        }


class _Decider:
    """Says, under the scope lock, where each row of a move belongs.

    :meth:`for_batch` is called once per batch with the batch's rows, so that an
    instance-wide sync reads the flags of just the courses in the batch (three queries).
    """

    def __init__(self, move: Move):
        self.move = move
        self.target = move.direction == FORWARD
        self.pinned: dict[str, bool] = {}
        self.state = self.target
        if move.scope_type == COURSE and move.follow_flags:
            self.state = flags.is_authz_enabled(move.scope_key)
        elif move.scope_type == ORG:
            self.pinned = flags.pinned_courses(move.scope_key)
            if move.follow_flags:
                self.state = flags.org_effective_state(move.scope_key).enabled

    def for_batch(self, rows: list, legacy: bool) -> moves.Decide:
        if not rows:
            return lambda org, course: None  # never asked: nothing to place
        if self.move.scope_type == INSTANCE and self.move.follow_flags:
            return placement.flags_of(rows)
        if self.move.scope_type == ORG:
            return self._org_decide
        return lambda org, course: self.state

    def fast_rule(self) -> sqlmoves.Rule | None:
        """Which courses the database may move by itself (:mod:`sqlmoves`): those whose
        flag follows the scope's when the scope's points at the target; None when it does
        not (every row then goes through placement). Read per batch on an instance sync,
        as the flags are."""
        if self.move.scope_type == INSTANCE and self.move.follow_flags:
            if flags.global_state() != self.target:
                return None
            courses, orgs = flags.overridden_keys()
            return sqlmoves.Rule(tuple(sorted(courses)), tuple(sorted(orgs)))
        if self.state != self.target:
            return None
        return sqlmoves.Rule(tuple(sorted(self.pinned)))

    def _org_decide(self, org: str, course: str | None) -> bool | None:
        if course in self.pinned:
            if self.move.exclude_pinned:
                return None
            return self.pinned[course] if self.move.follow_flags else self.target
        return self.state

    def org_wide_split(self, limit: int, org_wide_roles: int) -> dict | None:
        """Courses pinned to the other side of an org's state no longer see the org's
        ``org_wide_roles`` (mapped roles the move found) in their own system
        (docs/decisions/0006): name them."""
        if self.move.scope_type != ORG or not org_wide_roles:
            return None
        split = sorted(c for c, state in self.pinned.items() if state != self.state)
        if not split:
            return None
        where = "Casbin" if self.state else "the legacy table"
        return {
            "count": len(split),
            "items": split[:limit],
            "more": max(0, len(split) - limit),
            "note": f"these courses are pinned to the other system; the org-wide roles of "
            f"{self.move.scope_key} live in {where} and do not apply to them there",
        }


@dataclass(frozen=True)
class Options:
    """How :func:`execute` applies a move; every way in passes one.

    - ``trigger`` / ``triggered_by``: recorded with the run (the user, or None).
    - ``dry_run``: read and report; nothing is written, run rows included.
    - ``wait=False``: a busy scope yields a ``skipped`` run instead of waiting for it.
    - ``record_empty=False``: a move that found nothing to move or report records no run.
    - ``batch_size``: rows per batch (default ``AUTHZ_MIGRATION_BATCH_SIZE``);
      ``max_batches`` bounds the work of one call, resumed with ``after=outcome.cursor``.
    - ``absent_since``: the run a previous call for the same move recorded when its outcome
      said ``targets_absent``; unless another run was recorded since, this call leaves out
      the per-row test of targets without probing again (:func:`api.run_in_batches`).
    """

    trigger: str
    triggered_by: Any = None
    dry_run: bool = False
    wait: bool = True
    record_empty: bool = True
    batch_size: int | None = None
    max_batches: int | None = None
    after: int | None = None
    absent_since: int | None = None

    def __post_init__(self):
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")


def execute(move: Move, options: Options) -> Outcome:
    """Apply ``move`` under its scope's lock and record it as a :class:`MigrationRun`.

    Guarantees: overlapping moves never execute at once (:mod:`authz_migration.guard`); a
    source row is deleted only once its target row is confirmed present; an unexpected error
    leaves role data exactly as it was and records a ``failed`` run with the traceback. The
    run row is written once, with its final status, in the move's transaction: a process
    that dies mid-move leaves neither a half move nor a ``running`` row behind.
    """
    if options.dry_run:
        return _apply(move, options)  # reads only: no lock, no run row
    return _run(move.lock_org, move.scope_type == INSTANCE, lambda: move, options)


def execute_planned(org: str, plan: Callable[[], Move | None], options: Options) -> Outcome | None:
    """Take ``org``'s lock, then ask ``plan`` (which reads the committed state it now sees)
    for the move to make, and make it under the same lock, with :func:`execute`'s
    guarantees. None when ``plan`` finds nothing to do. This is how an override save moves:
    saves touching one org are serialized, and each decides from what the others committed
    (docs/decisions/0007)."""
    return _run(org, False, plan, options)


# A run that owns its transaction is retried this many times when the database picks it
# as a deadlock victim. Moves of different orgs are built not to deadlock with each other
# (docs/decisions/0011); the retry covers what the app does not control, such as a host
# writing role rows in another order. A run inside the caller's transaction (an override
# save) cannot be retried here: the error reaches the caller.
DEADLOCK_RETRIES = 3


def _run(org, instance, plan, options: Options):
    connection = connections[router.db_for_write(MigrationRun)]
    own_transaction = not connection.in_atomic_block
    attempt = 0
    while True:
        retry = own_transaction and attempt < DEADLOCK_RETRIES
        try:
            return _run_once(org, instance, plan, options, raise_deadlock=retry)
        except DatabaseError as exc:
            if not (retry and guard.is_deadlock(exc)):
                raise
        attempt += 1
        logger.warning("authz_migration: a move of %s was a deadlock victim; retrying", org)
        time.sleep(0.05 * attempt)


def _read_committed_next(connection) -> None:
    """Run the next transaction of ``connection`` at READ COMMITTED on MariaDB/MySQL when the
    connection is configured for another level (Django's default there is READ COMMITTED:
    then nothing is sent). Under REPEATABLE READ, InnoDB adds gap locks to locking reads that
    are not unique-key lookups, and the decider would read from a snapshot (see
    docs/decisions/0007). Only a transaction the app begins itself can be set: a level set
    inside a transaction applies to the next one."""
    if connection.vendor != "mysql" or connection.in_atomic_block:
        return
    connection.ensure_connection()
    # Django's own setting for the connection; empty means the server's default.
    if (getattr(connection, "isolation_level", None) or "").lower() != "read committed":
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")


def _run_once(org, instance, plan, options: Options, *, raise_deadlock: bool):
    alias = router.db_for_write(MigrationRun)
    if not options.wait:
        guard.prepare(org, instance=instance)
    # Right before the transaction begins: in autocommit every statement is a transaction of
    # its own, and the level set applies to the next one.
    _read_committed_next(connections[alias])
    # No savepoint of its own: an error outside the move (taking the lock, recording the run)
    # must abort the caller's transaction too, e.g. the override save it serves.
    with transaction.atomic(using=alias, savepoint=False):
        try:
            guard.hold(org, instance=instance, wait=options.wait)
        except guard.ScopeBusy as busy:
            return _skipped(plan(), str(busy), options)
        move = plan()
        if move is None:
            return None
        started = time.monotonic()
        try:
            with transaction.atomic(using=alias), peer.acting_as(options.triggered_by):
                outcome = _apply(move, options)
        except Exception as exc:
            if raise_deadlock and guard.is_deadlock(exc):
                raise  # the whole transaction rolls back and _run() tries again
            outcome = _failure(move, exc, started)
        else:
            outcome.metadata["duration_seconds"] = round(time.monotonic() - started, 4)
        if options.record_empty or outcome.did_something:
            try:
                outcome.run = record(move, outcome.status, outcome.metadata, options, started)
            except DatabaseError:
                if outcome.status != MigrationRun.Status.FAILED:
                    raise
                # The transaction itself is gone (a dead connection, a deadlock victim):
                # nothing can be recorded in it; the caller must see the original error.
                raise outcome.error from None
            transaction.on_commit(lambda: _notify(outcome), using=alias)
        return outcome


def _skipped(move: Move, busy: str, options: Options) -> Outcome:
    outcome = Outcome(
        move,
        MigrationRun.Status.SKIPPED,
        {"reason": f"scope busy: another move holds {busy}; run it again later"},
    )
    logger.info("authz_migration: %s skipped: %s", move.describe(), outcome.metadata["reason"])
    outcome.run = record(move, outcome.status, outcome.metadata, options)
    return outcome


def _apply(move: Move, options: Options) -> Outcome:
    batch_size = options.batch_size or get_setting("BATCH_SIZE")
    max_batches = options.max_batches
    stats = _Stats(get_setting("METADATA_LIST_LIMIT"))
    decider = _Decider(move)
    listed = enforcer.rules_wanted()
    fast = not options.dry_run and sqlmoves.usable()
    absent = (
        fast
        and move.direction == FORWARD
        and (_no_run_since(options.absent_since) or sqlmoves.targets_absent(move.selection))
    )
    complete = fast and move.direction == FORWARD and sqlmoves.inserts_complete(move.selection)
    cursor, finished = options.after, True
    while True:
        if max_batches is not None and stats.batches >= max_batches:
            finished = False
            break
        rule = decider.fast_rule() if fast else None
        if rule is None:
            result, last, count = _python_batch(move, decider, cursor, batch_size, options.dry_run)
            placed = result.created if result else 0
        else:
            rule = replace(rule, targets_absent=absent, inserts_complete=complete)
            result, last, count, placed = _database_batch(
                move, decider, rule, cursor, batch_size, listed
            )
        if last is None:
            break
        absent = absent and not placed  # targets placement wrote may be a later row's
        stats.add(result)
        cursor = last
        if count < batch_size:
            break  # a short batch is the last one: no need for an empty read to find out
    outcome = _outcome(move, options.dry_run, stats, decider, cursor, finished)
    outcome.targets_absent = absent
    return outcome


def _no_run_since(run_id: int | None) -> bool:
    """Whether no move recorded a run after the run ``run_id`` (one query; False for None).

    A command's batches are moves of their own, with the scope's locks released between
    them. Every move of the app that writes a Casbin rule records a run in its transaction,
    under locks that exclude the command's batch (an org's, or the instance's), so its run
    row is numbered after the run of the batch before it: with no run since, the rules are
    still the command's own, and what :func:`sqlmoves.targets_absent` found at its first
    batch still holds. (The index probe cannot be asked again: it finds those rules.)
    Writers outside the app are not serialized with moves at all (docs/decisions/0014)."""
    if run_id is None:
        return False
    runs = MigrationRun.objects.using(router.db_for_write(MigrationRun))  # never a replica
    return not runs.filter(pk__gt=run_id).exists()


def _python_batch(move: Move, decider: _Decider, cursor, batch_size: int, dry_run: bool):
    """One batch read into Python and placed row by row: (result, last key read, rows read)."""
    legacy = move.direction == FORWARD
    read = read_legacy if legacy else read_casbin
    rows, last, count = read(move.selection, cursor, batch_size, move.until)
    if last is None:
        return None, None, 0
    batch = moves.forward_batch if legacy else moves.rollback_batch
    return batch(rows, decider.for_batch(rows, legacy), dry_run=dry_run), last, count


def _database_batch(move: Move, decider: _Decider, rule, cursor, batch_size: int, listed: bool):
    """One batch whose plain rows the database moves by itself (:mod:`sqlmoves`); the rows it
    leaves go through placement as in :func:`_python_batch`: (result, last key, rows,
    targets placement wrote)."""
    legacy = move.direction == FORWARD
    carry = sqlmoves.forward if legacy else sqlmoves.rollback
    done = carry(move.selection, rule, sqlmoves.Span(cursor, batch_size, move.until), listed)
    if done is None:  # MariaDB: not every row is plain; one write in key order for all (0011)
        result, last, count = _python_batch(move, decider, cursor, batch_size, False)
        return result, last, count, result.created
    if done.upper is None:
        return None, None, 0, 0
    read = read_legacy if legacy else read_casbin
    batch = moves.forward_batch if legacy else moves.rollback_batch
    result, after = moves.BatchResult(), cursor
    while True:  # the rows left; more than one read only where look-alike keys interleave
        rows, last, read_count = [], None, 0
        if done.moved < done.count:  # (none when the database moved every row it counted)
            rows, last, read_count = read(move.selection, after, batch_size, done.upper)
        # Called even with no rows (then it issues no query): a batch always passes here.
        result.merge(batch(rows, decider.for_batch(rows, legacy)))
        if last is None or read_count < batch_size:
            break
        after = last
    placed = result.created
    result.merge_database(done)
    return result, done.upper, done.count, placed


def _outcome(move: Move, dry_run: bool, stats: _Stats, decider: _Decider, cursor, finished):
    """The move's :class:`Outcome` from its batches' results."""
    metadata = stats.metadata()
    metadata["dry_run"] = dry_run
    split = decider.org_wide_split(stats.limit, stats.org_wide_roles)
    if split:
        metadata["org_wide_roles_split"] = split
        logger.warning(
            "authz_migration: org-wide roles of %s: %s: %s%s",
            move.scope_key,
            split["note"],
            ", ".join(split["items"]),
            f" and {split['more']} more" if split["more"] else "",
        )
    status = (
        MigrationRun.Status.PARTIAL_SUCCESS
        if stats.problem_total
        else MigrationRun.Status.COMPLETED
    )
    return Outcome(
        move,
        status,
        metadata,
        cursor=cursor,
        finished=finished,
        casbin_added=stats.casbin_added,
        casbin_removed=stats.casbin_removed,
    )


def _failure(move: Move, exc: Exception, started: float) -> Outcome:
    logger.exception("authz_migration: %s failed; its changes were rolled back", move.describe())
    metadata = {
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": traceback.format_exc(limit=30),
        "duration_seconds": round(time.monotonic() - started, 4),
    }
    return Outcome(move, MigrationRun.Status.FAILED, metadata, error=exc)


def record(
    move: Move, status: str, metadata: dict, options: Options, started: float | None = None
) -> MigrationRun:
    """Write the run row of ``move`` with its final status: the one writer of run rows. A
    row means "this move was tried and this is how it ended"; ``created_at`` is when it
    started (``started``, a ``time.monotonic()`` reading), ``completed_at`` when it ended."""
    metadata.update(move.note)
    now = timezone.now()
    begun = now if started is None else now - timedelta(seconds=time.monotonic() - started)
    return MigrationRun.objects.create(
        migration_type=move.direction,
        scope_type=move.scope_type,
        scope_key=move.scope_key,
        trigger=options.trigger,
        triggered_by=options.triggered_by,
        status=status,
        created_at=begun,
        completed_at=now,
        metadata=metadata,
    )


def _notify(outcome: Outcome) -> None:
    migration_run_finished.send(
        sender=MigrationRun,
        run=outcome.run,
        added=outcome.casbin_added,
        removed=outcome.casbin_removed,
    )
