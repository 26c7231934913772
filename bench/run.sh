#!/usr/bin/env bash
# Runs statecast and every peer through the same scenarios with the same load generator and
# writes bench/results/<date>.md (plus the raw JSON lines and latency CDF plots beside it).
#
#   bench/run.sh                      # every server, every scenario (about an hour)
#   SERVERS="statecast node-uws" SCENARIOS="burst light" bench/run.sh
#   QUICK=1 bench/run.sh              # shorter paced runs (10 s instead of 30 s)
#   APPEND=1 SERVERS=fastapi bench/run.sh   # add to today's results
#   SERVERS=statecast SCENARIOS=cluster bench/run.sh   # 1 hub against 3 sharing Redis
#
# The server runs on CPU 0 and the load generator on CPU 1 (taskset / sched_setaffinity).
# The cluster scenario (statecast only; the peers skip it) needs a Redis it may write to:
# REDIS=redis://HOST:PORT (default redis://127.0.0.1:6379); it deletes its own keys after.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

bench/peers/install.sh
cargo build --release -q -p statecast -p statecast-bench
bench_bin="$repo/target/release/statecast-bench"
py="$repo/target/bench-venv/bin/python"

day="$(date +%F)"
jsonl="bench/results/$day.jsonl"
mkdir -p bench/results
# APPEND=1 adds to today's results instead of starting them afresh.
[ -n "${APPEND:-}" ] || : > "$jsonl"

# name | protocol | command ({port} and {data} are filled in by the bench)
servers_table="
statecast|statecast|$repo/target/release/statecast serve --listen 127.0.0.1:{port} --data-dir {data}
node-uws|plain|node $repo/bench/peers/node-uws.js --port {port}
node-ws|plain|node $repo/bench/peers/node-ws.js --port {port}
node-socketio|socketio|node $repo/bench/peers/node-socketio.js --port {port}
fastapi|plain|$py $repo/bench/peers/fastapi_server.py --port {port}
flask-socketio|socketio|$py $repo/bench/peers/flask_socketio_server.py --port {port}
"
SERVERS="${SERVERS:-statecast node-uws node-ws node-socketio fastapi flask-socketio}"
SCENARIOS="${SCENARIOS:-light burst scale many-topics slow durable cluster}"
paced=30
[ -n "${QUICK:-}" ] && paced=10

run() { # name protocol command scenario extra-args...
  local name="$1" protocol="$2" command="$3" scenario="$4"
  shift 4
  echo "== $name: $scenario $*"
  "$bench_bin" run --quiet --scenario "$scenario" --protocol "$protocol" --name "$name" \
    --server-cmd "$command" --results "$jsonl" "$@" \
    || echo "!! $name $scenario failed (recorded in the results when it got that far)"
}

for server in $SERVERS; do
  line="$(printf '%s\n' "$servers_table" | grep "^$server|" || true)"
  if [ -z "$line" ]; then echo "unknown server $server" >&2; exit 2; fi
  IFS='|' read -r name protocol command <<<"$line"
  # The Python peers spend 20-150 us per delivery: fewer changes keep their runs short
  # (per-delivery figures are unaffected).
  burst=2000
  case "$name" in fastapi|flask-socketio) burst=200 ;; esac
  for scenario in $SCENARIOS; do
    case "$scenario" in
      light|slow) run "$name" "$protocol" "$command" "$scenario" --duration "$paced" ;;
      scale) run "$name" "$protocol" "$command" scale --duration 10 ;;
      burst)
        run "$name" "$protocol" "$command" burst --changes "$burst" --publish ws
        run "$name" "$protocol" "$command" burst --changes "$burst" --publish rest ;;
      many-topics)
        for topics in 1000 10000 100000; do
          run "$name" "$protocol" "$command" many-topics --topics "$topics" --rate 1000 --duration 10
        done ;;
      durable) run "$name" "$protocol" "$command" durable --duration 10 ;;
      cluster)
        # statecast's own: 1 hub against 3 sharing Redis, same load, side by side.
        [ "$name" = statecast ] || continue
        run "$name" "$protocol" "$command" cluster --duration "$paced" \
          --redis "${REDIS:-redis://127.0.0.1:6379}" ;;
      *) echo "unknown scenario $scenario" >&2; exit 2 ;;
    esac
  done
done

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
header="Machine: $(nproc) CPUs ($cpu), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr). \
Server pinned to CPU 0, load generator to CPU 1. Command: \`SERVERS=\"$SERVERS\" SCENARIOS=\"$SCENARIOS\"${QUICK:+ QUICK=1} bench/run.sh\`, $(date -u +'%F %H:%M UTC')."
"$bench_bin" report "$jsonl" --out "bench/results/$day.md" --header "$header"
echo "wrote bench/results/$day.md"
