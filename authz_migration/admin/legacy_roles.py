"""The admin of the legacy role table (``CourseAccessRole``), registered when it is not
swapped for the host's own table."""

from __future__ import annotations

from django.contrib import admin


class CourseAccessRoleAdmin(admin.ModelAdmin):
    """The legacy role table, as Open edX's own admin shows it."""

    list_display = ("id", "user", "org", "course_id", "role")
    list_filter = ("role",)
    search_fields = ("user__username", "org", "course_id", "role")
    # A select of every user does not scale to a real site.
    raw_id_fields = ("user",)
