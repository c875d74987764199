"""Override saves of different orgs whose courses share users, at the same time (issue 14).

Eight orgs, each with ten courses in which the same twenty users hold a role and three
org-wide roles: on MariaDB one user's rows of all eight orgs sit side by side in the legacy
table's unique key (user, org, course_id, role). Eight threads, each with its own connection,
toggle one org's override each (on, off, on, off) inside ``transaction.atomic()``, as the
admin saves, with short random pauses; several trials. Every save must succeed, and once all
have committed every course's roles must sit where its effective flag points.

``AUTHZ_SHARED_USERS_TRIALS`` sets the number of trials (default 3; the figures in
docs/reliability.rst come from 10).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter

import pytest
from django.db import connections, transaction
from django.test import override_settings

from authz_migration import flags
from authz_migration.conf import legacy_role_model, org_override_model
from authz_migration.models import MigrationRun
from tests.conftest import FLAG
from tests.helpers import casbin_roles, legacy_roles, make_users, role_multiset

ORGS = [f"Shared{i}" for i in range(8)]
USERS = 20
COURSES_PER_ORG = 10
ORG_WIDE = ("staff", "instructor", "limited_staff")
TOGGLES = ("on", "off", "on", "off")
TRIALS = int(os.environ.get("AUTHZ_SHARED_USERS_TRIALS", "3"))
SEED = 14
TIMEOUT = 120  # seconds a thread may wait at a barrier before the test calls it a hang

pytestmark = [pytest.mark.server_db, pytest.mark.slow]


def courses(org: str) -> list[str]:
    return [f"course-v1:{org}+C{i}+2024" for i in range(COURSES_PER_ORG)]


def seed(users) -> None:
    """All roles in the legacy table: 10 x 20 course roles + 3 org-wide roles per org."""
    model = legacy_role_model()
    rows = []
    for org in ORGS:
        for course in courses(org):
            rows += [model(user=user, org=org, course_id=course, role="staff") for user in users]
        rows += [
            model(user=users[i], org=org, course_id="", role=role)
            for i, role in enumerate(ORG_WIDE)
        ]
    model.objects.bulk_create(rows)


def save_org_override(org: str, choice: str) -> None:
    row = org_override_model()(waffle_flag=FLAG, org=org, override_choice=choice, enabled=True)
    with transaction.atomic():
        row.save()


def misplaced() -> list[str]:
    """Courses and org-wide scopes whose mapped roles sit outside the system their effective
    flag names."""
    legacy, casbin = legacy_roles(), casbin_roles()
    wrong = []
    for org in ORGS:
        for scope in [*courses(org), f"org:{org}"]:
            enabled = (
                flags.is_authz_enabled(scope)
                if scope.startswith("course-v1:")
                else flags.org_effective_state(org).enabled
            )
            other = legacy if enabled else casbin
            if any(key[2] == scope for key in other):
                wrong.append(f"{scope}: roles outside {'Casbin' if enabled else 'legacy'}")
    return wrong


def run_trial(rng: random.Random) -> list[str]:
    """One trial: every thread toggles its org four times. Returns the failed saves."""
    failures: list[str] = []
    start = threading.Barrier(len(ORGS))
    pauses = {org: [rng.uniform(0, 0.02) for _ in TOGGLES] for org in ORGS}

    def toggle(org: str) -> None:
        try:
            start.wait(TIMEOUT)
            for choice, pause in zip(TOGGLES, pauses[org], strict=True):
                time.sleep(pause)
                try:
                    save_org_override(org, choice)
                except Exception as exc:  # counted and reported by the test
                    failures.append(f"{org} {choice}: {exc!r}")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=toggle, args=(org,), daemon=True) for org in ORGS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert [t.name for t in threads if t.is_alive()] == [], "a save hung"
    return failures


@pytest.mark.django_db(transaction=True)
def test_saves_of_orgs_sharing_users_never_fail(server_db, global_flag):
    global_flag(False)
    seed(make_users("shared", USERS))
    initial = role_multiset()
    rng = random.Random(SEED)
    failed: list[str] = []
    with override_settings(AUTHZ_MIGRATION_AUTOMATIC=True):
        for trial in range(TRIALS):
            failed += [f"trial {trial}: {failure}" for failure in run_trial(rng)]
            assert misplaced() == [], f"trial {trial}"
            assert role_multiset() == initial, f"trial {trial}: roles lost or duplicated"
    saves = TRIALS * len(ORGS) * len(TOGGLES)
    runs = Counter(MigrationRun.objects.values_list("status", flat=True))
    print(f"\n{len(failed)} of {saves} saves failed over {TRIALS} trials; runs: {dict(runs)}")
    assert failed == [], f"{len(failed)} of {saves} saves failed: {failed[:5]}"
    # Every save changed its org's flag, so every one moved (none failed and compensated).
    assert runs == {"completed": saves}
