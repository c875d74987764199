"""A run that owns its transaction is retried when the database makes it a deadlock victim."""

import pytest
from django.db import OperationalError, transaction

from authz_migration import api, moves
from authz_migration.models import MigrationRun


class _Deadlock(Exception):
    """Looks like the driver's error for a deadlock victim (MariaDB 1213, PostgreSQL 40P01)."""

    args = (1213, "Deadlock found when trying to get lock")
    sqlstate = "40P01"


def _deadlock() -> OperationalError:
    error = OperationalError("deadlock")
    error.__cause__ = _Deadlock()
    return error


@pytest.fixture
def deadlocks_once(monkeypatch, python_path):
    real = moves.insert_casbin
    calls = []

    def insert(keys):
        calls.append(len(keys))
        if len(calls) == 1:
            raise _deadlock()
        return real(keys)

    monkeypatch.setattr(moves, "insert_casbin", insert)
    return calls


@pytest.mark.django_db(transaction=True)
def test_a_deadlock_victim_is_retried_and_completes(make_user, grant, deadlocks_once):
    grant(make_user("alice"), "course-v1:OrgA+C1+R", "staff")
    outcome = api.migrate_org("OrgA", True, force=True)
    assert outcome.status == MigrationRun.Status.COMPLETED
    assert outcome.moved == 1
    assert len(deadlocks_once) == 2
    assert list(MigrationRun.objects.values_list("status", flat=True)) == ["completed"]


@pytest.mark.django_db(transaction=True)
def test_inside_the_callers_transaction_a_deadlock_is_recorded_not_retried(
    make_user, grant, deadlocks_once
):
    grant(make_user("alice"), "course-v1:OrgA+C1+R", "staff")
    with transaction.atomic():
        outcome = api.migrate_org("OrgA", True, force=True)
    assert outcome.status == MigrationRun.Status.FAILED
    assert len(deadlocks_once) == 1
