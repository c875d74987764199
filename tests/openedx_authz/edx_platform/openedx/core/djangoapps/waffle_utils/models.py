"""edx-platform's override models at the path openedx-authz imports them from."""

from tests.openedx.waffle_utils.models import (  # noqa: F401
    WaffleFlagCourseOverrideModel,
    WaffleFlagOrgOverrideModel,
)
