"""``CourseAccessRole`` as Open edX defines it (common/djangoapps/student/models/user.py):
``course_id`` is an opaque-keys ``CourseKeyField`` whose blank value means an org-wide role,
and it reads back as a ``CourseKey`` object (or None when blank)."""

from django.conf import settings
from django.db import models
from opaque_keys.edx.django.models import CourseKeyField


class CourseAccessRole(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    # blank org is for global group based roles such as course creator
    org = models.CharField(max_length=64, db_index=True, blank=True)
    # blank course_id implies org wide role
    course_id = CourseKeyField(max_length=255, db_index=True, blank=True)
    role = models.CharField(max_length=64, db_index=True)

    class Meta:
        unique_together = ("user", "org", "course_id", "role")

    def __str__(self):
        return (
            f"[CourseAccessRole] user: {self.user_id}   role: {self.role}   "
            f"org: {self.org}   course: {self.course_id}"
        )
