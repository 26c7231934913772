#!/usr/bin/env bash
# Installs a newer Home Assistant for by-hand runs of the integration's tests and the
# latency bench (not run by .ci/run: the installs take about ten minutes each). 2025.4.4 is
# the newest release that installs on Python 3.13.0 (later ones want 3.13.2 or newer).
#
# - target/homeassistant-latest-venv: Home Assistant and its frontend, for the end-to-end
#   test (STATECAST_HA_E2E_VENV) and bench/homeassistant_latency.py (--venv). Home Assistant
#   loads its frontend at every start now (without it: recovery mode), and `hass --skip-pip`
#   installs nothing, so the frontend release its manifest pins is installed beside it.
# - target/homeassistant-latest-test-venv: the test plugin's release for 2025.4.4 (it pulls
#   that Home Assistant), for the unit tests.
# Both take pycares 4: pip picks pycares 5, which the aiodns 3.2.0 that Home Assistant pins
# cannot call (its releases ship with pycares 4).
#
#   (cd tests/homeassistant/integration && ../../../target/homeassistant-latest-test-venv/bin/pytest -q)
#   (cd tests/homeassistant/e2e && STATECAST_HA_E2E_VENV=$PWD/../../../target/homeassistant-latest-venv \
#      ../../../target/homeassistant-test-venv/bin/pytest -q)
set -euo pipefail
cd "$(dirname "$0")/../.."

version=2025.4.4
frontend=20250411.0  # components/frontend/manifest.json of 2025.4.4
plugin=0.13.236      # pytest-homeassistant-custom-component for 2025.4.4
python="${PYTHON:-/root/.pyenv/versions/3.13.0/bin/python3}"

venv=target/homeassistant-latest-venv
if ! [ -x "$venv/bin/hass" ] || [ "$("$venv/bin/hass" --version 2>/dev/null)" != "$version" ]; then
  echo "installing Home Assistant $version in $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "homeassistant==$version" \
    "home-assistant-frontend==$frontend" "pycares<5"
fi

test_venv=target/homeassistant-latest-test-venv
if ! [ -f "$test_venv/.statecast-installed" ] || [ "$(cat "$test_venv/.statecast-installed")" != "$plugin" ]; then
  echo "installing Home Assistant $version and its test plugin in $test_venv"
  rm -rf "$test_venv"
  "$python" -m venv "$test_venv"
  "$test_venv/bin/pip" install -q --disable-pip-version-check \
    "pytest-homeassistant-custom-component==$plugin" "pycares<5"
  echo "$plugin" > "$test_venv/.statecast-installed"
fi
