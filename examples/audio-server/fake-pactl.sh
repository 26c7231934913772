#!/bin/sh
# Prints what `pactl subscribe` prints, one line a second, until its reader goes away:
#   Event 'change' on sink #0
#   Event 'new' on sink-input #42
#   Event 'remove' on sink-input #42
# (pactl prints these when a volume changes, a stream starts or ends, ...), and, at the
# start and after each sink or sink-input event, a snapshot of the sound system in JSON:
#   {"snapshot": {"streams": 2, "volume": 60, "muted": false}}
# the number of streams playing (`pactl list short sink-inputs | wc -l`) and the default
# sink's volume in % and mute (`pactl get-sink-volume`/`get-sink-mute @DEFAULT_SINK@`);
# pactl-watch.sh prints the same with the real pactl. POSIX sh only.

streams=1   # one stream plays all along; a second one comes and goes
volume=60

snapshot() {
    printf '{"snapshot": {"streams": %d, "volume": %d, "muted": false}}\n' "$streams" "$volume"
}

snapshot || exit 0
n=0
while :; do
    sleep 1
    n=$((n + 1))
    stream=$((40 + n / 10 % 10))
    case $((n % 10)) in
        3) line="Event 'new' on sink-input #$stream"; streams=2 ;;
        4) line="Event 'change' on sink-input #$stream" ;;
        5) line="Event 'change' on sink #0"; volume=$((volume == 60 ? 70 : 60)) ;;
        7) line="Event 'change' on source #1" ;;
        8) line="Event 'remove' on sink-input #$stream"; streams=1 ;;
        0) line="Event 'change' on server #4294967295" ;;
        *) line="Event 'change' on sink #0" ;;
    esac
    printf '%s\n' "$line" || exit 0
    case $line in
        *"on sink "* | *"on sink-input "*) snapshot || exit 0 ;;
    esac
done
