"""edx-platform's retirement signal, which openedx-authz connects to."""

from django.dispatch import Signal

USER_RETIRE_LMS_CRITICAL = Signal()
