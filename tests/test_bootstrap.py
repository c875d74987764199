"""The ``make test`` bootstrap on a machine that cannot build the MariaDB driver.

``scripts/system-packages`` decides which Debian packages are missing from what the machine
can do (a ``pkg-config`` on PATH, the MySQL headers known to it, a C compiler, Python.h), and
installs them only as root or with passwordless sudo. ``scripts/test`` then runs what it can
and reports MariaDB as skipped, naming the packages, or fails under ``CI``.

The machine is simulated, never changed: a PATH with every command but ``pkg-config``,
``dpkg`` (which would vouch for the headers) and ``sudo``, a fake ``id`` that says "not
root", and a ``MySQLdb`` that fails to import.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "system-packages"


@pytest.fixture
def machine(tmp_path):
    """Environment of a non-root user on a machine without pkg-config or sudo."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    hidden = {"pkg-config", "dpkg", "sudo", "id"}
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            target = os.path.join(directory, name)
            link = bin_dir / name
            if name in hidden or link.exists() or not os.access(target, os.X_OK):
                continue
            link.symlink_to(target)
    fake_id = bin_dir / "id"
    fake_id.write_text('#!/bin/sh\n[ "$1" = -u ] && echo 1000 || echo "uid=1000(dev)"\n')
    fake_id.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in {"CI", "AUTHZ_NO_SYSTEM_PACKAGES"}}
    env["PATH"] = str(bin_dir)
    return env


def run(args, env, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, env=env, cwd=REPO, capture_output=True, text=True, timeout=300, **kwargs
    )


def test_missing_pkg_config_is_reported_not_installed(machine):
    done = run([str(SCRIPT)], machine)
    last = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 1, done.stdout + done.stderr
    assert last.startswith("system packages: missing pkg-config")
    assert last.endswith("(not root and no passwordless sudo)")
    assert "installing" not in done.stdout


def test_as_root_it_installs_the_missing_packages_with_apt(machine, tmp_path):
    """A fake apt-get records its calls; what it "installs" (a pkg-config that knows the
    MySQL headers) is on PATH afterwards."""
    bin_dir = Path(machine["PATH"])
    log = tmp_path / "apt.log"
    (bin_dir / "id").write_text('#!/bin/sh\n[ "$1" = -u ] && echo 0 || echo "uid=0(root)"\n')
    (bin_dir / "apt-get").unlink(missing_ok=True)
    (bin_dir / "apt-get").write_text(
        f'#!/bin/sh\necho "$@" >> {log}\n'
        f'[ "$1" = install ] && printf "#!/bin/sh\\nexit 0\\n" > {bin_dir}/pkg-config'
        f" && chmod +x {bin_dir}/pkg-config\nexit 0\n"
    )
    (bin_dir / "apt-get").chmod(0o755)
    done = run([str(SCRIPT)], machine)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "update -q"
    assert calls[1].startswith("install -y -q --no-install-recommends pkg-config")
    assert "default-libmysqlclient-dev" in calls[1]
    assert done.stdout.strip().splitlines()[-1].startswith("system packages: installed pkg-config")


def test_the_opt_out_variable_keeps_apt_away(machine):
    machine["AUTHZ_NO_SYSTEM_PACKAGES"] = "1"
    done = run([str(SCRIPT)], machine)
    assert done.returncode == 1
    assert done.stdout.strip().endswith("(AUTHZ_NO_SYSTEM_PACKAGES is set)")


def test_check_reports_what_this_machine_has():
    done = run([str(SCRIPT), "--check"], dict(os.environ))
    # This machine ran the suite through `make test`, so whatever it lacks is named.
    last = done.stdout.strip().splitlines()[-1]
    assert (done.returncode, last) == (0, "system packages: ok") or (
        done.returncode == 1 and last.startswith("system packages: missing ")
    )


# --- scripts/test, end to end, on a tiny selection ------------------------------------------

in_make_test_venv = pytest.mark.skipif(
    Path(sys.prefix).resolve() != (REPO / ".venv").resolve(),
    reason="exercises scripts/test, which uses the repository's .venv (run by make test)",
)


@pytest.fixture
def no_driver(machine, tmp_path):
    """``machine``, and a MySQLdb that does not import (as when mysqlclient never built)."""
    shadow = tmp_path / "shadow" / "MySQLdb"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("mysqlclient is not installed")\n')
    machine["PYTHONPATH"] = str(shadow.parent)
    machine["AUTHZ_TEST_RESULTS"] = str(tmp_path / "results")
    # An unreachable PostgreSQL (a closed port) keeps the run to SQLite.
    machine["AUTHZ_TEST_PG_PORT"] = "9"
    return machine


@in_make_test_venv
def test_make_test_skips_mariadb_and_names_the_packages(no_driver):
    done = run(["scripts/test", "tests/test_roles.py", "-q", "-k", "test_subject_key"], no_driver)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "SKIPPED: MariaDB cannot be tested: its driver, mysqlclient, is not installed" in output
    assert "sudo apt-get install pkg-config default-libmysqlclient-dev" in output
    assert "ran SQLite only" in output
    assert done.stdout.strip().splitlines()[-1] == "total: 1 passed, 0 failed"


@in_make_test_venv
def test_under_ci_a_missing_mariadb_driver_fails_the_run(no_driver):
    no_driver["CI"] = "true"
    no_driver["AUTHZ_TEST_ONLY_DB"] = "mariadb"
    done = run(["scripts/test", "tests/test_roles.py", "-q"], no_driver)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "ERROR: MariaDB cannot be tested" in output
    assert "CI is set, so this run fails" in output
    assert done.stdout.strip().splitlines()[-1] == "total: 0 passed, 1 failed"
