#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine with Python 3.11, then runs
# lint and every test. The README's test command; .ci/run calls it too.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Debian's python3 needs python3-venv to make a venv; install it only when venv is missing.
if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv; fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/ruff check cronflow tests
.venv/bin/ruff format --check cronflow tests
.venv/bin/python -m pytest -n "${CRONFLOW_TEST_WORKERS:-auto}" "$@"
