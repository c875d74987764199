"""The override admin mixin (:class:`FlagOverrideAdminMixin`) that a host puts on its own
override admins: permissions, key validation in the form, and the changelist columns (current
row, effective flag, history and runs links). Its actions are in :mod:`.actions`, its
post-save messages in :mod:`.feedback`."""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.db.models import Q
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import flags
from ..flags import flag_name
from ..roles import InvalidCourseKey, InvalidOrg
from .actions import OverrideActionsMixin
from .common import _may_view_runs
from .feedback import MigrationFeedbackMixin
from .filters import SHOW_HISTORY, scope_field
from .keys import _parse_scope, _validate_key

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


class FlagOverrideAdminMixin(OverrideActionsMixin, MigrationFeedbackMixin):
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
        # A new override is meant to force something: an unticked "enabled" forces nothing.
        initial.setdefault("enabled", True)
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
