"""Casbin enforcers follow committed moves (``authz_migration.enforcer``).

In process, on every database: casbin_adapter's enforcer, once loaded, learns exactly the rows a
move added and removed, when the move's transaction commits, without reloading the policy; a
move rolled back with its transaction changes nothing; an enforcer that is not loaded stays
unloaded; the enforcer's watcher is told about every committed move, and a watcher outage does
not undo the move.

Across processes, on PostgreSQL and MariaDB: a second process (``tests/watcher_child.py``)
with its own enforcer and a Redis watcher on the same channel sees each move within seconds.
Needs ``redis-watcher`` and a Redis server (``AUTHZ_TEST_REDIS_HOST``/``_PORT``, default
127.0.0.1:6379).

casbin_adapter's enforcer is a process-wide proxy: the fixtures reset it to "not loaded" for
each test and restore its previous state afterwards, so no other test sees what these did.
"""

from __future__ import annotations

import ast
import gc
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import UserList
from pathlib import Path

import pytest
from casbin_adapter.enforcer import initialize_enforcer
from casbin_adapter.models import CasbinRule
from django.conf import settings
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from authz_migration import api, role_links
from authz_migration import enforcer as enforcer_sync
from authz_migration.models import MigrationRun
from authz_migration.signals import migration_run_finished

ORG = "OrgA"
C1 = "course-v1:OrgA+C1+R"
ALICE, BOB = "user^alice", "user^bob"
C1_DOMAIN = f"course-v1^{C1}"
ORG_DOMAIN = "course-v1^course-v1:OrgA+*"  # org-wide roles (legacy rows without a course)
STAFF, ADMIN = "role^course_staff", "role^course_admin"
# Written behind the enforcer's back: only a full policy load can make the enforcer know it.
ROGUE = ("user^mallory", ADMIN, "course-v1^course-v1:OrgZ+Z1+R")

