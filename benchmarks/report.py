"""Printing: section headers, tables, numbers, and the environment a run was made in."""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import subprocess
from contextlib import contextmanager
from time import perf_counter

from benchmarks.sql import Sql


@contextmanager
def section(name: str, out):
    started = perf_counter()
    if out is not None:
        print(f"\n== {name} ==", file=out, flush=True)
    yield
    if out is not None:
        print(f"({name}: {perf_counter() - started:.1f} s in all)", file=out, flush=True)


def table(headers: list[str], rows: list[list], out) -> None:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)), file=out)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)
    out.flush()


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if value < 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def server_cache(sql: Sql) -> str:
    """The database's own page cache, which decides whether a large run is bound by its
    disk: MariaDB's buffer pool (128 MiB by default, far below a production server's),
    PostgreSQL's shared buffers (the OS page cache serves it beyond), SQLite's page cache."""
    if sql.vendor == "mysql":
        size = int(sql.scalar("SELECT @@innodb_buffer_pool_size"))
        return f"InnoDB buffer pool {size // 2**20} MiB"
    if sql.vendor == "postgresql":
        return f"shared_buffers {sql.scalar('SHOW shared_buffers')}"
    pages = int(sql.scalar("PRAGMA cache_size"))  # negative: KiB
    return f"page cache {-pages} KiB" if pages < 0 else f"page cache {pages} pages"


def environment(sql: Sql) -> dict:
    import django

    version = {
        "postgresql": "SELECT version()",
        "mysql": "SELECT version()",
        "sqlite": "SELECT sqlite_version()",
    }[sql.vendor]
    try:
        head = subprocess.run(  # noqa: S603
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603
            ["git", "-C", REPO, "status", "--porcelain", "authz_migration"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        head, dirty = "", ""
    import authz_migration

    package = os.path.dirname(authz_migration.__file__)
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            with open(os.path.join(root, name), "rb") as handle:
                digest.update(name.encode() + handle.read())
    return {
        "database": sql.vendor,
        "app_source_sha256": digest.hexdigest()[:12],
        "server": str(sql.scalar(version)).split(" on ")[0],
        "server_cache": server_cache(sql),
        "python": platform.python_version(),
        "django": django.get_version(),
        "git": head + (" (authz_migration/ modified)" if dirty else ""),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
