#!/usr/bin/env bash
# schemathesis against a real hub: generated requests (bounded: tests/openapi/schemathesis.toml)
# for every operation of GET /api/openapi.json, each answer checked against the document
# (status, content type, headers, body schema; no 5xx; invalid requests refused, valid
# ones taken). The hub is target/debug/statecast on a free loopback port with its own data
# directory, ended by its PID when done. Usage: tests/openapi/run.sh [schemathesis options]
set -euo pipefail
cd "$(dirname "$0")/../.."
schemathesis="${SCHEMATHESIS:-target/schemathesis-venv/bin/schemathesis}"
dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# A schema on typed/# (so 422 and /api/schemas have something to show) and a command route
# for every target whose device is the hub's own health (so commands reach a device).
cat >"$dir/statecast.toml" <<TOML
[[topics]]
match = "typed/#"
schema = { type = "object", required = ["v"], properties = { v = { type = "integer" } } }

[[route]]
target = "#"
type = "http"
method = "GET"
url = "http://127.0.0.1:$port/api/health"
TOML
mkdir "$dir/data"
target/debug/statecast serve --listen "127.0.0.1:$port" --data-dir "$dir/data" \
  --config "$dir/statecast.toml" 2>"$dir/hub.log" &
hub=$!
trap 'kill "$hub" 2>/dev/null; wait "$hub" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
status=0
"$schemathesis" --config-file tests/openapi/schemathesis.toml run \
  "http://127.0.0.1:$port/api/openapi.json" --checks all --no-color "$@" || status=$?
if ! kill -0 "$hub" 2>/dev/null; then
  echo "the hub died during the run; its log:" >&2
  cat "$dir/hub.log" >&2
  exit 1
fi
exit "$status"
