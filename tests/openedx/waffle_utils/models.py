"""The course and org override models as Open edX defines them
(openedx/core/djangoapps/waffle_utils/models.py), on the real ``ConfigurationModel``: every save
inserts a row, ``enabled`` says whether the row is in force, ``current()`` is cached in
Django's cache, and ``override_value`` is Open edX's own runtime check."""

from config_models.models import ConfigurationModel
from django.db.models import CharField, Index, TextField
from opaque_keys.edx.django.models import CourseKeyField

OVERRIDE_CHOICES = (("on", "Force On"), ("off", "Force Off"))
UNSET = "unset"


class WaffleFlagCourseOverrideModel(ConfigurationModel):
    """Forces a waffle flag on or off for a course (highest priority)."""

    KEY_FIELDS = ("waffle_flag", "course_id")

    waffle_flag = CharField(max_length=255, db_index=True)
    course_id = CourseKeyField(max_length=255, db_index=True)
    override_choice = CharField(choices=OVERRIDE_CHOICES, default="on", max_length=3)
    note = TextField(blank=True, help_text="e.g. why this exists and when/if it can be dropped")

    class Meta:
        app_label = "waffle_utils"
        verbose_name = "Waffle flag course override"
        verbose_name_plural = "Waffle flag course overrides"

    def __str__(self):
        enabled_label = "Enabled" if self.enabled else "Not Enabled"
        return f"Course {self.course_id!s}: Waffle Override {enabled_label}"

    @classmethod
    def override_value(cls, waffle_flag, course_id):
        """ "on", "off" or "unset", as Open edX's runtime check computes it (without its
        request cache)."""
        if not course_id or not waffle_flag:
            return UNSET
        effective = (
            cls.objects.filter(waffle_flag=waffle_flag, course_id=course_id)
            .order_by("-change_date")
            .first()
        )
        if effective and effective.enabled:
            return effective.override_choice
        return UNSET


class WaffleFlagOrgOverrideModel(ConfigurationModel):
    """Forces a waffle flag on or off for an organization (below course overrides)."""

    KEY_FIELDS = ("waffle_flag", "org")

    waffle_flag = CharField(max_length=255, db_index=True)
    org = CharField(max_length=255, db_index=True)
    override_choice = CharField(choices=OVERRIDE_CHOICES, default="on", max_length=3)
    note = TextField(blank=True, help_text="e.g. why this exists and when/if it can be dropped")

    class Meta:
        app_label = "waffle_utils"
        verbose_name = "Waffle flag org override"
        verbose_name_plural = "Waffle flag org overrides"
        indexes = [Index(name="waffle_org_and_waffle_flag", fields=["org", "waffle_flag"])]

    def __str__(self):
        enabled_label = "Enabled" if self.enabled else "Not Enabled"
        return f"Org {self.org!s}: Waffle Override {enabled_label}"

    @classmethod
    def override_value(cls, waffle_flag, org):
        """ "on", "off" or "unset", as Open edX's runtime check computes it."""
        if not org or not waffle_flag:
            return UNSET
        effective = (
            cls.objects.filter(waffle_flag=waffle_flag, org=org).order_by("-change_date").first()
        )
        if effective and effective.enabled:
            return effective.override_choice
        return UNSET
