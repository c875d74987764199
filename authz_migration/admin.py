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
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.auth import get_permission_codename
from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Exists, OuterRef, Q
from django.urls import NoReverseMatch, reverse
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.timezone import localtime
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from . import api, flags
from .automatic import RESULT_ATTRIBUTE
from .conf import get_setting
from .flags import flag_name
from .models import CourseAccessRole, CourseFlagOverride, MigrationRun, OrgFlagOverride
from .orchestrator import FORWARD, Outcome
from .roles import InvalidCourseKey, InvalidOrg, normalize_course_key, org_of, validate_org

# The query parameter that shows every history row, not only the current one. The same name
# as django-config-models' ShowHistoryFilter, so history links work on Open edX's admins too.
SHOW_HISTORY = "show_history"
# Attribute set on each override row of a changelist page: its _RowInfo.
_ROW_INFO = "_authz_migration_row"
# Lists in messages stop after this many entries ("and N more").
_MESSAGE_LIST_LIMIT = 20


def _system(enabled: bool) -> str:
    return _("Casbin") if enabled else _("the legacy table")


def _run_link(request, run: MigrationRun | None) -> str:
    """The words "run #N", linked to the run's page when the user may see runs."""
    if run is None:
        return _("no run recorded")
    label = _("run #%(id)s") % {"id": run.pk}
    if not _may_view_runs(request):
        return label
    url = reverse("admin:authz_migration_migrationrun_change", args=[run.pk])
    return format_html('<a href="{}">{}</a>', url, label)


def _short_datetime(value) -> str:
    return date_format(localtime(value), "Y-m-d H:i") if value else ""


def _view_codename(model) -> str:
    return get_permission_codename("view", model._meta)


def _may_view_runs(request) -> bool:
    """The rule of :meth:`MigrationRunAdmin.has_view_permission`: the view permission."""
    return request.user.has_perm(f"authz_migration.{_view_codename(MigrationRun)}")


class CourseAccessRoleAdmin(admin.ModelAdmin):
    """The legacy role table, as Open edX's own admin shows it."""

    list_display = ("id", "user", "org", "course_id", "role")
    list_filter = ("role",)
    search_fields = ("user__username", "org", "course_id", "role")
    # A select of every user does not scale to a real site.
    raw_id_fields = ("user",)


# --- overrides ------------------------------------------------------------------------------


