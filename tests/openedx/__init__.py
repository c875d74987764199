"""An Open edX-shaped test host: ``student.CourseAccessRole`` with a ``CourseKeyField`` and
``waffle_utils``'s override models built on django-config-models' ``ConfigurationModel``.

Test-only (not shipped). Run with ``DJANGO_SETTINGS_MODULE=tests.settings_openedx``.
"""
