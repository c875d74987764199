"""The instance cutover (``api.cutover``, ``authz_migrate cutover``) and a global flip that
pins instead of stranding courses (docs/decisions/0013), on every database.

DESIGN.md, "Instance-wide cutover": at every committed instant every course's roles sit in
the system its effective flag names; the cutover pins every org, flips the global flag and
releases the orgs one transaction each, resumably; overrides an operator wrote are left
alone.
"""

from __future__ import annotations

import json
import signal
import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from authz_migration import api, cutover, flags, guard, moves, pins
from authz_migration.conf import legacy_role_model, org_override_model
from authz_migration.models import MigrationRun
from tests.helpers import (
    SAFETY_NET,
    add_casbin_role,
    casbin_roles,
    duplicate_casbin_rows,
    in_thread,
    legacy_roles,
    make_users,
)
from tests.test_command_kill import TIMEOUT, Child, wait_until_locks_are_free

ORGS = ["OrgA", "OrgB", "OrgC", "OrgD"]
OPERATOR_ORG = "OrgD"  # forced off by an operator: keeps the legacy table
PINNED_COURSE = "course-v1:OrgA+C1+R"  # forced off by its own override


def course(org: str, number: int) -> str:
    return f"course-v1:{org}+C{number}+R"


@pytest.fixture
def instance(make_user, grant, global_flag, org_override, course_override):
    """Two courses with two roles each and one org-wide role in each of four orgs, all in
    the legacy table with the global flag off; one org and one course forced off by an
    operator."""
    global_flag(False)
    alice, bob = make_user("alice"), make_user("bob")
    for org in ORGS:
        for number in (0, 1):
            grant(alice, course(org, number), "staff")
            grant(bob, course(org, number), "instructor")
        grant(alice, "", "staff", org=org)
        grant(bob, course(org, 0), "finance_admin")  # not a course-authoring role
    org_override(OPERATOR_ORG, "off", note="kept on legacy by the operator")
    course_override(PINNED_COURSE, "off", note="kept on legacy by the operator")
    return {"alice": alice, "bob": bob}


def systems(scope: str) -> set[str]:
    found = set()
    if any(key[2] == scope and key[1] != "finance_admin" for key in legacy_roles()):
        found.add("legacy")
    if any(key[2] == scope for key in casbin_roles()):
        found.add("casbin")
    return found


def all_roles():
    return legacy_roles() + casbin_roles()


def newest(org: str):
    return flags.current_org_rows({org}).get(org)


def steps_of(iterator) -> list[cutover.Step]:
    return list(iterator)


# --- the API ---------------------------------------------------------------------------------


@pytest.mark.parametrize("automatic", [False, True], ids=["automatic-off", "automatic-on"])
def test_cutover_moves_every_org_and_flips_the_global_flag(instance, automatic):
    before = all_roles()
    with override_settings(AUTHZ_MIGRATION_AUTOMATIC=automatic):
        steps = steps_of(api.cutover(True))

    assert flags.global_state() is True
    assert api.verify(everything=True).drift == []
    kinds = [(s.kind, s.org) for s in steps]
    assert kinds[:2] == [("plan", ""), ("pinned", "")]
    assert steps[1].detail["orgs"] == ["OrgA", "OrgB", "OrgC"]
    assert [org for kind, org in kinds if kind == "released"] == ["OrgA", "OrgB", "OrgC"]
    for org in ("OrgA", "OrgB", "OrgC"):
        assert systems(course(org, 0)) == {"casbin"}
        assert systems(f"org:{org}") == {"casbin"}
    assert systems(PINNED_COURSE) == {"legacy"}  # its own override keeps it
    assert systems(course(OPERATOR_ORG, 0)) == {"legacy"}  # the operator's org override too
    assert all_roles() == before  # nothing lost, nothing duplicated
    assert ("bob", "finance_admin", course("OrgA", 0)) in legacy_roles()
    # The operator's rows are still the current ones; the cutover's are all released.
    assert newest(OPERATOR_ORG)[2] == "kept on legacy by the operator"
    assert flags.course_override_state(PINNED_COURSE) is False
    assert cutover.progress() == {"released": 3, "pinned": [], "rows_moved": 13}
    released = [s for s in steps if s.kind == "released" and s.org == "OrgB"][0]
    assert released.run.metadata["cutover"]["parity"]["left_in_source"] == 0
    assert released.run.metadata["cutover"]["parity"]["moved"] == 5
    assert released.run.status == "completed" and released.moved == 5


