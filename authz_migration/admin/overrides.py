"""The override admins: the mixin (:class:`FlagOverrideAdminMixin`) that a host puts on its own
course / org override admins, and the app's own two admins built on it.

What the mixin does: permissions, key validation in the form (override keys parsed by one
rule, :func:`_parse_scope`, for the form, the columns and the actions), the changelist columns
(current row, effective flag, history and runs links), the filters (the current override of
each key by default, every history row on request, the key a "history" link narrows the list
to), and the actions "Verify" and "Sync now". What a save or an action tells the user is in
:mod:`.feedback`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.options import IS_POPUP_VAR
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Exists, OuterRef, Q
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import api, flags
from ..flags import flag_name
from ..models import MigrationRun
from ..orchestrator import Outcome
from ..roles import InvalidCourseKey, InvalidOrg, normalize_course_key, org_of, validate_org
from .cutover import origin_html
from .feedback import (
    MigrationFeedbackMixin,
    left_out_messages,
    may_view_runs,
    short_datetime,
    sync_messages,
    verify_messages,
)

# --- keys ---------------------------------------------------------------------------------


def _parse_scope(key_field: str, key: str) -> tuple[str, str | None]:
    """(org, course) of an override key; raises InvalidCourseKey / InvalidOrg."""
    if key_field == "course_id":
        course = normalize_course_key(key)
        return org_of(course), course
    return validate_org(key), None


def _validate_key(form, key_field: str) -> None:
    """A form error, not a crash and not a row that can never move anything, for a key of the
    watched flag that is not a course key / org name."""
    data = form.cleaned_data
    value = data.get(key_field)
    flag = data.get("waffle_flag", getattr(form.instance, "waffle_flag", None))
    if value in (None, "") or flag != flag_name():
        return
    try:
        _parse_scope(key_field, str(value))
    except (InvalidCourseKey, InvalidOrg) as exc:
        if key_field == "course_id":
            message = _("%(error)s (letters, digits and - _ ~ . : in each part).")
        else:
            message = _("%(error)s: use letters, digits and - _ ~ . : only.")
        form.add_error(key_field, message % {"error": exc})


# --- filters ------------------------------------------------------------------------------

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
    """The course a "history" link narrows a course override list to."""

    parameter_name = "course_id"


class OrgKeyFilter(ScopeKeyFilter):
    """The org a "history" link narrows an org override list to."""

    parameter_name = "org"


# --- actions ------------------------------------------------------------------------------


class OverrideActionsMixin:
    """The "Verify" and "Sync now" actions of :class:`FlagOverrideAdminMixin` (which names them
    in ``override_actions`` and provides ``scope_field``)."""

    def get_actions(self, request):
        actions = super().get_actions(request)
        if self.actions is None or IS_POPUP_VAR in request.GET:
            return actions
        for name in self.override_actions:
            func, action_name, description = self.get_action(name)
            allowed = getattr(func, "allowed_permissions", ())
            if action_name not in actions and all(
                getattr(self, f"has_{permission}_permission")(request) for permission in allowed
            ):
                actions[action_name] = (func, action_name, description)
        return actions

    def selected_scopes(self, request, queryset) -> tuple[list[str], list[str]]:
        """(courses, orgs) of the selected rows of the watched flag; tells the user about the
        rows it leaves out (other flags, malformed keys)."""
        key_field, watched = self.scope_field, flag_name()
        courses, orgs, other_flags, invalid = set(), set(), set(), set()
        for flag, key in queryset.values_list("waffle_flag", key_field):
            if flag != watched:
                other_flags.add(flag)
                continue
            try:
                org, course = _parse_scope(key_field, str(key))
            except (InvalidCourseKey, InvalidOrg):
                invalid.add(str(key))
                continue
            (courses if course else orgs).add(course or org)
        for message, level in left_out_messages(watched, other_flags, invalid):
            self.message_user(request, message, level)
        return sorted(courses), sorted(orgs)

    @admin.action(
        description=gettext_lazy("Verify: find roles in the wrong system for their flag"),
        permissions=["view"],
    )
    def verify_scopes(self, request, queryset) -> None:
        courses, orgs = self.selected_scopes(request, queryset)
        if not courses and not orgs:
            return
        report = api.verify(courses=courses, orgs=orgs)
        for message, level in verify_messages(report, ", ".join([*courses, *orgs])):
            self.message_user(request, message, level)

    @admin.action(
        description=gettext_lazy("Sync now: move the roles where their flags point"),
        permissions=["change"],
    )
    def sync_scopes(self, request, queryset) -> None:
        courses, orgs = self.selected_scopes(request, queryset)
        outcomes: list[Outcome] = []
        # An empty pass records no run, as in the command (reporting.is_empty_pass).
        options = {
            "trigger": MigrationRun.Trigger.ADMIN,
            "user": request.user,
            "wait": False,
            "record_empty": False,
        }
        for course in courses:
            outcomes += api.sync_course(course, **options)
        for org in orgs:
            outcomes += api.sync_org(org, **options)
        for message, level in sync_messages(request, outcomes):
            self.message_user(request, message, level)


# --- the mixin ----------------------------------------------------------------------------

# Attribute set on each override row of a changelist page: its _RowInfo.
_ROW_INFO = "_authz_migration_row"


class _RowInfo:
    """What the changelist shows about one override row, computed once per page."""

    def __init__(self, current: bool | None = None):
        self.current = current
        self.effective: flags.EffectiveFlag | None = None
        self.problem = ""  # why no effective flag is shown (a malformed key)
        self.runs_url = ""


def _effective(snapshot: flags.FlagSnapshot, org: str, course: str | None) -> flags.EffectiveFlag:
    if course is not None and course in snapshot.courses:
        return flags.EffectiveFlag(snapshot.courses[course], flags.COURSE_OVERRIDE)
    if org in snapshot.orgs:
        return flags.EffectiveFlag(snapshot.orgs[org], flags.ORG_OVERRIDE)
    return flags.EffectiveFlag(snapshot.global_enabled, flags.GLOBAL_FLAG)


def _row_scopes(rows, key_field: str, watched: str) -> tuple[dict, dict]:
    """(org, course) of each row of the watched flag, by ``id(row)``; and why a row's key is
    not one (malformed keys), by ``id(row)``."""
    scopes: dict[int, tuple[str, str | None]] = {}
    problems: dict[int, str] = {}
    for row in rows:
        if row.waffle_flag != watched:
            continue
        try:
            scopes[id(row)] = _parse_scope(key_field, str(getattr(row, key_field)))
        except (InvalidCourseKey, InvalidOrg) as exc:
            problems[id(row)] = str(exc)
    return scopes, problems


class FlagOverrideAdminMixin(OverrideActionsMixin, MigrationFeedbackMixin):
    """Everything the app's own override admins do, for any course or org override admin.

    - columns ``is_current`` (the newest row of its key), ``effective_flag`` (what the flag is
      now for that course / org, and which rule decides it) and ``history_link`` (the key's
      history, and its runs), appended to the host's ``list_display``; computed per page in a
      fixed number of queries, whatever the page size; on org overrides also ``set_by``
      (a cutover pin or release, or an operator's row: :mod:`.cutover`);
    - key validation in the form (for the watched flag), and the watched flag as the initial
      flag of a new row;
    - permissions: adding a row toggles the flag, so it takes the *change* permission; rows
      are history and are never deleted;
    - actions "Verify" (*view* permission) and "Sync now" (*change* permission), added to
      whatever actions the host's admin has;
    - the feedback after a save (:class:`MigrationFeedbackMixin`).

    A host (Open edX: ``waffle_utils``' ``KeyedConfigurationModelAdmin`` subclasses) puts it
    first in the bases of each override admin it wants it on::

        class WaffleFlagOrgOverrideAdmin(FlagOverrideAdminMixin, KeyedConfigurationModelAdmin):
            ...

    The model must have ``waffle_flag``, ``change_date``, ``enabled``, ``override_choice``
    and a ``course_id`` or an ``org`` field, like Open edX's override models.
    """

    override_columns = ("is_current", "effective_flag", "history_link")
    override_actions = ("verify_scopes", "sync_scopes")

    @property
    def scope_field(self) -> str:
        return scope_field(self.model)

    # --- permissions ------------------------------------------------------------------------

    def has_add_permission(self, request) -> bool:
        # Every save adds a row and may flip the flag for a whole org: toggling is changing.
        return self.has_change_permission(request)

    def has_delete_permission(self, request, obj=None) -> bool:
        # Rows are the history the flag is computed from; deleting the current one would flip
        # the flag without any move following it.
        return False

    # --- form -------------------------------------------------------------------------------

    def get_form(self, request, obj=None, change=False, **kwargs):
        base = kwargs.get("form", self.form)
        key_field = self.scope_field

        def clean(form):
            cleaned = base.clean(form)
            _validate_key(form, key_field)
            return cleaned

        kwargs["form"] = type(base.__name__, (base,), {"clean": clean})
        return super().get_form(request, obj, change=change, **kwargs)

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        initial.setdefault("waffle_flag", flag_name())
        # A new override is meant to force something: an unticked "enabled" forces nothing.
        initial.setdefault("enabled", True)
        return initial

    # --- changelist -------------------------------------------------------------------------

    def get_list_display(self, request):
        columns = list(super().get_list_display(request))
        wanted = list(self.override_columns)
        if self.scope_field == "org" and "set_by" not in columns:
            # Operators must never take the cutover's pins for overrides of their own.
            wanted.insert(1 if wanted else 0, "set_by")
        return columns + [name for name in wanted if name not in columns]

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        # Evaluates the page's queryset; the template then iterates the same cached rows.
        self.annotate_rows(request, changelist.result_list)
        return changelist

    def annotate_rows(self, request, rows) -> None:
        """Attach a _RowInfo to each row: four queries for the whole page (newest row per
        key, then the flags through :class:`~authz_migration.flags.FlagSnapshot`)."""
        rows = list(rows)
        if not rows:
            return
        key_field, watched = self.scope_field, flag_name()
        newest = self._newest_rows(rows, key_field)
        scopes, problems = _row_scopes(rows, key_field, watched)
        snapshot = None
        if scopes:
            snapshot = flags.FlagSnapshot(
                {scope[0] for scope in scopes.values()},
                {scope[1] for scope in scopes.values() if scope[1]},
            )
        runs_changelist = self._runs_changelist_url(request)
        for row in rows:
            key = str(getattr(row, key_field))
            info = _RowInfo(current=newest.get((row.waffle_flag, key)) == row.pk)
            if id(row) in scopes:
                info.effective = _effective(snapshot, *scopes[id(row)])
            info.problem = problems.get(id(row), "")
            if runs_changelist and row.waffle_flag == watched:
                info.runs_url = f"{runs_changelist}?{urlencode({'q': key})}"
            setattr(row, _ROW_INFO, info)

    def _newest_rows(self, rows, key_field: str) -> dict[tuple[str, str], Any]:
        """The pk of the newest row of each (flag, key) of ``rows``, in one query."""
        keys_by_flag: dict[str, set] = defaultdict(set)
        for row in rows:
            keys_by_flag[row.waffle_flag].add(getattr(row, key_field))
        match = Q()
        for flag, keys in keys_by_flag.items():
            match |= Q(waffle_flag=flag, **{f"{key_field}__in": keys})
        newest: dict[tuple[str, str], Any] = {}
        history = (
            self.model._default_manager.filter(match)
            .order_by("waffle_flag", key_field, "-change_date", "-id")
            .values_list("pk", "waffle_flag", key_field)
        )
        for pk, flag, key in history:
            # Exact keys: a case-insensitive collation sorts OrgA and orga together.
            newest.setdefault((flag, str(key)), pk)
        return newest

    def _runs_changelist_url(self, request) -> str:
        if request is None or not may_view_runs(request):
            return ""
        try:
            return reverse(
                "admin:authz_migration_migrationrun_changelist", current_app=self.admin_site.name
            )
        except NoReverseMatch:  # a host site without the run admin
            return ""

    def _row_info(self, obj) -> _RowInfo:
        info = getattr(obj, _ROW_INFO, None)
        if info is None:  # shown outside a changelist page: compute it for this row alone
            self.annotate_rows(None, [obj])
            info = getattr(obj, _ROW_INFO)
        return info

    @admin.display(description=gettext_lazy("current"), boolean=True)
    def is_current(self, obj) -> bool | None:
        return self._row_info(obj).current

    @admin.display(description=gettext_lazy("effective flag now"))
    def effective_flag(self, obj):
        info = self._row_info(obj)
        if info.problem:
            return format_html('<span title="{}">{}</span>', info.problem, _("invalid key"))
        if info.effective is None:
            return self.get_empty_value_display()
        return format_html(
            '<strong>{}</strong> ({})<br><small class="quiet">{}</small>',
            _("on") if info.effective.enabled else _("off"),
            _("Casbin") if info.effective.enabled else _("legacy table"),
            _("by %(rule)s") % {"rule": info.effective.source},
        )

    @admin.display(description=gettext_lazy("set by"))
    def set_by(self, obj):
        return origin_html(obj)

    @admin.display(description=gettext_lazy("history"))
    def history_link(self, obj):
        info = self._row_info(obj)
        opts = self.model._meta
        url = reverse(
            f"admin:{opts.app_label}_{opts.model_name}_changelist",
            current_app=self.admin_site.name,
        )
        key_field = self.scope_field
        query = urlencode(
            {SHOW_HISTORY: "1", "waffle_flag": obj.waffle_flag, key_field: getattr(obj, key_field)}
        )
        links = [(f"{url}?{query}", _("history"))]
        if info.runs_url:
            links.append((info.runs_url, _("runs")))
        return format_html_join(" · ", '<a href="{}">{}</a>', links)


# --- the app's own override admins -----------------------------------------------------


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
            short_datetime(obj.change_date),
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
    """The app's own course overrides (``CourseFlagOverride``)."""

    list_display = ("key", "override", "effective_flag", "changed", "history_link")
    list_filter = (*FlagOverrideAdmin.list_filter, CourseKeyFilter)
    search_fields = ("waffle_flag", "course_id")

    @admin.display(description=gettext_lazy("course"), ordering="course_id")
    def key(self, obj):
        return super().key(obj)


class OrgFlagOverrideAdmin(FlagOverrideAdmin):
    """The app's own org overrides (``OrgFlagOverride``)."""

    list_display = ("key", "override", "set_by", "effective_flag", "changed", "history_link")
    list_filter = (*FlagOverrideAdmin.list_filter, OrgKeyFilter)
    search_fields = ("waffle_flag", "org")

    @admin.display(description=gettext_lazy("organization"), ordering="org")
    def key(self, obj):
        return super().key(obj)
