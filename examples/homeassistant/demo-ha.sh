#!/usr/bin/env bash
# Runs a small Home Assistant to try the example with, if you have none: release 2024.1.6
# (tests/homeassistant/setup.sh installs it into target/homeassistant-venv the first time,
# which takes a few minutes) on 127.0.0.1:8123, with configuration.yaml's helpers and a user
# `demo` (password `demo-password`), in target/homeassistant-demo. Once it listens, it
# writes target/homeassistant-demo/statecast.toml: the example's file with a long-lived
# token of that user. Home Assistant runs until Ctrl-C. From the repository root:
#
#   examples/homeassistant/demo-ha.sh
#   statecast serve --config target/homeassistant-demo/statecast.toml   # another terminal
set -euo pipefail
cd "$(dirname "$0")/../.."

tests/homeassistant/setup.sh
venv="${STATECAST_HA_VENV:-target/homeassistant-venv}"
dir=target/homeassistant-demo
mkdir -p "$dir"
cp examples/homeassistant/configuration.yaml "$dir/configuration.yaml"
if [ ! -f "$dir/.storage/auth_provider.homeassistant" ]; then
  "$venv/bin/hass" --script auth -c "$dir" add demo demo-password
fi

"$venv/bin/hass" --skip-pip -c "$dir" &
hass=$!
trap 'kill -TERM "$hass" 2>/dev/null; wait "$hass"' EXIT

token="$("$venv/bin/python" examples/homeassistant/long_lived_token.py http://127.0.0.1:8123 demo demo-password)"
sed -e "s|^token = .*|token = \"$token\"|" \
    -e "s|^data_dir = .*|data_dir = \"$dir/statecast-data\"|" \
    examples/homeassistant/statecast.toml > "$dir/statecast.toml"
echo
echo "Home Assistant runs on http://127.0.0.1:8123 (user demo, password demo-password)."
echo "In another terminal, from the repository root:"
echo "  statecast serve --config $dir/statecast.toml"
echo "Ctrl-C stops Home Assistant."
wait "$hass"
