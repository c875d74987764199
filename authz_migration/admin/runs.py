"""The read-only :class:`~authz_migration.models.MigrationRun` admin: the list of runs and the
run's page (template ``admin/authz_migration/migrationrun/change_form.html``, filled by
:func:`run_report` from the run's metadata, whatever its shape); and the formatting of
durations."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.serializers.json import DjangoJSONEncoder
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..models import MigrationRun, scope_label
from .cutover import add_progress_notice
from .feedback import may_view_runs, short_datetime, system_name


def format_duration(seconds: Any) -> str:
    """A duration in seconds as "0.123 s", "12.3 s" or "2 min 5 s"; empty for no number."""
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
        return f"{text} ({system_name(enabled)}, {source})" if source else text

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


def _count_rows(counts: dict) -> list[tuple]:
    """The counts table: the known counts in :data:`COUNT_ROWS` order, then any others."""
    known = {key for key, _label, _help in COUNT_ROWS}
    return [
        (label, counts[key], help_text)
        for key, label, help_text in COUNT_ROWS
        if _count(counts.get(key)) is not None
    ] + [(key, value, "") for key, value in sorted(counts.items()) if key not in known]


def _headline(run: MigrationRun, counts: dict) -> str:
    """One sentence on what the run did, by its status."""
    moved = _count(counts.get("moved")) or 0
    problems = _count(counts.get("could_not_move")) or 0
    forward = run.migration_type == MigrationRun.MigrationType.FORWARD
    values = {
        "moved": moved,
        "scope": scope_label(run.scope_type, run.scope_key),
        "source": system_name(not forward),
        "target": system_name(forward),
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
    return headline % values


def _texts(metadata: dict) -> dict:
    """The run's free-text metadata (error, reason, ...), as strings."""
    keys = ("error", "traceback", "reason", "action")
    return {key: str(metadata.get(key) or "") for key in keys}


def run_report(run: MigrationRun) -> dict:
    """What the run page shows, from the run's metadata. Tolerates metadata of any shape
    (older versions, hand-made rows): what it does not recognise is in the raw JSON."""
    metadata = _dict(run.metadata)
    counts = _dict(metadata.get("counts"))
    not_migrated = [
        (str(role), n) for role, n in sorted(_dict(metadata.get("not_migrated_by_role")).items())
    ]
    return {
        "headline": _headline(run, counts),
        "status": run.status,
        "flag": _flag_change(metadata.get("flag")),
        "counts": _count_rows(counts),
        "not_migrated_by_role": not_migrated,
        "problems": _problems(metadata.get("could_not_move")),
        "excluded": _capped(metadata.get("excluded_courses")),
        # The same exclusion counted in rows (the counts table's unit), for the heading.
        "excluded_rows": _count(counts.get("excluded")),
        "split": _capped(metadata.get("org_wide_roles_split")),
        **_texts(metadata),
        "duration": format_duration(metadata.get("duration_seconds")),
        "batches": _count(metadata.get("batches")),
        "dry_run": metadata.get("dry_run") is True,
        "raw_json": json.dumps(
            run.metadata, indent=2, sort_keys=True, ensure_ascii=False, cls=DjangoJSONEncoder
        ),
    }


