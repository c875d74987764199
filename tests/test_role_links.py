"""The enforcer's role links followed a move at a time (``authz_migration.role_links``).

Each test runs the app's way and pycasbin's own way (``build_incremental_role_links``, rule by
rule) side by side on two enforcers loaded alike, and compares what pycasbin keeps and what
its checks answer. No database is involved: following a move only touches memory.
"""

from __future__ import annotations

import random

import casbin
import pytest
from casbin.model.policy_op import PolicyOp

import authz_migration
from authz_migration import enforcer as enforcer_sync
from authz_migration import role_links

USERS = [f"user^u{n}" for n in range(40)]
ROLES = ["role^course_staff", "role^course_admin", "role^library_user"]
DOMAINS = [f"course-v1^course-v1:OrgA+C{n}+R" for n in range(6)] + ["course-v1^course-v1:OrgA+*"]


def loaded(rules) -> casbin.Enforcer:
    enforcer = casbin.Enforcer(authz_migration.CASBIN_MODEL_PATH)
    enforcer.model.model["g"]["g"].policy.extend(list(rule) for rule in rules)
    enforcer.build_role_links()
    return enforcer


def pycasbins_way(enforcer, added, removed) -> None:
    """What the enforcer learned before this module: pycasbin's model API, a rule at a time."""
    model = enforcer.model
    fresh = [rule for rule in added if model.add_policy("g", "g", rule)]
    present = model.remove_policies_with_effected("g", "g", removed)
    manager = enforcer.rm_map["g"]
    model.build_incremental_role_links(manager, PolicyOp.Policy_add, "g", "g", fresh)
    model.build_incremental_role_links(manager, PolicyOp.Policy_remove, "g", "g", present)


def answers(enforcer) -> dict:
    """Every role of every user in every domain, as a check sees it."""
    manager = enforcer.rm_map["g"]
    return {
        (user, domain): sorted(manager.get_roles(user, domain))
        for user in USERS
        for domain in DOMAINS
    }


def links(enforcer) -> dict:
    return {domain: list(held) for domain, held in enforcer.rm_map["g"].all_links.items() if held}


def random_rules(chooser, count) -> list[list[str]]:
    return [
        [chooser.choice(USERS), chooser.choice(ROLES), chooser.choice(DOMAINS)]
        for _ in range(count)
    ]


@pytest.fixture
def twins():
    seed = random_rules(random.Random(3), 150)
    seed = [list(rule) for rule in dict.fromkeys(map(tuple, seed))]  # as a move leaves it
    return loaded(seed), loaded(seed)


def test_the_app_takes_its_own_way_with_pycasbins_domain_manager(twins):
    ours, _ = twins
    assert role_links.handles(ours.rm_map["g"], ours.model.model["g"]["g"])


@pytest.mark.parametrize("checked_first", [False, True], ids=["cold domains", "checked domains"])
def test_moves_leave_the_same_links_and_answers_as_pycasbins_way(twins, checked_first):
    """Random moves, forward and back, some of them of rules already held or not held. With
    ``checked_first``, a check has built each domain's own manager before the moves: those
    managers must learn each move too, without being rebuilt."""
    ours, theirs = twins
    if checked_first:
        assert answers(ours) == answers(theirs)
    built = dict(ours.rm_map["g"].rm_map)
    chooser = random.Random(11)
    for _ in range(40):
        added = random_rules(chooser, chooser.randrange(0, 12))
        held = ours.model.model["g"]["g"].policy
        removed = chooser.sample(held, min(len(held), chooser.randrange(0, 12)))
        removed += random_rules(chooser, 2)  # most of them not held

        # The app is given tuples, as the database returns rules; pycasbin, its lists.
        enforcer_sync._apply(ours, [*map(tuple, added)], [*map(tuple, removed)])
        pycasbins_way(theirs, added, removed)

        assert links(ours) == links(theirs)
    # pycasbin reads a link's fields by name: what the app appended are its Links too
    assert {type(link) for held in links(ours).values() for link in held} == {role_links.Link}
    assert {
        domain: manager for domain, manager in ours.rm_map["g"].rm_map.items() if domain in built
    } == built  # the same managers, kept up to date
    assert answers(ours) == answers(theirs)
    assert ours.model.model["g"]["g"].policy and links(ours)


