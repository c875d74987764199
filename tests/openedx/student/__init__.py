"""Test stand-in for Open edX's ``common.djangoapps.student`` (only ``CourseAccessRole``)."""