REDIS_HOST = os.environ.get("AUTHZ_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("AUTHZ_TEST_REDIS_PORT", "6379"))
ROOT = Path(__file__).resolve().parent.parent
CHILD = ROOT / "tests" / "watcher_child.py"
# Seconds before a wait on process B is called a hang. The latencies are recorded (JUnit
# properties), never asserted: a busy machine must not fail the test.
PROPAGATION_TIMEOUT = 120


# --- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def proxy():
    """casbin_adapter's process-wide enforcer, reset to "not loaded"; restored afterwards.

    Only ``object.__getattribute__`` may look inside it: any other attribute access on an
    unloaded ``ProxyEnforcer`` tries to load it."""
    from casbin_adapter.enforcer import enforcer

    state = object.__getattribute__(enforcer, "__dict__")
    saved = dict(state)
    state.clear()  # the class attribute _initialized = False shows through again
    try:
        yield enforcer
    finally:
        state.clear()
        state.update(saved)


@pytest.fixture
def loaded(proxy, transactional_db):
    """The proxy loaded from the (empty) test database, as casbin_adapter's ready() does."""
    initialize_enforcer("default")
    assert proxy._initialized
    assert proxy.watcher is None  # the test settings configure no CASBIN_WATCHER
    return proxy


@pytest.fixture
def roles_of_org(make_user, grant):
    """alice: staff on C1; bob: an org-wide instructor role in OrgA (both legacy rows)."""
    grant(make_user("alice"), C1, "staff")
    grant(make_user("bob"), "", "instructor", org=ORG)


def roles(enforcer, user=ALICE, domain=C1_DOMAIN) -> list[str]:
    return sorted(enforcer.get_roles_for_user_in_domain(user, domain))


def add_rogue_row() -> None:
    CasbinRule.objects.create(ptype="g", v0=ROGUE[0], v1=ROGUE[1], v2=ROGUE[2])


def knows_rogue(enforcer) -> bool:
    return enforcer.has_grouping_policy(*ROGUE) or bool(roles(enforcer, ROGUE[0], ROGUE[2]))


def casbin_triples() -> set[tuple[str, str, str]]:
    return set(CasbinRule.objects.filter(ptype="g").values_list("v0", "v1", "v2"))


def enforcer_triples(enforcer) -> set[tuple[str, str, str]]:
    return {tuple(rule[:3]) for rule in enforcer.get_grouping_policy()}


def casbin_rule_queries(captured) -> list[str]:
    return [q["sql"] for q in captured if "casbin_rule" in q["sql"].lower()]


def statements_after_commit(captured) -> list[str]:
    """What ran after the ``atomic`` block's last statement, the COMMIT itself excepted
    (Django 4.2+ lists transaction statements among the captured queries)."""
    return [q["sql"] for q in captured if q["sql"].strip().upper() != "COMMIT"]


def move(forward: bool) -> MigrationRun:
    """A forced directed move of the whole org (the flag is irrelevant to these tests)."""
    outcome = api.migrate_org(ORG, forward=forward, force=True)
    assert outcome.status == MigrationRun.Status.COMPLETED, outcome.metadata
    return outcome.run


class RecordingWatcher:
    """A watcher with only ``update()``, the one method every Casbin watcher has."""

    def __init__(self):
        self.calls = []

    def update(self):
        self.calls.append(("update",))


class BatchWatcher(RecordingWatcher):
    """A watcher that can say which rows changed (pycasbin's WatcherEx batch methods)."""

    def update_for_add_policies(self, sec, ptype, *rules):
        self.calls.append(("add", sec, ptype, sorted(tuple(r) for r in rules)))

    def update_for_remove_policies(self, sec, ptype, *rules):
        self.calls.append(("remove", sec, ptype, sorted(tuple(r) for r in rules)))


class BrokenWatcher:
    def update(self):
        raise ConnectionError("redis is down")


# --- in process, every database -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_committed_sync_reaches_the_loaded_enforcer_without_a_reload(
    loaded, roles_of_org, global_flag
):
    add_rogue_row()
    assert roles(loaded) == [] and not knows_rogue(loaded)

    global_flag(True)
    with CaptureQueriesContext(connection) as queries:
        with transaction.atomic():  # as an admin request would
            outcomes = api.sync_org(ORG)
            # Not before the commit: the move could still roll back.
            assert roles(loaded) == []
            before_commit = len(queries.captured_queries)
        after_commit = queries.captured_queries[before_commit:]

    assert [(o.move.direction, o.status, o.moved) for o in outcomes] == [
        ("forward", "completed", 2)
    ]
    assert roles(loaded) == [STAFF]
    assert roles(loaded, BOB, ORG_DOMAIN) == [ADMIN]
    # Incremental: the after-commit step ran no query (the COMMIT itself aside), and the row
    # written behind the enforcer's back, which any full load would pick up, is still unknown.
    assert casbin_rule_queries(after_commit) == []
    assert statements_after_commit(after_commit) == []
    assert casbin_rule_queries(queries.captured_queries[:before_commit])  # the move's own
    assert not knows_rogue(loaded)
    assert enforcer_triples(loaded) == casbin_triples() - {ROGUE}

    global_flag(False)
    with CaptureQueriesContext(connection) as queries:
        with transaction.atomic():
            outcomes = api.sync_org(ORG)
            before_commit = len(queries.captured_queries)
        after_commit = queries.captured_queries[before_commit:]

    assert [(o.move.direction, o.status, o.moved) for o in outcomes] == [
        ("rollback", "completed", 2)
    ]
    assert roles(loaded) == []
    assert roles(loaded, BOB, ORG_DOMAIN) == []
    assert casbin_rule_queries(after_commit) == []
    assert statements_after_commit(after_commit) == []
    assert not knows_rogue(loaded)
    assert enforcer_triples(loaded) == set()
    assert casbin_triples() == {ROGUE}

    # The probe works: a full load does pick the rogue row up.
    loaded.load_policy()
    assert knows_rogue(loaded)


@pytest.mark.django_db(transaction=True)
def test_a_policy_kept_in_another_container_is_followed_through_pycasbins_api(loaded, roles_of_org):
    """The index is written for pycasbin 2.x's plain list (docs/decisions/0009); with any
    other container the moves go through pycasbin's public model API instead, and still
    arrive."""
    assertion = loaded.model["g"]["g"]
    assertion.policy = UserList(assertion.policy)

    move(forward=True)
    assert roles(loaded) == [STAFF]
    assert roles(loaded, BOB, ORG_DOMAIN) == [ADMIN]
    assert enforcer_triples(loaded) == casbin_triples()
    assert not hasattr(assertion, enforcer_sync.INDEX_ATTRIBUTE)

    move(forward=False)
    assert roles(loaded) == []
    assert enforcer_triples(loaded) == set()


