"""Per-scope concurrency guard, enforced by the database's own row locks.

Every move holds, for the length of its transaction:

- an instance-wide move: an exclusive lock on the ``instance`` row;
- a course or org move: a shared lock on ``instance`` and an exclusive lock on ``org:<ORG>``.

So a course and its org, two moves of one org, and anything and an instance-wide move never
execute at once, while moves in different orgs never wait for each other. Locks are released
by commit, rollback, or the death of the connection: no crashed process can leave a scope
locked (docs/decisions/0003). On SQLite, which has one writer at a time, taking the lock is a
write, so moves there are simply serialized.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from django.db import DatabaseError, connections, router, transaction

from .models import ScopeLock

INSTANCE = "instance"


class ScopeBusy(Exception):
    """Another move holds a scope this one needs, and the caller chose not to wait."""


def org_lock_key(org: str) -> str:
    return f"org:{org}"


def ensure_lock_rows(keys: Iterable[str]) -> None:
    """Create missing lock rows, committed at once.

    On PostgreSQL and MariaDB no move transaction ever inserts a lock row: two transactions
    inserting the same new key wait on each other's uncommitted row, and on MariaDB such
    duplicate-key waits deadlock with insert-intention locks. So missing rows are created in
    autocommit, on a short-lived second connection when the caller is inside a transaction
    (an override save). SQLite has one writer at a time: rows are created in place.
    """
    keys = sorted(set(keys))
    using = router.db_for_write(ScopeLock)
    present = set(ScopeLock.objects.using(using).filter(key__in=keys).values_list("key", flat=True))
    missing = [key for key in keys if key not in present]
    if not missing:
        return
    connection = connections[using]
    if connection.vendor == "sqlite" or not connection.in_atomic_block:
        ScopeLock.objects.using(using).bulk_create(
            [ScopeLock(key=key) for key in missing], ignore_conflicts=True
        )
        return
    side = connections.create_connection(using)
    try:
        table = side.ops.quote_name(ScopeLock._meta.db_table)
        column = side.ops.quote_name("key")
        values = ", ".join(["(%s)"] * len(missing))
        if side.vendor == "postgresql":
            sql = f"INSERT INTO {table} ({column}) VALUES {values} ON CONFLICT DO NOTHING"  # noqa: S608 (identifiers only)
        else:
            sql = f"INSERT IGNORE INTO {table} ({column}) VALUES {values}"  # noqa: S608
        # The statement is idempotent and alone in its transaction: when two first saves
        # deadlock on it (MariaDB), running it again is all it takes.
        for attempt in range(5):
            try:
                with side.cursor() as cursor:
                    cursor.execute(sql, missing)
                break
            except DatabaseError as exc:
                if attempt == 4 or not (is_deadlock(exc) or _is_lock_unavailable(exc)):
                    raise
                time.sleep(0.02 * (attempt + 1))
    finally:
        side.close()


def _keys(org: str | None) -> list[str]:
    return [org_lock_key(org)] if org else []


def prepare(org: str | None, *, instance: bool = False) -> None:
    """Before the transaction of a move that will not wait: make sure its lock rows exist
    (created in autocommit), so that :func:`hold` can lock them at once or fail at once."""
    ensure_lock_rows([INSTANCE, *_keys(org)])


def hold(org: str | None, *, instance: bool = False, wait: bool = True) -> None:
    """Take the locks a move of ``org`` (or, with ``instance``, of the whole instance) needs,
    until the caller's open transaction ends. With ``wait=False`` a busy scope raises
    :class:`ScopeBusy` and leaves the transaction usable: the refused lock statement runs in
    a savepoint of its own (a refused NOWAIT aborts its statement, and on PostgreSQL the
    whole transaction unless a savepoint contains it)."""
    keys = _keys(org)
    if wait:
        acquire(keys, instance=instance)
        return
    with transaction.atomic(using=router.db_for_write(ScopeLock)):
        acquire(keys, instance=instance, wait=False)


def hold_orgs(orgs: Iterable[str]) -> None:
    """:func:`hold` for many orgs at once (the cutover pins every org): their lock rows
    created first, on a connection of their own, then locked in key order by one statement,
    until the caller's transaction ends. Where the rows locked fall short of the orgs (orgs
    that the collation makes one row, MariaDB's ``OrgA`` and ``orga``, or a row gone
    meanwhile), each org is held by :func:`hold` in turn: creating a row from the second
    connection while this one holds its look-alike would wait on our own lock."""
    orgs = sorted(set(orgs))
    if not orgs:
        return
    keys = [org_lock_key(org) for org in orgs]  # in the orgs' order
    ensure_lock_rows([INSTANCE, *keys])
    connection = connections[router.db_for_write(ScopeLock)]
    if connection.vendor == "sqlite":
        _lock_sqlite(connection)
        return
    locked = _lock_rows(connection, keys, instance=False, wait=True)
    if len(locked) < len(keys) + 1:  # the orgs' rows and the instance's
        for org in orgs:
            hold(org)


def acquire(org_keys: Iterable[str] = (), *, instance: bool = False, wait: bool = True) -> None:
    """Lock ``instance`` (exclusively when ``instance`` is True, else shared) and the given
    org keys exclusively, in a fixed order. Must run inside ``transaction.atomic()``.

    Raises :class:`ScopeBusy` when ``wait`` is False and a lock is held elsewhere.
    """
    using = router.db_for_write(ScopeLock)
    connection = connections[using]
    org_keys = sorted(set(org_keys))
    wanted = {INSTANCE, *org_keys}
    try:
        if connection.vendor == "sqlite":
            ensure_lock_rows(wanted)
            _lock_sqlite(connection)
            return
        # Lock rows exist almost always: try to lock first, create only what was missing.
        # Rows are counted, not compared: under MariaDB's _ci collations the row of
        # "org:orga" is the one "org:OrgA" locks (the unique key makes them one row), and
        # inserting "org:OrgA" from the side connection would wait on our own lock.
        if len(_lock_rows(connection, org_keys, instance, wait)) < len(wanted):
            ensure_lock_rows(wanted)
            _lock_rows(connection, org_keys, instance, wait)
    except DatabaseError as exc:
        if not wait and _is_lock_unavailable(exc):
            raise ScopeBusy(", ".join(sorted(wanted))) from exc
        raise


def _lock_sqlite(connection) -> None:
    # Any write takes SQLite's database-wide write lock until the transaction ends.
    table = connection.ops.quote_name(ScopeLock._meta.db_table)
    column = connection.ops.quote_name("key")
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {column} = {column} WHERE {column} = %s",  # noqa: S608 (identifiers only)
            [INSTANCE],
        )


def _lock_rows(connection, org_keys: list[str], instance: bool, wait: bool) -> set[str]:
    """Lock the rows that exist; return the keys locked."""
    table = connection.ops.quote_name(ScopeLock._meta.db_table)
    column = connection.ops.quote_name("key")
    nowait = "" if wait else " NOWAIT"
    if instance:
        mode = "FOR UPDATE"
    elif connection.vendor == "postgresql":
        mode = "FOR SHARE"
    else:
        mode = "LOCK IN SHARE MODE"
    locked = set()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {column} FROM {table} WHERE {column} = %s {mode}{nowait}",  # noqa: S608
            [INSTANCE],
        )
        locked.update(row[0] for row in cursor.fetchall())
        if org_keys:
            placeholders = ", ".join(["%s"] * len(org_keys))
            cursor.execute(
                f"SELECT {column} FROM {table} WHERE {column} IN ({placeholders}) "  # noqa: S608
                f"ORDER BY {column} FOR UPDATE{nowait}",
                org_keys,
            )
            locked.update(row[0] for row in cursor.fetchall())
    return locked


def is_deadlock(exc: BaseException) -> bool:
    """PostgreSQL 40P01 (deadlock) / 40001 (serialization), MariaDB/MySQL 1213."""
    cause = exc.__cause__ or exc
    if getattr(cause, "sqlstate", None) in ("40P01", "40001"):
        return True
    args = getattr(cause, "args", ())
    return bool(args) and args[0] == 1213


def _is_lock_unavailable(exc: DatabaseError) -> bool:
    cause = exc.__cause__ or exc
    # PostgreSQL: SQLSTATE 55P03 lock_not_available. MariaDB/MySQL: 3572 (NOWAIT), 1205 (timeout).
    if getattr(cause, "sqlstate", None) == "55P03":
        return True
    args = getattr(cause, "args", ())
    return bool(args) and args[0] in (1205, 3572, 1213)
