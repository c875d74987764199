"""Another worker of the site, for tests/openedx_authz/test_enforcers.py: a process of its
own that answers permission checks through openedx-authz's public API, with the enforcer it
loaded at its first check, as a running LMS or Studio worker does.

Protocol on standard input, one line per request: ``USER ACTION SCOPE``; it answers each with
``ALLOWED True`` or ``ALLOWED False`` on standard output, after ``READY`` once set up. It
leaves when its standard input closes.

Environment: ``DJANGO_SETTINGS_MODULE=tests.openedx_authz.settings``, ``AUTHZ_TEST_DB`` and
the parent's test database name (``AUTHZ_TEST_PG_NAME``, ``AUTHZ_TEST_MYSQL_NAME`` or
``AUTHZ_TEST_SQLITE_NAME``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    import django

    django.setup()
    from openedx_authz.api.users import is_user_allowed

    print("READY", flush=True)
    for line in sys.stdin:
        user, action, scope = line.split()
        print(f"ALLOWED {is_user_allowed(user, action, scope)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
