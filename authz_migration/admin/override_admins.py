"""The app's own admins for its two override models (course and org overrides), registered
when the models are not swapped for the host's own tables."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..flags import flag_name
from .common import _short_datetime
from .filters import CourseKeyFilter, CurrentOverrideFilter, OrgKeyFilter
from .overrides import FlagOverrideAdminMixin


class FlagOverrideAdmin(FlagOverrideAdminMixin, admin.ModelAdmin):
    """Shared by the app's own two override admins.

    Every save inserts a new history row (the model sees to that): the list shows the current
    row of each key by default, every row with "show history".
    """

    list_filter = (CurrentOverrideFilter, "waffle_flag", "override_choice", "enabled")
    list_select_related = ("changed_by",)
    # The mixin's columns are in list_display already ("override" says which row is current).
    override_columns = ()
    radio_fields = {"override_choice": admin.HORIZONTAL}

    @admin.display(description=gettext_lazy("key"))
    def key(self, obj):
        # The watched flag goes without saying; another flag's row says which flag it is.
        value = getattr(obj, self.scope_field)
        if obj.waffle_flag == flag_name():
            return value
        return format_html('{}<br><small class="quiet">{}</small>', value, obj.waffle_flag)

    @admin.display(description=gettext_lazy("override"), ordering="override_choice")
    def override(self, obj):
        return format_html(
            '{}<br><small class="quiet">{}</small>',
            obj.get_override_choice_display() if obj.enabled else _("not enabled"),
            _("current") if self.is_current(obj) else _("superseded"),
        )

    @admin.display(description=gettext_lazy("changed"), ordering="change_date")
    def changed(self, obj):
        by = obj.changed_by.get_username() if obj.changed_by else ""
        return format_html(
            '{}<br><small class="quiet">{}</small>',
            _short_datetime(obj.change_date),
            _("by %(user)s") % {"user": by} if by else "",
        )

    def get_fieldsets(self, request, obj=None):
        fields = ("waffle_flag", self.scope_field, "override_choice", "enabled", "note")
        if obj is None:
            description = _(
                "Forces the flag on (roles in Casbin) or off (roles in the legacy table) for "
                "this key. Unchecked “enabled” removes the override: the next rule decides (a "
                "course's org override, then the global flag)."
            )
        else:
            description = _(
                "Saving adds a new row to this key's history (this row stays as it was) and "
                "takes effect at once."
            )
        return [(None, {"fields": fields, "description": description})]


class CourseFlagOverrideAdmin(FlagOverrideAdmin):
    list_display = ("key", "override", "effective_flag", "changed", "history_link")
    list_filter = (*FlagOverrideAdmin.list_filter, CourseKeyFilter)
    search_fields = ("waffle_flag", "course_id")

    @admin.display(description=gettext_lazy("course"), ordering="course_id")
    def key(self, obj):
        return super().key(obj)


class OrgFlagOverrideAdmin(FlagOverrideAdmin):
    list_display = ("key", "override", "effective_flag", "changed", "history_link")
    list_filter = (*FlagOverrideAdmin.list_filter, OrgKeyFilter)
    search_fields = ("waffle_flag", "org")

    @admin.display(description=gettext_lazy("organization"), ordering="org")
    def key(self, obj):
        return super().key(obj)
