"""edx-platform's course-authoring flag: openedx-authz compares override rows with its name."""

from types import SimpleNamespace

AUTHZ_COURSE_AUTHORING_FLAG = SimpleNamespace(name="authz.enable_course_authoring")
