"""Admin registrations (basic; the fuller admin experience builds on these).

The three Open edX look-alike models are swappable: when a host points a setting at its own
table (``student.CourseAccessRole``, ``waffle_utils.WaffleFlagCourseOverrideModel``, ...), the
host's admin already shows that table and ours does not exist, so ours is registered only when
it is not swapped.
"""

from __future__ import annotations

import json

from django.contrib import admin
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from .models import CourseAccessRole, CourseFlagOverride, MigrationRun, OrgFlagOverride


class CourseAccessRoleAdmin(admin.ModelAdmin):
    """The legacy role table, as Open edX's own admin shows it."""

    list_display = ("id", "user", "org", "course_id", "role")
    list_filter = ("role",)
    search_fields = ("user__username", "org", "course_id", "role")
    # A select of every user does not scale to a real site.
    raw_id_fields = ("user",)


class FlagOverrideAdmin(admin.ModelAdmin):
    """Shared by both override admins.

    Every save inserts a new history row (the model sees to that), so the list is the history,
    newest first; the admin only records who made the change.
    """

    list_filter = ("enabled", "override_choice", "waffle_flag")

    def save_model(self, request, obj, form, change):
        # changed_by is not a form field: the author of a row is whoever saved it.
        obj.changed_by = request.user
        super().save_model(request, obj, form, change)


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

    @admin.display(description=_("metadata"))
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
