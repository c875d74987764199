"""Keeps Casbin enforcers in step with moves, after they commit.

- The in-process enforcer of casbin_adapter learns exactly the rows a move added and removed
  (policy and role links updated incrementally): the cost follows the rows moved, never the
  size of ``casbin_rule``. An enforcer that has not loaded yet is left alone: it will load
  the committed rows when first used.
- Other processes are told through the enforcer's watcher, when the host configured one
  (``CASBIN_WATCHER``; see docs/watcher.rst), even if this process's enforcer never loaded.
  Their enforcers then reload.
- Beside openedx-authz, its own enforcers (in this process and every other) reload at their
  next check: its policy-cache version changes (:func:`peer.invalidate_enforcers`,
  docs/decisions/0010), for every move, the command's included.
"""

from __future__ import annotations

import gc
import logging
from contextlib import contextmanager
from contextvars import ContextVar

from casbin.model.policy_op import PolicyOp
from django.conf import settings

from . import peer, role_links
from .roles import ROLE_PTYPE
from .signals import migration_run_finished

logger = logging.getLogger(__name__)

# pycasbin files role assignments under the model's "g" section, with ptype "g".
SECTION = PTYPE = ROLE_PTYPE

# False while a management command moves roles: its process serves no permission checks and
# exits afterwards, and pycasbin updates an enforcer rule by rule, which over a whole instance
# would cost more than the moves themselves. Other processes are still told by the watcher.
_follow_in_process: ContextVar[bool] = ContextVar("authz_migration_follow", default=True)


@contextmanager
def watcher_only():
    """Within this block, moves notify the watcher but leave this process's enforcer alone."""
    token = _follow_in_process.set(False)
    try:
        yield
    finally:
        _follow_in_process.reset(token)


def _loaded_enforcer():
    try:
        from casbin_adapter.enforcer import enforcer
    except ImportError:  # casbin_adapter not installed: system check E003 says so
        return None
    # Asking anything else of the proxy would load it (a full policy read) as a side effect.
    return enforcer if enforcer._initialized else None


def rules_wanted() -> bool:
    """Whether a move must list the Casbin rows it wrote and deleted for
    ``migration_run_finished``: an in-process enforcer to follow, a watcher to tell,
    openedx-authz to refresh, or a receiver of the signal other than :func:`follow_moves`.
    When none of them listens, the database moves rows without returning them."""
    enforcer = _loaded_enforcer()
    watcher = getattr(enforcer, "watcher", None) or getattr(settings, "CASBIN_WATCHER", None)
    return bool(
        peer.installed()
        or (enforcer is not None and _follow_in_process.get())
        or watcher
        or len(migration_run_finished.receivers) > 1
    )


def follow_moves(sender, run=None, added=(), removed=(), **kwargs) -> None:
    """Receiver of ``migration_run_finished``: apply a committed move to the enforcer."""
    if not (added or removed):
        return
    _invalidate_openedx_authz()
    enforcer = _loaded_enforcer()
    if enforcer is None or not _follow_in_process.get():
        watcher = getattr(enforcer, "watcher", None) or getattr(settings, "CASBIN_WATCHER", None)
        _notify_watcher(watcher, added, removed)
        return
    with collector_paused():
        _apply(enforcer, added, removed)
    _notify_watcher(getattr(enforcer, "watcher", None), added, removed)


@contextmanager
def collector_paused():
    """Python's cyclic garbage collector off for the block (back on after it, unless it was
    off already). Following a move allocates a few objects per rule (its list in the
    policy, pycasbin's link), none of them in a cycle; every so many allocations the
    collector walks every object the process tracks, and the enforcer's policy is most of
    them: at 100,000 rules those walks were 40 % of the update (0.33 s against 0.19)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _apply(enforcer, added, removed) -> None:
    """Add and remove the rules in the enforcer's policy and role links."""
    model = enforcer.model
    assertion = model[SECTION][PTYPE]
    if isinstance(getattr(assertion, "policy", None), list):
        index = _index_of(assertion)
        fresh = index.add(added)
        # A rule the loaded policy held twice (casbin_rule has no unique key) has two links;
        # its second copy is in ``copies``, for the role manager to drop both.
        present, copies = index.remove(removed)
    else:  # not the pycasbin layout this was written for: its public (slower) model API
        fresh = [rule for rule in map(list, added) if model.add_policy(SECTION, PTYPE, rule)]
        present = model.remove_policies_with_effected(SECTION, PTYPE, [*map(list, removed)])
        copies = []
    role_manager = enforcer.rm_map.get(PTYPE) if enforcer.rm_map else None
    if role_manager is None:
        return
    if role_links.handles(role_manager, assertion):
        role_links.add(role_manager, fresh)
        role_links.remove(role_manager, present + copies)
        return
    # pycasbin's own path: one link removed a rule (its managers cannot lose a link twice).
    if fresh:
        model.build_incremental_role_links(role_manager, PolicyOp.Policy_add, SECTION, PTYPE, fresh)
    if present:
        model.build_incremental_role_links(
            role_manager, PolicyOp.Policy_remove, SECTION, PTYPE, [*map(list, present)]
        )


