"""What the benchmark seeds: the flag, the orgs and the course it uses, the roles of a course."""

from __future__ import annotations

FLAG = "authz.enable_course_authoring"


ORG = "BenchOrg"


OTHER_ORG = "OtherOrg"


TOGGLE_ORG = "ToggleOrg"


TOGGLE_COURSE = f"course-v1:{TOGGLE_ORG}+T101+2024"


# The five course-authoring roles seeded for every course, in this order (all in the role map).
ROLES = ["instructor", "staff", "limited_staff", "data_researcher", "beta_testers"]