@pytest.mark.django_db(transaction=True)
def test_the_cyclic_collector_rests_while_the_enforcer_learns_a_move(
    loaded, roles_of_org, monkeypatch
):
    """Following a move allocates objects per rule, none in a cycle: the collector's passes
    over every object of the process (the policy's included) are left out meanwhile
    (``enforcer.collector_paused``). It runs again afterwards, or stays off where the host
    had turned it off."""
    assert role_links.handles(loaded.rm_map["g"], loaded.model.model["g"]["g"])
    learn = role_links.add  # one link made per rule the role manager learns
    collector_on = []

    def learning(role_manager, rules):
        collector_on.extend(gc.isenabled() for _ in rules)
        learn(role_manager, rules)

    monkeypatch.setattr(role_links, "add", learning)
    assert gc.isenabled()

    move(forward=True)

    assert collector_on == [False, False]  # alice's course role, bob's org-wide role
    assert gc.isenabled()
    assert roles(loaded) == [STAFF]

    gc.disable()
    try:
        move(forward=False)
        assert not gc.isenabled()
        assert roles(loaded) == []
    finally:
        gc.enable()


@pytest.mark.django_db(transaction=True)
def test_directed_moves_in_autocommit_mode_follow_each_commit(loaded, roles_of_org):
    add_rogue_row()

    move(forward=True)
    assert roles(loaded) == [STAFF]
    assert roles(loaded, BOB, ORG_DOMAIN) == [ADMIN]

    move(forward=False)
    assert roles(loaded) == []
    assert roles(loaded, BOB, ORG_DOMAIN) == []
    assert not knows_rogue(loaded)


@pytest.mark.django_db(transaction=True)
def test_a_move_rolled_back_with_its_transaction_changes_nothing(loaded, roles_of_org):
    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        move(forward=True)
        raise Abort
    assert roles(loaded) == []
    assert enforcer_triples(loaded) == casbin_triples() == set()

    move(forward=True)  # committed
    assert roles(loaded) == [STAFF]

    with pytest.raises(Abort), transaction.atomic():
        move(forward=False)
        raise Abort
    assert roles(loaded) == [STAFF]
    assert roles(loaded, BOB, ORG_DOMAIN) == [ADMIN]
    assert enforcer_triples(loaded) == casbin_triples()


@pytest.mark.django_db(transaction=True)
def test_an_enforcer_that_is_not_loaded_is_left_alone(proxy, roles_of_org):
    sent = []

    def spy(sender, added=(), removed=(), **kwargs):
        sent.append((len(added), len(removed)))

    migration_run_finished.connect(spy, dispatch_uid="test_enforcer_spy")
    try:
        move(forward=True)
        move(forward=False)
    finally:
        migration_run_finished.disconnect(dispatch_uid="test_enforcer_spy")

    assert sent == [(2, 0), (0, 2)]  # the receiver had something to apply, twice
    assert proxy._initialized is False  # and did not load the enforcer to apply it
    assert enforcer_sync._loaded_enforcer() is None


@pytest.mark.django_db(transaction=True)
def test_rows_already_known_are_not_duplicated(loaded, roles_of_org):
    # The enforcer already has the row the move is about to write (e.g. an earlier reload).
    loaded.model.add_policy("g", "g", [ALICE, STAFF, C1_DOMAIN])
    loaded.build_role_links()

    move(forward=True)
    assert loaded.get_filtered_grouping_policy(0, ALICE) == [[ALICE, STAFF, C1_DOMAIN]]
    move(forward=False)
    assert loaded.get_filtered_grouping_policy(0, ALICE) == []
    assert roles(loaded) == []


