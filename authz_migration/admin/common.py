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
