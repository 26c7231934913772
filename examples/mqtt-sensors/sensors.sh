#!/usr/bin/env bash
# Simulated MQTT sensors and thermostats, with the Mosquitto command-line clients
# (mosquitto_pub, mosquitto_sub; Debian/Ubuntu package mosquitto-clients).
#
#   home/<room>/climate      {"temperature": 21.4, "humidity": 48, "battery": 87}   every 5 s
#   home/<room>/motion       {"motion": false, "battery": 64}                        now and then
#   home/<room>/thermostat   {"target_c": 21, "mode": "heat"}                        on change
#
# All retained, so a subscriber that comes later still gets the last value. Commands
# arrive on home/<room>/set as {"sensor": "thermostat", "command": "set",
# "args": {"target_c": 22.5, "mode": "heat"}}; the answer goes to home/<room>/reply (not
# retained: a stale answer must never look like the answer to the next command).
#
# Usage: examples/mqtt-sensors/sensors.sh          run until Ctrl-C
#        examples/mqtt-sensors/sensors.sh clear    remove the retained messages again
# Environment: MQTT_HOST (127.0.0.1), MQTT_PORT (1883), INTERVAL (5, seconds)

set -u
host=${MQTT_HOST:-127.0.0.1}
port=${MQTT_PORT:-1883}
interval=${INTERVAL:-5}

for tool in mosquitto_pub mosquitto_sub; do
    if ! command -v "$tool" >/dev/null; then
        echo "sensors.sh needs $tool: install the Mosquitto clients (apt install mosquitto-clients, brew install mosquitto)" >&2
        exit 1
    fi
done

climate_rooms="kitchen livingroom bedroom"
motion_rooms="livingroom hallway"
thermostat_rooms="kitchen livingroom"

# publish TOPIC PAYLOAD [more mosquitto_pub options]
publish() {
    local topic=$1 payload=$2
    shift 2
    mosquitto_pub -h "$host" -p "$port" -q 1 -t "$topic" -m "$payload" "$@"
}

if [ "${1:-}" = clear ]; then
    for room in $climate_rooms; do publish "home/$room/climate" "" -r; done
    for room in $motion_rooms; do publish "home/$room/motion" "" -r; done
    for room in $thermostat_rooms; do publish "home/$room/thermostat" "" -r; done
    echo "retained messages removed (statecast removes the topics too)"
    exit 0
fi

# tenths 215 -> 21.5
decimal() { printf '%d.%d' $(($1 / 10)) $(($1 % 10)); }

# The value of a member of a one-line JSON object: json_value KEY JSON (strings unquoted).
json_value() {
    printf '%s' "$2" | sed -n -e 's/.*"'"$1"'": *"\([^"]*\)".*/\1/p' \
        -e 't' -e 's/.*"'"$1"'": *\(-\{0,1\}[0-9][0-9.]*\).*/\1/p'
}

# --- Thermostats: answer commands --------------------------------------------------------

thermostats() {
    local room sensor command target mode reply
    for room in $thermostat_rooms; do
        eval "target_$room=21 mode_$room=heat"
        publish "home/$room/thermostat" "{\"target_c\": 21, \"mode\": \"heat\"}" -r
    done
    # One line per command: "home/kitchen/set {...}".
    mosquitto_sub -h "$host" -p "$port" -q 1 -t 'home/+/set' -F '%t %p' |
        while read -r topic payload; do
            room=${topic#home/}
            room=${room%/set}
            sensor=$(json_value sensor "$payload")
            command=$(json_value command "$payload")
            target=$(json_value target_c "$payload")
            mode=$(json_value mode "$payload")
            echo "command for $room: $payload"
            if [ "$sensor" != thermostat ]; then
                reply="{\"ok\": false, \"error\": \"only thermostats take commands\"}"
            elif ! case " $thermostat_rooms " in *" $room "*) true ;; *) false ;; esac; then
                reply="{\"ok\": false, \"error\": \"no thermostat in $room\"}"
            elif [ "$command" != set ]; then
                reply="{\"ok\": false, \"error\": \"the thermostat only knows the command set\"}"
            elif [ -n "$target" ] && ! { [[ $target =~ ^[0-9]+(\.[0-9]+)?$ ]] &&
                awk -v t="$target" 'BEGIN { exit !(t >= 5 && t <= 30) }'; }; then
                reply="{\"ok\": false, \"error\": \"target_c must be 5..30\"}"
            elif [ -n "$mode" ] && [ "$mode" != heat ] && [ "$mode" != off ]; then
                reply="{\"ok\": false, \"error\": \"mode must be heat or off\"}"
            else
                [ -n "$target" ] && eval "target_$room=\$target"
                [ -n "$mode" ] && eval "mode_$room=\$mode"
                eval "target=\$target_$room mode=\$mode_$room"
                state="{\"target_c\": $target, \"mode\": \"$mode\"}"
                publish "home/$room/thermostat" "$state" -r
                reply="{\"ok\": true, \"thermostat\": $state}"
            fi
            publish "home/$room/reply" "$reply"
        done
}

thermostats &
responder=$!
# On Ctrl-C or kill: stop the responder's mosquitto_sub too (by its parent's PID).
trap 'trap - EXIT; pkill -P "$responder" 2>/dev/null; kill "$responder" 2>/dev/null; exit 0' INT TERM EXIT

# --- Sensors: publish every $interval seconds --------------------------------------------

declare -i t_kitchen=215 t_livingroom=208 t_bedroom=189
declare -i h_kitchen=52 h_livingroom=47 h_bedroom=55
declare -i b_kitchen=87 b_livingroom=92 b_bedroom=78
motion_livingroom=false motion_hallway=false
for room in $motion_rooms; do publish "home/$room/motion" '{"motion": false, "battery": 64}' -r; done

echo "publishing home/<room>/climate, motion and thermostat to $host:$port every ${interval}s (Ctrl-C to stop)"
while :; do
    for room in $climate_rooms; do
        eval "t=\$t_$room h=\$h_$room b=\$b_$room"
        t=$((t + RANDOM % 5 - 2))
        t=$((t < 160 ? 160 : t > 280 ? 280 : t))
        h=$((h + RANDOM % 3 - 1))
        h=$((h < 30 ? 30 : h > 70 ? 70 : h))
        eval "t_$room=$t h_$room=$h"
        publish "home/$room/climate" \
            "{\"temperature\": $(decimal "$t"), \"humidity\": $h, \"battery\": $b}" -r
    done
    for room in $motion_rooms; do
        if [ $((RANDOM % 3)) -eq 0 ]; then
            eval "m=\$motion_$room"
            if [ "$m" = true ]; then m=false; else m=true; fi
            eval "motion_$room=$m"
            publish "home/$room/motion" "{\"motion\": $m, \"battery\": 64}" -r
        fi
    done
    sleep "$interval"
done
