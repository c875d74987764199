"""Signals this app sends, and the receivers it connects."""

from __future__ import annotations

from django.dispatch import Signal

# Sent after the transaction of a move commits (never for dry runs).
# Arguments: run (MigrationRun, final status), added and removed (lists of Casbin
# (v0, v1, v2) role rows the move wrote and deleted), for in-memory enforcers to follow.
migration_run_finished = Signal()


def connect_receivers() -> None:
    """Connect the override receivers (filled in with the engine)."""
