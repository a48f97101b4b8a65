#!/usr/bin/env bash
# Sets up cronflow from this checkout and runs the example flow once, on a fresh Debian machine
# with Python 3.11. The README's first command.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CRONFLOW_VENV:-$HOME/.cronflow-venv}
HOME_DIR=${CRONFLOW_HOME:-$HOME/.cronflow}
export CRONFLOW_HOME=$HOME_DIR
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  echo "installing python3-venv (Debian's python3 needs it to make a virtualenv)"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv
  else sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv; fi
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check .
CF="$VENV/bin/cronflow"
"$CF" init
if ! "$CF" status --quiet >/dev/null 2>&1; then
  echo "starting the daemon in the background (log: $HOME_DIR/daemon.out)"
  nohup "$CF" daemon >"$HOME_DIR/daemon.out" 2>&1 &
  for _ in $(seq 100); do "$CF" status --quiet >/dev/null 2>&1 && break; sleep 0.1; done
fi
"$CF" trigger example --wait
"$CF" tasks example
"$CF" list
echo
echo "cronflow is installed in $VENV/bin (add it to PATH). The daemon keeps running;"
echo "stop it with: pkill -f '$CF daemon'   (on a server: cronflow install-service)"
