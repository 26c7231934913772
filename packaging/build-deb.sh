#!/usr/bin/env bash
# Builds the .deb with cargo-deb: the man page first (made from the binary's own --help, so
# it cannot drift), then the package. PROFILE=release (the default) builds a release
# binary; PROFILE=dev packages the dev build that is already there (the test's choice:
# no second, costly build). Prints the path of the .deb. Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${PROFILE:-release}"
case "$profile" in
  release) bin=target/release/statecast; build=(); cargo build --locked --release -p statecast ;;
  dev) bin=target/debug/statecast; build=(--no-build) ;;
  *) echo "PROFILE must be release or dev" >&2; exit 2 ;;
esac
[ -x "$bin" ] || { echo "no $bin: build it first (cargo build -p statecast)" >&2; exit 1; }

# statecast(1): the top-level help, then each subcommand's.
mkdir -p target/packaging
version="$("$bin" --version | cut -d' ' -f2)"
{
  echo ".TH STATECAST 1 \"\" \"statecast $version\" \"User Commands\""
  echo ".SH NAME"
  echo "statecast \\- a real-time JSON state hub and its command-line client"
  echo ".SH SYNOPSIS"
  echo ".B statecast"
  echo "\\fICOMMAND\\fR [\\fIOPTIONS\\fR]"
  echo ".SH DESCRIPTION"
  echo ".nf"
  "$bin" --help | sed 's/\\/\\e/g; s/^\./\\\&./'
  echo ".fi"
  for sub in serve watch get set patch delete event command history hash-key; do
    echo ".SH \"STATECAST ${sub^^}\""
    echo ".nf"
    "$bin" "$sub" --help | sed 's/\\/\\e/g; s/^\./\\\&./'
    echo ".fi"
  done
  echo ".SH FILES"
  echo "/etc/statecast/statecast.toml, /var/lib/statecast,"
  echo "/lib/systemd/system/statecast.service"
  echo ".SH SEE ALSO"
  echo "/usr/share/doc/statecast/deployment.md, /usr/share/doc/statecast/configuration.md"
} | gzip -9n > target/packaging/statecast.1.gz

profile_arg="$profile"
cargo deb -p statecast --locked --profile "$profile_arg" "${build[@]}" --output target/packaging/ \
  | tail -1
