"""Moves that follow override saves, when ``AUTHZ_MIGRATION_AUTOMATIC`` is on.

The receiver runs in the transaction that saves the override. It takes the org's lock first,
then decides from the committed state it sees (plus its own row) whether the effective flag
changed, and moves exactly the affected rows. Saves touching one org are thereby serialized,
and the last to commit has seen all the others: once every concurrent save has committed, every
course's roles are where its flag points (docs/decisions/0007).

If the move fails, its data changes are rolled back, the ``failed`` run is recorded, and a
compensating override row restores the previous state, all in the save's transaction: the
flag change never takes effect and the admin save does not crash (docs/decisions/0008).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.db import router, transaction

from . import flags, pins, verify
from .conf import get_setting
from .models import MigrationRun
from .orchestrator import (
    COURSE,
    FORWARD,
    INSTANCE,
    ORG,
    ROLLBACK,
    Move,
    Options,
    Outcome,
    execute_planned,
    record,
)
from .roles import (
    InvalidCourseKey,
    InvalidOrg,
    normalize_course_key,
    org_of,
    validate_org,
)

logger = logging.getLogger(__name__)

# Set while this module saves a compensating override, so that save moves nothing itself.
_compensating: ContextVar[bool] = ContextVar("authz_migration_compensating", default=False)

# Attribute set on a saved override instance: what its save did (read by the admin).
RESULT_ATTRIBUTE = "_authz_migration_result"

# While set (by the waffle flag admin, around one request), the global-flag warnings are
# appended to this list too, so that the admin can show them to whoever saved the flag.
_global_reports: ContextVar[list | None] = ContextVar("authz_migration_global", default=None)


@dataclass
class SaveResult:
    """What an override save did to role data: ``outcome`` is None when nothing had to move."""

    transition: flags.Transition | None
    outcome: Outcome | None = None
    reason: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome is not None and self.outcome.status == MigrationRun.Status.FAILED


def _active(instance: Any) -> bool:
    return (
        get_setting("AUTOMATIC")
        and not _compensating.get()
        and instance.waffle_flag == flags.flag_name()
    )


def _user(instance: Any):
    return getattr(instance, "changed_by", None)


def course_override_saved(instance: Any, created: bool) -> SaveResult | None:
    """Move the course's roles if saving ``instance`` changed its effective flag."""
    if not created or not _active(instance):
        return None
    try:
        course = normalize_course_key(instance.course_id)
    except InvalidCourseKey as exc:
        logger.warning("authz_migration: override %s not followed: %s", instance.pk, exc)
        return _remember(instance, SaveResult(None, reason=str(exc)))

    def transition():
        return flags.course_transition(course, instance.pk)

    def move(change):
        return Move(_direction(change), COURSE, course, follow_flags=False, note=_note(change))

    return _follow(instance, org_of(course), transition, move)


def org_override_saved(instance: Any, created: bool) -> SaveResult | None:
    """Move the org's roles (minus courses pinned by their own override) if saving
    ``instance`` changed the org's effective flag."""
    if not created or not _active(instance):
        return None
    return _follow_org(instance, MigrationRun.Trigger.SIGNAL)


def save_org_override(instance: Any, trigger: str) -> SaveResult:
    """Save org override ``instance`` and make the move its save calls for, exactly as the
    receiver does after an admin save, whether or not ``AUTHZ_MIGRATION_AUTOMATIC`` is on
    (the receiver is held off meanwhile, so the move is made once). The instance cutover
    releases its pins this way."""
    with _suppressed():
        instance.save()
    return _follow_org(instance, trigger)


def _follow_org(instance: Any, trigger: str) -> SaveResult:
    try:
        org = validate_org(instance.org)
    except InvalidOrg as exc:
        logger.warning("authz_migration: override %s not followed: %s", instance.pk, exc)
        return _remember(instance, SaveResult(None, reason=str(exc)))

    def transition():
        return flags.org_transition(org, instance.pk)

    def move(change):
        return Move(
            _direction(change),
            ORG,
            org,
            follow_flags=False,
            exclude_pinned=True,
            note=_note(change),
        )

    return _follow(instance, org, transition, move, trigger)


def _follow(
    instance: Any, org: str, transition, move, trigger: str = MigrationRun.Trigger.SIGNAL
) -> SaveResult:
    """Under ``org``'s lock, read what the save changed (``transition()``, from the committed
    state plus the save's own row) and make the ``move(change)`` it calls for, if any."""
    seen = []

    def plan():
        seen.append(transition())
        return move(seen[-1]) if seen[-1].changed else None

    options = Options(trigger=trigger, triggered_by=_user(instance))
    outcome = execute_planned(org, plan, options)
    if outcome is None:
        return _remember(instance, _unchanged(seen[-1]))
    result = SaveResult(seen[-1], outcome)
    if result.failed:
        _compensate(instance, seen[-1], outcome)
    return _remember(instance, result)


def _direction(transition: flags.Transition) -> str:
    return FORWARD if transition.after.enabled else ROLLBACK


def _note(transition: flags.Transition) -> dict:
    return {"flag": transition.describe()}


