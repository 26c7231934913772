#!/usr/bin/env bash
# Tests the .deb on this machine: builds it from the dev build that is already there
# (PROFILE=dev: no second, release build), installs it with dpkg -i, checks what it
# installed (the unit passes systemd-analyze verify, the man page, the conffile), runs the
# installed binary (--version, then a short serve on an ephemeral port with a temp data
# dir: health, a write read back), then removes and purges it and checks that nothing is
# left. Needs root and no statecast installed from elsewhere. Ends with "# pass N" and
# "# fail N" lines (what .ci/run totals) and exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."

pass=0
fail=0
check() { # check "what" command...
  local what="$1"
  shift
  if "$@" >/tmp/statecast-deb-check.log 2>&1; then
    pass=$((pass + 1))
    echo "ok - $what"
  else
    fail=$((fail + 1))
    echo "not ok - $what"
    sed 's/^/#   /' /tmp/statecast-deb-check.log | tail -20
  fi
}
finish() {
  echo "# pass $pass"
  echo "# fail $fail"
  [ "$fail" -eq 0 ]
  exit $?
}
absent() { for p in "$@"; do [ ! -e "$p" ] && [ ! -L "$p" ] || { echo "left: $p"; return 1; }; done; }

if [ "$(id -u)" != 0 ]; then echo "packaging/test-deb.sh needs root (dpkg -i)" >&2; exit 1; fi
if ! dpkg -s statecast >/dev/null 2>&1; then
  # Not installed by an earlier run of this test: nothing of that name may be there.
  for p in /usr/bin/statecast /etc/statecast /var/lib/statecast /var/lib/private/statecast; do
    if [ -e "$p" ]; then echo "$p exists and is not this package's: not touching it" >&2; exit 1; fi
  done
fi

deb="$(PROFILE=dev packaging/build-deb.sh 2>/tmp/statecast-deb-build.log)"
check "cargo deb builds the package" test -f "$deb"
[ -f "$deb" ] || { cat /tmp/statecast-deb-build.log; finish; }
control="$(mktemp -d)"
dpkg-deb -e "$deb" "$control"
scripts_parse() { for s in "$control"/postinst "$control"/prerm "$control"/postrm; do sh -n "$s" || return 1; done; }
check "its maintainer scripts parse" scripts_parse
rm -rf "$control"

check "dpkg -i installs it (no running systemd)" dpkg -i "$deb"
check "dpkg says it is installed" sh -c 'dpkg -s statecast | grep -qx "Status: install ok installed"'
unit=/usr/lib/systemd/system/statecast.service
check "the installed binary runs" sh -c '/usr/bin/statecast --version | grep -q "^statecast "'
check "the unit is installed and enabled" test -f "$unit" -a -L /etc/systemd/system/multi-user.target.wants/statecast.service
check "systemd-analyze verify accepts the installed unit (man page included)" systemd-analyze verify "$unit"
check "the man page is installed" sh -c 'zcat /usr/share/man/man1/statecast.1.gz | grep -q "STATECAST SERVE"'
check "the default config is a conffile" sh -c 'dpkg-query -W -f="\${Conffiles}" statecast | grep -q /etc/statecast/statecast.toml'

# A short serve of the installed binary with the installed config, on an ephemeral port.
data="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
/usr/bin/statecast serve --config /etc/statecast/statecast.toml --listen "127.0.0.1:$port" \
  --data-dir "$data" 2>"$data/log" &
hub=$!
healthy() {
  for _ in $(seq 200); do # bounded: 10 s
    curl -fsS "http://127.0.0.1:$port/api/health" | grep -q '"status":"ok"' && return 0
    kill -0 "$hub" 2>/dev/null || { cat "$data/log"; return 1; }
    sleep 0.05
  done
  cat "$data/log"
  return 1
}
check "the installed hub serves: /api/health ok" healthy
check "a write is read back" sh -c "curl -fsS -X PUT -H 'Content-Type: application/json' -d '{\"up\":1}' \
  http://127.0.0.1:$port/api/state/deb/test >/dev/null && curl -fsS http://127.0.0.1:$port/api/state/deb/test | grep -q '\"up\":1'"
kill -TERM "$hub"
check "it stops on SIGTERM with status 0" wait "$hub"
rm -rf "$data"

# What the service would have made (DynamicUser's state directory), so purge must take it.
mkdir -p /var/lib/private/statecast && ln -sfn private/statecast /var/lib/statecast
touch /var/lib/private/statecast/statecast.redb

check "dpkg -r removes it" dpkg -r statecast
check "after remove: the binary and the unit are gone, the conffile kept" sh -c \
  "test ! -e /usr/bin/statecast && test ! -e $unit && test -f /etc/statecast/statecast.toml"
check "dpkg --purge purges it" dpkg --purge statecast
check "after purge: nothing is left" absent /usr/bin/statecast "$unit" /etc/statecast \
  /etc/systemd/system/multi-user.target.wants/statecast.service \
  /var/lib/systemd/deb-systemd-helper-enabled/statecast.service \
  /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/statecast.service \
  /var/lib/statecast /var/lib/private/statecast /usr/share/man/man1/statecast.1.gz \
  /usr/share/doc/statecast
check "dpkg no longer knows it" sh -c '! dpkg -s statecast'
finish