class MigrationRunAdmin(admin.ModelAdmin):
    """Runs are a record written by the app: viewable, never added, edited or deleted by hand
    (an edited run would misstate what happened to the roles), by superusers neither."""

    list_display = ("id", "status_badge", "move", "trigger_and_who", "when")
    # Runs are numbered as they are written: newest first, on the primary key's index.
    ordering = ("-id",)
    list_filter = (
        "status",
        "migration_type",
        "scope_type",
        "trigger",
        ("created_at", admin.DateFieldListFilter),
    )
    search_fields = ("scope_key",)
    list_select_related = ("triggered_by",)
    # Read-only display fields only: no edit-form help text, one label per value.
    fieldsets = [
        (None, {"fields": ("status", "direction", "scope", "started_by")}),
        (gettext_lazy("When"), {"fields": ("created_at", "completed_at", "duration")}),
    ]
    readonly_fields = (
        "status",
        "direction",
        "scope",
        "started_by",
        "created_at",
        "completed_at",
        "duration",
    )

    def has_view_permission(self, request, obj=None):
        # The view permission itself: the change permission (which grants nothing here) does
        # not imply it.
        return may_view_runs(request)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        if self.has_view_permission(request):
            add_progress_notice(request)
        return super().changelist_view(request, extra_context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["run_report"] = run_report(obj)
            context["title"] = _("Migration run #%(id)s") % {"id": obj.pk}
            context["subtitle"] = str(obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    # Runs are never added or deleted by hand: someone who may see runs and opens such a URL
    # is sent to the runs with a word on why (others get the usual 403).

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_view_permission(request):
            return super().add_view(request, form_url, extra_context)
        messages.info(
            request,
            _(
                "Runs are not added by hand: each one is written by the move it records. "
                "Move roles with an override, the “Sync now” action or `authz_migrate`."
            ),
        )
        return redirect(self._changelist_url())

    def delete_view(self, request, object_id, extra_context=None):
        if not self.has_view_permission(request):
            return super().delete_view(request, object_id, extra_context)
        messages.info(
            request,
            _(
                "Runs are not deleted: they are the record of what happened to the roles, "
                "superusers included."
            ),
        )
        run = self.get_object(request, unquote(object_id))
        if run is None:
            return redirect(self._changelist_url())
        return redirect(
            reverse(
                "admin:authz_migration_migrationrun_change",
                args=[run.pk],
                current_app=self.admin_site.name,
            )
        )

    def _changelist_url(self) -> str:
        return reverse(
            "admin:authz_migration_migrationrun_changelist", current_app=self.admin_site.name
        )

    @admin.display(description=gettext_lazy("status"), ordering="status")
    def status_badge(self, obj):
        return format_html(
            '<span class="authz-status authz-status-{}">{}</span><br><small>{}</small>',
            obj.status,
            obj.get_status_display(),
            self.moved_and_not(obj),
        )

    @admin.display(description=gettext_lazy("scope"), ordering="scope_key")
    def scope(self, obj):
        if obj.scope_type == MigrationRun.ScopeType.INSTANCE or not obj.scope_key:
            return _("the whole instance")
        # A course key must not break across lines at its "+" and ":".
        return format_html('{} <span class="authz-key">{}</span>', obj.scope_type, obj.scope_key)

    @admin.display(description=gettext_lazy("direction"))
    def direction(self, obj):
        return obj.get_migration_type_display()

    @admin.display(description=gettext_lazy("started by"))
    def started_by(self, obj):
        who = obj.triggered_by.get_username() if obj.triggered_by else ""
        label = obj.get_trigger_display()
        return _("%(trigger)s, by %(user)s") % {"trigger": label, "user": who} if who else label

    @admin.display(description=gettext_lazy("duration"))
    def duration(self, obj):
        return format_duration(_dict(obj.metadata).get("duration_seconds"))

    @admin.display(description=gettext_lazy("scope"), ordering="scope_key")
    def move(self, obj):
        if obj.migration_type == MigrationRun.MigrationType.FORWARD:
            direction = _("legacy → Casbin")
        else:
            direction = _("Casbin → legacy")
        return format_html('{}<br><small class="quiet">{}</small>', self.scope(obj), direction)

    @admin.display(description=gettext_lazy("trigger"), ordering="trigger")
    def trigger_and_who(self, obj):
        who = obj.triggered_by.get_username() if obj.triggered_by else ""
        return format_html(
            '{}<br><small class="quiet">{}</small>',
            obj.get_trigger_display(),
            _("by %(user)s") % {"user": who} if who else "",
        )

    @admin.display(description=gettext_lazy("when"), ordering="created_at")
    def when(self, obj):
        return format_html(
            '{}<br><small class="quiet">{}</small>',
            short_datetime(obj.created_at),
            self.duration(obj),
        )

    def moved_and_not(self, obj):
        counts = _dict(_dict(obj.metadata).get("counts"))
        moved, stuck = _count(counts.get("moved")), _count(counts.get("could_not_move"))
        if moved is None and stuck is None:
            return ""
        return format_html(
            '{} · <span class="{}">{}</span>',
            _("%(count)s moved") % {"count": "-" if moved is None else moved},
            "authz-stuck" if stuck else "",
            _("%(count)s could not move") % {"count": "-" if stuck is None else stuck},
        )
