#!/usr/bin/env bash
# Installs a newer Home Assistant for a by-hand run of the end-to-end test and the latency
# bench (not run by .ci/run: the install takes about ten minutes). 2025.4.4 is the newest
# release that installs on Python 3.13.0 (later ones want 3.13.2 or newer); set HA_VERSION,
# FRONTEND_VERSION and PYTHON for another. In target/homeassistant-latest-venv, or
# $STATECAST_HA_LATEST_VENV. Then:
#   (cd tests/homeassistant/e2e && STATECAST_HA_E2E_VENV=$PWD/../../../target/homeassistant-latest-venv \
#      ../../../target/homeassistant-test-venv/bin/pytest -q)
set -euo pipefail
cd "$(dirname "$0")/../.."

version="${HA_VERSION:-2025.4.4}"
# Home Assistant loads its frontend at every start now (without it: recovery mode), and
# `hass --skip-pip` installs nothing: the frontend release its frontend manifest pins.
frontend="${FRONTEND_VERSION:-20250411.0}"
venv="${STATECAST_HA_LATEST_VENV:-target/homeassistant-latest-venv}"
python="${PYTHON:-/root/.pyenv/versions/3.13.0/bin/python3}"

if [ -x "$venv/bin/hass" ] && [ "$("$venv/bin/hass" --version 2>/dev/null)" = "$version" ]; then
  exit 0
fi
echo "installing Home Assistant $version in $venv"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "homeassistant==$version" \
  "home-assistant-frontend==$frontend"
"$venv/bin/hass" --version
