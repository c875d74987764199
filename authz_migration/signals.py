"""Signals this app sends, and the receivers it connects in ``AppConfig.ready()``.

Receivers are one line each and hand off to :mod:`authz_migration.automatic`. The senders are
the models named by the settings at startup (the app's own override models or the host's).
"""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import Signal

from .conf import get_setting

# Sent after the transaction of a move commits (never for dry runs).
# Arguments: run (MigrationRun, final status), added and removed (lists of Casbin
# (v0, v1, v2) role rows the move wrote and deleted), for in-memory enforcers to follow.
migration_run_finished = Signal()


def course_override_saved(sender, instance, created, **kwargs):
    from . import automatic

    automatic.course_override_saved(instance, created)


def org_override_saved(sender, instance, created, **kwargs):
    from . import automatic

    automatic.org_override_saved(instance, created)


def global_flag_saving(sender, instance, **kwargs):
    from . import automatic

    automatic.global_flag_saving(instance)


def global_flag_saved(sender, instance, **kwargs):
    from . import automatic

    automatic.global_flag_saved(instance)


def global_flag_deleted(sender, instance, **kwargs):
    from . import automatic

    automatic.global_flag_deleted(instance)


def connect_receivers() -> None:
    """Connect the receivers; touches no database."""
    from waffle import get_waffle_flag_model

    from .enforcer import follow_moves

    migration_run_finished.connect(follow_moves, dispatch_uid="authz_mig_enforcer")
    course_model = get_setting("COURSE_OVERRIDE_MODEL")
    org_model = get_setting("ORG_OVERRIDE_MODEL")
    post_save.connect(course_override_saved, sender=course_model, dispatch_uid="authz_mig_course")
    post_save.connect(org_override_saved, sender=org_model, dispatch_uid="authz_mig_org")
    flag_model = get_waffle_flag_model()
    pre_save.connect(global_flag_saving, sender=flag_model, dispatch_uid="authz_mig_flag_pre")
    post_save.connect(global_flag_saved, sender=flag_model, dispatch_uid="authz_mig_flag")
    post_delete.connect(global_flag_deleted, sender=flag_model, dispatch_uid="authz_mig_flag_del")
