"""Signals this app sends. Declarations only: the receivers this app connects live in
:mod:`authz_migration.receivers`, so that a module sending a signal never imports the code
that receives it."""

from django.dispatch import Signal

#: Sent after the transaction of a move commits (never for dry runs, never for a move that
#: rolled back), with the arguments ``run`` (the :class:`~authz_migration.models.MigrationRun`,
#: final status), ``added`` and ``removed`` (lists of the Casbin ``(v0, v1, v2)`` role rows
#: the move wrote and deleted), for in-memory enforcers and other listeners to follow.
migration_run_finished = Signal()
