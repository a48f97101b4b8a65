#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine with Python 3.11, then runs
# lint and every test. The README's test command; .ci/run calls it too.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Debian packages the tests use, each installed only when missing (as root; else say what to do).
# Format: "command-that-proves-it-is-there:package".
DEBIAN_NEEDS=(
  "systemd-analyze:systemd"
  "debootstrap:debootstrap"
  "systemd-nspawn:systemd-container"
  "/usr/sbin/sshd:openssh-server"  # the SSH/SFTP operator tests start their own sshd
  "/usr/bin/chromium:chromium"  # the web view's browser tests (tests/test_web_browser.py)
  "/usr/bin/chromedriver:chromium-driver"
  "redis-server:redis-server"  # the Celery executor tests start their own Redis broker
)
missing=()
if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then missing+=(python3-venv); fi
for need in "${DEBIAN_NEEDS[@]}"; do
  command -v "${need%%:*}" >/dev/null 2>&1 || [ -x "${need%%:*}" ] || missing+=("${need#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "tests/run.sh: missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 2
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,web,celery]'
.venv/bin/ruff check cronflow tests
.venv/bin/ruff format --check cronflow tests
# Types: strict on the whole package ([tool.mypy] in pyproject.toml); an error stops the run.
.venv/bin/mypy
# Bytecode as a regular install has it: the tests start hundreds of `python -m cronflow`
# processes, which would otherwise compile cronflow again each time under PYTHONDONTWRITEBYTECODE.
.venv/bin/python -m compileall -q cronflow >/dev/null
# The systemd tests boot a cached Debian root; building it takes minutes on a fresh machine, so it
# is built here, outside pytest's per-test timeout.
.venv/bin/python -c 'import sys; sys.path.insert(0, "tests"); from nspawn import cached_root; cached_root()'
# --dist loadfile keeps the tests that share one systemd container on one worker.
.venv/bin/python -m pytest -n "${CRONFLOW_TEST_WORKERS:-auto}" --dist loadfile "$@"
