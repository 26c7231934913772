#!/bin/sh
# The real thing that fake-pactl.sh simulates, for a machine with PulseAudio or PipeWire
# (pipewire-pulse): prints `pactl subscribe`'s lines and, at the start and after each sink
# or sink-input event, a snapshot of the sound system in JSON:
#   {"snapshot": {"streams": 2, "volume": 60, "muted": false}}
# the number of streams playing and the default sink's volume (its first channel, in %)
# and mute. POSIX sh and pactl (PulseAudio 14 or later) only. Run it as the user whose
# sound server it should watch.

LC_ALL=C   # pactl's lines in English, as the rules expect
export LC_ALL

snapshot() {
    streams=$(pactl list short sink-inputs | wc -l)
    # "Volume: front-left: 39321 /  60% / -13.31 dB,   front-right: ..."
    volume=$(pactl get-sink-volume @DEFAULT_SINK@ | grep -o '[0-9]*%' | head -n 1 | tr -d %)
    # "Mute: no"
    case $(pactl get-sink-mute @DEFAULT_SINK@) in
        *yes*) muted=true ;;
        *) muted=false ;;
    esac
    printf '{"snapshot": {"streams": %d, "volume": %d, "muted": %s}}\n' "$streams" "${volume:-0}" "$muted"
}

snapshot || exit 0
pactl subscribe | while read -r line; do
    printf '%s\n' "$line" || exit 0
    case $line in
        *"on sink "* | *"on sink-input "*) snapshot || exit 0 ;;
    esac
done
