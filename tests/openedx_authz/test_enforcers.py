"""openedx-authz's enforcers follow every committed move: one already loaded in this process,
and one loaded by another worker process, answer by the moved rows at their next check,
without a restart or a manual reload; whichever door the move came through."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from openedx_authz.api.users import is_user_allowed

from authz_migration import api
from authz_migration.conf import legacy_role_model

pytestmark = pytest.mark.usefixtures("authz_schema", "fresh_enforcer")

A1 = "course-v1:OrgA+C1+2024"
ACTION = "courses.edit_course_content"  # course_staff has it (openedx-authz's schema)
WORKER = Path(__file__).with_name("worker.py")


def grant(username, course_id, role="staff"):
    user, _ = get_user_model().objects.get_or_create(username=username)
    return legacy_role_model().objects.create(
        user=user, org=course_id.split(":")[1].split("+")[0], course_id=course_id, role=role
    )


def move_by_api(forward):
    api.migrate_course(A1, forward=forward, force=True)


def move_by_command(forward):
    call_command(
        "authz_migrate",
        "forward" if forward else "rollback",
        "--course",
        A1,
        "--force",
        "--no-input",
        stdout=StringIO(),
    )


def move_by_override_save(forward):
    from tests.openedx.waffle_utils.models import WaffleFlagCourseOverrideModel

    with override_settings(AUTHZ_MIGRATION_AUTOMATIC=True):
        WaffleFlagCourseOverrideModel.objects.create(
            waffle_flag="authz.enable_course_authoring",
            course_id=A1,
            override_choice="on" if forward else "off",
            enabled=True,
        )


DOORS = [move_by_api, move_by_command, move_by_override_save]


@pytest.mark.parametrize("move", DOORS, ids=lambda door: door.__name__)
def test_the_enforcer_loaded_in_this_process_follows_each_move(move):
    grant("ed", A1)
    assert not is_user_allowed("ed", ACTION, A1)  # loads the enforcer: no role yet

    move(True)
    assert is_user_allowed("ed", ACTION, A1)

    move(False)
    assert not is_user_allowed("ed", ACTION, A1)


class Worker:
    """tests/openedx_authz/worker.py: another process with its own loaded enforcer."""

    def __init__(self):
        settings = connection.settings_dict
        name_variable = {
            "postgresql": "AUTHZ_TEST_PG_NAME",
            "mysql": "AUTHZ_TEST_MYSQL_NAME",
            "sqlite": "AUTHZ_TEST_SQLITE_NAME",
        }[connection.vendor]
        env = {**os.environ, name_variable: settings["NAME"]}
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self._line() == "READY"

    def _line(self) -> str:
        line = self.process.stdout.readline().strip()
        if not line:
            raise AssertionError(f"the worker ended (exit status {self.process.wait()})")
        return line

    def allowed(self, user, action, scope) -> bool:
        self.process.stdin.write(f"{user} {action} {scope}\n")
        self.process.stdin.flush()
        answer = self._line()
        assert answer.startswith("ALLOWED ")
        return answer == "ALLOWED True"

    def close(self):
        self.process.stdin.close()
        assert self.process.wait(timeout=60) == 0


@pytest.fixture
def worker():
    started = Worker()
    yield started
    started.close()


def test_an_enforcer_loaded_in_another_process_follows_each_move(worker):
    grant("wendy", A1)
    assert not worker.allowed("wendy", ACTION, A1)  # its enforcer is loaded now

    api.migrate_course(A1, forward=True, force=True)
    assert worker.allowed("wendy", ACTION, A1)

    api.migrate_course(A1, forward=False, force=True)
    assert not worker.allowed("wendy", ACTION, A1)


def test_a_dry_run_leaves_every_enforcer_as_it_was(worker):
    grant("dora", A1)
    assert not worker.allowed("dora", ACTION, A1)
    from openedx_authz.models.engine import PolicyCacheControl

    before = PolicyCacheControl.get_version()
    api.migrate_course(A1, forward=True, force=True, dry_run=True)
    assert PolicyCacheControl.get_version() == before
    assert not worker.allowed("dora", ACTION, A1)
