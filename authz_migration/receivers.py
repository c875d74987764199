"""The receivers this app connects in ``AppConfig.ready()``: one line each, handing off to
:mod:`authz_migration.automatic` (override and global flag changes) and
:mod:`authz_migration.enforcer` (enforcers after a move). The senders are the models the
settings name at startup: the app's own override models or the host's."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save, pre_save
from waffle import get_waffle_flag_model

from . import automatic, enforcer
from .conf import get_setting
from .signals import migration_run_finished


def course_override_saved(sender, instance, created, **kwargs):
    automatic.course_override_saved(instance, created)


def org_override_saved(sender, instance, created, **kwargs):
    automatic.org_override_saved(instance, created)


def global_flag_saving(sender, instance, **kwargs):
    automatic.global_flag_saving(instance)


def global_flag_saved(sender, instance, **kwargs):
    automatic.global_flag_saved(instance)


def global_flag_deleted(sender, instance, **kwargs):
    automatic.global_flag_deleted(instance)


def connect() -> None:
    """Connect every receiver; touches no database."""
    migration_run_finished.connect(enforcer.follow_moves, dispatch_uid="authz_mig_enforcer")
    course_model = get_setting("COURSE_OVERRIDE_MODEL")
    org_model = get_setting("ORG_OVERRIDE_MODEL")
    post_save.connect(course_override_saved, sender=course_model, dispatch_uid="authz_mig_course")
    post_save.connect(org_override_saved, sender=org_model, dispatch_uid="authz_mig_org")
    flag_model = get_waffle_flag_model()
    pre_save.connect(global_flag_saving, sender=flag_model, dispatch_uid="authz_mig_flag_pre")
    post_save.connect(global_flag_saved, sender=flag_model, dispatch_uid="authz_mig_flag")
    post_delete.connect(global_flag_deleted, sender=flag_model, dispatch_uid="authz_mig_flag_del")
