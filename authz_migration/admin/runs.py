"""The read-only :class:`~authz_migration.models.MigrationRun` admin: the list of runs and the
run's page (template ``admin/authz_migration/migrationrun/change_form.html``, filled by
:func:`~.run_details.run_report`)."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..models import MigrationRun
from .common import _may_view_runs, _short_datetime
from .run_details import _count, _dict, format_duration, run_report


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
    fieldsets = [
        (
            None,
            {
                "fields": (
                    "status",
                    "migration_type",
                    ("scope_type", "scope_key"),
                    ("trigger", "triggered_by"),
                )
            },
        ),
        (gettext_lazy("When"), {"fields": ("created_at", "completed_at", "duration")}),
    ]
    readonly_fields = (
        "status",
        "migration_type",
        "scope_type",
        "scope_key",
        "trigger",
        "triggered_by",
        "created_at",
        "completed_at",
        "duration",
    )

    def has_view_permission(self, request, obj=None):
        # The view permission itself: the change permission (which grants nothing here) does
        # not imply it.
        return _may_view_runs(request)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["run_report"] = run_report(obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

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
        return f"{obj.scope_type} {obj.scope_key}".strip()

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
            _short_datetime(obj.created_at),
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