def test_the_plan_lists_what_is_left_alone(instance):
    plan = api.cutover_plan(True).describe()
    assert plan["pin"] == ["OrgA", "OrgB", "OrgC"]
    assert plan["operator_pinned_orgs"] == {OPERATOR_ORG: "legacy"}
    assert plan["pinned_courses"]["items"] == [PINNED_COURSE]
    # OrgA: C0's two roles and its org-wide role follow it; C1 is pinned.
    assert plan["release"][0] == {"org": "OrgA", "legacy_rows": 3, "casbin_rows": 0}
    assert plan["rows_to_move"] == 3 + 5 + 5


def test_dry_run_changes_nothing(instance):
    before = all_roles()
    overrides = org_override_model().objects.count()
    steps = steps_of(api.cutover(True, dry_run=True))
    assert [s.kind for s in steps] == ["plan"]
    assert all_roles() == before
    assert org_override_model().objects.count() == overrides
    assert flags.global_state() is False
    assert MigrationRun.objects.count() == 0


def test_an_interrupted_cutover_is_consistent_and_a_rerun_finishes_it(instance):
    before = all_roles()
    calls = []

    def stop_after_one_release():
        calls.append(1)
        return len(calls) > 1

    steps = steps_of(api.cutover(True, should_stop=stop_after_one_release))
    assert [s.kind for s in steps] == ["plan", "pinned", "released", "interrupted"]
    assert flags.global_state() is True
    # At rest between two orgs: released orgs in Casbin, the others held on legacy.
    assert api.verify(everything=True).drift == []
    assert systems(course("OrgA", 0)) == {"casbin"}
    assert systems(course("OrgB", 0)) == {"legacy"}
    assert pins.is_pin(newest("OrgB"))

    rerun = steps_of(api.cutover(True))
    assert [s.kind for s in rerun] == ["plan", "released", "released"]
    assert rerun[0].detail["pin"] == []  # nothing pinned twice
    assert api.verify(everything=True).drift == []
    assert all_roles() == before
    # One pin and one release per org, never more.
    for org in ("OrgA", "OrgB", "OrgC"):
        assert org_override_model().objects.filter(org=org).count() == 2
    assert steps_of(api.cutover(True))[0].detail["release"] == []  # a third run: no work


def test_an_override_an_operator_saves_meanwhile_is_left_alone(instance, org_override):
    steps_of(api.cutover(True, should_stop=iter([False, True]).__next__))
    org_override("OrgB", "off", note="operator: keep OrgB on legacy for now")

    steps = steps_of(api.cutover(True))

    assert [(s.kind, s.org) for s in steps[1:]] == [("released", "OrgC")]
    assert newest("OrgB")[2] == "operator: keep OrgB on legacy for now"
    assert systems(course("OrgB", 0)) == {"legacy"}
    assert api.verify(everything=True).drift == []


def test_only_the_named_orgs_are_released(instance):
    steps = steps_of(api.cutover(True, orgs=["OrgB"]))
    assert [(s.kind, s.org) for s in steps[1:]] == [("pinned", ""), ("released", "OrgB")]
    assert systems(course("OrgB", 0)) == {"casbin"}
    assert systems(course("OrgA", 0)) == {"legacy"}
    assert api.verify(everything=True).drift == []
    assert cutover.progress()["pinned"] == ["OrgA", "OrgC"]


def test_a_failed_org_stays_pinned_its_run_recorded_and_a_rerun_continues(instance, monkeypatch):
    original = moves.forward_batch

    def fail_for_org_b(rows, decide, dry_run=False):
        if any(row.org == "OrgB" for row in rows):
            raise RuntimeError("disk full")
        return original(rows, decide, dry_run=dry_run)

    monkeypatch.setattr(moves, "forward_batch", fail_for_org_b)
    steps = steps_of(api.cutover(True))

    assert [(s.kind, s.org) for s in steps[2:]] == [("released", "OrgA"), ("failed", "OrgB")]
    failed = steps[-1].run
    assert (failed.status, failed.scope_key, failed.migration_type) == ("failed", "OrgB", "forward")
    assert "disk full" in failed.metadata["error"]
    assert pins.is_pin(newest("OrgB"))  # still held, no compensating row left behind
    assert systems(course("OrgB", 0)) == {"legacy"}
    assert api.verify(everything=True).drift == []

    monkeypatch.setattr(moves, "forward_batch", original)
    rerun = steps_of(api.cutover(True))
    assert [s.org for s in rerun if s.kind == "released"] == ["OrgB", "OrgC"]
    assert api.verify(everything=True).drift == []


