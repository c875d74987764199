"""edx-platform's ``common.djangoapps.student.models`` as openedx-authz imports it."""

from tests.openedx.student.models import CourseAccessRole  # noqa: F401