class MigrationFeedbackMixin:
    """Tells the person who saved an override what that did to role data: what moved, with a
    link to the run; why nothing moved; or that the move failed and the change was undone.

    It also records the saver as the row's ``changed_by``. A host registers it on its own
    override admin (e.g. Open edX's waffle_utils admins), first in the bases::

        class WaffleFlagOrgOverrideAdmin(MigrationFeedbackMixin, KeyedConfigurationModelAdmin):
            ...

    :class:`FlagOverrideAdminMixin` adds the effective flag, history links, key validation,
    permissions and the "Verify" / "Sync now" actions on top of this.
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
        link = _run_link(request, run)
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


class _RowInfo:
    """What the changelist shows about one override row, computed once per page. (A plain
    class: tests load this module under another name, where a dataclass cannot resolve its
    annotations.)"""

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


class FlagOverrideAdminMixin(MigrationFeedbackMixin):
    """Everything the app's own override admins do, for any course or org override admin.

    - columns ``is_current`` (the newest row of its key), ``effective_flag`` (what the flag is
      now for that course / org, and which rule decides it) and ``history_link`` (the key's
      history, and its runs), appended to the host's ``list_display``; computed per page in a
      fixed number of queries, whatever the page size;
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
        return initial

    # --- changelist -------------------------------------------------------------------------

    def get_list_display(self, request):
        columns = list(super().get_list_display(request))
        return columns + [name for name in self.override_columns if name not in columns]

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

        scopes: dict[int, tuple[str, str | None]] = {}
        problems: dict[int, str] = {}
        for row in rows:
            if row.waffle_flag != watched:
                continue
            try:
                scopes[id(row)] = _parse_scope(key_field, str(getattr(row, key_field)))
            except (InvalidCourseKey, InvalidOrg) as exc:
                problems[id(row)] = str(exc)
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

    def _runs_changelist_url(self, request) -> str:
        if request is None or not _may_view_runs(request):
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

    # --- actions ----------------------------------------------------------------------------

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
        if other_flags:
            self.message_user(
                request,
                _("Left out: overrides of other flags than %(flag)s (%(others)s).")
                % {"flag": watched, "others": ", ".join(sorted(other_flags))},
                messages.INFO,
            )
        if invalid:
            self.message_user(
                request,
                _("Left out: keys that are not valid, so no roles can move for them: %(keys)s.")
                % {"keys": ", ".join(sorted(invalid))},
                messages.ERROR,
            )
        return sorted(courses), sorted(orgs)

    @admin.action(
        description=gettext_lazy("Verify: find roles in the wrong system for their flag"),
        permissions=["view"],
    )
    def verify_scopes(self, request, queryset) -> None:
        courses, orgs = self.selected_scopes(request, queryset)
        if not courses and not orgs:
            return
        drift = {(p.org, p.course): p for p in api.verify_scope(courses=courses, orgs=orgs)}
        names = ", ".join([*courses, *orgs])
        if not drift:
            self.message_user(
                request,
                _("No drift: every role of %(scopes)s sits in the system its flag points to.")
                % {"scopes": names},
                messages.SUCCESS,
            )
            return
        placements = sorted(drift.values(), key=lambda p: (p.org, p.course or ""))
        items = [
            (
                p.scope,
                _("flag %(state)s, so roles belong in %(target)s; %(count)s still in %(where)s")
                % {
                    "state": _("on") if p.authz_enabled else _("off"),
                    "target": _system(p.authz_enabled),
                    "count": p.misplaced,
                    "where": _system(not p.authz_enabled),
                },
            )
            for p in placements[:_MESSAGE_LIST_LIMIT]
        ]
        more = len(placements) - len(items)
        self.message_user(
            request,
            format_html(
                "{} {}{}{}",
                ngettext(
                    "Drift in %(count)d scope:",
                    "Drift in %(count)d scopes:",
                    len(placements),
                )
                % {"count": len(placements)},
                _("“Sync now” moves these roles where their flags point."),
                format_html_join("", "<br>• {}: {}", items),
                format_html("<br>… {}", _("and %(count)d more") % {"count": more}) if more else "",
            ),
            messages.WARNING,
        )

    @admin.action(
        description=gettext_lazy("Sync now: move the roles where their flags point"),
        permissions=["change"],
    )
    def sync_scopes(self, request, queryset) -> None:
        courses, orgs = self.selected_scopes(request, queryset)
        outcomes: list[Outcome] = []
        options = {"trigger": MigrationRun.Trigger.API, "user": request.user, "wait": False}
        for course in courses:
            outcomes += api.sync_course(course, **options)
        for org in orgs:
            outcomes += api.sync_org(org, **options)
        for outcome in outcomes[:_MESSAGE_LIST_LIMIT]:
            self.report_outcome(request, outcome)
        if len(outcomes) > _MESSAGE_LIST_LIMIT:
            self.message_user(
                request,
                _("… and %(count)d more runs, under Migration runs.")
                % {"count": len(outcomes) - _MESSAGE_LIST_LIMIT},
                messages.INFO,
            )

    def report_outcome(self, request, outcome: Outcome) -> None:
        """One message for one sync run, at the level its status deserves."""
        move, counts = outcome.move, outcome.counts
        status = outcome.status
        if status == MigrationRun.Status.FAILED:
            text = _("Sync of {scope} failed; nothing moved ({link}): {error}")
            level = messages.ERROR
        elif status == MigrationRun.Status.SKIPPED:
            text = _("Sync of {scope} skipped ({link}): {reason}")
            level = messages.WARNING
        elif not counts.get("moved") and not counts.get("could_not_move"):
            text = _(
                "Sync of {scope}: nothing to move to {target}, its roles already sit where "
                "their flags point ({link})."
            )
            level = messages.INFO
        else:
            text = _(
                "Sync of {scope}: moved {moved} role(s) to {target} ({link}); not migrated: "
                "{not_migrated}, could not move: {could_not_move}, excluded courses: {excluded}."
            )
            level = (
                messages.SUCCESS if status == MigrationRun.Status.COMPLETED else messages.WARNING
            )
        message = format_html(
            text,
            scope=f"{move.scope_type} {move.scope_key}".strip(),
            link=_run_link(request, outcome.run),
            target=_system(move.direction == FORWARD),
            moved=counts.get("moved", 0),
            not_migrated=counts.get("not_migrated", 0),
            could_not_move=counts.get("could_not_move", 0),
            excluded=outcome.metadata.get("excluded_courses", {}).get("count", 0),
            error=outcome.metadata.get("error", ""),
            reason=outcome.metadata.get("reason", ""),
        )
        self.message_user(request, message, level)


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


# --- runs -----------------------------------------------------------------------------------


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
        gettext_lazy("rows of courses pinned by their own course override"),
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
    scope = f"{run.scope_type} {run.scope_key}".strip()
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


if not CourseAccessRole._meta.swapped:
    admin.site.register(CourseAccessRole, CourseAccessRoleAdmin)
if not CourseFlagOverride._meta.swapped:
    admin.site.register(CourseFlagOverride, CourseFlagOverrideAdmin)
if not OrgFlagOverride._meta.swapped:
    admin.site.register(OrgFlagOverride, OrgFlagOverrideAdmin)
admin.site.register(MigrationRun, MigrationRunAdmin)
