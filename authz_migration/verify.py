"""Where role rows sit, and where their courses' flags say they belong.

A scan reads both stores in keyset batches (bounded memory: one counter per course, not per
row), the flags of each batch's courses in three queries, and asks
:mod:`~authz_migration.placement` about every row, as a move does: rows a move would carry
are counted per scope (drift when they sit in the wrong system), rows that should move but
cannot are counted by reason, and roles that never move (outside the map, library keys) are
left out.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from django.db import connections
from django.db.models import Max, Min, Q

from . import flags, placement
from .conf import get_setting, legacy_role_model
from .roles import ROLE_PTYPE, course_key_prefix, org_scope_prefix
from .stores import (
    BLANK_COURSE,
    Selection,
    casbin_rule_model,
    prefix_superset,
    read_casbin,
    read_legacy,
)


@dataclass
class Placement:
    """Rows of one course (or, with ``course`` None, one org's org-wide roles)."""

    org: str
    course: str | None
    authz_enabled: bool = False
    legacy_rows: int = 0
    casbin_rows: int = 0

    @property
    def scope(self) -> str:
        return self.course or f"{self.org} (org-wide)"

    @property
    def misplaced(self) -> int:
        """Rows sitting in the system the flag does not name."""
        return self.legacy_rows if self.authz_enabled else self.casbin_rows

    def contradicted_by(self, forward: bool) -> int:
        """Rows a move in this direction would carry against the flag."""
        if forward:
            return 0 if self.authz_enabled else self.legacy_rows
        return self.casbin_rows if self.authz_enabled else 0


@dataclass
class Report:
    placements: dict[tuple[str, str | None], Placement] = field(default_factory=dict)
    # Rows that belong in the other system but cannot move there, by reason, with the first
    # few of each (no re-run moves them: the rows themselves must change).
    cannot_move: Counter = field(default_factory=Counter)
    cannot_move_rows: dict[str, list[dict]] = field(default_factory=dict)

    @property
    def drift(self) -> list[Placement]:
        """Scopes with rows in the wrong system, in a stable order."""
        return sorted(
            (p for p in self.placements.values() if p.misplaced),
            key=lambda p: (p.org, p.course or ""),
        )

    def contradictions(self, forward: bool) -> list[Placement]:
        return sorted(
            (p for p in self.placements.values() if p.contradicted_by(forward)),
            key=lambda p: (p.org, p.course or ""),
        )

    def merge(self, other: Report) -> Report:
        """This report and ``other`` (of a disjoint selection) as one."""
        self.placements.update(other.placements)
        self.cannot_move.update(other.cannot_move)
        for reason, rows in other.cannot_move_rows.items():
            self.cannot_move_rows.setdefault(reason, []).extend(rows)
        return self

    def _add_problem(self, reason: str, row, limit: int) -> None:
        self.cannot_move[reason] += 1
        kept = self.cannot_move_rows.setdefault(reason, [])
        if len(kept) < limit:
            kept.append(placement.describe(row, reason))


def _batches(read, selection: Selection, batch_size: int, span=(None, None)):
    """The selection's rows in keyset batches, within ``span`` (after, until) of primary
    keys when it is given."""
    cursor, until = span
    while True:
        rows, cursor, count = read(selection, cursor, batch_size, until)
        if cursor is None:
            return
        yield rows
        if count < batch_size:
            return


_SIDES = (
    (0, read_legacy, placement.legacy_verdicts),
    (1, read_casbin, placement.casbin_verdicts),
)


# An org's keyset read compares its key prefix exactly: ``LIKE BINARY`` on MariaDB, which its
# optimizer cannot answer from the index of a ``_ci`` column, so it walks the primary key,
# through the whole table when the org has no row left there (the parity proof after each
# org's move in a cutover: 0.17 s an org on average over 1,000,000 rows, 0.6 s for the
# first); SQLite's case-blind LIKE does the same. The same prefix compared so that the
# column's index answers it (``stores.prefix_superset``: MariaDB's own ``LIKE``, SQLite's
# key range) finds a superset of the rows (a key equal byte for byte is equal under any
# collation): its lowest and highest primary keys bound the exact read, and an org with no
# candidate row costs one index probe. PostgreSQL is not asked: its exact prefix read is an
# index range already (and its planner answers MIN/MAX by walking the primary key, the very
# cost avoided here).


def _org_superset(org: str, legacy: bool):
    """(model, condition): the rows of ``org`` a store may hold, by a condition the column's
    index answers, matching at least every row the store's exact read selects."""
    if legacy:
        model = legacy_role_model()
        where = prefix_superset(model, "course_id", course_key_prefix(org))
        return model, where | Q(course_id=BLANK_COURSE, org=org)
    model = casbin_rule_model()
    return model, Q(ptype=ROLE_PTYPE) & prefix_superset(model, "v2", org_scope_prefix(org))


def _span(selection: Selection, side: int) -> tuple[int | None, int | None] | None:
    """(after, until): the primary keys a read of ``selection`` on ``side`` (0: legacy, 1:
    Casbin) needs to cover; None when the store holds no row of it. Unbounded but for an
    org on MariaDB/MySQL and SQLite."""
    if selection.org is None:
        return None, None
    model, where = _org_superset(selection.org, legacy=side == 0)
    if connections[model.objects.db].vendor == "postgresql":
        return None, None
    found = model.objects.filter(where).aggregate(low=Min("pk"), high=Max("pk"))
    if found["low"] is None:
        return None
    return found["low"] - 1, found["high"]


def sides(legacy: bool = True, casbin: bool = True) -> tuple:
    """The stores a :func:`scan` reads: the legacy table, ``casbin_rule``, or both."""
    return tuple(side for side, wanted in zip(_SIDES, (legacy, casbin), strict=True) if wanted)


def scan(selection: Selection, batch_size: int | None = None, sides=_SIDES) -> Report:
    """Count, per course and org-wide scope, the movable rows in each system (``sides``:
    both, or one), and the rows that cannot move, by reason."""
    batch_size = batch_size or get_setting("BATCH_SIZE")
    limit = get_setting("METADATA_LIST_LIMIT")
    report = Report()
    counts: dict[tuple[str, str | None], list] = defaultdict(lambda: [0, 0, False])
    for side, read, classify in sides:
        span = _span(selection, side)
        for rows in _batches(read, selection, batch_size, span) if span else ():
            decide = placement.flags_of(rows)
            seen = set()  # the places of this batch: each asks its flag once
            for row, verdict in zip(rows, classify(rows, decide), strict=True):
                if verdict.kind == placement.CANNOT_MOVE:
                    report._add_problem(verdict.reason, row, limit)
                elif verdict.kind in (placement.MOVES, placement.STAYS):
                    place = (verdict.org, verdict.course)
                    entry = counts[place]
                    entry[side] += 1
                    if place not in seen:
                        seen.add(place)
                        entry[2] = bool(decide(*place))
    for (org, course), (legacy_rows, casbin_rows, enabled) in sorted(
        counts.items(), key=lambda item: (item[0][0], item[0][1] or "")
    ):
        report.placements[(org, course)] = Placement(org, course, enabled, legacy_rows, casbin_rows)
    return report


def left_behind_by_global(authz_enabled: bool, batch_size: int | None = None) -> bool:
    """Whether a role that follows the global flag (its course and org have no enabled
    override) sits, movable, in the system the global flag (now ``authz_enabled``) no
    longer names. Reads that system's store in batches and stops at the first such row."""
    batch_size = batch_size or get_setting("BATCH_SIZE")
    read, classify = (
        (read_legacy, placement.legacy_verdicts)
        if authz_enabled
        else (read_casbin, placement.casbin_verdicts)
    )
    for rows in _batches(read, Selection(everything=True), batch_size):
        snapshot = placement.snapshot_of(rows)

        def follows_global(org, course, snapshot=snapshot):
            pinned = org in snapshot.orgs or (course is not None and course in snapshot.courses)
            return None if pinned else snapshot.global_enabled

        if any(v.kind == placement.MOVES for v in classify(rows, follows_global)):
            return True
    return False


@dataclass
class OrgRoles:
    """Course-authoring roles that follow an org's state (its org-wide roles and its courses
    without an enabled course override), by store."""

    legacy_rows: int = 0
    casbin_rows: int = 0

    @property
    def total(self) -> int:
        return self.legacy_rows + self.casbin_rows


def org_census(legacy: bool = True, casbin: bool = True) -> dict[str, OrgRoles]:
    """org -> the roles that follow its state, in the stores asked for, as :func:`scan`
    (that is, :mod:`placement`) counts them; orgs with none are left out. Rows that cannot
    move and roles outside the map are not counted."""
    report = scan(Selection(everything=True), sides=sides(legacy, casbin))
    pinned_courses, _ = flags.overridden_keys()
    census: dict[str, OrgRoles] = defaultdict(OrgRoles)
    for (org, course), found in report.placements.items():
        if course is not None and course in pinned_courses:
            continue
        census[org].legacy_rows += found.legacy_rows
        census[org].casbin_rows += found.casbin_rows
    return {org: roles for org, roles in sorted(census.items()) if roles.total}
