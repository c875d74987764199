"""What the admin tells the user about role data: the messages after an override is saved
(:class:`MigrationFeedbackMixin`), after the global flag is saved
(:class:`GlobalFlagFeedbackMixin`) and after the "Verify" / "Sync now" actions
(:func:`left_out_messages`, :func:`verify_messages`, :func:`sync_messages`); and the words and
links they share with the admins' columns (the system a flag points to, the "run #N" link,
short dates).

The global-flag warning: waffle registers its ``FlagAdmin``; :func:`add_global_flag_feedback`
replaces that registration with a subclass that collects the warnings
:mod:`authz_migration.automatic` records during the request (the change form, the list's
"enable/disable for everyone" actions, delete) and shows each as a message, so that the person
who flipped the flag reads at once that roles were left in the system it no longer names. No
middleware and no state outside the request are involved.
"""

from __future__ import annotations

import importlib

from django.apps import apps
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.urls import reverse
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.timezone import localtime
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ..automatic import RESULT_ATTRIBUTE, global_flag_reports
from ..conf import get_setting
from ..flags import flag_name
from ..models import MigrationRun, scope_label
from ..orchestrator import FORWARD, Outcome
from ..reporting import is_empty_pass
from .cutover import add_progress_notice, add_row_notice, is_org_override

# Lists in messages stop after this many entries ("and N more").
_MESSAGE_LIST_LIMIT = 20

# --- shared words and links ---------------------------------------------------------------


def system_name(enabled: bool) -> str:
    """The system the roles live in when the flag is ``enabled`` (Casbin) or not."""
    return _("Casbin") if enabled else _("the legacy table")


def may_view_runs(request) -> bool:
    """Whether the user may see runs: the view permission (the run admin's rule too)."""
    codename = get_permission_codename("view", MigrationRun._meta)
    return request.user.has_perm(f"authz_migration.{codename}")


def run_link(request, run: MigrationRun | None) -> str:
    """The words "run #N", linked to the run's page when the user may see runs."""
    if run is None:
        return _("no run recorded")
    label = _("run #%(id)s") % {"id": run.pk}
    if not may_view_runs(request):
        return label
    url = reverse("admin:authz_migration_migrationrun_change", args=[run.pk])
    return format_html('<a href="{}">{}</a>', url, label)


def short_datetime(value) -> str:
    """A date and time to the minute, in the current time zone; empty for no value."""
    return date_format(localtime(value), "Y-m-d H:i") if value else ""


def _names(capped: dict, limit: int = 3) -> str:
    items = [str(item) for item in capped.get("items", [])[:limit]]
    more = capped.get("count", len(items)) - len(items)
    return ", ".join(items) + (_(" and %(count)d more") % {"count": more} if more > 0 else "")


def _pinned_note(outcome: Outcome, excluded: dict) -> str:
    return ngettext(
        "Left alone: %(rows)d role row(s) of %(count)d course pinned by its own override "
        "(%(names)s).",
        "Left alone: %(rows)d role row(s) of %(count)d courses pinned by their own override "
        "(%(names)s).",
        excluded["count"],
    ) % {
        "rows": outcome.counts.get("excluded", 0),
        "count": excluded["count"],
        "names": _names(excluded),
    }


def _split_note(outcome: Outcome, split: dict) -> str:
    forward = outcome.move.direction == "forward"
    return ngettext(
        "%(count)d course pinned to %(other)s (%(names)s) no longer sees the org-wide "
        "roles of %(org)s, which now live in %(target)s; give its people course roles "
        "there if they still need them.",
        "%(count)d courses pinned to %(other)s (%(names)s) no longer see the org-wide "
        "roles of %(org)s, which now live in %(target)s; give their people course "
        "roles there if they still need them.",
        split["count"],
    ) % {
        "count": split["count"],
        "other": system_name(not forward),
        "names": _names(split),
        "org": outcome.move.scope_key,
        "target": system_name(forward),
    }


def _pinned_and_split(outcome: Outcome) -> str:
    """What an org move left alone, in rows and courses both named: the courses pinned by
    their own override, and those of them that no longer see the org-wide roles
    (docs/decisions/0006). Empty when neither applies."""
    metadata = outcome.metadata
    excluded = metadata.get("excluded_courses") or {}
    split = metadata.get("org_wide_roles_split") or {}
    parts = []
    if excluded.get("count"):
        parts.append(_pinned_note(outcome, excluded))
    if split.get("count"):
        parts.append(_split_note(outcome, split))
    return " ".join(parts)


def _move_level(outcome: Outcome) -> int:
    """Success for a completed move that split nothing; a warning otherwise."""
    if outcome.status == MigrationRun.Status.COMPLETED and not outcome.metadata.get(
        "org_wide_roles_split"
    ):
        return messages.SUCCESS
    return messages.WARNING


# --- after an override is saved -----------------------------------------------------------


