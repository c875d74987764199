"""Small helpers that several admin modules share: the name of the system a flag points to,
the "run #N" link (only for users who may see runs), short dates, and the rule of who may view
runs."""

from __future__ import annotations

from django.contrib.auth import get_permission_codename
from django.urls import reverse
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.timezone import localtime
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ..models import MigrationRun


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
    """The rule of :meth:`.runs.MigrationRunAdmin.has_view_permission`: the view permission."""
    return request.user.has_perm(f"authz_migration.{_view_codename(MigrationRun)}")


def _names(capped: dict, limit: int = 3) -> str:
    items = [str(item) for item in capped.get("items", [])[:limit]]
    more = capped.get("count", len(items)) - len(items)
    return ", ".join(items) + (_(" and %(count)d more") % {"count": more} if more > 0 else "")


def _pinned_and_split(outcome) -> str:
    """What an org move left alone, in rows and courses both named: the courses pinned by
    their own override, and those of them that no longer see the org-wide roles
    (docs/decisions/0006). Empty when neither applies."""
    metadata = outcome.metadata
    excluded = metadata.get("excluded_courses") or {}
    parts = []
    if excluded.get("count"):
        parts.append(
            ngettext(
                "Left alone: %(rows)d role row(s) of %(count)d course pinned by its own "
                "override (%(names)s).",
                "Left alone: %(rows)d role row(s) of %(count)d courses pinned by their own "
                "override (%(names)s).",
                excluded["count"],
            )
            % {
                "rows": outcome.counts.get("excluded", 0),
                "count": excluded["count"],
                "names": _names(excluded),
            }
        )
    split = metadata.get("org_wide_roles_split") or {}
    if split.get("count"):
        forward = outcome.move.direction == "forward"
        parts.append(
            ngettext(
                "%(count)d course pinned to %(other)s (%(names)s) no longer sees the org-wide "
                "roles of %(org)s, which now live in %(target)s; give its people course roles "
                "there if they still need them.",
                "%(count)d courses pinned to %(other)s (%(names)s) no longer see the org-wide "
                "roles of %(org)s, which now live in %(target)s; give their people course "
                "roles there if they still need them.",
                split["count"],
            )
            % {
                "count": split["count"],
                "other": _system(not forward),
                "names": _names(split),
                "org": outcome.move.scope_key,
                "target": _system(forward),
            }
        )
    return " ".join(parts)
