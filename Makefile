# Developer entry points. Everything runs through .venv, which scripts/_venv.sh creates and
# keeps in sync with setup.cfg/pyproject.toml (PYTHON=python3.12 make test picks the
# interpreter). Extra pytest arguments: make test ARGS="-k flags -x".

SHELL := /bin/bash
ARGS ?=

.PHONY: test demo lint clean distclean

test:
	scripts/test $(ARGS)

demo:
	scripts/demo $(ARGS)

lint:
	@. scripts/_venv.sh && authz_ensure_venv test && rc=0; \
	echo "+ ruff check ."; .venv/bin/ruff check . || rc=1; \
	echo "+ ruff format --check ."; .venv/bin/ruff format --check . || rc=1; \
	exit $$rc

# Build artefacts, caches and test reports; keeps .venv and .tox (see distclean).
clean:
	rm -rf build dist .test-results .pytest_cache .ruff_cache .hypothesis
	find . \( -path ./.venv -o -path ./.tox -o -path ./.git \) -prune -o \
		\( -name __pycache__ -o -name '*.egg-info' \) -type d -prune -exec rm -rf {} +

# clean, plus the virtualenvs (the next run rebuilds them).
distclean: clean
	rm -rf .venv .tox
