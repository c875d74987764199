"""The ``authz_migrate`` management command (DESIGN.md, "Management command"), on every
supported database.

Every subcommand and option is driven through ``call_command`` with captured output; exit
codes are ``CommandError.returncode`` (success returns normally, i.e. 0). The codes are the ones
the command's module docstring lists: 0 done, 1 failed, 2 bad arguments, 3 refused or declined,
4 incomplete (partial success or busy scope), 5 drift found by ``verify``, 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import pytest
from casbin_adapter.models import CasbinRule
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connections, transaction

from authz_migration import api, guard
from authz_migration.management.commands import authz_migrate as command_module
from authz_migration.models import MigrationRun
from authz_migration.reporting import Progress
from tests.helpers import ROLE_MAP, casbin_roles, legacy_roles, lock_rows_in_test_transaction

REPO = Path(__file__).resolve().parent.parent


LEGACY, CASBIN = "legacy", "casbin"

A1 = "course-v1:OrgA+A1+2024"
A2 = "course-v1:OrgA+A2+2024"
A3 = "course-v1:OrgA+A3+2024"  # pinned off by a course override while OrgA is on
B1 = "course-v1:OrgB+B1+2024"
B2 = "course-v1:OrgB+B2+2024"  # pinned on by a course override while OrgB is forced off
B3 = "course-v1:OrgB+B3+2024"
ORG_A, ORG_B = "org:OrgA", "org:OrgB"  # org-wide roles (legacy course_id "")
BAD_KEY = "course-v1:OrgA+bad key+R"  # selected by --org OrgA, but not a course key


# --- running the command ---------------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str
    message: str  # the CommandError's text ("" on success)

    @property
    def text(self) -> str:
        return self.out + self.err + self.message


def run(*args: str, stdout=None) -> Result:
    out = stdout if stdout is not None else StringIO()
    err = StringIO()
    try:
        call_command("authz_migrate", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return Result(exc.returncode, out.getvalue(), err.getvalue(), str(exc))
    return Result(0, out.getvalue(), err.getvalue(), "")


# --- reading both systems --------------------------------------------------------------------


def add_casbin(username: str, legacy_role: str, scope: str) -> CasbinRule:
    """A well-formed Casbin role row, as openedx-authz writes it. ``scope``: a course key or
    ``org:ORG`` for an org-wide role."""
    if scope.startswith("org:"):
        key = f"course-v1:{scope[4:]}+*"
    else:
        key = scope
    return CasbinRule.objects.create(
        ptype="g",
        v0=f"user^{username}",
        v1=f"role^{ROLE_MAP[legacy_role]}",
        v2=f"course-v1^{key}",
    )


def all_roles() -> Counter:
    return legacy_roles() + casbin_roles()


def placement() -> dict[tuple[str, str, str], str]:
    """Where each role sits (a role in both systems would show up as "both")."""
    where: dict[tuple[str, str, str], str] = {}
    for key in legacy_roles():
        where[key] = LEGACY
    for key in casbin_roles():
        where[key] = "both" if key in where else CASBIN
    return where


def runs(**filters) -> list[MigrationRun]:
    return list(MigrationRun.objects.filter(**filters).order_by("id"))


# --- data ------------------------------------------------------------------------------------

# (username, legacy role, scope, system it starts in, system its flag names)
MIXED = [
    ("alice", "staff", A1, LEGACY, CASBIN),
    ("bob", "instructor", A1, LEGACY, CASBIN),
    ("carol", "limited_staff", A2, LEGACY, CASBIN),
    ("bob", "staff", A2, CASBIN, CASBIN),
    ("alice", "staff", A3, LEGACY, LEGACY),
    ("carol", "instructor", A3, CASBIN, LEGACY),
    ("bob", "staff", ORG_A, LEGACY, CASBIN),
    ("bob", "beta_testers", B1, LEGACY, LEGACY),
    ("carol", "staff", B2, LEGACY, CASBIN),
    ("alice", "instructor", B2, LEGACY, CASBIN),
    ("alice", "staff", B3, CASBIN, LEGACY),
    ("carol", "data_researcher", ORG_B, LEGACY, LEGACY),
    ("alice", "staff", ORG_B, CASBIN, LEGACY),
]
UNMAPPED = ("alice", "finance_admin", A1)  # not a course-authoring role: never moves


@pytest.fixture
def mixed(people, grant, global_flag, org_override, course_override):
    """Global flag on, OrgB forced off, A3 pinned off, B2 pinned on; roles on both sides."""
    global_flag(True)
    org_override("OrgB", "off")
    course_override(A3, "off")
    course_override(B2, "on")
    for user, role, scope, start, _ in MIXED:
        if start == CASBIN:
            add_casbin(user, role, scope)
        elif scope.startswith("org:"):
            grant(people[user], "", role, org=scope[4:])
        else:
            grant(people[user], scope, role)
    grant(people[UNMAPPED[0]], UNMAPPED[2], UNMAPPED[1])
    return people


def expected(selected) -> dict[tuple[str, str, str], str]:
    """Where MIXED's roles must be once the scopes for which ``selected(scope)`` is true have
    been synced (the others stay where they started)."""
    return {
        (user, role, scope): target if selected(scope) else start
        for user, role, scope, start, target in MIXED
    } | {UNMAPPED: LEGACY}


def seed_courses(people, grant, org: str, courses: int, per_course: int = 1) -> list[str]:
    """``courses`` courses of ``org``, each with ``per_course`` legacy roles."""
    keys = [f"course-v1:{org}+C{i:02d}+R" for i in range(courses)]
    users = list(people.values())
    roles = list(ROLE_MAP)
    for key in keys:
        for n in range(per_course):
            grant(users[n % len(users)], key, roles[n % len(roles)])
    return keys


# --- sync ------------------------------------------------------------------------------------


def test_sync_all_moves_every_role_to_the_system_its_course_flag_names(mixed):
    before = all_roles()
    result = run("sync", "--all", "--no-input")
    assert result.code == 0, result.text
    assert placement() == expected(lambda scope: True)
    assert all_roles() == before
    assert result.out.splitlines()[0].split() == [
        "direction",
        "scope",
        "batches",
        "moved",
        "not",
        "migrated",
        "could",
        "not",
        "move",
        "runs",
    ]
    table = {tuple(line.split()[:2]): line.split() for line in result.out.splitlines()[2:4]}
    # forward: A1 x2, A2, B2 x2, OrgA org-wide; the unmapped role counts as not migrated.
    assert table[("forward", "instance")][2:5] == ["1", "6", "1"]
    # rollback: carol's A3 role, alice's B3 role and her OrgB org-wide role.
    assert table[("rollback", "instance")][2:5] == ["1", "3", "0"]
    assert "Moved 9 role rows." in result.out
    assert result.err == ""
    recorded = runs()
    assert [(r.migration_type, r.scope_type, r.status, r.trigger) for r in recorded] == [
        ("forward", "instance", "completed", "command"),
        ("rollback", "instance", "completed", "command"),
    ]
    assert [r.metadata["counts"]["moved"] for r in recorded] == [6, 3]
    assert api.verify_scope(everything=True) == []


def test_sync_all_twice_finds_nothing_the_second_time(mixed):
    assert run("sync", "--all").code == 0
    count = MigrationRun.objects.count()
    again = run("sync", "--all")
    assert again.code == 0, again.text
    assert "Moved 0 role rows." in again.out
    # Batches that moved nothing record no run (the unmapped row is only "not migrated").
    assert MigrationRun.objects.count() == count


def test_sync_org_moves_only_that_org_following_pinned_courses(mixed):
    result = run("sync", "--org", "OrgB")
    assert result.code == 0, result.text
    assert placement() == expected(lambda scope: "OrgB" in scope)
    # OrgB is off: its rows go back, then the course pinned on goes forward.
    assert [line.split()[:3] for line in result.out.splitlines()[2:]][:2] == [
        ["rollback", "org", "OrgB"],
        ["forward", "org", "OrgB"],
    ]
    assert "Moved 4 role rows." in result.out
    assert [(r.migration_type, r.scope_type, r.scope_key) for r in runs()] == [
        ("rollback", "org", "OrgB"),
        ("forward", "org", "OrgB"),
    ]
    assert api.verify_scope(orgs=["OrgB"]) == []
    assert {p.scope for p in api.verify_scope(orgs=["OrgA"])} == {A1, A2, A3, "OrgA (org-wide)"}


def test_sync_org_with_org_wide_roles_and_a_course_pinned_against_the_org(mixed):
    result = run("sync", "--org", "OrgA", "--no-input")
    assert result.code == 0, result.text
    assert placement() == expected(lambda scope: "OrgA" in scope)
    assert placement()[("bob", "staff", ORG_A)] == CASBIN  # the org-wide role
    assert "Moved 5 role rows." in result.out
    forward = MigrationRun.objects.get(migration_type="forward", scope_key="OrgA")
    # A3 is pinned to the legacy table: OrgA's org-wide roles no longer apply to it there.
    assert forward.metadata["org_wide_roles_split"]["items"] == [A3]


def test_sync_several_orgs(mixed):
    result = run("sync", "--org", "OrgA", "OrgB")
    assert result.code == 0, result.text
    assert placement() == expected(lambda scope: True)


def test_sync_course_moves_only_the_named_courses(mixed):
    result = run("sync", "--course", A3, B2)
    assert result.code == 0, result.text
    assert placement() == expected(lambda scope: scope in (A3, B2))
    assert "Moved 3 role rows." in result.out
    assert sorted((r.migration_type, r.scope_key) for r in runs()) == [
        ("forward", B2),
        ("rollback", A3),
    ]


def test_sync_course_repeated_option_and_course_with_org(mixed):
    result = run("sync", "--course", A1, "--course", B3, "--org", "OrgB")
    assert result.code == 0, result.text
    assert placement() == expected(lambda scope: scope == A1 or "OrgB" in scope)


def test_sync_course_without_roles_has_nothing_to_move(mixed):
    result = run("sync", "--course", "course-v1:OrgC+Empty+R")
    assert result.code == 0, result.text
    lines = result.out.splitlines()
    assert lines[0].startswith("Nothing to move: ")
    assert lines[-1] == "Moved 0 role rows."
    assert result.err == (
        "warning: no roles or overrides found for course 'course-v1:OrgC+Empty+R'\n"
    )
    assert runs() == []


def test_sync_never_asks_for_confirmation(mixed, monkeypatch):
    def no_prompt(prompt=""):
        raise AssertionError("sync must not ask")

    monkeypatch.setattr("builtins.input", no_prompt)
    assert run("sync", "--all").code == 0
    assert placement() == expected(lambda scope: True)


# --- --dry-run -------------------------------------------------------------------------------


def test_dry_run_writes_nothing_and_says_what_would_move(mixed):
    before = placement()
    result = run("sync", "--all", "--dry-run")
    assert result.code == 0, result.text
    assert "Would move 9 role rows." in result.out
    assert "Moved" not in result.out
    assert placement() == before
    assert runs() == []
    # Dry-run rows have no run: the runs column says so.
    assert [line.split()[-1] for line in result.out.splitlines()[2:4]] == ["-", "-"]


def test_dry_run_of_a_directed_move_asks_nothing_and_writes_nothing(mixed, monkeypatch):
    def no_prompt(prompt=""):
        raise AssertionError("a dry run must not ask")

    monkeypatch.setattr("builtins.input", no_prompt)
    before = placement()
    assert run("forward", "--org", "OrgA", "--dry-run").code == 3  # A3 is pinned off
    result = run("forward", "--org", "OrgA", "--dry-run", "--force")
    assert result.code == 0, result.text
    assert "Would move 5 role rows." in result.out  # A1 x2, A2, A3, the org-wide role
    assert placement() == before
    assert runs() == []


def test_dry_run_with_batches_counts_every_batch(people, grant, global_flag):
    global_flag(True)
    seed_courses(people, grant, "OrgA", 7)
    result = run("sync", "--org", "OrgA", "--dry-run", "--batch-size", "3")
    assert result.code == 0, result.text
    assert "Would move 7 role rows." in result.out
    assert legacy_roles().total() == 7
    assert runs() == []


# --- --batch-size, --sleep, progress ---------------------------------------------------------


def test_batch_size_records_one_run_per_batch_that_moved(people, grant, global_flag):
    global_flag(True)
    seed_courses(people, grant, "OrgA", 12)
    result = run("sync", "--org", "OrgA", "--batch-size", "5")
    assert result.code == 0, result.text
    recorded = runs()
    assert [r.metadata["counts"]["moved"] for r in recorded] == [5, 5, 2]
    assert {(r.scope_key, r.status, r.trigger) for r in recorded} == {
        ("OrgA", "completed", "command")
    }
    ids = ", ".join(f"#{r.pk}" for r in recorded)
    row = result.out.splitlines()[2]
    assert row.split()[:6] == ["forward", "org", "OrgA", "3", "12", "0"]
    assert row.endswith(ids)
    assert "Moved 12 role rows." in result.out
    assert legacy_roles().total() == 0
    assert casbin_roles().total() == 12


def test_batch_size_dividing_the_rows_records_no_empty_run(people, grant, global_flag):
    global_flag(True)
    seed_courses(people, grant, "OrgA", 8)
    result = run("sync", "--org", "OrgA", "--batch-size", "4", "--json")
    assert result.code == 0, result.text
    document = json.loads(result.out)
    recorded = runs()
    assert len(recorded) == 2
    assert document["scopes"][0]["run_ids"] == [r.pk for r in recorded]
    assert document["moved"] == 8


def test_many_runs_are_summarised_as_a_range(people, grant, global_flag):
    global_flag(True)
    seed_courses(people, grant, "OrgA", 11)
    result = run("sync", "--all", "--batch-size", "2")
    assert result.code == 0, result.text
    recorded = runs()
    assert len(recorded) == 6
    assert f"#{recorded[0].pk} .. #{recorded[-1].pk} (6 runs)" in result.out


def test_sleep_pauses_between_batches(people, grant, global_flag):
    global_flag(True)
    seed_courses(people, grant, "OrgA", 8)
    started = time.monotonic()
    result = run("sync", "--org", "OrgA", "--batch-size", "2", "--sleep", "0.05")
    elapsed = time.monotonic() - started
    assert result.code == 0, result.text
    batches = int(result.out.splitlines()[2].split()[3])
    assert batches >= 4
    assert elapsed >= (batches - 1) * 0.05 * 0.9
    assert len(runs()) == 4


def test_negative_sleep_is_refused(people, grant, global_flag):
    result = run("sync", "--all", "--sleep", "-1")
    assert result.code == 2
    assert "--sleep" in result.message


def test_progress_lines_when_not_a_terminal(people, grant, global_flag, monkeypatch):
    # Off a terminal a plain line is printed every `interval` seconds; make that every batch.
    monkeypatch.setattr(command_module, "Progress", functools.partial(Progress, interval=0))
    global_flag(True)
    seed_courses(people, grant, "OrgA", 6)
    result = run("sync", "--org", "OrgA", "--batch-size", "2")
    assert result.code == 0, result.text
    progress = [line for line in result.out.splitlines() if "rows read" in line]
    assert len(progress) >= 3
    assert progress[-1].startswith("6/6 rows read, 6 moved, ")
    assert "\r" not in result.out
    summary = result.out.splitlines()[len(progress) :]
    assert summary[0].startswith("direction  scope")
    assert summary[-1] == "Moved 6 role rows."


def test_default_progress_interval_prints_only_the_summary(people, grant, global_flag):
    global_flag(True)
    seed_courses(people, grant, "OrgA", 6)
    result = run("sync", "--org", "OrgA", "--batch-size", "2")
    assert result.code == 0, result.text
    assert result.out.startswith("direction  scope")
    assert result.out.splitlines()[-1] == "Moved 6 role rows."


class TerminalIO(StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_rewrites_one_line(people, grant, global_flag):
    global_flag(True)
    seed_courses(people, grant, "OrgA", 6)
    result = run("sync", "--org", "OrgA", "--batch-size", "2", stdout=TerminalIO())
    assert result.code == 0, result.text
    head, _, _ = result.out.partition("direction")
    assert head.count("\r") >= 3  # one rewrite per batch
    assert "\n\r" not in head  # ... of the same line
    assert head.endswith("\n")


# --- --json ----------------------------------------------------------------------------------


def test_json_is_one_document_with_moved_scopes_run_ids_and_exit_code(mixed):
    result = run("sync", "--all", "--json")
    assert result.code == 0, result.text
    document = json.loads(result.out)
    assert document["action"] == "sync"
    assert document["dry_run"] is False
    assert document["exit_code"] == 0
    assert document["interrupted"] is False
    assert document["moved"] == 9
    assert document["statuses"] == {"completed": 2}
    assert document["errors"] == []
    forward, rollback = document["scopes"]
    assert (forward["direction"], forward["scope"], forward["moved"]) == ("forward", "instance", 6)
    assert forward["not_migrated"] == 1
    assert (rollback["direction"], rollback["moved"]) == ("rollback", 3)
    assert forward["run_ids"] + rollback["run_ids"] == [r.pk for r in runs()]


def test_json_keeps_progress_off_stdout(people, grant, global_flag, monkeypatch):
    monkeypatch.setattr(command_module, "Progress", functools.partial(Progress, interval=0))
    global_flag(True)
    seed_courses(people, grant, "OrgA", 4)
    result = run("sync", "--org", "OrgA", "--batch-size", "2", "--json")
    assert result.code == 0, result.text
    assert json.loads(result.out)["moved"] == 4
    assert "rows read" in result.err


def test_json_reports_the_exit_code_of_an_incomplete_run(people, grant, global_flag):
    global_flag(True)
    grant(people["alice"], A1)
    grant(people["alice"], BAD_KEY)
    result = run("sync", "--org", "OrgA", "--json")
    assert result.code == 6
    document = json.loads(result.out)
    assert document["exit_code"] == 6
    assert document["statuses"] == {"partial_success": 1}
    assert document["scopes"][0]["could_not_move"] == {"malformed_course_key": 1}


def test_json_of_a_dry_run(mixed):
    document = json.loads(run("sync", "--org", "OrgA", "--dry-run", "--json").out)
    assert document["dry_run"] is True
    assert document["moved"] == 5
    assert [s["run_ids"] for s in document["scopes"]] == [[], []]


def test_json_stays_one_document_when_confirmation_is_asked(mixed, monkeypatch):
    monkeypatch.setattr("builtins.input", lambda prompt="": "yes")
    result = run("forward", "--course", A1, "--json")
    assert result.code == 0, result.text
    assert json.loads(result.out)["moved"] == 2


# --- forward / rollback: refusal, --force, confirmation -------------------------------------


def test_forward_against_the_flag_is_refused_naming_the_courses(mixed):
    before = placement()
    result = run("forward", "--org", "OrgB", "--no-input")
    assert result.code == 3
    # B1 and OrgB's org-wide role are legacy by their flag; B2 (pinned on) is not named.
    assert B1 in result.message
    assert "OrgB (org-wide)" in result.message
    assert B2 not in result.message
    assert "--force" in result.message
    assert placement() == before
    assert runs() == []


def test_rollback_against_the_flag_is_refused_naming_the_courses(mixed):
    before = placement()
    result = run("rollback", "--course", A2, B2, "--no-input")
    assert result.code == 3
    assert A2 in result.message  # bob's Casbin role there
    assert B2 not in result.message  # nothing of B2 in Casbin yet
    assert placement() == before
    assert runs() == []


def test_forward_all_against_the_flag_is_refused(mixed):
    result = run("forward", "--all", "--no-input")
    assert result.code == 3
    for scope in (A3, B1, "OrgB (org-wide)"):
        assert scope in result.message
    assert runs() == []


def test_force_moves_against_the_flag(mixed):
    result = run("forward", "--org", "OrgB", "--force", "--no-input")
    assert result.code == 0, result.text
    where = placement()
    for user, role, scope, _, _ in MIXED:
        if "OrgB" in scope:
            assert where[(user, role, scope)] == CASBIN, scope
    assert where[("alice", "staff", A1)] == LEGACY  # OrgA untouched
    assert "Moved 4 role rows." in result.out
    run_ = MigrationRun.objects.get()
    assert (run_.migration_type, run_.scope_type, run_.scope_key) == ("forward", "org", "OrgB")
    # Now OrgB's roles sit against its flag: verify says so.
    assert run("verify", "--org", "OrgB").code == 5


def test_force_rollback_of_a_course(mixed):
    assert run("rollback", "--course", A2, "--force", "--no-input").code == 0
    assert placement()[("bob", "staff", A2)] == LEGACY


def test_directed_move_with_the_flag_needs_no_force(mixed):
    result = run("forward", "--course", A1, B2, "--no-input")
    assert result.code == 0, result.text
    assert "Moved 4 role rows." in result.out
    assert placement() == expected(lambda scope: scope in (A1, B2))


@pytest.mark.parametrize("answer", ["no", "", "y", "nope"])
def test_declining_the_confirmation_moves_nothing(mixed, monkeypatch, answer):
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt="": asked.append(prompt) or answer)
    before = placement()
    result = run("forward", "--course", A1)
    assert result.code == 3
    assert "cancelled" in result.message
    assert "This will forward the roles of course course-v1:OrgA+A1+2024." in result.out
    assert len(asked) == 1
    assert placement() == before
    assert runs() == []


def test_no_answer_at_all_is_a_no(mixed, monkeypatch):
    def eof(prompt=""):
        raise EOFError

    monkeypatch.setattr("builtins.input", eof)
    result = run("rollback", "--course", B3)
    assert result.code == 3
    assert runs() == []


@pytest.mark.parametrize("answer", ["yes", " YES "])
def test_confirming_moves(mixed, monkeypatch, answer):
    monkeypatch.setattr("builtins.input", lambda prompt="": answer)
    result = run("forward", "--course", A1)
    assert result.code == 0, result.text
    assert placement() == expected(lambda scope: scope == A1)


def test_confirmation_of_a_forced_move_warns_it_is_against_the_flag(mixed, monkeypatch):
    monkeypatch.setattr("builtins.input", lambda prompt="": "yes")
    result = run("rollback", "--org", "OrgA", "--force")
    assert result.code == 0, result.text
    assert "This will rollback the roles of org OrgA AGAINST the effective flag." in result.out
    assert placement()[("bob", "staff", A2)] == LEGACY


def test_refusal_comes_before_the_confirmation(mixed, monkeypatch):
    def no_prompt(prompt=""):
        raise AssertionError("a refused move must not ask")

    monkeypatch.setattr("builtins.input", no_prompt)
    assert run("forward", "--course", A3).code == 3


# --- verify ----------------------------------------------------------------------------------


def test_verify_is_clean_after_a_sync(mixed):
    assert run("sync", "--all").code == 0
    result = run("verify", "--all")
    assert result.code == 0, result.text
    assert result.out == "Every selected scope is in step with its flag.\n"


def test_verify_names_a_casbin_row_written_behind_the_apps_back(people, global_flag):
    global_flag(False)
    add_casbin("alice", "staff", B1)  # B1's flag names the legacy table
    result = run("verify", "--all")
    assert result.code == 5
    assert "1 scope(s) with roles in the wrong system:" in result.out
    assert f"  {B1}: flag says legacy; 0 legacy row(s), 1 Casbin row(s)" in result.out
    assert "authz_migrate sync" in result.message


def test_verify_names_a_legacy_row_of_a_course_whose_flag_is_on(people, grant, course_override):
    course_override(A1, "on")
    grant(people["bob"], A1, "instructor")
    grant(people["bob"], A2, "instructor")  # A2's flag is off: in step
    result = run("verify", "--all")
    assert result.code == 5
    assert f"  {A1}: flag says Casbin; 1 legacy row(s), 0 Casbin row(s)" in result.out
    assert A2 not in result.out


def test_verify_lists_every_misplaced_scope_including_org_wide_roles(mixed):
    result = run("verify", "--all")
    assert result.code == 5
    assert "7 scope(s) with roles in the wrong system:" in result.out
    for scope in (A1, A2, A3, "OrgA (org-wide)", B2, B3, "OrgB (org-wide)"):
        assert f"  {scope}: " in result.out
    assert B1 not in result.out


def test_verify_selectors_limit_the_check(mixed):
    by_course = run("verify", "--course", B1)
    assert by_course.code == 0, by_course.text
    assert "in step" in by_course.out
    by_org = run("verify", "--org", "OrgB")
    assert by_org.code == 5
    assert A1 not in by_org.out
    assert {line.split(": flag says")[0].strip() for line in by_org.out.splitlines()[1:]} == {
        B2,
        B3,
        "OrgB (org-wide)",
    }


def test_verify_json(mixed):
    result = run("verify", "--org", "OrgB", "--json")
    assert result.code == 5
    document = json.loads(result.out)
    assert {
        (d["scope"], d["org"], d["course"], d["flag"], d["legacy_rows"], d["casbin_rows"])
        for d in document["drift"]
    } == {
        (B2, "OrgB", B2, "casbin", 2, 0),
        (B3, "OrgB", B3, "legacy", 0, 1),
        ("OrgB (org-wide)", "OrgB", None, "legacy", 1, 1),
    }


def test_verify_json_when_clean(mixed):
    assert run("sync", "--all").code == 0
    result = run("verify", "--all", "--json")
    assert result.code == 0, result.text
    assert json.loads(result.out) == {"drift": [], "cannot_move": {}, "warnings": []}


def test_verify_ignores_roles_outside_the_role_map(people, grant, course_override):
    course_override(A1, "on")
    grant(people["alice"], A1, "finance_admin")
    assert run("verify", "--all").code == 0


def test_verify_writes_nothing(mixed):
    before = placement()
    run("verify", "--all")
    assert placement() == before
    assert runs() == []


# --- status ----------------------------------------------------------------------------------


@pytest.fixture
def history(mixed, monkeypatch):
    """Runs of several scopes and statuses, oldest first."""
    assert run("sync", "--course", A1).code == 0
    assert run("sync", "--org", "OrgB").code == 0  # two runs
    with monkeypatch.context() as patch:
        patch.setattr("authz_migration.moves.insert_casbin", _fail)
        assert run("sync", "--org", "OrgA").code == 1  # forward fails, rollback completes
    return runs()


def _fail(keys):
    raise DatabaseError("disk on fire")


def test_status_lists_runs_newest_first(history):
    result = run("status")
    assert result.code == 0, result.text
    lines = result.out.splitlines()
    assert len(lines) == len(history) == 5
    assert [int(line.split()[0][1:]) for line in lines] == [r.pk for r in reversed(history)]
    first = lines[-1].split()
    assert first[2:8] == ["completed", "forward", "course", A1, "command", "-"]
    assert lines[-1].endswith("moved 2, could not move 0")
    assert "failed" in lines[1]


def test_status_limit(history):
    lines = run("status", "--limit", "2").out.splitlines()
    assert [int(line.split()[0][1:]) for line in lines] == [history[-1].pk, history[-2].pk]


def test_status_filter_by_status(history):
    lines = run("status", "--status", "failed").out.splitlines()
    assert len(lines) == 1
    assert lines[0].split()[2:6] == ["failed", "forward", "org", "OrgA"]


def test_status_filter_by_scope(history):
    lines = run("status", "--scope", "OrgB").out.splitlines()
    assert len(lines) == 2
    assert all(" OrgB " in line for line in lines)
    course = run("status", "--scope", A1).out.splitlines()
    assert len(course) == 1


def test_status_json(history):
    document = json.loads(run("status", "--json", "--limit", "3", "--status", "completed").out)
    records = document["runs"]
    completed = [r for r in reversed(history) if r.status == "completed"][:3]
    assert [r["id"] for r in records] == [r.pk for r in completed]
    first = records[-1]
    assert first["status"] == "completed"
    assert first["trigger"] == "command"
    assert first["triggered_by"] is None
    assert isinstance(first["duration_seconds"], float)
    assert {r["scope_type"] for r in records} <= {"course", "org"}
    assert sum(r["moved"] for r in records) == sum(r.metadata["counts"]["moved"] for r in completed)


def test_status_without_runs(db):
    assert run("status").out == "No runs.\n"
    assert json.loads(run("status", "--json").out) == {
        "runs": [],
        "cutover": {"released": 0, "pinned": [], "rows_moved": 0},
    }


def test_status_filter_matching_nothing(history):
    assert run("status", "--status", "skipped").out == "No runs.\n"


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["sync", "forward", "rollback", "verify"])
def test_malformed_course_key_is_refused_naming_it(mixed, action):
    before = placement()
    extra = [] if action == "verify" else ["--no-input"]
    result = run(action, "--course", A1, "course-v1:OrgA+no run", *extra)
    assert result.code == 2
    assert "course-v1:OrgA+no run" in result.message
    assert placement() == before
    assert runs() == []


def test_invalid_org_is_refused_naming_it(mixed):
    result = run("sync", "--org", "Org A")
    assert result.code == 2
    assert "Org A" in result.message
    assert runs() == []


@pytest.mark.parametrize(
    "args",
    [
        ["sync"],
        ["forward", "--no-input"],
        ["verify"],
        ["sync", "--all", "--org", "OrgA"],
        ["sync", "--all", "--course", A1],
        ["rollback", "--all", "--org", "OrgA", "--no-input"],
        ["verify", "--all", "--course", A1],
    ],
)
def test_selectors_missing_or_combined_with_all_are_refused(mixed, args):
    result = run(*args)
    assert result.code == 2
    assert "select --course, --org, or --all" in result.message
    assert runs() == []


@pytest.mark.parametrize("size", ["0", "-5"])
def test_batch_size_below_one_is_refused(mixed, size):
    before = placement()
    result = run("sync", "--all", "--batch-size", size)
    assert result.code == 2
    assert "--batch-size" in result.message
    assert placement() == before
    assert runs() == []


@pytest.mark.parametrize(
    "args",
    [
        ["nope"],
        ["sync", "--all", "--bogus"],
        ["sync", "--all", "--force"],  # --force belongs to forward/rollback only
        ["sync", "--all", "--batch-size", "many"],
        ["status", "--status", "bogus"],
        ["verify", "--all", "--dry-run"],
    ],
)
def test_unknown_arguments_exit_2_from_the_command_line(args):
    # argparse errors happen before any database access; SQLite in memory is enough.
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "AUTHZ_TEST_DB": "sqlite"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "django", "authz_migrate", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "error:" in done.stderr


@pytest.mark.parametrize("args", [["nope"], ["sync", "--all", "--bogus"]])
def test_unknown_arguments_exit_2_through_call_command(db, args):
    assert run(*args).code == 2


# --- incomplete, failed, busy ----------------------------------------------------------------


def test_row_that_cannot_move_makes_the_run_partial(people, grant, global_flag):
    global_flag(True)
    grant(people["alice"], A1)
    grant(people["bob"], A2, "instructor")
    grant(people["carol"], BAD_KEY)
    result = run("sync", "--org", "OrgA")
    assert result.code == 6
    assert "no re-run moves them" in result.message
    row = result.out.splitlines()[2]
    assert "malformed_course_key: 1" in row
    assert "Moved 2 role rows." in result.out
    assert placement() == {
        ("alice", "staff", A1): CASBIN,
        ("bob", "instructor", A2): CASBIN,
        ("carol", "staff", BAD_KEY): LEGACY,
    }
    (run_,) = runs()
    assert run_.status == "partial_success"
    assert run_.metadata["could_not_move"]["malformed_course_key"]["rows"][0]["scope"] == BAD_KEY
    # Re-running cannot fix the key, and the exit code says so (6, not 4 "re-run"); verify
    # names the row and its reason (it used to say "in step").
    assert run("sync", "--org", "OrgA").code == 6
    check = run("verify", "--org", "OrgA")
    assert check.code == 6, check.text
    assert "malformed_course_key (1)" in check.out


def test_failed_move_exits_1_and_leaves_role_data_unchanged(mixed, monkeypatch):
    monkeypatch.setattr("authz_migration.moves.insert_casbin", _fail)
    before = all_roles()
    where = placement()
    result = run("sync", "--org", "OrgA", "--no-input")
    assert result.code == 1
    assert "rolled back" in result.message
    assert "DatabaseError: disk on fire" in result.err
    forward, rollback = runs()
    assert (forward.migration_type, forward.status) == ("forward", "failed")
    assert "disk on fire" in forward.metadata["error"]
    assert "Traceback" in forward.metadata["traceback"]
    # The forward move failed and changed nothing; the rollback of A3 still happened.
    assert (rollback.migration_type, rollback.status) == ("rollback", "completed")
    assert all_roles() == before
    where[("carol", "instructor", A3)] = LEGACY
    assert placement() == where


def test_failed_batch_keeps_earlier_batches_and_stops_the_move(
    people, grant, global_flag, monkeypatch, python_path
):
    from authz_migration import stores

    global_flag(True)
    seed_courses(people, grant, "OrgA", 6)
    calls = []

    def second_call_fails(keys):
        calls.append(keys)
        if len(calls) == 2:
            raise DatabaseError("disk on fire")
        return stores.insert_casbin(keys)

    monkeypatch.setattr("authz_migration.moves.insert_casbin", second_call_fails)
    before = all_roles()
    result = run("sync", "--org", "OrgA", "--batch-size", "2")
    assert result.code == 1
    assert [r.status for r in runs()] == ["completed", "failed"]
    assert casbin_roles().total() == 2  # the first batch; the failed one rolled back
    assert legacy_roles().total() == 4
    assert all_roles() == before
    assert len(calls) == 2  # no batch after the failed one


def test_interrupt_finishes_the_batch_and_exits_130(people, grant, global_flag, monkeypatch):
    class CtrlCAfterFirstBatch(Progress):
        def update(self, summary):
            super().update(summary)
            if self.batches == 1:
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(command_module, "Progress", CtrlCAfterFirstBatch)
    global_flag(True)
    seed_courses(people, grant, "OrgA", 6)
    before = all_roles()
    handler = signal.getsignal(signal.SIGINT)
    result = run("sync", "--org", "OrgA", "--batch-size", "2")
    assert result.code == 130
    assert "interrupted" in result.message
    assert "Moved 2 role rows." in result.out
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C works again afterwards
    assert len(runs()) == 1
    assert all_roles() == before
    monkeypatch.undo()
    again = run("sync", "--org", "OrgA", "--batch-size", "2", "--json")
    assert again.code == 0, again.text
    assert json.loads(again.out)["moved"] == 4
    assert legacy_roles().total() == 0


def test_interrupted_json_says_so(people, grant, global_flag, monkeypatch):
    class CtrlC(Progress):
        def update(self, summary):
            super().update(summary)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(command_module, "Progress", CtrlC)
    global_flag(True)
    seed_courses(people, grant, "OrgA", 4)
    result = run("sync", "--all", "--batch-size", "2", "--json")
    assert result.code == 130
    document = json.loads(result.out)
    assert document["interrupted"] is True
    assert document["exit_code"] == 130
    assert document["moved"] == 2


def test_interrupt_during_a_long_pause_stops_within_a_second(people, grant, global_flag):
    global_flag(True)
    seed_courses(people, grant, "OrgA", 6)
    # The first batch takes milliseconds: Ctrl-C arrives during the 20-second pause after it.
    ctrl_c = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    started = time.monotonic()
    ctrl_c.start()
    try:
        result = run("sync", "--org", "OrgA", "--batch-size", "2", "--sleep", "20")
    finally:
        ctrl_c.cancel()
    assert time.monotonic() - started < 1.5
    assert result.code == 130
    assert len(runs()) == 1


class LockHolder(threading.Thread):
    """Holds the locks of an org move (shared instance, exclusive org) in its own connection
    until told to let go."""

    def __init__(self, org: str):
        super().__init__(name=f"lock-holder-{org}", daemon=True)
        self.org = org
        self.held = threading.Event()
        self.release = threading.Event()
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            with transaction.atomic():
                guard.acquire([guard.org_lock_key(self.org)])
                self.held.set()
                self.release.wait(30)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)
        finally:
            self.held.set()
            connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_busy_scope_is_skipped_and_exits_4(server_db, people, grant, global_flag):
    global_flag(True)
    seed_courses(people, grant, "OrgA", 3)
    seed_courses(people, grant, "OrgB", 2)
    # Lock rows committed beforehand, as after any earlier move of these scopes.
    guard.ensure_lock_rows([guard.INSTANCE, "org:OrgA", "org:OrgB"])
    holder = LockHolder("OrgA")
    holder.start()
    try:
        assert holder.held.wait(30)
        assert holder.errors == []
        busy = run("sync", "--org", "OrgA", "--no-input")
        other = run("sync", "--org", "OrgB")
        instance = run("sync", "--all")
    finally:
        holder.release.set()
        holder.join(30)
    assert not holder.is_alive()

    assert busy.code == 4, busy.text
    assert "incomplete" in busy.message
    assert "scope busy" in busy.err
    assert other.code == 0, other.text  # another org never waits for OrgA
    assert instance.code == 4, instance.text  # the instance lock is shared by OrgA's mover
    skipped = runs(status="skipped")
    assert [(r.migration_type, r.scope_type, r.scope_key) for r in skipped] == [
        ("forward", "org", "OrgA"),
        ("forward", "instance", ""),
        ("rollback", "instance", ""),
    ]
    assert "scope busy" in skipped[0].metadata["reason"]
    assert {scope for _, _, scope in legacy_roles()} == {
        f"course-v1:OrgA+C{i:02d}+R" for i in range(3)
    }
    status = run("status", "--status", "skipped", "--scope", "OrgA")
    assert len(status.out.splitlines()) == 1

    # Once the lock is free, the same command finishes the job.
    done = run("sync", "--org", "OrgA")
    assert done.code == 0, done.text
    assert "Moved 3 role rows." in done.out
    assert legacy_roles() == Counter()


# --- what an operator reads (issue 17) -------------------------------------------------------


@pytest.mark.parametrize(
    "org, hint",
    [
        ("orga", "no roles or overrides found for org 'orga'; did you mean 'OrgA'?"),
        ("NoSuchOrg", "no roles or overrides found for org 'NoSuchOrg'"),
    ],
)
def test_an_org_the_site_does_not_know_gets_a_hint(mixed, org, hint, monkeypatch):
    # On MariaDB "org:orga" and a committed "org:OrgA" lock row are one row under its
    # collation: the guard's side connection would wait for this test's own transaction.
    lock_rows_in_test_transaction(monkeypatch)
    before = placement()
    result = run("sync", "--org", org)
    assert result.code == 0, result.text
    assert result.err == f"warning: {hint}\n"
    assert placement() == before
    assert runs() == []
    assert json.loads(run("sync", "--org", org, "--json").out)["warnings"] == [hint]
    assert run("verify", "--org", "OrgA").err == ""  # a known org: no warning


def test_a_wrong_case_course_key_gets_a_hint(mixed):
    result = run("verify", "--course", A1.lower())
    assert f"did you mean '{A1}'?" in result.err


def test_an_empty_pass_reports_nothing_to_move_and_records_no_run(mixed):
    # The admin's "Sync now" follows the same rule (tests/test_admin.py).
    assert run("sync", "--all").code == 0
    count = MigrationRun.objects.count()
    document = json.loads(run("sync", "--all", "--json").out)
    assert document["statuses"] == {}
    for scope in document["scopes"]:
        assert (scope["batches"], scope["statuses"], scope["run_ids"]) == (0, {}, [])
        assert scope["nothing_to_move"] is True
    assert MigrationRun.objects.count() == count
    assert run("sync", "--all").out.startswith("Nothing to move: ")


def test_a_dry_run_that_would_be_incomplete_never_points_to_runs(people, grant, global_flag):
    global_flag(True)
    grant(people["alice"], A1)
    grant(people["carol"], BAD_KEY)
    result = run("sync", "--all", "--dry-run")
    assert result.code == 6
    assert result.message == (
        "a real run would be incomplete: 1 row(s) could not move (reasons in the summary); "
        "the dry run wrote nothing"
    )
    assert "see the runs" not in result.text
    assert runs() == []
    real = run("sync", "--all")
    assert real.code == 6
    assert "authz_migrate verify" in real.message


def test_verbosity_0_prints_only_errors_and_2_each_batch(people, grant, global_flag):
    global_flag(True)
    seed_courses(people, grant, "OrgA", 3)
    quiet = run("sync", "--org", "OrgA", "--verbosity", "0")
    assert (quiet.code, quiet.out, quiet.err) == (0, "", "")
    seed_courses(people, grant, "OrgB", 3)
    loud = run("sync", "--org", "OrgB", "--batch-size", "2", "-v", "2")
    assert loud.code == 0, loud.text
    lines = loud.out.splitlines()
    assert lines[0] == "planned: forward org OrgB"
    batches = [line for line in lines if line.startswith("  forward org OrgB: read ")]
    assert len(batches) == 2
    assert batches[0].endswith(f"completed (run #{runs()[-2].pk})")


def test_help_lists_the_exit_codes_one_per_line_and_describes_every_subcommand():
    command = command_module.Command()
    text = command.create_parser("manage.py", "authz_migrate").format_help()
    assert "\n  0    done: " in text
    assert "\n  130  interrupted (Ctrl-C)" in text
    actions = command.create_parser("manage.py", "authz_migrate")._subparsers._group_actions[0]
    for name, sub in actions.choices.items():
        assert sub.description, name
    assert "list recent runs" in actions.choices["status"].format_help()


def test_without_a_terminal_the_prompt_ends_its_line_before_the_refusal(mixed, monkeypatch):
    def no_answer(prompt=""):
        raise EOFError

    monkeypatch.setattr("builtins.input", no_answer)
    result = run("forward", "--course", A1)
    assert result.code == 3
    assert result.out.endswith("Type 'yes' to continue: \n")
    assert "--no-input" in result.message
    assert runs() == []


def test_the_refusal_speaks_the_command_line(mixed):
    result = run("forward", "--org", "OrgB", "--no-input")
    assert result.code == 3
    assert "add --force to move them this way anyway" in result.message
    assert "force=True" not in result.message


def test_ctrl_c_at_the_question_is_a_no(mixed, monkeypatch):
    def ctrl_c(prompt=""):
        raise KeyboardInterrupt

    monkeypatch.setattr("builtins.input", ctrl_c)
    result = run("forward", "--course", A1)
    assert (result.code, result.message) == (3, "cancelled: not confirmed; nothing moved")
    assert runs() == []


def test_ctrl_c_while_planning_exits_130_without_a_traceback(mixed, monkeypatch):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "plan", ctrl_c)
    result = run("sync", "--all")
    assert (result.code, result.message) == (130, "interrupted before anything moved")
    assert runs() == []