def _unchanged(transition: flags.Transition) -> SaveResult:
    where = "Casbin" if transition.after.enabled else "the legacy table"
    return SaveResult(
        transition,
        reason=f"the effective flag did not change (still {where}, from the "
        f"{transition.after.source}); nothing needed to move",
    )


def _compensate(instance: Any, transition: flags.Transition, outcome: Outcome) -> None:
    """Insert an override row equal to the one that was current before ``instance``."""
    enabled, choice = transition.previous_row or (False, instance.override_choice)
    restore = type(instance)()
    for field in instance._meta.concrete_fields:
        if field.primary_key or field.name in ("change_date",):
            continue
        setattr(restore, field.attname, getattr(instance, field.attname))
    restore.enabled = enabled
    restore.override_choice = choice
    restore.note = (
        f"Restored by authz_migration: moving roles for override #{instance.pk} failed "
        f"(run #{outcome.run.pk}); the flag change was not applied."
    )
    with _suppressed():
        restore.save()
    logger.error(
        "authz_migration: override #%s reverted by #%s because run #%s failed",
        instance.pk,
        restore.pk,
        outcome.run.pk,
    )


@contextmanager
def _suppressed():
    token = _compensating.set(True)
    try:
        yield
    finally:
        _compensating.reset(token)


def _remember(instance: Any, result: SaveResult) -> SaveResult:
    setattr(instance, RESULT_ATTRIBUTE, result)
    return result


# --- global flag ----------------------------------------------------------------------------


def global_flag_saving(instance: Any) -> None:
    """pre_save of the waffle Flag: remember the state being replaced."""
    if instance.name != flags.flag_name():
        return
    instance._authz_migration_before = flags.global_state()


def global_flag_saved(instance: Any) -> MigrationRun | None:
    """post_save of the waffle Flag: never move data (that could be an instance-wide move
    inside one admin request), but tell the operator when roles now sit in the wrong
    system, in the log and as a ``skipped`` instance run."""
    before = getattr(instance, "_authz_migration_before", None)
    if before is None:
        return None
    return _report_global_change(instance.name, before, instance.everyone is True)


def global_flag_deleted(instance: Any) -> MigrationRun | None:
    """post_delete of the waffle Flag: a deleted flag is off."""
    if instance.name != flags.flag_name():
        return None
    return _report_global_change(instance.name, instance.everyone is True, False)


def _report_global_change(name: str, before: bool, after: bool) -> MigrationRun | None:
    if before == after or not get_setting("AUTOMATIC"):
        return None
    if get_setting("GLOBAL_FLIP_PINS"):
        return _pin_for_global_change(name, before, after)
    if not verify.left_behind_by_global(after):
        return None
    message = (
        f"the global flag {name} is now {'on' if after else 'off'} and roles still "
        f"sit in {'the legacy table' if after else 'Casbin'}; run `authz_migrate sync --all`"
    )
    return _record_global(after, message, {"action": "authz_migrate sync --all"})


def _pin_for_global_change(name: str, before: bool, after: bool) -> MigrationRun | None:
    """Hold every org whose roles (following the org) still sit in the system the global
    flag no longer names, and that has no enabled org override, on its previous state with
    a cutover pin, in the flag save's transaction: no course's effective flag changes yet
    (docs/decisions/0013). Orgs with no roles, or with all of them in the right system
    already, are not pinned. The pins' own saves move nothing: their receiver is held off
    (their state is the one the org had, so there is nothing to move)."""
    census = verify.org_census(legacy=after, casbin=not after)
    if not census:
        return None
    command = f"authz_migrate cutover --to {'authz' if after else 'legacy'}"
    alias = router.db_for_write(MigrationRun)
    with transaction.atomic(using=alias), _suppressed():
        pinned = pins.pin_orgs(census, before, f"held while the global flag changed; {command}")
        if not pinned:
            return None
        where = "the legacy table" if after else "Casbin"
        message = (
            f"the global flag {name} is now {'on' if after else 'off'}; {len(pinned)} org(s) "
            f"whose roles still sit in {where} are held on their previous state by cutover "
            f"pins, so no course is stranded; run `{command}` to move them"
        )
        limit = get_setting("METADATA_LIST_LIMIT")
        pinned_orgs = {"count": len(pinned), "items": pinned[:limit], "more": len(pinned[limit:])}
        return _record_global(after, message, {"action": command, "pinned_orgs": pinned_orgs})


def _record_global(after: bool, message: str, metadata: dict) -> MigrationRun:
    logger.warning("authz_migration: %s", message)
    run = record(
        Move(FORWARD if after else ROLLBACK, INSTANCE),
        MigrationRun.Status.SKIPPED,
        {"reason": message, **metadata},
        Options(trigger=MigrationRun.Trigger.GLOBAL_FLAG),
    )
    reports = _global_reports.get()
    if reports is not None:
        reports.append((message, run))
    return run


@contextmanager
def global_flag_reports():
    """Collect, as ``(message, run)`` pairs, the warnings that global flag changes made
    inside the block (the flag admin shows them as messages)."""
    reports: list = []
    token = _global_reports.set(reports)
    try:
        yield reports
    finally:
        _global_reports.reset(token)
