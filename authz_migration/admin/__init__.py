"""The admin: where most people who flip the flag work, and see what each flip did.

- Override admins list the current override of each course / org (the newest row of its
  history) with the flag that is now effective for it, link each key to its history, and take
  a small form whose key is validated before anything is saved. After a save they say what
  moved (:class:`MigrationFeedbackMixin`). Actions: "Verify" (where do the roles of the
  selected scopes sit, against their flags?) and "Sync now" (move them where their flags
  point, recorded as runs). All of it comes from :class:`FlagOverrideAdminMixin`, which a host
  puts on its own override admins.
- The run admin shows :class:`~authz_migration.models.MigrationRun` rows read-only: a list
  with filters and search by scope key, and a detail page that renders the run's metadata
  (template ``admin/authz_migration/migrationrun/change_form.html``).

Permissions: toggling (adding an override row; every save adds one) needs the *change*
permission on the override model; "Verify" needs *view*, "Sync now" *change*. Override rows
are history: nobody deletes them. Runs are seen with the *view* permission on runs only, and
nobody, superusers included, adds, edits or deletes them.

The three Open edX look-alike models are swappable: when a host points a setting at its own
table (``student.CourseAccessRole``, ``waffle_utils.WaffleFlagCourseOverrideModel``, ...), the
host's admin already shows that table and ours does not exist, so ours is registered only when
it is not swapped.

The modules: :mod:`.overrides` (the override admin mixin: permissions, form, key parsing,
changelist columns and filters, "Verify" and "Sync now"; and the app's own override admins),
:mod:`.runs` (the run admin and what its page shows), :mod:`.feedback` (what a save or an
action tells the user, and the warning after a global flag save on waffle's own flag admin),
:mod:`.cutover` (what the lists and pages show of the instance cutover: its pins, its
progress).
This module holds the admin of the legacy role table, registers the admins and re-exports the
names hosts and tests import from ``authz_migration.admin``.
"""

from __future__ import annotations

from django.contrib import admin

from ..models import CourseAccessRole, CourseFlagOverride, MigrationRun, OrgFlagOverride
from .feedback import GlobalFlagFeedbackMixin, MigrationFeedbackMixin, add_global_flag_feedback
from .overrides import (
    SHOW_HISTORY,
    CourseFlagOverrideAdmin,
    CourseKeyFilter,
    CurrentOverrideFilter,
    FlagOverrideAdmin,
    FlagOverrideAdminMixin,
    OrgFlagOverrideAdmin,
    OrgKeyFilter,
    ScopeKeyFilter,
    current_rows,
    scope_field,
)
from .runs import COUNT_ROWS, MigrationRunAdmin, format_duration, run_report


class CourseAccessRoleAdmin(admin.ModelAdmin):
    """The legacy role table, as Open edX's own admin shows it."""

    list_display = ("id", "user", "org", "course_id", "role")
    list_filter = ("role",)
    search_fields = ("user__username", "org", "course_id", "role")
    # A select of every user does not scale to a real site.
    raw_id_fields = ("user",)


__all__ = [
    "COUNT_ROWS",
    "SHOW_HISTORY",
    "CourseAccessRoleAdmin",
    "CourseFlagOverrideAdmin",
    "CourseKeyFilter",
    "CurrentOverrideFilter",
    "FlagOverrideAdmin",
    "FlagOverrideAdminMixin",
    "GlobalFlagFeedbackMixin",
    "MigrationFeedbackMixin",
    "MigrationRunAdmin",
    "OrgFlagOverrideAdmin",
    "OrgKeyFilter",
    "ScopeKeyFilter",
    "current_rows",
    "format_duration",
    "run_report",
    "scope_field",
]

if not CourseAccessRole._meta.swapped:
    admin.site.register(CourseAccessRole, CourseAccessRoleAdmin)
if not CourseFlagOverride._meta.swapped:
    admin.site.register(CourseFlagOverride, CourseFlagOverrideAdmin)
if not OrgFlagOverride._meta.swapped:
    admin.site.register(OrgFlagOverride, OrgFlagOverrideAdmin)
admin.site.register(MigrationRun, MigrationRunAdmin)
add_global_flag_feedback()
