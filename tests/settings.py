"""Settings for the test suite. ``AUTHZ_TEST_DB`` picks the database: sqlite (default),
postgres or mariadb; the servers are the local ones CI provides (see README, "Tests")."""

import os

import authz_migration

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"

DB = os.environ.get("AUTHZ_TEST_DB", "sqlite")

if DB == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("AUTHZ_TEST_PG_NAME", "authz_migration"),
            "USER": os.environ.get("AUTHZ_TEST_PG_USER", "postgres"),
            "PASSWORD": os.environ.get("AUTHZ_TEST_PG_PASSWORD", ""),
            "HOST": os.environ.get("AUTHZ_TEST_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("AUTHZ_TEST_PG_PORT", "5432"),
            # One test database per process: parallel runs against one server don't collide.
            "TEST": {"NAME": f"test_authz_migration_{os.getpid()}"},
        }
    }
elif DB == "mariadb":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": os.environ.get("AUTHZ_TEST_MYSQL_NAME", "authz_migration"),
            "USER": os.environ.get("AUTHZ_TEST_MYSQL_USER", "root"),
            "PASSWORD": os.environ.get("AUTHZ_TEST_MYSQL_PASSWORD", ""),
            "HOST": os.environ.get("AUTHZ_TEST_MYSQL_HOST", "127.0.0.1"),
            "PORT": os.environ.get("AUTHZ_TEST_MYSQL_PORT", "3306"),
            "OPTIONS": {"charset": "utf8mb4"},
            "TEST": {
                "NAME": f"test_authz_migration_{os.getpid()}",
                "CHARSET": "utf8mb4",
                "COLLATION": "utf8mb4_unicode_ci",
            },
        }
    }
elif DB == "sqlite":
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
else:
    raise RuntimeError(f"AUTHZ_TEST_DB must be sqlite, postgres or mariadb, not {DB!r}")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "waffle",
    "casbin_adapter",
    "authz_migration",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
STATIC_URL = "/static/"  # the admin's pages link their CSS; live_server needs it set
CASBIN_MODEL = authz_migration.CASBIN_MODEL_PATH
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
