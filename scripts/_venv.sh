# shellcheck shell=bash
# Shared bootstrap for scripts/test, `make lint` and .ci/run. Source it, don't run it:
#
#     . scripts/_venv.sh
#     authz_ensure_venv test          # or: authz_ensure_venv test dev
#
# It creates .venv with "$PYTHON -m venv" (PYTHON defaults to python3) when it is missing,
# and runs `pip install -e '.[<extras>]'` only when setup.cfg or pyproject.toml changed
# since the last install of those extras (a sha256 stamp per extra lives in .venv).
# authz_ensure_mysql_driver adds the MariaDB driver (the `mysql` extra, mysqlclient) when
# this machine can build it, installing its system packages first when it may
# (scripts/system-packages); authz_db_probe is the 3-second reachability check for the test
# servers.

AUTHZ_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AUTHZ_VENV="$AUTHZ_ROOT/.venv"
AUTHZ_VENV_PY="$AUTHZ_VENV/bin/python"

_authz_say() { printf '[venv] %s\n' "$*" >&2; }

# The hash the stamps record: the two files that decide what gets installed.
_authz_config_hash() {
    "$AUTHZ_VENV_PY" - "$AUTHZ_ROOT/setup.cfg" "$AUTHZ_ROOT/pyproject.toml" <<'PY'
import hashlib
import sys

h = hashlib.sha256()
for path in sys.argv[1:]:
    h.update(path.rsplit("/", 1)[-1].encode() + b"\0")
    try:
        with open(path, "rb") as f:
            h.update(f.read())
    except FileNotFoundError:
        h.update(b"<missing>")
    h.update(b"\0")
print(h.hexdigest())
PY
}

