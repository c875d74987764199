"""Signals this app sends, and the receivers it connects."""

from __future__ import annotations


def connect_receivers() -> None:
    """Connect the override receivers (filled in with the engine)."""
