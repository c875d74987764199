"""A move that owns its transaction runs it at READ COMMITTED on MariaDB, even on a connection
configured for another level (issue 14); inside a caller's transaction the level is the
caller's, which Django sets to READ COMMITTED by default."""

from __future__ import annotations

import time

import pytest
from django.db import connection, transaction

from authz_migration import api, guard, moves
from tests.helpers import make_users, seed_legacy

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def mariadb():
    if connection.vendor != "mysql":
        pytest.skip("MariaDB/MySQL isolation levels")


def transaction_level() -> str:
    # MariaDB refreshes its INNODB_TRX snapshot only when it has not been read for 0.1 s.
    time.sleep(0.15)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT trx_isolation_level FROM information_schema.INNODB_TRX "
            "WHERE trx_mysql_thread_id = CONNECTION_ID()"
        )
        return cursor.fetchone()[0]


@pytest.fixture
def levels_seen(monkeypatch):
    """The isolation level of every forward batch's transaction."""
    seen = []
    real = moves.forward_batch

    def recording(rows, decide, **kwargs):
        seen.append(transaction_level())
        return real(rows, decide, **kwargs)

    monkeypatch.setattr(moves, "forward_batch", recording)
    return seen


@pytest.fixture
def repeatable_read_connection(monkeypatch):
    """The connection configured as Django's ``isolation_level: "repeatable read"`` does."""
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    monkeypatch.setattr(connection, "isolation_level", "repeatable read")
    yield
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")


def test_an_api_move_runs_at_read_committed(mariadb, repeatable_read_connection, levels_seen):
    seed_legacy("OrgA", 2, make_users("iso", 3))
    outcome = api.migrate_org("OrgA", forward=True, force=True)
    assert outcome.moved == 10
    assert levels_seen == ["READ COMMITTED"]
    # Only that transaction: the session keeps its own level.
    with connection.cursor() as cursor:
        cursor.execute("SELECT @@session.tx_isolation")
        assert cursor.fetchone()[0] == "REPEATABLE-READ"


def test_a_sync_that_creates_lock_rows_first_runs_at_read_committed(
    mariadb, repeatable_read_connection, levels_seen, org_override
):
    """``sync_org`` does not wait for a busy scope: it creates missing lock rows in autocommit
    before its transaction begins, and the level must still reach that transaction."""
    seed_legacy("OrgA", 2, make_users("iso", 3))
    org_override("OrgA", "on")
    [outcome] = api.sync_org("OrgA")
    assert outcome.moved == 10
    assert levels_seen == ["READ COMMITTED"]


def test_inside_a_caller_transaction_the_level_is_the_callers(
    mariadb, repeatable_read_connection, levels_seen
):
    # Lock rows present: under REPEATABLE READ the guard's locking read of a missing row
    # takes a gap lock, and the side connection creating that row would wait on it.
    guard.ensure_lock_rows([guard.INSTANCE, guard.org_lock_key("OrgA")])
    seed_legacy("OrgA", 2, make_users("iso", 3))
    with transaction.atomic():
        api.migrate_org("OrgA", forward=True, force=True)
    assert levels_seen == ["REPEATABLE READ"]


def test_no_statement_is_added_at_djangos_default_level(mariadb, levels_seen):
    from django.test.utils import CaptureQueriesContext

    seed_legacy("OrgA", 2, make_users("iso", 3))
    with CaptureQueriesContext(connection) as ctx:
        api.migrate_org("OrgA", forward=True, force=True)
    assert levels_seen == ["READ COMMITTED"]
    assert not [q for q in ctx.captured_queries if "ISOLATION" in q["sql"]]
