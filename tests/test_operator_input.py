"""Bad input from an operator, table-driven, on every database (issue 17): each row is one bad
value for ``authz_migrate`` or for an override form in the admin, and its outcome.

- The command: exit code 2, a one-line message naming the value, and *no query at all*
  (every option is checked before ``api.plan()`` or any read), so nothing is written: no run,
  no role row changed.
- The admin forms: the form comes back with an error on the field, and nothing is written: no
  override row, no run, no role row changed.

Rows that come from the command line itself (argparse) are run once more as a real process,
for the one line on stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from authz_migration.conf import course_override_model, org_override_model
from authz_migration.models import MigrationRun
from tests.conftest import FLAG
from tests.helpers import casbin_roles, legacy_roles

REPO = Path(__file__).resolve().parent.parent
A1 = "course-v1:OrgA+A1+2024"
LONG_ORG = "O" * 256
LONG_COURSE = f"course-v1:OrgA+{'C' * 240}+2024"


@pytest.fixture
def data(make_user, grant, global_flag):
    """Roles in the legacy table whose flag says Casbin: any move that ran would move them."""
    global_flag(True)
    alice = make_user("alice")
    grant(alice, A1, "instructor")
    grant(alice, "course-v1:OrgA+A2+2024", "staff")
    grant(alice, "", "staff", org="OrgA")


def snapshot() -> tuple[Counter, Counter, int, int, int]:
    return (
        legacy_roles(),
        casbin_roles(),
        MigrationRun.objects.count(),
        course_override_model().objects.count(),
        org_override_model().objects.count(),
    )


# --- the command ----------------------------------------------------------------------------

# (id, arguments, keyword options for call_command, words the message must contain)
COMMAND_ROWS = [
    ("sleep-nan", ["sync", "--all", "--sleep", "nan"], {}, "--sleep"),
    ("sleep-inf", ["sync", "--all", "--sleep", "inf"], {}, "--sleep"),
    ("sleep-huge", ["sync", "--all", "--sleep", "1e400"], {}, "--sleep"),
    ("sleep-negative", ["sync", "--all", "--sleep", "-1"], {}, "--sleep"),
    ("sleep-over-an-hour", ["sync", "--all", "--sleep", "3601"], {}, "--sleep"),
    ("sleep-word", ["sync", "--all", "--sleep", "soon"], {}, "--sleep"),
    ("sleep-nan-keyword", ["sync", "--all"], {"sleep": float("nan")}, "--sleep"),
    ("sleep-dry-run", ["sync", "--all", "--dry-run", "--sleep", "inf"], {}, "--sleep"),
    ("batch-zero", ["sync", "--all", "--batch-size", "0"], {}, "--batch-size"),
    ("batch-negative", ["sync", "--all", "--batch-size", "-5"], {}, "--batch-size"),
    ("batch-huge", ["sync", "--all", "--batch-size", "99999999999999999999"], {}, "--batch-size"),
    (
        "batch-huge-dry-run",
        ["sync", "--all", "--dry-run", "--batch-size", "99999999999999999999"],
        {},
        "--batch-size",
    ),
    ("batch-over-bound", ["sync", "--all", "--batch-size", "100001"], {}, "--batch-size"),
    ("batch-fraction", ["sync", "--all", "--batch-size", "1.5"], {}, "--batch-size"),
    ("batch-word", ["sync", "--all", "--batch-size", "many"], {}, "--batch-size"),
    ("batch-zero-keyword", ["sync", "--all"], {"batch_size": 0}, "--batch-size"),
    (
        "forward-batch-zero",
        ["forward", "--all", "--batch-size", "0", "--no-input"],
        {},
        "--batch-size",
    ),
    ("rollback-sleep-nan", ["rollback", "--org", "OrgA", "--sleep", "nan"], {}, "--sleep"),
    ("limit-negative", ["status", "--limit", "-3"], {}, "--limit"),
    ("limit-zero", ["status", "--limit", "0"], {}, "--limit"),
    ("limit-huge", ["status", "--limit", "99999999999999999999"], {}, "--limit"),
    ("limit-word", ["status", "--limit", "all"], {}, "--limit"),
    ("limit-negative-keyword", ["status"], {"limit": -3}, "--limit"),
    ("status-scope-malformed", ["status", "--scope", "bad key!"], {}, "bad key!"),
    ("status-scope-empty", ["status", "--scope", ""], {}, "--scope"),
    ("status-scope-too-long", ["status", "--scope", LONG_ORG], {}, "longer than 255"),
    ("status-unknown-status", ["status", "--status", "bogus"], {}, "bogus"),
    ("org-malformed", ["sync", "--org", "Org A"], {}, "Org A"),
    ("org-too-long", ["sync", "--org", LONG_ORG], {}, "longer than 255"),
    ("course-malformed", ["sync", "--course", "course-v1:OrgA+no run"], {}, "no run"),
    ("course-not-a-key", ["forward", "--course", "OrgA", "--no-input"], {}, "'OrgA'"),
    ("course-too-long", ["sync", "--course", LONG_COURSE], {}, "longer than 255"),
    ("verify-course-malformed", ["verify", "--course", "x"], {}, "'x'"),
    ("no-selector", ["sync"], {}, "select --course, --org, or --all"),
    ("all-and-org", ["sync", "--all", "--org", "OrgA"], {}, "select --course, --org, or --all"),
    ("all-and-course", ["rollback", "--all", "--course", A1, "--no-input"], {}, "select"),
    ("unknown-subcommand", ["nope"], {}, "nope"),
    ("unknown-option", ["sync", "--all", "--bogus"], {}, "--bogus"),
    ("force-on-sync", ["sync", "--all", "--force"], {}, "--force"),
    ("dry-run-on-verify", ["verify", "--all", "--dry-run"], {}, "--dry-run"),
]


@pytest.mark.parametrize(
    "args, keywords, words", [row[1:] for row in COMMAND_ROWS], ids=[row[0] for row in COMMAND_ROWS]
)
def test_bad_command_input_exits_2_before_any_query(
    data, args, keywords, words, django_assert_num_queries
):
    before = snapshot()
    out, err = StringIO(), StringIO()
    with django_assert_num_queries(0), pytest.raises(CommandError) as raised:
        call_command("authz_migrate", *args, stdout=out, stderr=err, **keywords)
    assert raised.value.returncode == 2
    message = str(raised.value)
    assert words in message
    assert "\n" not in message
    assert out.getvalue() == err.getvalue() == ""
    assert snapshot() == before


@pytest.mark.parametrize(
    "args",
    [
        ["sync", "--all", "--sleep", "nan"],
        ["status", "--limit", "99999999999999999999"],
        ["status", "--scope", "bad key!"],
        ["sync", "--org", "Org A"],
    ],
    ids=["sleep-nan", "limit-huge", "status-scope", "org-malformed"],
)
def test_bad_command_input_is_one_line_from_the_command_line(args):
    # Rejected before any database access: SQLite in memory is enough.
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "AUTHZ_TEST_DB": "sqlite"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # casbin_adapter's AppConfig.ready() reads the database at startup, and Django warns
    # about that on stderr: not this command's output.
    env["PYTHONWARNINGS"] = "ignore::RuntimeWarning"
    done = subprocess.run(
        [sys.executable, "-m", "django", "authz_migrate", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


# --- the admin forms ------------------------------------------------------------------------

# (id, model admin, field values, the field that carries the error)
FORM_ROWS = [
    (
        "course-key-with-space",
        "courseflagoverride",
        {"course_id": "course-v1:OrgA+no run+R"},
        "course_id",
    ),
    ("course-key-two-parts", "courseflagoverride", {"course_id": "course-v1:OrgA+C"}, "course_id"),
    ("course-key-not-a-key", "courseflagoverride", {"course_id": "OrgA"}, "course_id"),
    (
        "course-key-too-long",
        "courseflagoverride",
        {"course_id": f"course-v1:O+{'C' * 250}+R"},
        "course_id",
    ),
    ("course-key-blank", "courseflagoverride", {"course_id": ""}, "course_id"),
    ("org-with-space", "orgflagoverride", {"org": "Org A"}, "org"),
    ("org-with-slash", "orgflagoverride", {"org": "Org/A"}, "org"),
    ("org-with-plus", "orgflagoverride", {"org": "OrgA+X"}, "org"),
    ("org-too-long", "orgflagoverride", {"org": LONG_ORG}, "org"),
    ("org-blank", "orgflagoverride", {"org": ""}, "org"),
    (
        "choice-unknown",
        "orgflagoverride",
        {"org": "OrgA", "override_choice": "maybe"},
        "override_choice",
    ),
    ("flag-blank", "orgflagoverride", {"org": "OrgA", "waffle_flag": ""}, "waffle_flag"),
]


@pytest.mark.parametrize(
    "model, values, field", [row[1:] for row in FORM_ROWS], ids=[row[0] for row in FORM_ROWS]
)
def test_bad_override_form_input_is_a_form_error_and_writes_nothing(
    data, admin_client, settings, model, values, field
):
    settings.AUTHZ_MIGRATION_AUTOMATIC = True
    form_data = {"waffle_flag": FLAG, "override_choice": "on", "enabled": "on", "note": "t"}
    form_data.update(values)
    before = snapshot()
    response = admin_client.post(reverse(f"admin:authz_migration_{model}_add"), form_data)
    assert response.status_code == 200  # the form again, not a redirect
    errors = response.context["adminform"].form.errors
    assert list(errors) == [field], errors
    assert snapshot() == before
