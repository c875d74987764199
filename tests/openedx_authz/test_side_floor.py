"""The floor the org benchmark beside openedx-authz measures moves against
(benchmarks/side_floor.py) writes and removes the rules and side rows the app's own move
writes and removes: the ratio it prints compares equal work (issue 18)."""

from __future__ import annotations

import pytest
from django.db import transaction

from authz_migration import api
from benchmarks.fixtures import ORG, OTHER_ORG
from benchmarks.scenarios.org import seed_org_case
from benchmarks.side_floor import SideFloor
from benchmarks.sql import Sql

ROLES = 60  # 12 courses of 5 roles, 12 users


@pytest.fixture
def side(authz_schema):
    sql = Sql()
    side = SideFloor(sql)

    def seed():
        side.reset()
        seed_org_case(sql, ROLES, "cold")
        return sql.fingerprint(ORG)

    side.seed = seed
    return side


def floor(side: SideFloor, statements: list[str]) -> None:
    with transaction.atomic():
        side.sql.execute(*statements)


def test_the_floor_writes_the_rules_and_side_rows_the_app_writes(side):
    seeded = side.seed()
    api.migrate_org(ORG, forward=True, force=True)
    app = (side.sql.fingerprint(ORG), side.fingerprint(ORG))
    assert side.extended_rows(ORG) == ROLES  # the app wrote side rows: the check compares some

    assert side.seed() == seeded
    floor(side, side.forward(ORG))
    assert (side.sql.fingerprint(ORG), side.fingerprint(ORG)) == app
    assert side.sql.org_counts(OTHER_ORG) == (ROLES, 0)


def test_the_floor_removes_what_the_apps_rollback_removes(side):
    seeded = side.seed()
    api.migrate_org(ORG, forward=True, force=True)
    api.migrate_org(ORG, forward=False, force=True)
    app = (side.sql.fingerprint(ORG), side.fingerprint(ORG))
    assert app[0] == seeded
    assert side.extended_rows(ORG) == 0

    side.seed()
    floor(side, side.forward(ORG))
    floor(side, side.rollback(ORG))
    assert (side.sql.fingerprint(ORG), side.fingerprint(ORG)) == app