# pycasbin keeps a policy as a plain list and answers "is this rule there?" by scanning it:
# a move of k rules through its API costs k passes over the whole policy, and even one pass
# per move makes a five-row toggle cost as much as the size of casbin_rule. So the rules'
# positions are indexed once, kept with the policy, and updated with each move: a move costs
# what it moves (docs/decisions/0009).
INDEX_ATTRIBUTE = "_authz_migration_index"


class PolicyIndex:
    """Where each rule of one pycasbin policy list sits. Rules are appended at the end and
    removed by moving the last rule into their place (a "g" policy's order means nothing),
    so both cost O(1). (pycasbin's own ``policy_map`` is left alone: pycasbin's loading
    does not fill it and nothing in pycasbin reads it.)

    Rules are keyed by their tuple, as the database returns them, and ``keys`` holds the key
    of each position of the list: a rule is then looked up, and the last rule moved into a
    hole, without building a tuple of it (a third of a removal's cost).

    The index trusts nothing it has not checked: a replaced list (a reload) or a changed
    length (pycasbin's own API) rebuilds it, and so does a rule found out of its place. One
    change it cannot see is ``update_policy`` swapping one "g" rule for another in place
    between two moves; a host that edits "g" rules so should reload its enforcer."""

    def __init__(self, assertion):
        self.assertion = assertion
        self._build()

    def _build(self) -> None:
        self.policy: list = self.assertion.policy
        self.keys: list[tuple] = [tuple(rule) for rule in self.policy]
        self.where: dict[tuple, list[int]] = {}
        for position, key in enumerate(self.keys):
            self.where.setdefault(key, []).append(position)
        self.length = len(self.policy)

    def current(self) -> bool:
        return self.assertion.policy is self.policy and len(self.policy) == self.length

    def _in_place(self, key: tuple, positions: list[int]) -> bool:
        """Whether the rule ``key`` sits where the index says; if not, rebuild the index."""
        policy = self.policy
        size = len(policy)
        for position in positions:  # a loop: all() with a generator cost a third of a removal
            if position >= size or tuple(policy[position]) != key:
                self._build()
                return False
        return True

    def add(self, rules) -> list[list]:
        """Append each of ``rules`` that is not there; return those appended, as the policy
        holds them (lists)."""
        policy, keys, where = self.policy, self.keys, self.where
        fresh = []
        for rule in rules:
            key = tuple(rule)  # the rule itself when it is a tuple
            positions = where.get(key)
            if positions:
                if self._in_place(key, positions):
                    continue
                keys, where = self.keys, self.where  # rebuilt
                if key in where:
                    continue
            where[key] = [len(policy)]
            rule = list(key)
            policy.append(rule)
            keys.append(key)
            fresh.append(rule)
        self.length = len(policy)
        return fresh

    def remove(self, rules) -> tuple[list, list]:
        """Remove every copy of each of ``rules``. Returns the rules that were there, and
        each further copy of one (the rule again, once per extra copy)."""
        policy, keys, where = self.policy, self.keys, self.where
        present, copies = [], []
        for rule in rules:
            key = tuple(rule)
            positions = where.get(key)
            if positions and not self._in_place(key, positions):
                keys, where = self.keys, self.where  # rebuilt
                positions = where.get(key)
            if not positions:
                continue
            del where[key]
            for position in sorted(positions, reverse=True) if len(positions) > 1 else positions:
                last = len(policy) - 1
                if position != last:
                    moved = keys[last]
                    policy[position] = policy[last]
                    keys[position] = moved
                    spots = where[moved]
                    spots[spots.index(last)] = position
                policy.pop()
                keys.pop()
            present.append(rule)
            if len(positions) > 1:
                copies.extend([rule] * (len(positions) - 1))
        self.length = len(policy)
        return present, copies


def _index_of(assertion) -> PolicyIndex:
    """The assertion's index, built on the first move after each (re)load: one pass over the
    policy, a fraction of what loading it cost."""
    index = getattr(assertion, INDEX_ATTRIBUTE, None)
    if index is None or not index.current():
        index = PolicyIndex(assertion)
        setattr(assertion, INDEX_ATTRIBUTE, index)
    return index


def _invalidate_openedx_authz() -> None:
    try:
        peer.invalidate_enforcers()
    except Exception:
        # The move has committed; failing here would report a committed move as an error.
        # openedx-authz's enforcers keep their old policy until its next version change.
        logger.exception(
            "authz_migration: could not change openedx-authz's policy-cache version; its "
            "enforcers keep their old policy until it changes"
        )


def _notify_watcher(watcher, added, removed) -> None:
    if watcher is None:
        return
    try:
        results = []
        if added and callable(getattr(watcher, "update_for_add_policies", None)):
            results.append(watcher.update_for_add_policies(SECTION, PTYPE, *added))
            added = []
        if removed and callable(getattr(watcher, "update_for_remove_policies", None)):
            results.append(watcher.update_for_remove_policies(SECTION, PTYPE, *removed))
            removed = []
        if added or removed:
            results.append(watcher.update())
        # redis-watcher swallows its own errors and returns None instead of a count.
        if hasattr(watcher, "pub_client") and any(result is None for result in results):
            logger.warning(
                "authz_migration: the Casbin watcher did not publish; other processes keep "
                "their old policy until they reload"
            )
    except Exception:
        # The move has committed; a watcher outage must not turn it into an error. Other
        # processes catch up at their next policy load; the operator sees this in the log.
        logger.exception("authz_migration: could not notify the Casbin watcher")