def test_a_parity_mismatch_rolls_the_org_back(instance, monkeypatch):
    monkeypatch.setattr(cutover, "parity", lambda org: {"left_in_source": 1, "target": "casbin"})
    steps = steps_of(api.cutover(True))
    assert steps[-1].kind == "failed" and steps[-1].org == "OrgA"
    assert "parity check failed for OrgA" in steps[-1].run.metadata["error"]
    assert systems(course("OrgA", 0)) == {"legacy"}  # the move rolled back with the release
    assert pins.is_pin(newest("OrgA"))
    assert api.verify(everything=True).drift == []


def test_parity_counts_the_orgs_rows_exactly_wherever_they_sit(instance, make_user, grant):
    """The parity scan bounds its exact read by an index probe that ignores letter case on
    MariaDB and SQLite: rows of an org differing in case only are read but never counted,
    and a row left behind is found wherever it sits in the table."""
    carol = make_user("carol")
    assert cutover.parity("OrgA")["left_in_source"] == 0  # legacy target: Casbin is read
    add_casbin_role("carol", "course_staff", course("orga", 5))  # another org, to Open edX
    add_casbin_role("carol", "course_staff", course("OrgAB", 5))  # shares the prefix only
    assert cutover.parity("OrgA")["left_in_source"] == 0
    add_casbin_role("carol", "course_staff", course("OrgA", 5))
    add_casbin_role("carol", "course_staff", course("orga", 6))
    assert cutover.parity("OrgA")["left_in_source"] == 1
    assert cutover.parity("OrgZ")["left_in_source"] == 0  # no row at all: one probe

    steps_of(api.cutover(True, orgs=["OrgB"]))  # OrgB now names Casbin: legacy is read
    grant(carol, course("orgb", 1), "staff")
    assert cutover.parity("OrgB")["left_in_source"] == 0
    grant(carol, "", "staff", org="OrgB")  # an org-wide role, after the case variant
    assert cutover.parity("OrgB")["left_in_source"] == 1


def test_cutover_back_to_legacy(instance):
    before = all_roles()
    steps_of(api.cutover(True))
    steps_of(api.cutover(False))
    assert flags.global_state() is False
    assert api.verify(everything=True).drift == []
    assert systems(course("OrgA", 0)) == {"legacy"}
    assert all_roles() == before


# --- a global flip ---------------------------------------------------------------------------


def test_a_global_flip_pins_the_orgs_it_would_strand_and_moves_nothing(instance, global_flag):
    add_casbin_role("alice", "course_staff", course("OrgE", 0))  # in Casbin before the flip
    before = all_roles()
    with override_settings(AUTHZ_MIGRATION_AUTOMATIC=True):
        global_flag(True)

    assert all_roles() == before  # nothing moved
    (run,) = MigrationRun.objects.all()
    assert (run.scope_type, run.status, run.trigger) == ("instance", "skipped", "global_flag")
    # OrgE's only role is in Casbin already, OrgD is forced by the operator: not pinned.
    assert run.metadata["pinned_orgs"]["items"] == ["OrgA", "OrgB", "OrgC"]
    assert run.metadata["action"] == "authz_migrate cutover --to authz"
    assert "authz_migrate cutover --to authz" in run.metadata["reason"]
    assert not flags.is_authz_enabled(course("OrgA", 0))  # held on its previous state
    assert flags.is_authz_enabled(course("OrgE", 0))
    assert api.verify(everything=True).drift == []

    with override_settings(AUTHZ_MIGRATION_AUTOMATIC=True):
        steps = steps_of(api.cutover(True))
    assert steps[0].detail["pin"] == []
    assert [s.org for s in steps if s.kind == "released"] == ["OrgA", "OrgB", "OrgC"]
    assert api.verify(everything=True).drift == []


