from django.apps import AppConfig


class StudentConfig(AppConfig):
    """Label ``student``, as in Open edX, so the setting reads ``student.CourseAccessRole``."""

    name = "tests.openedx.student"
    label = "student"
    default_auto_field = "django.db.models.AutoField"
