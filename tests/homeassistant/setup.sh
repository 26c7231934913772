#!/usr/bin/env bash
# Installs Home Assistant 2024.1.6, which the `homeassistant` source's tests run against
# (crates/bridge/tests/homeassistant.rs, crates/cli/tests/homeassistant.rs), in a venv of
# its own: target/homeassistant-venv, or $STATECAST_HA_VENV. Does nothing when that version
# is installed there already; a fresh install takes a few minutes. .ci/run calls it.
#
# constraints.txt pins every package to the versions the tests passed with, so a new
# release of one of Home Assistant's dependencies cannot break the install.
set -euo pipefail
cd "$(dirname "$0")/../.."

version=2024.1.6
venv="${STATECAST_HA_VENV:-target/homeassistant-venv}"

if [ -x "$venv/bin/hass" ] && [ "$("$venv/bin/hass" --version 2>/dev/null)" = "$version" ]; then
  exit 0
fi

# Home Assistant 2024.1 runs on Python 3.11 and 3.12.
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))'; then
  echo "Home Assistant $version needs Python 3.11 or 3.12; $python is $("$python" --version 2>&1)" >&2
  exit 1
fi

echo "installing Home Assistant $version in $venv"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check \
  -c tests/homeassistant/constraints.txt "homeassistant==$version"
"$venv/bin/hass" --version