# authz_ensure_venv [extra ...]   (default extra: test)
authz_ensure_venv() {
    local extras=("$@")
    [ ${#extras[@]} -gt 0 ] || extras=(test)
    local explicit_python=${PYTHON:+yes}
    local python=${PYTHON:-python3}

    # A pyenv shim for a version that isn't selected ("pyenv: python3.12: command not found")
    # is replaced by that version's interpreter.
    if ! "$python" -c '' >/dev/null 2>&1 && command -v pyenv >/dev/null 2>&1 &&
        [[ "$python" =~ ^python(3\.[0-9]+)$ ]]; then
        local found
        found=$(pyenv latest "${BASH_REMATCH[1]}" 2>/dev/null) &&
            [ -x "$(pyenv root)/versions/$found/bin/$python" ] &&
            python="$(pyenv root)/versions/$found/bin/$python" &&
            _authz_say "using pyenv's $python"
    fi
    local version
    if ! command -v "$python" >/dev/null 2>&1; then
        _authz_say "ERROR: interpreter '$python' not found (set PYTHON=... to pick another one)"
        return 1
    fi
    if ! version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>&1); then
        _authz_say "ERROR: interpreter '$python' does not run: $(echo "$version" | head -n 1)"
        return 1
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        _authz_say "ERROR: '$python' is Python $version; this project needs Python 3.11+" \
            "(set PYTHON=python3.12, for example)"
        return 1
    fi

    # A venv that is broken, or built by another Python than an explicitly requested one, is
    # rebuilt from scratch.
    if [ -e "$AUTHZ_VENV" ]; then
        local have
        have=$("$AUTHZ_VENV_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || have=
        if [ -z "$have" ]; then
            _authz_say ".venv exists but its python does not run; recreating it"
            rm -rf "$AUTHZ_VENV"
        elif [ -n "$explicit_python" ]; then
            if [ "$have" != "$version" ]; then
                _authz_say ".venv has Python $have but PYTHON=$python is $version; recreating it"
                rm -rf "$AUTHZ_VENV"
            fi
        fi
    fi

    if [ ! -e "$AUTHZ_VENV" ]; then
        _authz_say "creating .venv with $python ($("$python" -V 2>&1))"
        if ! "$python" -m venv "$AUTHZ_VENV"; then
            _authz_say "ERROR: '$python -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
            rm -rf "$AUTHZ_VENV"
            return 1
        fi
    fi

    local hash extra stale=()
    hash=$(_authz_config_hash) || return 1
    for extra in "${extras[@]}"; do
        if [ "$(cat "$AUTHZ_VENV/.install-stamp-$extra" 2>/dev/null)" != "$hash" ]; then
            stale+=("$extra")
        fi
    done
    if [ ${#stale[@]} -eq 0 ]; then
        return 0
    fi

    local spec
    spec=".[$(IFS=,; echo "${stale[*]}")]"
    _authz_say "pip install -e '$spec' (setup.cfg/pyproject.toml changed or first install)"
    if ! (cd "$AUTHZ_ROOT" && "$AUTHZ_VENV_PY" -m pip install --disable-pip-version-check \
            --quiet -e "$spec"); then
        _authz_say "ERROR: pip install -e '$spec' failed (see above)"
        return 1
    fi
    for extra in "${stale[@]}"; do
        printf '%s\n' "$hash" >"$AUTHZ_VENV/.install-stamp-$extra"
    done
}

# authz_ensure_mysql_driver: make MySQLdb importable in .venv, or say why it cannot be.
# Returns 0 when the driver is there. Otherwise returns 1 and sets AUTHZ_MYSQL_DRIVER_PROBLEM
# to one line saying why, and AUTHZ_MYSQL_MISSING_PACKAGES to the system packages to install
# (empty when those are there and the build itself failed). Never runs apt when the driver
# is already installed.
AUTHZ_MYSQL_DRIVER_PROBLEM=""
AUTHZ_MYSQL_MISSING_PACKAGES=""
authz_ensure_mysql_driver() {
    AUTHZ_MYSQL_DRIVER_PROBLEM=""
    AUTHZ_MYSQL_MISSING_PACKAGES=""
    if ! "$AUTHZ_VENV_PY" -c 'import MySQLdb' >/dev/null 2>&1; then
        local out rc=0 last
        out=$("$AUTHZ_ROOT/scripts/system-packages" 2>&1) || rc=$?
        printf '%s\n' "$out" | sed 's/^/[packages] /' >&2
        if [ $rc -ne 0 ]; then
            last=$(printf '%s\n' "$out" | tail -n 1)
            # "system packages: missing A B (why)"
            AUTHZ_MYSQL_MISSING_PACKAGES=$(sed -n 's/^system packages: missing \([^(]*[^ (]\) (.*/\1/p' <<<"$last")
            AUTHZ_MYSQL_DRIVER_PROBLEM="mysqlclient cannot be built: ${last#system packages: }"
            return 1
        fi
    fi
    if ! authz_ensure_venv mysql; then
        AUTHZ_MYSQL_DRIVER_PROBLEM="pip install -e '.[mysql]' failed (see above)"
        return 1
    fi
}

# authz_db_host_port postgres|mariadb  -> "host:port", from the env vars tests/settings.py reads
authz_db_host_port() {
    case "$1" in
        postgres) echo "${AUTHZ_TEST_PG_HOST:-127.0.0.1}:${AUTHZ_TEST_PG_PORT:-5432}" ;;
        mariadb) echo "${AUTHZ_TEST_MYSQL_HOST:-127.0.0.1}:${AUTHZ_TEST_MYSQL_PORT:-3306}" ;;
        *) return 2 ;;
    esac
}

# authz_db_probe postgres|mariadb: connect (and log in) with a 3-second timeout using the
# venv's psycopg / MySQLdb and the same env vars and defaults as tests/settings.py.
# Returns 0 when reachable; otherwise prints the reason on stderr and returns 1.
authz_db_probe() {
    local cmd=("$AUTHZ_VENV_PY" -)
    # Belt and braces: a server that accepts TCP but never answers must not hang the run.
    if command -v timeout >/dev/null 2>&1; then
        cmd=(timeout 15 "${cmd[@]}")
    fi
    "${cmd[@]}" "$1" <<'PY'
import os
import sys

env = os.environ.get
which = sys.argv[1]
try:
    if which == "postgres":
        import psycopg

        psycopg.connect(
            host=env("AUTHZ_TEST_PG_HOST", "127.0.0.1"),
            port=int(env("AUTHZ_TEST_PG_PORT", "5432")),
            user=env("AUTHZ_TEST_PG_USER", "postgres"),
            password=env("AUTHZ_TEST_PG_PASSWORD", ""),
            dbname="postgres",
            connect_timeout=3,
        ).close()
    elif which == "mariadb":
        import MySQLdb

        MySQLdb.connect(
            host=env("AUTHZ_TEST_MYSQL_HOST", "127.0.0.1"),
            port=int(env("AUTHZ_TEST_MYSQL_PORT", "3306")),
            user=env("AUTHZ_TEST_MYSQL_USER", "root"),
            password=env("AUTHZ_TEST_MYSQL_PASSWORD", ""),
            connect_timeout=3,
            read_timeout=3,
        ).close()
    else:
        sys.exit(f"unknown database {which!r}")
except Exception as exc:  # any failure means "not usable for the tests"
    msg = " ".join(str(exc).split()) or "no details"
    print(f"{type(exc).__name__}: {msg}", file=sys.stderr)
    sys.exit(1)
PY
}
