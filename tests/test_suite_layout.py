"""The suite's own layout: ``-m "not server_db"`` leaves out every test that needs
PostgreSQL or MariaDB, and the shared fixtures are defined once."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# Run in a child: collect the whole suite with -m "not server_db" and list what is left that
# still uses the server_db fixture (directly or through another fixture).
COLLECT = """
import sys

import pytest


class Report:
    def pytest_collection_finish(self, session):
        self.left = [i.nodeid for i in session.items if "server_db" in i.fixturenames]

    def pytest_deselected(self, items):
        self.deselected = getattr(self, "deselected", 0) + len(items)


report = Report()
code = pytest.main(
    ["--collect-only", "-q", "-p", "no:cacheprovider", "-m", "not server_db", sys.argv[1]],
    plugins=[report],
)
print("RESULT", code, getattr(report, "deselected", 0), *report.left)
"""


def test_not_server_db_deselects_every_test_that_needs_a_server():
    done = subprocess.run(
        [sys.executable, "-c", COLLECT, str(TESTS)],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout + done.stderr
    code, deselected, *left = lines[-1].split()[1:]
    assert code == "0", done.stdout + done.stderr
    assert left == [], "use the server_db fixture but escape -m 'not server_db'"
    assert int(deselected) > 30  # the server-only tests, deselected


def fixture_definitions(name: str) -> list[str]:
    """Files of tests/ (not tests/openedx, whose host has rows of its own shape) that define
    a function ``name``."""
    found = []
    for path in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == name:
                found.append(str(path.relative_to(TESTS)))
    return found


def test_shared_fixtures_and_helpers_are_defined_once():
    assert fixture_definitions("people") == ["conftest.py"]
    assert fixture_definitions("legacy_rows") == []  # two shapes, two names in helpers.py
    assert fixture_definitions("legacy_rows_by_user_id") == ["helpers.py"]
    assert fixture_definitions("legacy_rows_by_username") == ["helpers.py"]