class MigrationFeedbackMixin:
    """Tells the person who saved an override what that did to role data: what moved, with a
    link to the run; why nothing moved; or that the move failed and the change was undone.

    It also records the saver as the row's ``changed_by``; and on an org override admin it
    shows the instance cutover's progress atop the list, and says on the page of a row the
    cutover wrote that it is the cutover's (:mod:`.cutover`). A host registers it on its own
    override admin (e.g. Open edX's waffle_utils admins), first in the bases::

        class WaffleFlagOrgOverrideAdmin(MigrationFeedbackMixin, KeyedConfigurationModelAdmin):
            ...

    :class:`FlagOverrideAdminMixin` adds the effective flag, history links, key validation,
    permissions and the "Verify" / "Sync now" actions on top of this.
    """

    def changelist_view(self, request, extra_context=None):
        # On org overrides: how far the instance cutover has got (docs/decisions/0013).
        if is_org_override(self.model) and self.has_view_or_change_permission(request):
            add_progress_notice(request)
        return super().changelist_view(request, extra_context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        # A row the cutover wrote must never pass for an operator's.
        if obj is not None and is_org_override(self.model):
            add_row_notice(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def save_model(self, request, obj, form, change):
        # changed_by is not a form field: the author of a row is whoever saved it.
        obj.changed_by = request.user
        super().save_model(request, obj, form, change)
        self.report_migration(request, obj)

    def report_migration(self, request, obj) -> None:
        """One message on what the save of ``obj`` did to the roles of the watched flag."""
        if obj.waffle_flag != flag_name():
            return
        result = getattr(obj, RESULT_ATTRIBUTE, None)
        if result is None or result.outcome is None:
            _report_no_move(request, obj, result)
        elif result.failed:
            _report_failed_move(request, result.outcome)
        else:
            _report_move(request, result.outcome)


def _report_no_move(request, obj, result) -> None:
    """Nothing moved: automatic moves are off, or the save's receiver said why not."""
    not_enabled = _not_enabled_note(obj)
    if result is None:
        if not get_setting("AUTOMATIC"):
            messages.warning(
                request,
                not_enabled
                + _(
                    "Automatic moves are off (AUTHZ_MIGRATION_AUTOMATIC): no roles moved. "
                    "Run `authz_migrate sync` for this scope."
                ),
            )
        return
    messages.warning(
        request, not_enabled + _("No roles moved: %(reason)s.") % {"reason": result.reason}
    )


def _report_failed_move(request, outcome: Outcome) -> None:
    messages.error(
        request,
        format_html(
            "Moving the roles failed, so this change was undone and the flag is as it "
            "was (see {}): {}",
            run_link(request, outcome.run),
            outcome.metadata.get("error", ""),
        ),
    )


def _report_move(request, outcome: Outcome) -> None:
    counts, run = outcome.counts, outcome.run
    direction = "to Casbin" if outcome.move.direction == FORWARD else "to the legacy table"
    left_alone = _pinned_and_split(outcome)
    messages.add_message(
        request,
        _move_level(outcome),
        format_html(
            "Moved {} role(s) of {} {} ({}); not migrated: {}, could not move: {}.{}",
            counts.get("moved", 0),
            scope_label(run.scope_type, run.scope_key),
            direction,
            run_link(request, run),
            counts.get("not_migrated", 0),
            counts.get("could_not_move", 0),
            f" {left_alone}" if left_alone else "",
        ),
    )


def _not_enabled_note(obj) -> str:
    """Saving an override with "Enabled" unticked removes the override rather than forcing
    anything: say so, since the form also asks for on/off."""
    if obj.enabled:
        return ""
    return _(
        "Saved as not enabled: this override forces nothing, the next rule decides (a "
        "course's org override, then the global flag); tick “Enabled” to force the flag "
        "%(choice)s. "
    ) % {"choice": _("on") if obj.override_choice == "on" else _("off")}


# --- after the "Verify" and "Sync now" actions --------------------------------------------


def left_out_messages(watched: str, other_flags: set, invalid: set) -> list[tuple[str, int]]:
    """(message, level) pairs for the selected rows an action leaves out: overrides of other
    flags than ``watched``, and keys that are not valid."""
    found = []
    if other_flags:
        found.append(
            (
                _("Left out: overrides of other flags than %(flag)s (%(others)s).")
                % {"flag": watched, "others": ", ".join(sorted(other_flags))},
                messages.INFO,
            )
        )
    if invalid:
        found.append(
            (
                _("Left out: keys that are not valid, so no roles can move for them: %(keys)s.")
                % {"keys": ", ".join(sorted(invalid))},
                messages.ERROR,
            )
        )
    return found


def verify_messages(report, scopes: str) -> list[tuple[str, int]]:
    """(message, level) pairs for a "Verify" of ``scopes`` (their names, joined): rows that
    cannot move, then the drift, or that there is none."""
    found = []
    if report.cannot_move:
        found.append((_stuck_message(report), messages.ERROR))
    drift = {(p.org, p.course): p for p in report.drift}
    if drift:
        placements = sorted(drift.values(), key=lambda p: (p.org, p.course or ""))
        found.append((_drift_message(placements), messages.WARNING))
    elif not report.cannot_move:
        found.append(
            (
                _("No drift: every role of %(scopes)s sits in the system its flag points to.")
                % {"scopes": scopes},
                messages.SUCCESS,
            )
        )
    return found


def _drift_message(placements) -> str:
    items = [
        (
            p.scope,
            _("flag %(state)s, so roles belong in %(target)s; %(count)s still in %(where)s")
            % {
                "state": _("on") if p.authz_enabled else _("off"),
                "target": system_name(p.authz_enabled),
                "count": p.misplaced,
                "where": system_name(not p.authz_enabled),
            },
        )
        for p in placements[:_MESSAGE_LIST_LIMIT]
    ]
    more = len(placements) - len(items)
    return format_html(
        "{} {}{}{}",
        ngettext("Drift in %(count)d scope:", "Drift in %(count)d scopes:", len(placements))
        % {"count": len(placements)},
        _("“Sync now” moves these roles where their flags point."),
        format_html_join("", "<br>• {}: {}", items),
        format_html("<br>… {}", _("and %(count)d more") % {"count": more}) if more else "",
    )


def _stuck_message(report) -> str:
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


def _outcome_text(outcome: Outcome) -> tuple[str, int]:
    """The message template for a sync run, and the level its status deserves."""
    status = outcome.status
    if status == MigrationRun.Status.FAILED:
        return _("Sync of {scope} failed; nothing moved ({link}): {error}"), messages.ERROR
    if status == MigrationRun.Status.SKIPPED:
        return _("Sync of {scope} skipped ({link}): {reason}"), messages.WARNING
    if is_empty_pass(outcome):
        text = _(
            "Sync of {scope}: nothing to move to {target}; its roles already sit where "
            "their flags point (no run recorded)."
        )
        return text, messages.INFO
    text = _(
        "Sync of {scope}: moved {moved} role(s) to {target} ({link}); not migrated: "
        "{not_migrated}, could not move: {could_not_move}.{left_alone}"
    )
    return text, _move_level(outcome)


def _outcome_message(request, outcome: Outcome) -> tuple[str, int]:
    """(message, level) for one run of "Sync now"."""
    move, counts = outcome.move, outcome.counts
    text, level = _outcome_text(outcome)
    message = format_html(
        text,
        scope=scope_label(move.scope_type, move.scope_key),
        link=run_link(request, outcome.run),
        target=system_name(move.direction == FORWARD),
        moved=counts.get("moved", 0),
        not_migrated=counts.get("not_migrated", 0),
        could_not_move=counts.get("could_not_move", 0),
        left_alone=(" " + _pinned_and_split(outcome)).rstrip(),
        error=outcome.metadata.get("error", ""),
        reason=outcome.metadata.get("reason", ""),
    )
    return message, level


def sync_messages(request, outcomes: list[Outcome]) -> list[tuple[str, int]]:
    """(message, level) pairs for a "Sync now": one per run, up to a limit, then how many
    more runs there are."""
    found = [_outcome_message(request, outcome) for outcome in outcomes[:_MESSAGE_LIST_LIMIT]]
    if len(outcomes) > _MESSAGE_LIST_LIMIT:
        found.append(
            (
                _("… and %(count)d more runs, under Migration runs.")
                % {"count": len(outcomes) - _MESSAGE_LIST_LIMIT},
                messages.INFO,
            )
        )
    return found


# --- after the global flag is saved -------------------------------------------------------


class GlobalFlagFeedbackMixin:
    """Shows the global-flag warnings of the request's saves and deletes as messages."""

    def changeform_view(self, request, *args, **kwargs):
        with global_flag_reports() as reports:
            response = super().changeform_view(request, *args, **kwargs)
        self._report_global(request, reports)
        return response

    def changelist_view(self, request, *args, **kwargs):
        with global_flag_reports() as reports:
            response = super().changelist_view(request, *args, **kwargs)
        self._report_global(request, reports)
        return response

    def delete_view(self, request, *args, **kwargs):
        with global_flag_reports() as reports:
            response = super().delete_view(request, *args, **kwargs)
        self._report_global(request, reports)
        return response

    def _report_global(self, request, reports) -> None:
        for message, run in reports:
            messages.warning(
                request,
                format_html(
                    "{} ({}). {}",
                    message[:1].upper() + message[1:],
                    run_link(request, run),
                    _(
                        "Nothing moved automatically: a global change could be an "
                        "instance-wide move inside one request."
                    ),
                ),
            )


def add_global_flag_feedback(site: admin.AdminSite = admin.site) -> None:
    """Re-register the waffle flag's admin on ``site`` with :class:`GlobalFlagFeedbackMixin`
    (once; nothing happens when waffle's admin pages are off)."""
    from waffle import get_waffle_flag_model

    if apps.is_installed("waffle"):
        # waffle's admin registers itself on import; our app may come first in INSTALLED_APPS.
        importlib.import_module("waffle.admin")
    model = get_waffle_flag_model()
    if not site.is_registered(model):
        return
    # get_model_admin is Django 5.0+; the registry dict is what it reads.
    get = getattr(site, "get_model_admin", None) or site._registry.__getitem__
    current = type(get(model))
    if issubclass(current, GlobalFlagFeedbackMixin):
        return
    site.unregister(model)
    site.register(model, type(current.__name__, (GlobalFlagFeedbackMixin, current), {}))
