"""The override changelists' filters: the current override of each key by default (every
history row on request), and the key a "history" link narrows the list to. Also the helpers
that find an override model's key field and the current row of each key."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Exists, OuterRef, Q
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

# The query parameter that shows every history row, not only the current one. The same name
# as django-config-models' ShowHistoryFilter, so history links work on Open edX's admins too.
SHOW_HISTORY = "show_history"


def scope_field(model) -> str:
    """The key field of an override model: ``course_id`` (course overrides) or ``org``."""
    names = {field.name for field in model._meta.get_fields()}
    for name in ("course_id", "org"):
        if name in names:
            return name
    raise ImproperlyConfigured(f"{model.__name__} has neither a course_id nor an org field")


def current_rows(queryset, key_field: str):
    """Rows that are the newest of their (flag, key): latest ``change_date``, then highest id,
    as :mod:`authz_migration.flags` decides. One correlated ``NOT EXISTS``, served by the
    (flag, key, change_date) index. Under MariaDB's case-insensitive collations, keys that
    differ in letter case only count as one key here (the flags tell them apart)."""
    newer = queryset.model._default_manager.filter(
        Q(change_date__gt=OuterRef("change_date"))
        | Q(change_date=OuterRef("change_date"), pk__gt=OuterRef("pk")),
        waffle_flag=OuterRef("waffle_flag"),
        **{key_field: OuterRef(key_field)},
    )
    return queryset.filter(~Exists(newer))


class CurrentOverrideFilter(admin.SimpleListFilter):
    """Current rows (the newest per flag and key) by default; every history row on request.
    The shape of Open edX's ``ShowHistoryFilter``, which operators already know."""

    title = gettext_lazy("history")
    parameter_name = SHOW_HISTORY

    def lookups(self, request, model_admin):
        return [("1", _("All rows (show history)"))]

    def choices(self, changelist):
        show_all = self.value() == "1"
        yield {
            "selected": not show_all,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": _("Current override per key"),
        }
        yield {
            "selected": show_all,
            "query_string": changelist.get_query_string({self.parameter_name: "1"}),
            "display": _("All rows (show history)"),
        }

    def queryset(self, request, queryset):
        if self.value() == "1":
            return queryset
        return current_rows(queryset, scope_field(queryset.model))


class ScopeKeyFilter(admin.SimpleListFilter):
    """Shown only while the list is narrowed to one key (a "history" link), so that the
    sidebar says which key and offers the way back to all keys."""

    title = gettext_lazy("key")

    def lookups(self, request, model_admin):
        value = self.value()
        return [(value, value)] if value else []

    def choices(self, changelist):
        yield {
            "selected": False,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": _("All keys"),
        }
        yield {
            "selected": True,
            "query_string": changelist.get_query_string(),
            "display": self.value(),
        }

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(**{self.parameter_name: value}) if value else queryset


class CourseKeyFilter(ScopeKeyFilter):
    parameter_name = "course_id"


class OrgKeyFilter(ScopeKeyFilter):
    parameter_name = "org"
