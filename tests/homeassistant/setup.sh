#!/usr/bin/env bash
# Installs Home Assistant 2024.1.6 in two venvs of their own; each step does nothing when
# its venv is complete already, a fresh install takes a few minutes. .ci/run calls it.
#
# - target/homeassistant-venv (or $STATECAST_HA_VENV): Home Assistant alone, which the
#   `homeassistant` source's tests (crates/bridge/tests/homeassistant.rs,
#   crates/cli/tests/homeassistant.rs) and the integration's end-to-end test
#   (tests/homeassistant/e2e) run as a process.
# - target/homeassistant-test-venv (or $STATECAST_HA_TEST_VENV): Home Assistant with the test
#   plugin pytest-homeassistant-custom-component (requirements-plugin.txt, installed without
#   its dependencies; they are requirements-test.txt), for the integration's unit tests
#   (tests/homeassistant/integration) and its lint. Apart from the first, so that the
#   plugin's pins cannot change what the other tests run.
#
# constraints.txt pins every package to the versions the tests passed with, so a new
# release of one of Home Assistant's dependencies cannot break the install.
set -euo pipefail
cd "$(dirname "$0")/../.."

version=2024.1.6
venv="${STATECAST_HA_VENV:-target/homeassistant-venv}"
test_venv="${STATECAST_HA_TEST_VENV:-target/homeassistant-test-venv}"
stamp="$test_venv/.statecast-installed"
want="homeassistant==$version $(cat tests/homeassistant/requirements-test.txt tests/homeassistant/requirements-plugin.txt | sha256sum | cut -c1-16)"

# Home Assistant 2024.1 runs on Python 3.11 and 3.12.
python="${PYTHON:-python3}"
check_python() {
  if ! "$python" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))'; then
    echo "Home Assistant $version needs Python 3.11 or 3.12; $python is $("$python" --version 2>&1)" >&2
    exit 1
  fi
}

if ! [ -x "$venv/bin/hass" ] || [ "$("$venv/bin/hass" --version 2>/dev/null)" != "$version" ]; then
  check_python
  echo "installing Home Assistant $version in $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    -c tests/homeassistant/constraints.txt "homeassistant==$version"
  "$venv/bin/hass" --version
fi

if ! [ -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  check_python
  echo "installing Home Assistant $version and its test plugin in $test_venv"
  rm -rf "$test_venv"
  "$python" -m venv "$test_venv"
  "$test_venv/bin/pip" install -q --disable-pip-version-check \
    -c tests/homeassistant/constraints.txt "homeassistant==$version" \
    -r tests/homeassistant/requirements-test.txt
  "$test_venv/bin/pip" install -q --disable-pip-version-check --no-deps \
    -r tests/homeassistant/requirements-plugin.txt
  echo "$want" > "$stamp"
fi
