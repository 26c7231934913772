#!/usr/bin/env bash
# Installs what the benchmark peers need; safe to run again (it only redoes a
# step whose lock file changed, or everything with --force).
#   - bench/peers/node_modules  from package-lock.json  (npm ci)
#   - target/bench-venv         from requirements.txt   (python3 -m venv + pip)
# Works from any working directory.
#
# Usage: bash bench/peers/install.sh [--force]
#   env PYTHON=python3.11 to pick the interpreter for the venv.
set -euo pipefail

PEERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$PEERS_DIR/../.." && pwd)"
VENV="$REPO/target/bench-venv"
PYTHON="${PYTHON:-python3}"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

fingerprint() { # files... -> one hash of their contents plus the tool versions
  { cat "$@"; node --version 2>/dev/null || true; "$PYTHON" --version 2>/dev/null || true; } \
    | sha256sum | cut -d' ' -f1
}

# --- Node peers --------------------------------------------------------------
command -v node >/dev/null || { echo "install.sh: node not found (Node 20+ needed)" >&2; exit 1; }
command -v npm >/dev/null || { echo "install.sh: npm not found" >&2; exit 1; }
NODE_STAMP="$PEERS_DIR/node_modules/.bench-peers-stamp"
NODE_FP="$(fingerprint "$PEERS_DIR/package.json" "$PEERS_DIR/package-lock.json")"
if [[ $FORCE == 1 || ! -f "$NODE_STAMP" || "$(cat "$NODE_STAMP")" != "$NODE_FP" ]]; then
  echo "install.sh: npm ci in bench/peers"
  # --omit=optional: no bufferutil/utf-8-validate (optional deps of the ws copy
  # inside the uWS package); otherwise they would be hoisted and change how the
  # plain `ws` peers run. No package here needs an install script.
  (cd "$PEERS_DIR" && npm ci --omit=optional --ignore-scripts --no-audit --no-fund)
  echo "$NODE_FP" > "$NODE_STAMP"
else
  echo "install.sh: bench/peers/node_modules up to date"
fi

# --- Python peers ------------------------------------------------------------
VENV_STAMP="$VENV/.bench-peers-stamp"
VENV_FP="$(fingerprint "$PEERS_DIR/requirements.txt")"
if [[ $FORCE == 1 || ! -x "$VENV/bin/python" || ! -f "$VENV_STAMP" || "$(cat "$VENV_STAMP")" != "$VENV_FP" ]]; then
  echo "install.sh: venv at target/bench-venv"
  mkdir -p "$REPO/target"
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$PEERS_DIR/requirements.txt"
  echo "$VENV_FP" > "$VENV_STAMP"
else
  echo "install.sh: target/bench-venv up to date"
fi

echo "install.sh: done (node $(node --version), $("$VENV/bin/python" --version))"
