"""The enforcer's policy index (``authz_migration.enforcer.PolicyIndex``): what keeps a move's
cost in the in-process enforcer proportional to the rows moved, not to the policy's size.

These run against a real pycasbin model and enforcer built from the app's Casbin model file;
no database is involved (the enforcer side of a move only touches memory).
"""

from __future__ import annotations

import random

import casbin
import pytest

import authz_migration
from authz_migration import enforcer as enforcer_sync
from authz_migration.enforcer import PolicyIndex

SCOPE = "course-v1^course-v1:OrgA+C{}+R"


def rule(user: int, role: str = "role^course_staff", course: int = 1) -> list[str]:
    return [f"user^u{user}", role, SCOPE.format(course)]


@pytest.fixture
def casbin_enforcer():
    """A pycasbin enforcer with the app's model and no adapter, holding 200 "g" rules."""
    enforcer = casbin.Enforcer(authz_migration.CASBIN_MODEL_PATH)
    for n in range(200):
        enforcer.model.model["g"]["g"].policy.append(rule(n, course=n % 7))
    enforcer.build_role_links()
    return enforcer


def assertion_of(enforcer):
    return enforcer.model.model["g"]["g"]


def check_consistent(index: PolicyIndex, expected: set[tuple]) -> None:
    """The list holds exactly ``expected``, once each, and the index says where every rule
    is."""
    policy = index.assertion.policy
    assert sorted(map(tuple, policy)) == sorted(expected)
    for position, held in enumerate(policy):
        assert index.where[tuple(held)] == [position]
        assert index.keys[position] == tuple(held)
    assert set(index.where) == expected
    assert len(index.keys) == len(policy)


def added(index: PolicyIndex, rule_: list[str]) -> bool:
    appended = index.add([rule_])
    assert appended in ([], [rule_])
    return bool(appended)


def removed(index: PolicyIndex, rule_: list[str]) -> int:
    """How many copies of ``rule_`` the index removed."""
    present, copies = index.remove([tuple(rule_)])  # as the database returns rules
    return len(present) + len(copies)


def test_random_adds_and_removes_keep_list_and_index_in_step(casbin_enforcer):
    assertion = assertion_of(casbin_enforcer)
    index = PolicyIndex(assertion)
    expected = {tuple(r) for r in assertion.policy}
    chooser = random.Random(7)
    for _ in range(2000):
        candidate = rule(chooser.randrange(260), course=chooser.randrange(7))
        if chooser.random() < 0.5:
            assert added(index, candidate) == (tuple(candidate) not in expected)
            expected.add(tuple(candidate))
        else:
            assert removed(index, candidate) == (tuple(candidate) in expected)
            expected.discard(tuple(candidate))
    check_consistent(index, expected)
    # pycasbin's own answers agree with the list the index kept
    for held in expected:
        assert casbin_enforcer.has_grouping_policy(*held)


def test_every_copy_of_a_duplicated_rule_goes(casbin_enforcer):
    """casbin_rule has no unique key: a loaded policy can hold a rule twice."""
    assertion = assertion_of(casbin_enforcer)
    assertion.policy.insert(3, rule(5, course=5))
    assertion.policy.append(rule(5, course=5))
    index = PolicyIndex(assertion)

    assert removed(index, rule(5, course=5)) == 3  # every copy, and says how many

    assert rule(5, course=5) not in assertion.policy
    check_consistent(index, {tuple(r) for r in assertion.policy})


def test_a_reloaded_policy_gets_a_new_index(casbin_enforcer):
    first = enforcer_sync._index_of(assertion_of(casbin_enforcer))
    assert enforcer_sync._index_of(assertion_of(casbin_enforcer)) is first  # kept

    casbin_enforcer.model.clear_policy()  # what load_policy() does first
    assertion_of(casbin_enforcer).policy.append(rule(1))

    rebuilt = enforcer_sync._index_of(assertion_of(casbin_enforcer))
    assert rebuilt is not first
    assert removed(rebuilt, rule(1)) == 1
    assert assertion_of(casbin_enforcer).policy == []


def test_a_rule_added_through_pycasbins_api_is_seen(casbin_enforcer):
    index = enforcer_sync._index_of(assertion_of(casbin_enforcer))
    casbin_enforcer.model.add_policy("g", "g", rule(999))  # behind the index's back

    again = enforcer_sync._index_of(assertion_of(casbin_enforcer))
    assert again is not index  # the length changed: rebuilt
    assert added(again, rule(999)) is False  # no duplicate
    assert removed(again, rule(999)) == 1
    assert rule(999) not in assertion_of(casbin_enforcer).policy


def test_a_rule_moved_in_place_behind_the_index_is_found(casbin_enforcer):
    """Same length, different order (a sort): the index checks before it trusts."""
    assertion = assertion_of(casbin_enforcer)
    index = enforcer_sync._index_of(assertion)
    assertion.policy.reverse()

    assert removed(index, rule(0, course=0)) == 1
    assert added(index, rule(1, course=1)) is False  # still there, now elsewhere
    check_consistent(index, {tuple(r) for r in assertion.policy})


def test_building_the_index_happens_once_per_load_not_once_per_move(casbin_enforcer, monkeypatch):
    builds = []
    real = PolicyIndex._build

    def counting(self):
        builds.append(1)
        real(self)

    monkeypatch.setattr(PolicyIndex, "_build", counting)
    assertion = assertion_of(casbin_enforcer)
    for n in range(50):
        index = enforcer_sync._index_of(assertion)
        index.add([rule(1000 + n)])
        index.remove([rule(n)])
    assert len(builds) == 1


def test_a_whole_move_at_once_matches_rule_by_rule(casbin_enforcer):
    """One call per move, as the enforcer follows one: a rule given twice is appended once,
    a rule absent is passed over, every copy of a duplicated rule is reported."""
    assertion = assertion_of(casbin_enforcer)
    assertion.policy.append(rule(3, course=3))  # a second copy of a loaded rule
    index = PolicyIndex(assertion)
    fresh = [tuple(rule(500 + n, course=n)) for n in range(5)]

    assert index.add([*fresh, fresh[0], tuple(rule(4, course=4))]) == [*map(list, fresh)]
    present, copies = index.remove([tuple(rule(3, course=3)), fresh[1], tuple(rule(777))])

    assert present == [tuple(rule(3, course=3)), fresh[1]]
    assert copies == [tuple(rule(3, course=3))]
    expected = {tuple(rule(n, course=n % 7)) for n in range(200)} | set(fresh)
    check_consistent(index, expected - {tuple(rule(3, course=3)), fresh[1]})
