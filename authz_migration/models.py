"""The app's models.

``CourseAccessRole`` and the two override models mirror Open edX's tables field for field and
are swappable: a host that points ``AUTHZ_MIGRATION_LEGACY_ROLE_MODEL`` (or the override
settings) at its own table gets no copy of ours (see docs/decisions/0002).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models, router, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class CourseAccessRole(models.Model):
    """A legacy role assignment: ``user`` holds ``role`` in a course or, with a blank
    ``course_id``, in every course of ``org``."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    org = models.CharField(
        max_length=64, blank=True, db_index=True, help_text=_("Blank: not org-specific.")
    )
    course_id = models.CharField(
        max_length=255,
        blank=True,
        db_index=True,
        help_text=_("Course key such as course-v1:ORG+COURSE+RUN; blank: an org-wide role."),
    )
    role = models.CharField(max_length=64, db_index=True)

    class Meta:
        swappable = "AUTHZ_MIGRATION_LEGACY_ROLE_MODEL"
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "org", "course_id", "role"],
                name="authz_migration_courseaccessrole_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.role} {self.course_id or self.org or '(no scope)'}"


class OverrideChoice(models.TextChoices):
    ON = "on", _("Force on")
    OFF = "off", _("Force off")


class FlagOverride(models.Model):
    """Append-only override history, like Open edX's ConfigurationModel: every save inserts a
    new row and the newest row per key (latest ``change_date``, then highest id) is current.
    A current row with ``enabled=False`` means "no override"."""

    waffle_flag = models.CharField(max_length=255, db_index=True)
    override_choice = models.CharField(
        max_length=3, choices=OverrideChoice.choices, default=OverrideChoice.ON
    )
    enabled = models.BooleanField(
        default=False, help_text=_("Unchecked: this override is not in force (falls through).")
    )
    change_date = models.DateTimeField(auto_now_add=True, verbose_name=_("change date"))
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
    )
    note = models.TextField(blank=True, help_text=_("Why this override was changed."))

    class Meta:
        abstract = True
        ordering = ["-change_date", "-id"]

    def save(self, *args, **kwargs) -> None:
        # History is the point: an edit becomes a new row, never an update of the old one.
        self.pk = None
        self._state.adding = True
        kwargs["force_insert"] = True
        kwargs.pop("force_update", None)
        kwargs.pop("update_fields", None)
        # One transaction for the row and its post_save receivers: the role move that follows
        # a flag change commits or rolls back with the change itself.
        with transaction.atomic(using=kwargs.get("using") or router.db_for_write(type(self))):
            super().save(*args, **kwargs)

    def describe_choice(self) -> str:
        """The row's choice for people: "force on", or "not enabled (force on)" when the row
        forces nothing."""
        choice = str(self.get_override_choice_display()).lower()
        return choice if self.enabled else _("not enabled (%(choice)s)") % {"choice": choice}


class CourseFlagOverride(FlagOverride):
    course_id = models.CharField(max_length=255, db_index=True)

    class Meta(FlagOverride.Meta):
        swappable = "AUTHZ_MIGRATION_COURSE_OVERRIDE_MODEL"
        indexes = [
            models.Index(
                fields=["waffle_flag", "course_id", "change_date"],
                name="authz_mig_course_ovr_current",
            )
        ]

    def __str__(self) -> str:
        return f"{self.waffle_flag} for {self.course_id}: {self.describe_choice()}"


class OrgFlagOverride(FlagOverride):
    org = models.CharField(max_length=255, db_index=True)

    class Meta(FlagOverride.Meta):
        swappable = "AUTHZ_MIGRATION_ORG_OVERRIDE_MODEL"
        indexes = [
            models.Index(
                fields=["waffle_flag", "org", "change_date"], name="authz_mig_org_ovr_current"
            )
        ]

    def __str__(self) -> str:
        return f"{self.waffle_flag} for {self.org}: {self.describe_choice()}"


def scope_label(scope_type: str, scope_key: str) -> str:
    """A run's or a move's scope for people: "course course-v1:O+C+R", "org OrgA", "the
    whole instance"."""
    if scope_type == "instance" or not scope_key:
        return str(_("the whole instance"))
    return f"{scope_type} {scope_key}"


class MigrationRun(models.Model):
    """One move of role rows from one system to the other, for one scope.

    A row with status ``running`` exists only inside the transaction doing the move: the row
    is written with its final status in that same transaction, so a crashed process leaves no
    ``running`` row behind (it rolls back with the move). ``skipped`` and ``failed`` rows are
    written outside any move, so they survive the rollback they describe.
    """

    class MigrationType(models.TextChoices):
        FORWARD = "forward", _("Forward (legacy to Casbin)")
        ROLLBACK = "rollback", _("Rollback (Casbin to legacy)")

    class ScopeType(models.TextChoices):
        COURSE = "course", _("Course")
        ORG = "org", _("Organization")
        INSTANCE = "instance", _("Instance")

    class Status(models.TextChoices):
        RUNNING = "running", _("Running")
        COMPLETED = "completed", _("Completed")
        PARTIAL_SUCCESS = "partial_success", _("Partial success")
        FAILED = "failed", _("Failed")
        SKIPPED = "skipped", _("Skipped")

    class Trigger(models.TextChoices):
        SIGNAL = "signal", _("Override saved")
        COMMAND = "command", _("Management command")
        API = "api", _("Python API")
        ADMIN = "admin", _("Admin action")
        GLOBAL_FLAG = "global_flag", _("Global flag changed")

    migration_type = models.CharField(max_length=16, choices=MigrationType.choices)
    scope_type = models.CharField(max_length=16, choices=ScopeType.choices)
    scope_key = models.CharField(
        max_length=255, blank=True, help_text=_("Course key, org, or blank for the instance.")
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now, help_text=_("When the run started."))
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    metadata = models.JSONField(
        default=dict,
        blank=True,
        help_text=_(
            "Counts, rows that could not move grouped by reason, excluded courses, duration; "
            "on failure the error and traceback. Usernames only, no other personal data."
        ),
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["scope_type", "scope_key", "created_at"], name="authz_mig_run_scope"
            ),
            models.Index(fields=["status", "created_at"], name="authz_mig_run_status"),
        ]

    def __str__(self) -> str:
        return _("Run #%(id)s: %(direction)s of %(scope)s, %(status)s") % {
            "id": self.pk,
            "direction": self.migration_type,
            "scope": scope_label(self.scope_type, self.scope_key),
            "status": self.get_status_display().lower(),
        }

    @property
    def duration_seconds(self) -> float | None:
        return self.metadata.get("duration_seconds") if self.metadata else None


class ScopeLock(models.Model):
    """One row per lockable scope (``instance`` and ``org:<ORG>``).

    Nothing is stored in these rows: moves take database row locks on them for the length of
    their transaction (docs/decisions/0003), so a lock dies with the transaction or the
    connection that held it, and no crashed process can leave a scope locked.
    """

    key = models.CharField(max_length=300, unique=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key
