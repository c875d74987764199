"""Where role rows sit, and where their courses' flags say they belong.

A scan reads both stores in keyset batches (bounded memory: one counter per course, not per
row) and the flags of each batch's courses in three queries. Only rows that a move would
carry count: legacy roles outside the role map and Casbin rows of other kinds are ignored.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from .conf import get_setting
from .flags import FlagSnapshot
from .roles import (
    ROLE_NAMESPACE,
    normalize_course_key,
    parse_scope,
    reverse_role_map,
    role_map,
    strip_namespace,
    try_org_of,
)
from .stores import Selection, read_casbin, read_legacy


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


def scan(selection: Selection, batch_size: int | None = None) -> Report:
    """Count, per course and org-wide scope, the movable rows in each system."""
    batch_size = batch_size or get_setting("BATCH_SIZE")
    mapped_legacy = set(role_map())
    mapped_casbin = set(reverse_role_map())
    counts: dict[tuple[str, str | None], list[int]] = defaultdict(lambda: [0, 0])

    def batches(read):
        cursor = None
        while True:
            rows, cursor, count = read(selection, cursor, batch_size)
            if cursor is None:
                return
            yield rows
            if count < batch_size:
                return

    for rows in batches(read_legacy):
        for row in rows:
            if row.role not in mapped_legacy:
                continue
            if row.course_id:
                org = try_org_of(row.course_id)
                if org:
                    counts[(org, normalize_course_key(row.course_id))][0] += 1
            elif row.org:
                counts[(row.org, None)][0] += 1
    for rows in batches(read_casbin):
        for row in rows:
            parsed = parse_scope(row.v2)
            role = strip_namespace(row.v1, ROLE_NAMESPACE)
            if parsed and role in mapped_casbin and not any(row.extra):
                counts[parsed][1] += 1

    report = Report()
    keys = sorted(counts, key=lambda k: (k[0], k[1] or ""))
    for start in range(0, len(keys), batch_size):
        chunk = keys[start : start + batch_size]
        snapshot = FlagSnapshot({org for org, _ in chunk}, {c for _, c in chunk if c})
        for org, course in chunk:
            legacy_rows, casbin_rows = counts[(org, course)]
            report.placements[(org, course)] = Placement(
                org, course, snapshot.state(org, course), legacy_rows, casbin_rows
            )
    return report
