#!/bin/sh
# Prints what `pactl subscribe` prints, one line a second, until its reader goes away:
#   Event 'change' on sink #0
#   Event 'new' on sink-input #42
#   Event 'remove' on sink-input #42
# (pactl prints these when a volume changes, a stream starts or ends, ...). POSIX sh only.

n=0
while :; do
    n=$((n + 1))
    stream=$((40 + n / 10 % 10))
    case $((n % 10)) in
        3) line="Event 'new' on sink-input #$stream" ;;
        4) line="Event 'change' on sink-input #$stream" ;;
        7) line="Event 'change' on source #1" ;;
        8) line="Event 'remove' on sink-input #$stream" ;;
        0) line="Event 'change' on server #4294967295" ;;
        *) line="Event 'change' on sink #0" ;;
    esac
    printf '%s\n' "$line" || exit 0
    sleep 1
done
