"""Keeps Casbin enforcers in step with moves, after they commit.

- The in-process enforcer of casbin_adapter learns exactly the rows a move added and removed
  (policy and role links updated incrementally): the cost follows the rows moved, never the
  size of ``casbin_rule``. An enforcer that has not loaded yet is left alone: it will load
  the committed rows when first used.
- Other processes are told through the enforcer's watcher, when the host configured one
  (``CASBIN_WATCHER``; see docs/watcher.rst), even if this process's enforcer never loaded.
  Their enforcers then reload.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from contextvars import ContextVar

from casbin.model.policy import DEFAULT_SEP
from casbin.model.policy_op import PolicyOp
from django.conf import settings

logger = logging.getLogger(__name__)

SECTION = PTYPE = "g"

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


def follow_moves(sender, run=None, added=(), removed=(), **kwargs) -> None:
    """Receiver of ``migration_run_finished``: apply a committed move to the enforcer."""
    if not (added or removed):
        return
    enforcer = _loaded_enforcer()
    if enforcer is None or not _follow_in_process.get():
        watcher = getattr(enforcer, "watcher", None) or getattr(settings, "CASBIN_WATCHER", None)
        _notify_watcher(watcher, added, removed)
        return
    added = [list(rule) for rule in added]
    removed = [list(rule) for rule in removed]
    model = enforcer.model
    role_manager = enforcer.rm_map.get(PTYPE) if enforcer.rm_map else None
    # pycasbin keeps a policy as a list, and its has_policy/add_policy/remove_policy scan it
    # once per rule: a move of k rules would cost k passes over the whole policy. One pass
    # per move instead: a set of what is there, then appends or a single rebuild.
    assertion = model[SECTION][PTYPE]
    held = {tuple(rule) for rule in assertion.policy}
    fresh = [rule for rule in added if tuple(rule) not in held]
    present = [rule for rule in removed if tuple(rule) in held]
    for rule in fresh:
        assertion.policy.append(rule)
    if present:
        gone = {tuple(rule) for rule in present}
        assertion.policy[:] = [rule for rule in assertion.policy if tuple(rule) not in gone]
    if fresh or present:
        assertion.policy_map = {
            DEFAULT_SEP.join(rule): index for index, rule in enumerate(assertion.policy)
        }
    if role_manager is not None and fresh:
        model.build_incremental_role_links(role_manager, PolicyOp.Policy_add, SECTION, PTYPE, fresh)
    if role_manager is not None and present:
        model.build_incremental_role_links(
            role_manager, PolicyOp.Policy_remove, SECTION, PTYPE, present
        )
    _notify_watcher(getattr(enforcer, "watcher", None), added, removed)


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
