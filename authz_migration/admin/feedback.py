"""The messages after an override is saved (:class:`MigrationFeedbackMixin`): what moved, why
nothing moved, or that the move failed and the change was undone."""

from __future__ import annotations

from django.contrib import messages
from django.utils.html import format_html
from django.utils.translation import gettext as _

from ..automatic import RESULT_ATTRIBUTE
from ..conf import get_setting
from ..flags import flag_name
from ..models import MigrationRun, scope_label
from ..orchestrator import FORWARD
from .common import _pinned_and_split, _run_link


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
        if obj.waffle_flag != flag_name():
            return
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
        if result.outcome is None:
            messages.warning(
                request,
                not_enabled + _("No roles moved: %(reason)s.") % {"reason": result.reason},
            )
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
        left_alone = _pinned_and_split(outcome)
        level = (
            messages.SUCCESS
            if outcome.status == MigrationRun.Status.COMPLETED
            and not outcome.metadata.get("org_wide_roles_split")
            else messages.WARNING
        )
        messages.add_message(
            request,
            level,
            format_html(
                "Moved {} role(s) of {} {} ({}); not migrated: {}, could not move: {}.{}",
                counts.get("moved", 0),
                scope_label(run.scope_type, run.scope_key),
                direction,
                link,
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
