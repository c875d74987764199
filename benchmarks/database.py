"""The benchmark's own database, created before Django is set up, and Django's setup.

The benchmark owns its database (``authz_migration_bench``): it drops and recreates it (unless
``--keep-db``) and truncates its tables between measurements.
"""

from __future__ import annotations

import os
from time import perf_counter


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def prepare_database(db: str, name: str, keep: bool, sqlite_path: str | None) -> str:
    """Create the benchmark database (dropping it first unless ``keep``). Returns a
    description. Runs before ``django.setup()``: casbin_adapter loads every casbin_rule row
    into its enforcer at startup, so a database left full by an earlier run would make the
    start slow; a fresh database (or, with ``keep``, an emptied casbin_rule) avoids it."""
    if db == "postgres":
        import psycopg

        params = {
            "host": _env("AUTHZ_BENCH_PG_HOST", "127.0.0.1"),
            "port": _env("AUTHZ_BENCH_PG_PORT", "5432"),
            "user": _env("AUTHZ_BENCH_PG_USER", "postgres"),
            "password": _env("AUTHZ_BENCH_PG_PASSWORD", ""),
        }
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if exists and not keep:
                conn.execute(f'DROP DATABASE "{name}"')
                exists = None
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
                return f"created {name}"
        with psycopg.connect(dbname=name, autocommit=True, **params) as conn:
            if conn.execute("SELECT to_regclass('casbin_rule')").fetchone()[0]:
                conn.execute("TRUNCATE casbin_rule")
        return f"reused {name}"
    if db == "mariadb":
        import MySQLdb

        conn = MySQLdb.connect(
            host=_env("AUTHZ_BENCH_MYSQL_HOST", "127.0.0.1"),
            port=int(_env("AUTHZ_BENCH_MYSQL_PORT", "3306")),
            user=_env("AUTHZ_BENCH_MYSQL_USER", "root"),
            passwd=_env("AUTHZ_BENCH_MYSQL_PASSWORD", ""),
            charset="utf8mb4",
        )
        try:
            cursor = conn.cursor()
            if not keep:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
            created = cursor.execute(
                f"CREATE DATABASE IF NOT EXISTS `{name}` "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.tables "
                "WHERE table_schema = %s AND table_name = 'casbin_rule'",
                [name],
            )
            if cursor.fetchone()[0]:
                cursor.execute(f"TRUNCATE TABLE `{name}`.casbin_rule")
        finally:
            conn.close()
        return f"{'created' if created else 'reused'} {name}"
    # SQLite: a file in a temporary directory unless a path was given.
    if not keep and os.path.exists(sqlite_path):
        os.remove(sqlite_path)
    if os.path.exists(sqlite_path):
        import sqlite3

        conn = sqlite3.connect(sqlite_path)
        try:
            conn.execute("DELETE FROM casbin_rule")
            conn.commit()
        except sqlite3.OperationalError:
            pass
        conn.close()
        return f"reused {sqlite_path}"
    return f"created {sqlite_path}"


def setup_django(args) -> dict:
    os.environ["AUTHZ_BENCH_DB"] = args.db
    os.environ["AUTHZ_BENCH_DB_NAME"] = args.db_name
    if args.db == "sqlite":
        os.environ["AUTHZ_BENCH_SQLITE_PATH"] = args.sqlite_path
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
    how = prepare_database(args.db, args.db_name, args.keep_db, args.sqlite_path)
    import django

    django.setup()
    from django.core.management import call_command

    started = perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    return {"database": how, "migrate_seconds": round(perf_counter() - started, 2)}
