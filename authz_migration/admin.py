"""Admin registrations (basic; the fuller admin experience builds on these).

The three Open edX look-alike models are swappable: when a host points a setting at its own
table (``student.CourseAccessRole``, ``waffle_utils.WaffleFlagCourseOverrideModel``, ...), the
host's admin already shows that table and ours does not exist, so ours is registered only when
it is not swapped.
"""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.core.serializers.json import DjangoJSONEncoder
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext as _

from .automatic import RESULT_ATTRIBUTE
from .conf import get_setting
from .flags import flag_name
from .models import CourseAccessRole, CourseFlagOverride, MigrationRun, OrgFlagOverride
from .orchestrator import FORWARD


class CourseAccessRoleAdmin(admin.ModelAdmin):
    """The legacy role table, as Open edX's own admin shows it."""

    list_display = ("id", "user", "org", "course_id", "role")
    list_filter = ("role",)
    search_fields = ("user__username", "org", "course_id", "role")
    # A select of every user does not scale to a real site.
    raw_id_fields = ("user",)


class MigrationFeedbackMixin:
    """Tells the person who saved an override what that did to role data: what moved, with a
    link to the run; why nothing moved; or that the move failed and the change was undone.

    A host registers it on its own override admin (e.g. Open edX's waffle_utils admins):
    ``class MyOverrideAdmin(MigrationFeedbackMixin, ConfigurationModelAdmin): ...``.
    """

    def save_model(self, request, obj, form, change):
        # changed_by is not a form field: the author of a row is whoever saved it.
        obj.changed_by = request.user
        super().save_model(request, obj, form, change)
        self.report_migration(request, obj)

    def report_migration(self, request, obj) -> None:
        result = getattr(obj, RESULT_ATTRIBUTE, None)
        if result is None:
            if obj.waffle_flag == flag_name() and not get_setting("AUTOMATIC"):
                messages.warning(
                    request,
                    _(
                        "Automatic moves are off (AUTHZ_MIGRATION_AUTOMATIC): no roles moved. "
                        "Run `authz_migrate sync` for this scope."
                    ),
                )
            return
        if result.outcome is None:
            messages.warning(request, _("No roles moved: %(reason)s.") % {"reason": result.reason})
            return
        outcome, run = result.outcome, result.outcome.run
        link = format_html(
            '<a href="{}">run #{}</a>',
            reverse("admin:authz_migration_migrationrun_change", args=[run.pk]),
            run.pk,
        )
        if result.failed:
            messages.error(
                request,
                format_html(
                    "Moving the roles failed, so this change was undone and the flag is as it "
                    "was (see {}): {}",
                    link,
                    outcome.metadata.get("error", ""),
                ),
            )
            return
        counts = outcome.counts
        direction = "to Casbin" if outcome.move.direction == FORWARD else "to the legacy table"
        level = (
            messages.SUCCESS
            if outcome.status == MigrationRun.Status.COMPLETED
            else messages.WARNING
        )
        messages.add_message(
            request,
            level,
            format_html(
                "Moved {} role(s) of {} {} {} ({}); not migrated: {}, could not move: {}, "
                "excluded courses: {}.",
                counts.get("moved", 0),
                run.scope_type,
                run.scope_key,
                direction,
                link,
                counts.get("not_migrated", 0),
                counts.get("could_not_move", 0),
                outcome.metadata.get("excluded_courses", {}).get("count", 0),
            ),
        )


class FlagOverrideAdmin(MigrationFeedbackMixin, admin.ModelAdmin):
    """Shared by both override admins.

    Every save inserts a new history row (the model sees to that), so the list is the history,
    newest first.
    """

    list_filter = ("enabled", "override_choice", "waffle_flag")


class CourseFlagOverrideAdmin(FlagOverrideAdmin):
    list_display = (
        "waffle_flag",
        "course_id",
        "override_choice",
        "enabled",
        "change_date",
        "changed_by",
    )
    search_fields = ("waffle_flag", "course_id")


class OrgFlagOverrideAdmin(FlagOverrideAdmin):
    list_display = ("waffle_flag", "org", "override_choice", "enabled", "change_date", "changed_by")
    search_fields = ("waffle_flag", "org")


class MigrationRunAdmin(admin.ModelAdmin):
    """Runs are a record written by the app: viewable, never added, edited or deleted by hand
    (an edited run would misstate what happened to the roles)."""

    list_display = (
        "id",
        "status",
        "migration_type",
        "scope_type",
        "scope_key",
        "trigger",
        "triggered_by",
        "created_at",
    )
    list_filter = ("status", "migration_type", "scope_type", "trigger")
    search_fields = ("scope_key",)
    fields = readonly_fields = (
        "id",
        "status",
        "migration_type",
        "scope_type",
        "scope_key",
        "trigger",
        "triggered_by",
        "created_at",
        "updated_at",
        "completed_at",
        "metadata_json",
    )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="metadata")
    def metadata_json(self, obj):
        # Counts, unmoved rows by reason and tracebacks are read far more easily indented.
        text = json.dumps(
            obj.metadata, indent=2, sort_keys=True, ensure_ascii=False, cls=DjangoJSONEncoder
        )
        return format_html("<pre>{}</pre>", text)


if not CourseAccessRole._meta.swapped:
    admin.site.register(CourseAccessRole, CourseAccessRoleAdmin)
if not CourseFlagOverride._meta.swapped:
    admin.site.register(CourseFlagOverride, CourseFlagOverrideAdmin)
if not OrgFlagOverride._meta.swapped:
    admin.site.register(OrgFlagOverride, OrgFlagOverrideAdmin)
admin.site.register(MigrationRun, MigrationRunAdmin)
