#!/usr/bin/env bash
# Installs what the statecast integration's tests need (custom_components/statecast,
# tests/homeassistant/integration/): Home Assistant 2024.1.6 and the test plugin
# pytest-homeassistant-custom-component, in a venv of its own, target/homeassistant-test-venv
# or $STATECAST_HA_TEST_VENV (apart from setup.sh's venv, which the Rust tests run Home
# Assistant from, so the test plugin's pins cannot change what they run). Does nothing when
# it is complete already. .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/../.."

version=2024.1.6
venv="${STATECAST_HA_TEST_VENV:-target/homeassistant-test-venv}"
stamp="$venv/.statecast-installed"
want="homeassistant==$version $(cat tests/homeassistant/requirements-test.txt tests/homeassistant/requirements-plugin.txt | sha256sum | cut -c1-16)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))'; then
  echo "Home Assistant $version needs Python 3.11 or 3.12; $python is $("$python" --version 2>&1)" >&2
  exit 1
fi

echo "installing Home Assistant $version and its test plugin in $venv"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check \
  -c tests/homeassistant/constraints.txt "homeassistant==$version" \
  -r tests/homeassistant/requirements-test.txt
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps \
  -r tests/homeassistant/requirements-plugin.txt
echo "$want" > "$stamp"