def test_pins_lock_and_read_their_orgs_together_a_chunk_at_a_time(
    instance, org_override, monkeypatch
):
    """Pinning many orgs costs a lock statement and a read per chunk of orgs, plus each pin's
    own save: not three statements an org. Orgs whose newest row is enabled stay unpinned."""
    monkeypatch.setattr(pins, "PIN_CHUNK", 2)
    org_override("OrgC", "on", note="operator")
    orgs = ["OrgA", "OrgB", "OrgC", "OrgE", "OrgF"]  # chunks: A B | C E | F
    # As after the orgs' first moves: a missing lock row costs the chunk a second lock.
    guard.ensure_lock_rows([guard.INSTANCE, *(guard.org_lock_key(org) for org in orgs)])
    with CaptureQueriesContext(connection) as ctx, transaction.atomic():
        pinned = pins.pin_orgs(orgs, False, "test")
    statements = [q["sql"] for q in ctx.captured_queries]
    table = org_override_model()._meta.db_table

    def count(start: str, word: str = "") -> int:
        return sum(1 for s in statements if s.startswith(start) and word in s)

    assert pinned == ["OrgA", "OrgB", "OrgE", "OrgF"]
    assert count("INSERT INTO", table) == 4  # one save per pin
    # One read of the newest rows per chunk, fetched at once: on PostgreSQL a streamed read
    # (a server-side cursor) would be a DECLARE, not a SELECT.
    assert count("SELECT", table) == 3
    assert count("DECLARE") == 0
    if connection.vendor != "sqlite":  # SQLite's lock is its single writer
        assert count("SELECT", "FOR UPDATE") == 3
    assert [newest(org)[0] for org in orgs] == [True] * 5
    assert not flags.org_effective_state("OrgA").enabled  # held on the state given


def test_a_global_flip_with_pins_turned_off_only_warns(instance, global_flag):
    with override_settings(AUTHZ_MIGRATION_AUTOMATIC=True, AUTHZ_MIGRATION_GLOBAL_FLIP_PINS=False):
        global_flag(True)
    (run,) = MigrationRun.objects.all()
    assert "pinned_orgs" not in run.metadata
    assert cutover.progress() == {"released": 0, "pinned": [], "rows_moved": 0}


# --- the command -----------------------------------------------------------------------------


