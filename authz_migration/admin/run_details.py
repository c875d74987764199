"""What a run's page shows (:func:`run_report`), built from the run's metadata, whatever its
shape; and the formatting of durations."""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..models import MigrationRun, scope_label
from .common import _system


def format_duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return ""
    if seconds < 10:
        return f"{seconds:.3f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _capped(value: Any) -> dict | None:
    """A metadata list ({count, items, more[, note]}) in a shape the template can trust."""
    value = _dict(value)
    items = value.get("items")
    if not isinstance(items, list) or not items:
        return None
    return {
        "count": _count(value.get("count")) or len(items),
        "items": [str(item) for item in items],
        "more": _count(value.get("more")) or 0,
        "note": str(value.get("note", "")),
    }


# (metadata key, label, what it means); the order of the counts table.
COUNT_ROWS = [
    ("moved", gettext_lazy("Moved"), gettext_lazy("source row removed once its target existed")),
    ("scanned", gettext_lazy("Read"), gettext_lazy("rows of the scope read from the source")),
    ("created", gettext_lazy("Written"), gettext_lazy("new rows written in the target")),
    (
        "already_present",
        gettext_lazy("Already in the target"),
        gettext_lazy("not written twice; the source row was removed"),
    ),
    (
        "in_place",
        gettext_lazy("Left in place"),
        gettext_lazy("their course's flag points to the system they are in"),
    ),
    (
        "excluded",
        gettext_lazy("Excluded"),
        gettext_lazy("rows of courses pinned by their own course override (courses listed below)"),
    ),
    (
        "not_migrated",
        gettext_lazy("Not migrated"),
        gettext_lazy("roles outside the role map (not course-authoring roles): never moved"),
    ),
    (
        "could_not_move",
        gettext_lazy("Could not move"),
        gettext_lazy("should have moved but stayed in the source (see below)"),
    ),
]
# Column order of the rows that could not move; other keys follow alphabetically.
_PROBLEM_COLUMNS = ["id", "user", "subject", "role", "scope"]


def _flag_change(value: Any) -> dict | None:
    value = _dict(value)
    if not isinstance(value.get("before"), bool) or not isinstance(value.get("after"), bool):
        return None

    def state(enabled, source):
        text = _("on") if enabled else _("off")
        return f"{text} ({_system(enabled)}, {source})" if source else text

    return {
        "before": state(value["before"], value.get("before_source")),
        "after": state(value["after"], value.get("after_source")),
    }


def _problems(value: Any) -> list[dict]:
    groups = []
    for reason, detail in sorted(_dict(value).items()):
        detail = _dict(detail)
        rows = [row for row in detail.get("rows", []) if isinstance(row, dict)]
        seen = {key for row in rows for key in row}
        columns = [c for c in _PROBLEM_COLUMNS if c in seen] + sorted(seen - set(_PROBLEM_COLUMNS))
        groups.append(
            {
                "reason": reason,
                "description": str(detail.get("description") or reason),
                "count": _count(detail.get("count")) or len(rows),
                "columns": columns,
                "rows": [
                    ["" if row.get(c) is None else row.get(c) for c in columns] for row in rows
                ],
                "more": _count(detail.get("more")) or 0,
            }
        )
    return groups


def run_report(run: MigrationRun) -> dict:
    """What the run page shows, from the run's metadata. Tolerates metadata of any shape
    (older versions, hand-made rows): what it does not recognise is in the raw JSON."""
    metadata = _dict(run.metadata)
    counts = _dict(metadata.get("counts"))
    known = {key for key, _label, _help in COUNT_ROWS}
    count_rows = [
        (label, counts[key], help_text)
        for key, label, help_text in COUNT_ROWS
        if _count(counts.get(key)) is not None
    ] + [(key, value, "") for key, value in sorted(counts.items()) if key not in known]
    moved = _count(counts.get("moved")) or 0
    problems = _count(counts.get("could_not_move")) or 0
    forward = run.migration_type == MigrationRun.MigrationType.FORWARD
    scope = scope_label(run.scope_type, run.scope_key)
    values = {
        "moved": moved,
        "scope": scope,
        "source": _system(not forward),
        "target": _system(forward),
        "problems": problems,
    }
    status = run.status
    if status == MigrationRun.Status.FAILED:
        headline = _(
            "Failed: every change of this run was rolled back; the roles of %(scope)s are where "
            "they were."
        )
    elif status == MigrationRun.Status.SKIPPED:
        headline = _("Skipped: nothing moved for %(scope)s.")
    elif status == MigrationRun.Status.RUNNING:
        headline = _("Running.")
    elif problems:
        headline = _(
            "Moved %(moved)s role(s) of %(scope)s from %(source)s to %(target)s; %(problems)s "
            "row(s) could not move and stayed in %(source)s."
        )
    else:
        headline = _("Moved %(moved)s role(s) of %(scope)s from %(source)s to %(target)s.")
    not_migrated = [
        (str(role), n) for role, n in sorted(_dict(metadata.get("not_migrated_by_role")).items())
    ]
    return {
        "headline": headline % values,
        "status": status,
        "flag": _flag_change(metadata.get("flag")),
        "counts": count_rows,
        "not_migrated_by_role": not_migrated,
        "problems": _problems(metadata.get("could_not_move")),
        "excluded": _capped(metadata.get("excluded_courses")),
        # The same exclusion counted in rows (the counts table's unit), for the heading.
        "excluded_rows": _count(counts.get("excluded")),
        "split": _capped(metadata.get("org_wide_roles_split")),
        "error": str(metadata.get("error") or ""),
        "traceback": str(metadata.get("traceback") or ""),
        "reason": str(metadata.get("reason") or ""),
        "action": str(metadata.get("action") or ""),
        "duration": format_duration(metadata.get("duration_seconds")),
        "batches": _count(metadata.get("batches")),
        "dry_run": metadata.get("dry_run") is True,
        "raw_json": json.dumps(
            run.metadata, indent=2, sort_keys=True, ensure_ascii=False, cls=DjangoJSONEncoder
        ),
    }
