"""The waffle flag's own admin, with this app's warning after a save: when flipping the global
flag leaves roles in the system it no longer names, the person who flipped it reads so at once,
not only the log and a ``skipped`` run.

waffle registers its ``FlagAdmin``; :func:`add_global_flag_feedback` replaces that registration
with a subclass that collects the warnings :mod:`authz_migration.automatic` records during the
request (the change form, the list's "enable/disable for everyone" actions, delete) and shows
each as a message. No middleware and no state outside the request are involved.
"""

from __future__ import annotations

import importlib

from django.apps import apps
from django.contrib import admin, messages
from django.utils.html import format_html
from django.utils.translation import gettext as _

from ..automatic import global_flag_reports
from .common import _run_link


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
                    _run_link(request, run),
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