@pytest.mark.django_db(transaction=True)
def test_the_watcher_is_told_once_per_committed_move(loaded, roles_of_org):
    batch, plain = BatchWatcher(), RecordingWatcher()
    loaded.set_watcher(batch)
    move(forward=True)
    move(forward=False)
    rows = [(ALICE, STAFF, C1_DOMAIN), (BOB, ADMIN, ORG_DOMAIN)]
    assert batch.calls == [("add", "g", "g", rows), ("remove", "g", "g", rows)]

    loaded.set_watcher(plain)
    with pytest.raises(RuntimeError), transaction.atomic():
        move(forward=True)
        raise RuntimeError  # rolled back: nothing to tell
    assert plain.calls == []
    move(forward=True)
    assert plain.calls == [("update",)]


@pytest.mark.django_db(transaction=True)
def test_a_watcher_outage_does_not_undo_the_move(loaded, roles_of_org, caplog):
    loaded.set_watcher(BrokenWatcher())
    run = move(forward=True)

    assert run.status == MigrationRun.Status.COMPLETED
    assert (ALICE, STAFF, C1_DOMAIN) in casbin_triples()
    assert roles(loaded) == [STAFF]  # applied in process before the watcher was asked
    assert "could not notify the Casbin watcher" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_redis_watcher_with_redis_down_does_not_undo_the_move(loaded, roles_of_org, capfd):
    redis_watcher = pytest.importorskip("redis_watcher", reason="redis-watcher is not installed")
    with socket.socket() as s:  # a port nothing listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = redis_watcher.WatcherOptions()
    options.host, options.port, options.channel = "127.0.0.1", port, f"authz-{uuid.uuid4()}"
    loaded.set_watcher(redis_watcher.new_publish_watcher(options))

    # Not timed: redis-py's retries on a refused connection take what the machine makes them
    # take; a publish that never returned would hang the test, which is the failure to see.
    run = move(forward=True)

    assert run.status == MigrationRun.Status.COMPLETED
    assert (ALICE, STAFF, C1_DOMAIN) in casbin_triples()
    assert roles(loaded) == [STAFF]
    # redis-watcher reports a failed publish on standard output, not through logging.
    assert "Casbin Redis Watcher error" in capfd.readouterr().out


# --- two processes through Redis, PostgreSQL and MariaDB -------------------------------------


def redis_watcher_or_skip():
    redis = pytest.importorskip("redis", reason="redis is not installed")
    module = pytest.importorskip(
        "redis_watcher", reason="redis-watcher is not installed (test extras)"
    )
    client = redis.Redis(
        host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=2, socket_timeout=2
    )
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        pytest.skip(f"no Redis server at {REDIS_HOST}:{REDIS_PORT}: {exc}")
    finally:
        client.close()
    return module


