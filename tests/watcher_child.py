"""Process B of the two-process watcher test in ``tests/test_enforcer.py``.

Builds its own Casbin enforcer from the test database (the app's model and casbin_adapter's
Adapter), subscribes a Redis watcher on the channel it is given, and on every message reloads
its policy and prints ``ROLES <json>``: the sorted roles of the checked user in the checked
domain. Prints the same line once at start, then ``READY`` once subscribed.

It leaves by itself when its standard input closes, when its parent goes away, or after
``--timeout`` seconds, whichever comes first.

Environment: ``DJANGO_SETTINGS_MODULE`` (default ``tests.settings``), ``AUTHZ_TEST_DB`` and
``AUTHZ_TEST_PG_NAME`` / ``AUTHZ_TEST_MYSQL_NAME`` naming the test database.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

# Run as a script (``python tests/watcher_child.py``): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channel", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--redis-host", default="127.0.0.1")
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    parent = os.getppid()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()

    import casbin
    from casbin_adapter.adapter import Adapter
    from django.db import connection
    from redis_watcher import WatcherOptions, new_watcher

    import authz_migration

    enforcer = casbin.Enforcer(authz_migration.CASBIN_MODEL_PATH, Adapter("default"))
    print_lock = threading.Lock()

    def report() -> None:
        roles = sorted(enforcer.get_roles_for_user_in_domain(args.user, args.domain))
        with print_lock:
            print("ROLES " + json.dumps(roles), flush=True)

    def on_message(message: str) -> None:
        # Runs in the watcher's subscriber thread, with a database connection of its own.
        try:
            enforcer.load_policy()
            report()
        except Exception as exc:  # shown to the parent, which then fails with our output
            with print_lock:
                print(f"ERROR {type(exc).__name__}: {exc}", flush=True)
        finally:
            connection.close()

    options = WatcherOptions()
    options.host = args.redis_host
    options.port = args.redis_port
    options.channel = args.channel
    options.optional_update_callback = on_message
    watcher = new_watcher(options)
    if not watcher.subscribe_event.is_set():
        print(f"ERROR could not subscribe to {args.channel!r}", flush=True)
        return 2

    report()
    connection.close()  # the main thread's; the subscriber thread opens its own
    print("READY", flush=True)

    stdin_closed = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stdin_closed.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    while time.monotonic() < deadline and os.getppid() == parent:
        if stdin_closed.wait(0.2):
            break
    return 0


if __name__ == "__main__":
    # The watcher's subscriber thread is a daemon: leaving main ends the process.
    sys.exit(main())
