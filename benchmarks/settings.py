"""Django settings for the benchmarks (``python -m benchmarks``).

The database is chosen by ``AUTHZ_BENCH_DB`` (sqlite, postgres or mariadb), which the CLI
sets from ``--db``. The benchmark owns a dedicated database, ``authz_migration_bench`` by
default (``AUTHZ_BENCH_DB_NAME``): it truncates and refills its tables, so never point it at a
database holding anything you want to keep. On SQLite the database is a file whose path
the CLI passes in ``AUTHZ_BENCH_SQLITE_PATH`` (a temporary directory by default).
"""

import os
import tempfile

import authz_migration

SECRET_KEY = "benchmarks-only-not-secret"  # noqa: S105
DEBUG = False  # queries are counted explicitly; DEBUG would log (and keep) every statement
USE_TZ = True
TIME_ZONE = "UTC"

DB = os.environ.get("AUTHZ_BENCH_DB", "sqlite")
NAME = os.environ.get("AUTHZ_BENCH_DB_NAME", "authz_migration_bench")

if DB == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": NAME,
            "USER": os.environ.get("AUTHZ_BENCH_PG_USER", "postgres"),
            "PASSWORD": os.environ.get("AUTHZ_BENCH_PG_PASSWORD", ""),
            "HOST": os.environ.get("AUTHZ_BENCH_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("AUTHZ_BENCH_PG_PORT", "5432"),
        }
    }
elif DB == "mariadb":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": NAME,
            "USER": os.environ.get("AUTHZ_BENCH_MYSQL_USER", "root"),
            "PASSWORD": os.environ.get("AUTHZ_BENCH_MYSQL_PASSWORD", ""),
            "HOST": os.environ.get("AUTHZ_BENCH_MYSQL_HOST", "127.0.0.1"),
            "PORT": os.environ.get("AUTHZ_BENCH_MYSQL_PORT", "3306"),
            "OPTIONS": {"charset": "utf8mb4"},
        }
    }
elif DB == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("AUTHZ_BENCH_SQLITE_PATH")
            or os.path.join(tempfile.gettempdir(), f"{NAME}.sqlite3"),
        }
    }
else:
    raise RuntimeError(f"AUTHZ_BENCH_DB must be sqlite, postgres or mariadb, not {DB!r}")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "waffle",
    "casbin_adapter",
    "authz_migration",
]

DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
CASBIN_MODEL = authz_migration.CASBIN_MODEL_PATH
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The benchmark switches AUTHZ_MIGRATION_AUTOMATIC on with override_settings where it measures
# the automatic path; every other authz_migration setting keeps its default.
AUTHZ_MIGRATION_AUTOMATIC = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # Warnings of the app (org-wide splits, failed runs) still reach stderr.
    "loggers": {"authz_migration": {"handlers": ["console"], "level": "WARNING"}},
}
