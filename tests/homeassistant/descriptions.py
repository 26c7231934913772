"""Entity descriptions of every platform, over two devices' topics, as the tests write them
to `_entities/<key>`."""

from __future__ import annotations

from typing import Any

from support import put, state_of, wait_until

RECEIVER = {"id": "SHURE001", "name": "Receiver 1", "manufacturer": "Shure", "model": "ULXD4"}
BOARD = {"id": "esp32-01", "name": "Station board", "manufacturer": "railhub"}


def cmd(target: str, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"target": target, "name": name, "args": args if args is not None else {}}


DESCRIPTIONS: dict[str, dict[str, Any]] = {
    "receiver1_battery": {
        "platform": "sensor",
        "name": "Receiver 1 battery",
        "topic": "micboard/SHURE001",
        "value": "/battery",
        "unit": "%",
        "device_class": "battery",
        "state_class": "measurement",
        "device": RECEIVER,
    },
    "receiver1_muted": {
        "platform": "binary_sensor",
        "name": "Receiver 1 muted",
        "topic": "micboard/SHURE001",
        "value": "/muted",
        "device": RECEIVER,
    },
    "station_light": {
        "platform": "switch",
        "name": "Station light",
        "topic": "railhub/esp32-01",
        "value": "/outputs/0/active",
        "command": cmd("railhub/esp32-01", "set_output", {"output": 0, "on": "{value}"}),
        "device": BOARD,
    },
    "platform_lamp": {
        "platform": "light",
        "name": "Platform lamp",
        "topic": "railhub/esp32-01",
        "value": "/lamp/on",
        "brightness": "/lamp/level",
        "brightness_scale": 100,
        "command": cmd("railhub/esp32-01", "lamp", {"on": "{value}"}),
        "brightness_command": cmd("railhub/esp32-01", "dim", {"level": "{value}"}),
        "device": BOARD,
    },
    "blink_interval": {
        "platform": "number",
        "name": "Blink interval",
        "topic": "railhub/esp32-01",
        "value": "/outputs/1/interval",
        "min": 0,
        "max": 5000,
        "step": 50,
        "unit": "ms",
        "command": cmd("railhub/esp32-01", "set_interval", {"output": 1, "ms": "{value}"}),
        "device": BOARD,
    },
    "board_mode": {
        "platform": "select",
        "name": "Board mode",
        "topic": "railhub/esp32-01",
        "value": "/mode",
        "options": ["day", "night", "off"],
        "command": cmd("railhub/esp32-01", "set_mode", {"mode": "{value}"}),
        "device": BOARD,
    },
    "board_reboot": {
        "platform": "button",
        "name": "Reboot board",
        "topic": "railhub/esp32-01",
        "command": cmd("railhub/esp32-01", "reboot"),
        "device": BOARD,
    },
    "player1": {
        "platform": "media_player",
        "name": "Player 1",
        "topic": "audio/player1",
        "state": "/state",
        "title": "/track/title",
        "artist": "/track/artist",
        "volume": "/volume",
        "play": cmd("audio/player1", "play"),
        "pause": cmd("audio/player1", "pause"),
        "stop": cmd("audio/player1", "stop"),
        "next": cmd("audio/player1", "next"),
        "volume_set": cmd("audio/player1", "set_volume", {"volume": "{value}"}),
    },
}

STATES: dict[str, Any] = {
    "micboard/SHURE001": {"battery": 80, "muted": False, "rf": -60},
    "railhub/esp32-01": {
        "outputs": [{"active": True}, {"interval": 500}],
        "lamp": {"on": True, "level": 40},
        "mode": "night",
    },
    "audio/player1": {"state": "playing", "track": {"title": "Song A", "artist": "Band B"}, "volume": 30},
}


async def write_all(hub: Any) -> None:
    for topic, state in STATES.items():
        await put(hub, topic, state)
    for key, desc in DESCRIPTIONS.items():
        await put(hub, f"_entities/{key}", desc)


async def wait_all(hass: Any) -> None:
    """Until every entity of DESCRIPTIONS is in the state machine and available."""
    ids = [f"{d['platform']}.{key}" for key, d in DESCRIPTIONS.items()]
    await wait_until(lambda: all(state_of(hass, e) not in (None, "unavailable") for e in ids), "every entity")
