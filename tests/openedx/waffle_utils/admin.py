"""The override admins as Open edX registers them (``KeyedConfigurationModelAdmin`` with a
form that validates the course key), plus this app's ``MigrationFeedbackMixin``: what a host
adds to tell the person saving an override what moved."""

from config_models.admin import KeyedConfigurationModelAdmin
from django import forms
from django.contrib import admin
from opaque_keys import InvalidKeyError
from opaque_keys.edx.keys import CourseKey

from authz_migration.admin import MigrationFeedbackMixin

from .models import WaffleFlagCourseOverrideModel, WaffleFlagOrgOverrideModel


class WaffleFlagCourseOverrideAdminForm(forms.ModelForm):
    class Meta:
        model = WaffleFlagCourseOverrideModel
        fields = ("waffle_flag", "course_id", "note", "override_choice", "enabled")

    def clean_course_id(self):
        value = self.cleaned_data["course_id"]
        try:
            return CourseKey.from_string(str(value))
        except InvalidKeyError:
            raise forms.ValidationError(f"Course id {value} is not valid.") from None


class WaffleFlagCourseOverrideAdmin(MigrationFeedbackMixin, KeyedConfigurationModelAdmin):
    form = WaffleFlagCourseOverrideAdminForm
    search_fields = ["waffle_flag", "course_id"]
    fieldsets = (
        (None, {"fields": ("waffle_flag", "course_id", "note", "override_choice", "enabled")}),
    )


class WaffleFlagOrgOverrideAdmin(MigrationFeedbackMixin, KeyedConfigurationModelAdmin):
    search_fields = ["waffle_flag", "org"]
    fieldsets = ((None, {"fields": ("waffle_flag", "org", "note", "override_choice", "enabled")}),)


admin.site.register(WaffleFlagCourseOverrideModel, WaffleFlagCourseOverrideAdmin)
admin.site.register(WaffleFlagOrgOverrideModel, WaffleFlagOrgOverrideAdmin)
