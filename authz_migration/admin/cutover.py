"""What the admin shows of the instance cutover (docs/decisions/0013): which org override
rows are the cutover's pins and releases rather than an operator's (a column, and a notice on
such a row's page), and how far the cutover has got (a notice on the org override list and on
the run list: orgs released, orgs still held, role rows moved).

The rows are recognised by their note (:func:`authz_migration.pins.is_cutover_row`), so the
column costs no query; the progress notice is :func:`authz_migration.cutover.progress` plus
the global flag: a fixed number of queries, whatever the number of pins.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from .. import cutover, flags, pins

PIN = "pin"
RELEASE = "release"
OPERATOR = "operator"
# Held orgs named in the notice; the rest are counted.
NAMED_HELD_ORGS = 5


def origin(row) -> str:
    """Who wrote an org override row: the cutover (``pin``: it holds the org; ``release``:
    it let the org follow the global flag again) or an ``operator``."""
    current = (bool(row.enabled), row.override_choice, row.note or "")
    if not pins.is_cutover_row(current):
        return OPERATOR
    return PIN if pins.is_pin(current) else RELEASE


def is_org_override(model) -> bool:
    """Whether ``model`` is an org override model (an ``org`` field, no ``course_id``)."""
    names = {field.name for field in model._meta.get_fields()}
    return "org" in names and "course_id" not in names


def _is_newest(row) -> bool:
    newest = (
        type(row)
        ._default_manager.filter(waffle_flag=row.waffle_flag, org=row.org)
        .order_by("-change_date", "-id")
        .values_list("pk", flat=True)
        .first()
    )
    return newest == row.pk


def _target() -> str:
    return "authz" if flags.global_state() else "legacy"


def origin_html(row):
    """The "set by" column: a cutover pin or release, told apart from an operator's row."""
    kind = origin(row)
    if kind == OPERATOR:
        return _("operator")
    label = _("cutover pin") if kind == PIN else _("cutover release")
    hint = _("`authz_migrate cutover` releases it") if kind == PIN else _("written by the cutover")
    return format_html(
        '<strong class="authz-cutover-{}">{}</strong><br><small class="quiet">{}</small>',
        kind,
        label,
        hint,
    )


def row_notice(row) -> str:
    """What the page of a cutover row says about it; empty for an operator's row."""
    kind = origin(row)
    if kind == OPERATOR:
        return ""
    if kind == PIN and not _is_newest(row):
        return _(
            "This row was a cutover pin, written by `authz_migrate cutover` (or a change of "
            "the global flag), not by an operator; a newer row of %(org)s decides now."
        ) % {"org": row.org}
    if kind == RELEASE:
        return _(
            "This row was written by the cutover (`authz_migrate cutover`), not by an "
            "operator: it released the org's cutover pin, so the org follows the global flag."
        )
    return _(
        "This row is a cutover pin, not an operator's override: `authz_migrate cutover` (or a "
        "change of the global flag) wrote it to hold %(org)s on its state while the global "
        "flag changes, and `authz_migrate cutover --to %(to)s` releases it, moving the org's "
        "roles. Saving a row of your own for %(org)s replaces the pin: the cutover then "
        "leaves the org alone."
    ) % {"org": row.org, "to": _target()}


def progress_notice() -> tuple[str, int] | None:
    """(message, level) on the cutover's progress; None when no cutover pin was ever
    written."""
    progress = cutover.progress()
    held = progress["pinned"]
    if not held and not progress["released"]:
        return None
    done = ngettext(
        "%(count)d org released (%(rows)d role row(s) moved)",
        "%(count)d orgs released (%(rows)d role row(s) moved)",
        progress["released"],
    ) % {"count": progress["released"], "rows": progress["rows_moved"]}
    if not held:
        return _("Cutover: %(done)s; no org is held by a cutover pin.") % {"done": done}, (
            messages.INFO
        )
    names = ", ".join(held[:NAMED_HELD_ORGS])
    if len(held) > NAMED_HELD_ORGS:
        names += _(" and %(count)d more") % {"count": len(held) - NAMED_HELD_ORGS}
    text = _(
        "Cutover in progress: %(done)s, %(held)d held on their previous state by cutover "
        "pins (%(names)s). `authz_migrate cutover --to %(to)s` releases them."
    ) % {"done": done, "held": len(held), "names": names, "to": _target()}
    return text, messages.WARNING


def shows_notices(request) -> bool:
    """Notices go on pages shown to a person (GET, not a popup), so that none is carried
    over to the page after a POST's redirect."""
    return request.method == "GET" and IS_POPUP_VAR not in request.GET


def add_progress_notice(request) -> None:
    """The cutover's progress as a message atop the page, when there is any."""
    if not shows_notices(request):
        return
    notice = progress_notice()
    if notice is not None:
        messages.add_message(request, notice[1], notice[0])


def add_row_notice(request, row) -> None:
    """The page of a row the cutover wrote says so, as a warning message."""
    if row is None or not shows_notices(request):
        return
    notice = row_notice(row)
    if notice:
        messages.warning(request, notice)
