"""Operating each platform's entity sends its command through the hub's `http` route to the
test's device with `{value}` filled in; a refused command is a HomeAssistantError, over
the WebSocket and over REST (while the WebSocket is down)."""

from __future__ import annotations

from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError

from custom_components.statecast.const import DOMAIN

from conftest import setup_entry, unload
from descriptions import cmd, wait_all, write_all
from support import Device, Hub, put, state_of, wait_until

CALLS: list[tuple[str, str, dict[str, Any], str, dict[str, Any]]] = [
    # domain, service, service data, the device's path, the args it gets
    (
        "switch",
        "turn_on",
        {"entity_id": "switch.station_light"},
        "/cmd/railhub/esp32-01/set_output",
        {"output": 0, "on": True},
    ),
    (
        "switch",
        "turn_off",
        {"entity_id": "switch.station_light"},
        "/cmd/railhub/esp32-01/set_output",
        {"output": 0, "on": False},
    ),
    ("light", "turn_on", {"entity_id": "light.platform_lamp"}, "/cmd/railhub/esp32-01/lamp", {"on": True}),
    (
        "light",
        "turn_on",
        {"entity_id": "light.platform_lamp", "brightness": 255},
        "/cmd/railhub/esp32-01/dim",
        {"level": 100},
    ),
    ("light", "turn_off", {"entity_id": "light.platform_lamp"}, "/cmd/railhub/esp32-01/lamp", {"on": False}),
    (
        "number",
        "set_value",
        {"entity_id": "number.blink_interval", "value": 1250},
        "/cmd/railhub/esp32-01/set_interval",
        {"output": 1, "ms": 1250},
    ),
    (
        "select",
        "select_option",
        {"entity_id": "select.board_mode", "option": "day"},
        "/cmd/railhub/esp32-01/set_mode",
        {"mode": "day"},
    ),
    ("button", "press", {"entity_id": "button.board_reboot"}, "/cmd/railhub/esp32-01/reboot", {}),
    ("media_player", "media_play", {"entity_id": "media_player.player1"}, "/cmd/audio/player1/play", {}),
    ("media_player", "media_pause", {"entity_id": "media_player.player1"}, "/cmd/audio/player1/pause", {}),
    ("media_player", "media_stop", {"entity_id": "media_player.player1"}, "/cmd/audio/player1/stop", {}),
    ("media_player", "media_next_track", {"entity_id": "media_player.player1"}, "/cmd/audio/player1/next", {}),
    (
        "media_player",
        "volume_set",
        {"entity_id": "media_player.player1", "volume_level": 0.75},
        "/cmd/audio/player1/set_volume",
        {"volume": 75},
    ),
]


async def test_each_platforms_service_reaches_the_command_route(hass: HomeAssistant, hub: Hub, device: Device) -> None:
    await write_all(hub)
    entry = await setup_entry(hass, hub)
    await wait_all(hass)
    for domain, service, data, path, args in CALLS:
        before = len(device.received)
        await hass.services.async_call(domain, service, data, blocking=True)
        assert device.received[before:] == [{"path": path, "body": {"name": path.rsplit("/", 1)[1], "args": args}}], (
            domain,
            service,
        )
    await unload(hass, entry)


async def failing(hass: HomeAssistant, hub: Hub) -> None:
    await put(hub, "dev/x", {"on": False})
    await put(
        hub,
        "_entities/failing",
        {
            "platform": "switch",
            "name": "Failing",
            "topic": "dev/x",
            "value": "/on",
            "command": cmd("dev/x", "fail", {"on": "{value}"}),
        },
    )
    await put(
        hub, "_entities/unreachable", {"platform": "button", "name": "Unreachable", "command": cmd("dead/x", "x")}
    )
    await wait_until(
        lambda: state_of(hass, "switch.failing") == "off" and state_of(hass, "button.unreachable") == "unknown",
        "the failing switch and the unreachable button",
    )


async def test_a_refused_command_is_a_home_assistant_error(hass: HomeAssistant, hub: Hub, device: Device) -> None:
    entry = await setup_entry(hass, hub)
    await failing(hass, hub)
    refused = r'upstream: the device answered 409 Conflict \(the device\'s answer: \{"error": "busy"\}\)'
    with pytest.raises(HomeAssistantError, match=refused):
        await hass.services.async_call("switch", "turn_on", {"entity_id": "switch.failing"}, blocking=True)
    assert device.received[-1] == {"path": "/cmd/dev/x/fail", "body": {"name": "fail", "args": {"on": True}}}
    with pytest.raises(HomeAssistantError, match="upstream: device unreachable"):
        await hass.services.async_call("button", "press", {"entity_id": "button.unreachable"}, blocking=True)
    await unload(hass, entry)


async def test_commands_go_over_rest_while_the_websocket_is_down(hass: HomeAssistant, hub: Hub, device: Device) -> None:
    entry = await setup_entry(hass, hub)
    await failing(hass, hub)
    client = hass.data[DOMAIN][entry.entry_id].hub
    client.connected = False  # as between a dropped socket and the next connect
    await hass.services.async_call("switch", "turn_off", {"entity_id": "switch.failing"}, blocking=False)
    with pytest.raises(HomeAssistantError, match="upstream.*409"):
        await hass.services.async_call("switch", "turn_on", {"entity_id": "switch.failing"}, blocking=True)
    client.connected = True
    await unload(hass, entry)
