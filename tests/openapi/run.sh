#!/usr/bin/env bash
# schemathesis against a real hub: generated requests (bounded: tests/openapi/schemathesis.toml)
# for every operation of GET /api/openapi.json, each answer checked against the document
# (status, content type, headers, body schema; no 5xx; invalid requests refused, valid
# ones taken). Twice: a hub without auth, then one with `[auth]` and a key that may read
# everything but write only t/# (401 without it, 403 past its grant). Each hub is
# target/debug/statecast on a free loopback port with its own data directory, ended by its
# PID when done. Usage: tests/openapi/run.sh [schemathesis options]
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${OPENAPI_VENV:-target/schemathesis-venv}"
# The document itself first: valid OpenAPI 3.1.
"$venv/bin/openapi-spec-validator" crates/server/src/openapi.json

dir="$(mktemp -d)"
hub=""
trap '[ -z "$hub" ] || { kill "$hub" 2>/dev/null; wait "$hub" 2>/dev/null; }; rm -rf "$dir"' EXIT
key="schemathesis-key-5f0c"

# Runs schemathesis against a new hub whose config ends with `$1`; the rest are its options.
against_hub() {
  local extra="$1"
  shift
  local port
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  rm -rf "$dir/data" && mkdir "$dir/data"
  # A schema on typed/# (so 422 and /api/schemas have something to show) and a command
  # route for every target whose device is the hub's own health (so commands reach one).
  cat >"$dir/statecast.toml" <<TOML
[[topics]]
match = "typed/#"
schema = { type = "object", required = ["v"], properties = { v = { type = "integer" } } }

[[route]]
target = "#"
type = "http"
method = "GET"
url = "http://127.0.0.1:$port/api/health"
$extra
TOML
  target/debug/statecast serve --listen "127.0.0.1:$port" --data-dir "$dir/data" \
    --config "$dir/statecast.toml" 2>"$dir/hub.log" &
  hub=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  local status=0
  "$venv/bin/schemathesis" --config-file tests/openapi/schemathesis.toml run \
    "http://127.0.0.1:$port/api/openapi.json" --checks all --no-color "$@" || status=$?
  if ! kill -0 "$hub" 2>/dev/null; then
    echo "the hub died during the run; its log:" >&2
    cat "$dir/hub.log" >&2
    return 1
  fi
  kill "$hub"
  wait "$hub" 2>/dev/null || true
  hub=""
  return "$status"
}

echo "== a hub without auth"
against_hub "" "$@"
echo "== a hub with [auth]"
# The route's device is the hub's own /api/health, which needs no key.
against_hub "
[[auth.keys]]
name = \"schemathesis\"
key = \"$key\"
read = [\"#\"]
write = [\"t/#\"]
event = [\"t/#\"]
command = [\"t/#\"]" -H "Authorization: Bearer $key" "$@"