def command(*args) -> str:
    out = StringIO()
    call_command("authz_migrate", "cutover", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_the_command_cuts_over_and_reports_in_json(instance):
    document = json.loads(command("--to", "authz", "--no-input", "--json"))
    assert document["exit_code"] == 0
    assert document["pinned"] == ["OrgA", "OrgB", "OrgC"]
    assert [r["org"] for r in document["released"]] == ["OrgA", "OrgB", "OrgC"]
    assert document["moved"] == 13
    assert document["plan"]["operator_pinned_orgs"] == {"OrgD": "legacy"}
    assert api.verify(everything=True).drift == []


def test_the_command_prints_progress_and_a_dry_run_changes_nothing(instance):
    text = command("--to", "authz", "--dry-run")
    assert "Cutover to authz: global flag off -> on; 3 org(s) to pin" in text
    assert "OrgD: forced to legacy by an operator's override: left alone" in text
    assert PINNED_COURSE in text
    assert "Dry run: nothing changed." in text
    assert flags.global_state() is False

    text = command("--to", "authz", "--no-input")
    assert "OrgB: released, moved 5 role row(s)" in text
    assert "Cutover done: moved 13 role row(s)." in text


def past_run(moved: int, seconds: float, **fields) -> MigrationRun:
    """A run this site recorded earlier, as the estimate reads it."""
    metadata = {"counts": {"moved": moved}, "duration_seconds": seconds}
    metadata.update(fields.pop("metadata", {}))
    values = {"migration_type": "forward", "scope_type": "org", "scope_key": "Old"}
    values.update({"status": "completed", "trigger": "command", "metadata": metadata})
    values.update(fields)
    return MigrationRun.objects.create(**values)


def test_a_dry_run_estimates_with_a_stated_default_rate_when_the_site_has_no_history(instance):
    # A run too small to measure a rate, a failed one and a dry run do not count.
    past_run(10, 5.0)
    past_run(50_000, 0.1, status="failed")
    past_run(50_000, 0.1, metadata={"dry_run": True})
    document = json.loads(command("--to", "authz", "--dry-run", "--sleep", "2", "--json"))
    estimate = document["plan"]["estimate"]
    assert estimate["rate"] == {"rows_per_second": 5000.0, "source": "default", "runs": 0}
    assert estimate["rows"] == 13 and estimate["orgs"] == 3
    # 13 rows / 5000 rows/s, 3 orgs x 0.2 s, 2 s between each two of the 3 orgs.
    assert estimate["moving_seconds"] == 0.0
    assert estimate["per_org_seconds"] == 0.6
    assert estimate["sleep_seconds"] == 4.0
    assert estimate["seconds"] == 4.6

    text = command("--to", "authz", "--dry-run", "--sleep", "2")
    assert (
        "Estimate: about 4.6 s: 13 row(s) at 5,000 rows/s (a conservative default: no "
        "completed move of this site to measure) + 3 org(s) x 0.2 s + --sleep 2.0 s between "
        "orgs." in text
    )


def test_the_estimate_measures_the_rate_of_the_sites_recent_moves(instance):
    past_run(2_000, 2.0)
    past_run(4_000, 1.0, migration_type="rollback")
    past_run(500, 0.001)  # too small to say anything about a rate
    plan = api.cutover_plan(True)
    plan.census["OrgA"].legacy_rows = 200_000  # as if OrgA were large
    estimate = plan.describe(sleep=0.5)["estimate"]
    assert estimate["rate"] == {"rows_per_second": 2000.0, "source": "measured", "runs": 2}
    assert estimate["rows"] == 200_010
    assert estimate["moving_seconds"] == 100.0
    assert estimate["seconds"] == round(100.005 + 0.6 + 1.0, 1)

    text = command("--to", "authz", "--dry-run")
    assert "13 row(s) at 2,000 rows/s (measured over this site's last 2 completed move(s))" in text


@pytest.mark.parametrize(
    "args",
    [("--to", "casbin"), ("--to", "authz", "--sleep", "-1"), ("--to", "authz", "--org", "a b")],
)
def test_the_command_refuses_bad_input_with_exit_2(instance, args):
    with pytest.raises(CommandError) as raised:
        call_command("authz_migrate", "cutover", *args, "--no-input", stdout=StringIO())
    assert raised.value.returncode == 2


def test_the_command_exits_1_on_a_failed_org(instance, monkeypatch):
    def fail(rows, decide, dry_run=False):
        raise RuntimeError("boom")

    monkeypatch.setattr(moves, "forward_batch", fail)
    with pytest.raises(CommandError) as raised:
        command("--to", "authz", "--no-input")
    assert raised.value.returncode == 1
    assert "run the same command again" in str(raised.value)


# --- beside a live cutover (PostgreSQL and MariaDB) -----------------------------------------

MANY_ORGS = [f"Org{n:02d}" for n in range(30)]


@pytest.fixture
def many_orgs(server_db, global_flag, org_override, course_override):
    """Thirty orgs, two courses of three roles and one org-wide role each, in the legacy
    table, committed (the tests below are transactional); one org forced off by an operator,
    one course forced off by its own override."""
    global_flag(False)
    users = make_users("live", 3)
    model = legacy_role_model()
    rows = []
    for org in MANY_ORGS:
        for number in (0, 1):
            rows += [
                model(user=u, org=org, course_id=course(org, number), role=r)
                for u, r in zip(users, ("staff", "instructor", "beta_testers"), strict=True)
            ]
        rows.append(model(user=users[0], org=org, course_id="", role="staff"))
    model.objects.bulk_create(rows)
    org_override(MANY_ORGS[3], "off", note="operator")
    course_override(course(MANY_ORGS[5], 1), "off", note="operator")
    assert api.verify(everything=True).drift == []
    return all_roles()


def snapshot_drift() -> list[str]:
    """Scopes whose roles sit in the wrong system, read from one consistent snapshot (a
    REPEATABLE READ transaction: the flags and both stores as of one instant)."""
    if connection.vendor == "mysql":
        with connection.cursor() as cursor:  # applies to the next transaction
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return [p.scope for p in api.verify(everything=True).drift]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_no_snapshot_during_a_cutover_finds_a_course_in_the_wrong_system(many_orgs):
    # Between two releases the cutover waits until a snapshot has been checked (an event,
    # not a sleep); a second checker reads snapshots freely, during the releases too.
    released, checked, done = threading.Event(), threading.Event(), threading.Event()

    def between_releases():
        released.set()
        if not checked.wait(SAFETY_NET):
            raise AssertionError("the checker did not answer")
        checked.clear()
        return False

    free_samples: list = []

    def free_checker():
        while not done.is_set():
            free_samples.append(snapshot_drift())

    checker, checker_box = in_thread(free_checker)
    worker, box = in_thread(lambda: list(api.cutover(True, should_stop=between_releases)))
    paced = []
    while worker.is_alive():
        if released.wait(0.05):
            released.clear()
            paced.append(snapshot_drift())
            checked.set()
    worker.join()
    done.set()
    checker.join(SAFETY_NET)

    assert "error" not in box, box.get("error")
    assert "error" not in checker_box, checker_box.get("error")
    steps = box["result"]
    assert len([s for s in steps if s.kind == "released"]) == len(MANY_ORGS) - 1
    assert len(paced) == len(MANY_ORGS) - 1  # after the pins, then after each release
    assert [d for d in paced if d] == []
    assert free_samples and [d for d in free_samples if d] == []
    assert snapshot_drift() == []
    assert flags.global_state() is True
    assert all_roles() == many_orgs


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kill_in", [1, 3, 17], ids=["first-org", "third-org", "17th-org"])
def test_sigkill_mid_cutover_and_a_rerun_finish_with_nothing_lost(many_orgs, tmp_path, kill_in):
    # The child stops inside the kill_in-th org's release (its run row written, uncommitted).
    child = Child(
        tmp_path, "cutover", pause_at=kill_in, command=["cutover", "--to", "authz", "--no-input"]
    )
    try:
        child.wait_until_inside_a_batch()
        child.process.send_signal(signal.SIGKILL)
        child.process.wait(TIMEOUT)
    finally:
        child.close()
    assert child.process.returncode == -signal.SIGKILL
    wait_until_locks_are_free()

    # The orgs before it released and committed; it rolled back with the kill: still pinned.
    assert flags.global_state() is True
    assert cutover.progress()["released"] == kill_in - 1
    assert snapshot_drift() == []
    assert all_roles() == many_orgs
    assert not MigrationRun.objects.exclude(status="completed").exists()

    steps = list(api.cutover(True))
    assert steps[0].detail["pin"] == []
    released = len(MANY_ORGS) - 1 - (kill_in - 1)  # the operator's org is never pinned
    assert len([s for s in steps if s.kind == "released"]) == released
    assert snapshot_drift() == []
    assert all_roles() == many_orgs
    assert duplicate_casbin_rows() == []
    for org in MANY_ORGS:
        if org != MANY_ORGS[3]:
            assert org_override_model().objects.filter(org=org).count() == 2  # a pin, a release


def test_status_shows_the_cutovers_progress(instance):
    list(api.cutover(True, orgs=["OrgB"]))
    out = StringIO()
    call_command("authz_migrate", "status", stdout=out)
    assert (
        "Cutover: 1 org(s) released (5 role row(s) moved), 2 still pinned: OrgA, OrgC; "
        "`authz_migrate cutover --to authz|legacy` releases them." in out.getvalue()
    )
    out = StringIO()
    call_command("authz_migrate", "status", "--json", stdout=out)
    assert json.loads(out.getvalue())["cutover"] == {
        "released": 1,
        "pinned": ["OrgA", "OrgC"],
        "rows_moved": 5,
    }


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_ctrl_c_mid_cutover_finishes_the_org_exits_130_and_a_rerun_finishes(many_orgs, tmp_path):
    # Ctrl-C while the child is inside the second org's release: that org finishes, no
    # other starts.
    child = Child(
        tmp_path, "cutover", pause_at=2, command=["cutover", "--to", "authz", "--no-input"]
    )
    try:
        child.wait_until_inside_a_batch()
        child.process.send_signal(signal.SIGINT)
        child.let_the_batch_finish()
        child.process.wait(TIMEOUT)
    finally:
        child.close()
    output = child.out.read_text() + child.err.read_text()
    assert child.process.returncode == 130, output
    assert "interrupted between two orgs" in output
    assert "Traceback" not in output
    assert cutover.progress()["released"] == 2
    assert snapshot_drift() == []

    out = StringIO()
    call_command("authz_migrate", "cutover", "--to", "authz", "--no-input", stdout=out)
    assert "Cutover done" in out.getvalue()
    assert snapshot_drift() == []
    assert all_roles() == many_orgs
    assert cutover.progress()["pinned"] == []


def test_the_command_asks_first_and_without_an_answer_changes_nothing(instance, monkeypatch):
    monkeypatch.setattr("builtins.input", lambda: (_ for _ in ()).throw(EOFError))
    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("authz_migrate", "cutover", "--to", "authz", stdout=out)
    assert raised.value.returncode == 3
    assert "This will set the global flag to authz" in out.getvalue()
    assert flags.global_state() is False
    assert org_override_model().objects.count() == 1