def test_a_rule_the_policy_held_twice_loses_both_links():
    """casbin_rule has no unique key, so a loaded policy can hold a rule twice; a move that
    deletes it deletes both rows, and no link may be left to grant the role (pycasbin's way
    left one, which came back at the next rebuild of the domain)."""
    rule = [USERS[0], ROLES[0], DOMAINS[0]]

    def holds(enforcer, user):
        return enforcer.rm_map["g"].has_link(user, ROLES[0], DOMAINS[0])

    for checked_first in (False, True):
        enforcer = loaded([rule, [USERS[1], ROLES[0], DOMAINS[0]], rule])
        if checked_first:
            assert holds(enforcer, USERS[0])

        enforcer_sync._apply(enforcer, [], [rule])

        assert not holds(enforcer, USERS[0])
        enforcer.rm_map["g"].rm_map.clear()  # what pycasbin's own rebuild starts from
        assert not holds(enforcer, USERS[0])
        assert holds(enforcer, USERS[1])


def test_a_link_the_role_manager_does_not_hold_fails_as_pycasbin_fails(twins):
    ours, _ = twins
    manager = ours.rm_map["g"]
    with pytest.raises(RuntimeError, match="does not exist"):
        role_links.remove(manager, [["user^nobody", ROLES[0], DOMAINS[0]]])
    with pytest.raises(RuntimeError, match="does not exist"):
        role_links.remove(manager, [["user^nobody", ROLES[0], "course-v1^unknown"]])


def test_fields_past_user_role_and_domain_are_left_out_as_pycasbin_leaves_them(twins):
    ours, theirs = twins
    rule = [USERS[2], ROLES[1], DOMAINS[1], "", "", ""]  # as six columns read it
    role_links.add(ours.rm_map["g"], [rule])
    theirs.model.build_incremental_role_links(
        theirs.rm_map["g"], PolicyOp.Policy_add, "g", "g", [rule]
    )
    assert links(ours) == links(theirs)


def domain_matching(enforcer):
    enforcer.add_named_domain_matching_func("g", casbin.util.key_match2)
    return enforcer


class OwnManager(type(casbin.Enforcer(authz_migration.CASBIN_MODEL_PATH).rm_map["g"])):
    """A host's own role manager built on pycasbin's."""


@pytest.mark.parametrize(
    "adapt",
    [domain_matching, lambda enforcer: enforcer.rm_map.__setitem__("g", OwnManager(10))],
    ids=["domain matching", "a subclass"],
)
def test_other_role_managers_take_pycasbins_way(twins, adapt):
    """A domain matching function spreads a link to the managers of other domains, and a
    subclass may keep links its own way: both are left to pycasbin's own path."""
    ours, theirs = (adapt(enforcer) or enforcer for enforcer in twins)
    for enforcer in (ours, theirs):
        enforcer.build_role_links()
    assert not role_links.handles(ours.rm_map["g"], ours.model.model["g"]["g"])
    added = [[USERS[5], ROLES[2], DOMAINS[2]], [USERS[6], ROLES[0], DOMAINS[-1]]]
    removed = ours.model.model["g"]["g"].policy[:5]

    enforcer_sync._apply(ours, added, removed)
    pycasbins_way(theirs, added, list(removed))

    assert links(ours) == links(theirs)
    assert answers(ours) == answers(theirs)


def test_a_role_definition_without_a_domain_takes_pycasbins_way(twins):
    ours, _ = twins
    domain_manager = ours.rm_map["g"]
    assert role_links.handles(domain_manager, ours.model.model["g"]["g"])
    assert not role_links.handles(domain_manager, ours.model.model["g"]["g2"])  # "_, _"
