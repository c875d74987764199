"""The read-only :class:`~authz_migration.models.MigrationRun` admin: the list of runs and the
run's page (template ``admin/authz_migration/migrationrun/change_form.html``, filled by
:func:`~.run_details.run_report`)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.shortcuts import redirect
from django.urls import reverse
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
