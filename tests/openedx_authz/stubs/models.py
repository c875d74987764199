"""edx-platform's CourseOverview and ContentLibrary, reduced to their keys: openedx-authz's
scopes link to them (``OPENEDX_AUTHZ_COURSE_OVERVIEW_MODEL``, ``..._CONTENT_LIBRARY_MODEL``)."""

from django.db import models
from opaque_keys.edx.django.models import CourseKeyField


class CourseOverview(models.Model):
    id = CourseKeyField(max_length=255, primary_key=True)  # the course key, as in edx-platform

    def __str__(self):
        return str(self.id)

    @classmethod
    def get_from_id(cls, course_id):
        return cls.objects.get(id=course_id)


class ContentLibrary(models.Model):
    org = models.CharField(max_length=255)
    slug = models.SlugField(max_length=255)

    def __str__(self):
        return f"lib:{self.org}:{self.slug}"
