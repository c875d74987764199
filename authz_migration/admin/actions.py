"""The override admins' actions: "Verify" (where do the roles of the selected scopes sit,
against their flags?) and "Sync now" (move them where their flags point, recorded as runs)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from .. import api
from ..flags import flag_name
from ..models import MigrationRun, scope_label
from ..orchestrator import FORWARD, Outcome
from ..reporting import is_empty_pass
from ..roles import InvalidCourseKey, InvalidOrg
from .common import _pinned_and_split, _run_link, _system
from .keys import _parse_scope

# Lists in messages stop after this many entries ("and N more").
_MESSAGE_LIST_LIMIT = 20


class OverrideActionsMixin:
    """The "Verify" and "Sync now" actions of :class:`~authz_migration.admin.FlagOverrideAdminMixin`
    (which names them in ``override_actions`` and provides ``scope_field``)."""

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
        report = api.verify(courses=courses, orgs=orgs)
        drift = {(p.org, p.course): p for p in report.drift}
        names = ", ".join([*courses, *orgs])
        if report.cannot_move:
            self.message_user(request, _stuck_message(report), messages.ERROR)
        if not drift:
            if not report.cannot_move:
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
        elif is_empty_pass(outcome):
            text = _(
                "Sync of {scope}: nothing to move to {target}; its roles already sit where "
                "their flags point (no run recorded)."
            )
            level = messages.INFO
        else:
            text = _(
                "Sync of {scope}: moved {moved} role(s) to {target} ({link}); not migrated: "
                "{not_migrated}, could not move: {could_not_move}.{left_alone}"
            )
            level = (
                messages.SUCCESS
                if status == MigrationRun.Status.COMPLETED
                and not outcome.metadata.get("org_wide_roles_split")
                else messages.WARNING
            )
        message = format_html(
            text,
            scope=scope_label(move.scope_type, move.scope_key),
            link=_run_link(request, outcome.run),
            target=_system(move.direction == FORWARD),
            moved=counts.get("moved", 0),
            not_migrated=counts.get("not_migrated", 0),
            could_not_move=counts.get("could_not_move", 0),
            left_alone=(" " + _pinned_and_split(outcome)).rstrip(),
            error=outcome.metadata.get("error", ""),
            reason=outcome.metadata.get("reason", ""),
        )
        self.message_user(request, message, level)


def _stuck_message(report):
    """Rows that belong in the other system but cannot move, by reason: no sync moves them."""
    items = [
        (
            reason,
            count,
            ", ".join(
                f"#{row['id']} {row.get('scope', '')}" for row in report.cannot_move_rows[reason]
            ),
        )
        for reason, count in sorted(report.cannot_move.items())
    ]
    return format_html(
        "{} {}{}",
        ngettext(
            "%(count)d role row cannot move:",
            "%(count)d role rows cannot move:",
            sum(report.cannot_move.values()),
        )
        % {"count": sum(report.cannot_move.values())},
        _("no sync moves them; fix or remove these rows (details: authz_migrate verify)."),
        format_html_join("", "<br>• {} ({}): {}", items),
    )
