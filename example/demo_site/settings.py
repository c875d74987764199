"""Settings of the demo host project: SQLite, the admin, and authz_migration with its own
default models (a real Open edX host points the AUTHZ_MIGRATION_*_MODEL settings at its
tables instead). For local demonstration only: the secret key is public and DEBUG is on.
"""

import warnings
from pathlib import Path

import authz_migration

BASE_DIR = Path(__file__).resolve().parent.parent  # example/

SECRET_KEY = "demo-only-not-secret"  # never deploy this project
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "waffle",
    "casbin_adapter",
    "authz_migration",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo_site.urls"
WSGI_APPLICATION = "demo_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
    }
}

USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Casbin's model file: the one shipped with authz_migration (openedx-authz compatible).
CASBIN_MODEL = authz_migration.CASBIN_MODEL_PATH

# Move roles as soon as a course or org override changes a course's effective flag.
AUTHZ_MIGRATION_AUTOMATIC = True

# casbin_adapter's AppConfig.ready() reads the database to build its enforcer, and Django warns
# about that on every command. It is harmless here; keep the demo's output readable.
warnings.filterwarnings(
    "ignore", "Accessing the database during app initialization", RuntimeWarning
)

# Show the app's own log lines (it warns there, e.g. about org-wide roles a pinned course no
# longer sees) inline with the demo's output, on stdout so that they keep their place.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"demo": {"()": "demo.log.WrappedFormatter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "demo",
        }
    },
    "loggers": {"authz_migration": {"handlers": ["console"], "level": "INFO"}},
}