class Child:
    """Process B: ``tests/watcher_child.py`` on the test database, read line by line."""

    def __init__(self, channel: str, timeout: float):
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", PYTHONUNBUFFERED="1")
        env["AUTHZ_TEST_DB"] = settings.DB
        name_var = (
            "AUTHZ_TEST_PG_NAME" if connection.vendor == "postgresql" else "AUTHZ_TEST_MYSQL_NAME"
        )
        env[name_var] = connection.settings_dict["NAME"]  # the test database, not the default
        self.output: list[str] = []
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(CHILD),
                f"--channel={channel}",
                f"--user={ALICE}",
                f"--domain={C1_DOMAIN}",
                f"--redis-host={REDIS_HOST}",
                f"--redis-port={REDIS_PORT}",
                f"--timeout={timeout}",
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.process.stdout:
            line = line.rstrip("\n")
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, wanted, timeout: float, what: str) -> float:
        """Wait for a line ``wanted(line)`` accepts; return how long it took."""
        started = time.monotonic()
        deadline = started + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                self.fail(f"process B exited (code {self.process.wait()}) before {what}")
            if line.startswith("ERROR"):
                self.fail(f"process B failed before {what}")
            if wanted(line):
                return time.monotonic() - started
        self.fail(f"process B did not report {what} within {timeout} s")

    def expect_roles(self, expected: list[str], timeout: float = PROPAGATION_TIMEOUT) -> float:
        def wanted(line: str) -> bool:
            return line.startswith("ROLES ") and json.loads(line[len("ROLES ") :]) == expected

        return self.expect(wanted, timeout, f"roles {expected}")

    def fail(self, message: str):
        pytest.fail(message + "; its output:\n" + "\n".join(self.output), pytrace=False)

    def stop(self) -> int:
        """Ask it to leave (close its stdin), kill it if it does not; its exit code."""
        try:
            self.process.stdin.close()
            self.process.wait(timeout=PROPAGATION_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.process.poll() is None:
                self.process.kill()
        return self.process.wait(timeout=5)


def own_messages_skipped(options, reload_policy, seen: list[str]):
    """The callback docs/watcher.rst recommends: reload on other processes' messages only.

    redis-watcher hands the callback ``str()`` of redis-py's message dict; its ``data`` is the
    JSON the publisher sent, whose ``ID`` is the publisher's ``local_ID``."""

    def callback(message: str) -> None:
        data = json.loads(ast.literal_eval(message)["data"])
        if data.get("ID") == options.local_ID:
            seen.append("own")
            return
        seen.append("other")
        reload_policy()

    return callback


def stop_watcher(watcher) -> None:
    """End a RedisWatcher's subscriber thread and close its connections."""
    try:
        if watcher.sub_client is not None:
            watcher.sub_client.unsubscribe()
    except Exception:  # noqa: S110 -- best effort; the thread is a daemon anyway
        pass
    watcher.subscribe_thread.join(timeout=5)
    if watcher.pub_client is not None:
        watcher.pub_client.close()


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.mark.server_db
@pytest.mark.django_db(transaction=True)
def test_another_process_follows_moves_through_a_redis_watcher(
    server_db, loaded, roles_of_org, global_flag, record_property
):
    redis_watcher = redis_watcher_or_skip()
    channel = f"authz-migration-test-{uuid.uuid4()}"

    # Process A (this one): its enforcer publishes on the channel, as CASBIN_WATCHER would.
    seen: list[str] = []
    options = redis_watcher.WatcherOptions()
    options.host, options.port, options.channel = REDIS_HOST, REDIS_PORT, channel
    options.ignore_self = True
    options.local_ID = str(uuid.uuid4())
    options.optional_update_callback = own_messages_skipped(options, loaded.load_policy, seen)
    watcher = redis_watcher.new_watcher(options)
    assert watcher.subscribe_event.is_set(), "process A could not subscribe"
    loaded.set_watcher(watcher)

    child = Child(channel, timeout=3 * PROPAGATION_TIMEOUT)
    try:
        child.expect_roles([])  # loaded before any move
        child.expect(lambda line: line == "READY", PROPAGATION_TIMEOUT, "READY")
        add_rogue_row()  # unknown to A until A reloads

        global_flag(True)
        (outcome,) = api.sync_org(ORG)
        assert (outcome.move.direction, outcome.moved) == ("forward", 2)
        forward_latency = child.expect_roles([STAFF])

        global_flag(False)
        (outcome,) = api.sync_org(ORG)
        assert (outcome.move.direction, outcome.moved) == ("rollback", 2)
        rollback_latency = child.expect_roles([])
        # A hears its own two messages (redis-watcher 1.8 does not read ignore_self) and must
        # not reload on them; wait for them so that a reload would have happened by now.
        wait_until(lambda: len(seen) >= 2, 5)
    finally:
        exit_code = child.stop()
        stop_watcher(watcher)

    record_property("forward_latency_s", round(forward_latency, 3))
    record_property("rollback_latency_s", round(rollback_latency, 3))
    assert exit_code == 0, "process B did not leave when asked"
    # Process A applied both moves itself and did not reload on its own messages.
    assert roles(loaded) == []
    assert "other" not in seen
    assert not knows_rogue(loaded)


def test_the_command_notifies_the_watcher_but_leaves_its_own_enforcer(
    loaded, roles_of_org, global_flag
):
    """A management command's process serves no permission checks and exits: updating its
    enforcer rule by rule would cost more than the moves. Other processes still hear of it."""
    from io import StringIO

    from django.core.management import call_command

    watcher = RecordingWatcher()
    loaded.watcher = watcher
    global_flag(True)

    call_command("authz_migrate", "sync", "--org", ORG, "--no-input", stdout=StringIO())

    assert casbin_triples()  # the roles moved
    assert enforcer_triples(loaded) == set()  # this process's enforcer was left alone
    assert watcher.calls  # other processes were told
