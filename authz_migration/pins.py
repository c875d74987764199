"""Cutover pins: org override rows that hold an org on its current state while the global
flag changes, written by the instance cutover and by a global flip (docs/decisions/0013).

A pin is an ordinary org override row (``enabled=True``) whose ``note`` starts with
:data:`PIN_NOTE_PREFIX`; its release is a newer row of the same org with ``enabled=False``
and the same prefix. Only an org whose newest row is such a pin is ever released: a row an
operator wrote (any other note) is never changed or released, and an org with an enabled row
of its own is never pinned.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import flags, guard
from .conf import org_override_model
from .models import OverrideChoice

# Fixed and recognisable: the cutover finds its own pins by it, and an operator sees it in
# the admin's override list.
PIN_NOTE_PREFIX = "[authz_migration cutover]"

Current = tuple[bool, str, str]  # (enabled, override_choice, note), flags.current_org_rows


def is_cutover_row(current: Current | None) -> bool:
    return current is not None and current[2].startswith(PIN_NOTE_PREFIX)


def is_pin(current: Current | None) -> bool:
    """Whether an org's newest row is a pin of the cutover's, in force."""
    return is_cutover_row(current) and current[0]


def operator_pinned(current: dict[str, Current]) -> dict[str, bool]:
    """Orgs forced on or off by an override the cutover did not write, with their state."""
    return {
        org: row[1] == OverrideChoice.ON
        for org, row in current.items()
        if row[0] and not is_cutover_row(row)
    }


def _row(org: str, enabled: bool, state: bool, note: str, user: Any):
    return org_override_model()(
        waffle_flag=flags.flag_name(),
        org=org,
        override_choice=OverrideChoice.ON if state else OverrideChoice.OFF,
        enabled=enabled,
        note=f"{PIN_NOTE_PREFIX} {note}",
        changed_by=user,
    )


# Orgs locked and read together when many are pinned: one statement per lock mode and one
# read of their newest rows per chunk instead of three statements an org (and, the first
# time, one lock row insert on a connection of its own), within every database's limit on
# a statement's parameters.
PIN_CHUNK = 500


def pin_orgs(orgs: Iterable[str], state: bool, why: str, user: Any = None) -> list[str]:
    """Hold each org of ``orgs`` on ``state`` with a pin, unless its newest override row is
    enabled (an operator's override, or a pin already). Each org is checked under its lock,
    so an override saved concurrently is never overtaken. Runs in the caller's transaction
    (which must be open); returns the orgs pinned, in order."""
    pinned = []
    ordered = sorted(set(orgs))
    for start in range(0, len(ordered), PIN_CHUNK):
        chunk = ordered[start : start + PIN_CHUNK]
        guard.hold_orgs(chunk)  # in key order, as one org at a time would take them
        current = flags.current_org_rows(set(chunk))
        for org in chunk:
            if org in current and current[org][0]:
                continue
            # Saved one by one: a host's override model (Open edX's ConfigurationModel)
            # clears its cache in save(), which a bulk insert would skip.
            _row(org, True, state, why, user).save()
            pinned.append(org)
    return pinned


def release_row(org: str, current: Current, user: Any = None):
    """The unsaved row that releases the pin ``current`` of ``org``: the org follows the
    global flag again."""
    state = current[1] == OverrideChoice.ON
    return _row(org, False, state, "released: the org follows the global flag again", user)
