"""The child process of ``tests/test_command_kill.py``: ``authz_migrate`` that stops inside a
batch and says so, so that the test kills or interrupts it there by an event, not by timing.

    python tests/kill_child.py sync --all --batch-size 50 --no-input

Environment, besides the test database's (``AUTHZ_TEST_DB``, ``AUTHZ_TEST_PG_NAME`` /
``AUTHZ_TEST_MYSQL_NAME``):

- ``AUTHZ_KILL_PAUSE_AT_RUN=N``: the N-th run row is written inside its batch's transaction
  (rows moved, nothing committed), then the child writes ``IN_BATCH`` to the file descriptor
  ``AUTHZ_KILL_EVENT_FD`` and blocks reading ``AUTHZ_KILL_RESUME_FD`` until a line arrives or
  the parent closes it. The runs before it are committed: exactly N - 1 of them.
- Without ``AUTHZ_KILL_PAUSE_AT_RUN`` it is the plain command.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Run as a script (``python tests/kill_child.py``): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def pause_inside_a_batch(pause_at: int, event_fd: int, resume_fd: int) -> None:
    from authz_migration import orchestrator

    original = orchestrator.record
    calls = 0

    def record(*args, **kwargs):
        nonlocal calls
        run = original(*args, **kwargs)
        calls += 1
        if calls == pause_at:
            os.write(event_fd, b"IN_BATCH\n")
            # A signal handler (the command's SIGINT flag) runs and the read resumes
            # (PEP 475): only a line or EOF from the parent lets the batch go on.
            with os.fdopen(resume_fd, "rb", buffering=0) as resume:
                resume.readline()
        return run

    orchestrator.record = record


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    pause_at = os.environ.get("AUTHZ_KILL_PAUSE_AT_RUN")
    if pause_at:
        pause_inside_a_batch(
            int(pause_at),
            int(os.environ["AUTHZ_KILL_EVENT_FD"]),
            int(os.environ["AUTHZ_KILL_RESUME_FD"]),
        )
    from django.core.management import execute_from_command_line

    execute_from_command_line(["django-admin", "authz_migrate", *sys.argv[1:]])


if __name__ == "__main__":
    main()
