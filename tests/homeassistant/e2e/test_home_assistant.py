"""The integration in a real Home Assistant 2024.1.6: copied into its config directory, a
config entry made through the config-flow REST API, then entities, devices, writes, live
descriptions, staleness, service calls reaching the hub's command route and a hub killed
with -9 and restarted, all seen through Home Assistant's own APIs."""

from __future__ import annotations

import os

from descriptions import write_all
from hass_process import VERSION, HomeAssistant, add_entry, call, wait_ha_state
from support import Device, Hub, delete, put, rest, wait_until


async def test_home_assistant_shows_and_operates_statecast_entities(
    ha: HomeAssistant, hub: Hub, device: Device
) -> None:
    if "STATECAST_HA_E2E_VENV" not in os.environ:
        assert ha.version() == VERSION
    await write_all(hub)
    done = await add_entry(ha, hub)
    assert done["result"]["domain"] == "statecast", done
    entries = await ha.ws({"type": "config_entries/get", "domain": "statecast"})
    assert [e["state"] for e in entries] == ["loaded"], entries

    # entities with their states, units and devices
    battery = await wait_ha_state(ha, "sensor.receiver1_battery", "80")
    assert battery["attributes"]["unit_of_measurement"] == "%"
    assert battery["attributes"]["device_class"] == "battery"
    player = await wait_ha_state(ha, "media_player.player1", "playing")
    assert player["attributes"]["media_title"] == "Song A"
    await wait_ha_state(ha, "switch.station_light", "on")
    lamp = await wait_ha_state(ha, "light.platform_lamp", "on")
    assert lamp["attributes"]["brightness"] == 102
    devices = {d["name"]: d for d in await ha.ws({"type": "config/device_registry/list"})}
    assert devices["Receiver 1"]["manufacturer"] == "Shure" and devices["Receiver 1"]["model"] == "ULXD4"
    entities = {e["entity_id"]: e for e in await ha.ws({"type": "config/entity_registry/list"})}
    assert entities["sensor.receiver1_battery"]["device_id"] == devices["Receiver 1"]["id"]
    assert entities["switch.station_light"]["device_id"] == devices["Station board"]["id"]
    assert entities["sensor.receiver1_battery"]["unique_id"] == "statecast_receiver1_battery"

    # a write
    await rest(hub.url, "PATCH", "/api/state/micboard/SHURE001", {"battery": 64})
    await wait_ha_state(ha, "sensor.receiver1_battery", "64")

    # a new description adds an entity, its removal removes it
    await put(hub, "room/hall", {"t": 19.5})
    await put(hub, "_entities/hall_t", {"platform": "sensor", "name": "Hall", "topic": "room/hall", "value": "/t"})
    await wait_ha_state(ha, "sensor.hall_t", "19.5")
    await delete(hub, "_entities/hall_t")
    await wait_ha_state(ha, "sensor.hall_t", None)

    # a stale topic makes its entity unavailable, a write makes it live again
    await put(hub, "_entities/fading", {"platform": "sensor", "name": "Fading", "topic": "fade/x", "value": "/v"})
    await put(hub, "fade/x", {"v": 1})
    await wait_ha_state(ha, "sensor.fading", "unavailable")
    await put(hub, "fade/x", {"v": 2})
    await wait_ha_state(ha, "sensor.fading", "2")

    # service calls reach the hub's http route with the right args
    calls = [
        ("switch", "turn_on", {"entity_id": "switch.station_light"}, "/cmd/railhub/esp32-01/set_output", {"output": 0, "on": True}),
        ("light", "turn_on", {"entity_id": "light.platform_lamp", "brightness": 128}, "/cmd/railhub/esp32-01/dim", {"level": 50}),
        ("number", "set_value", {"entity_id": "number.blink_interval", "value": 750}, "/cmd/railhub/esp32-01/set_interval", {"output": 1, "ms": 750}),
        ("media_player", "media_pause", {"entity_id": "media_player.player1"}, "/cmd/audio/player1/pause", {}),
    ]  # fmt: skip
    for domain, service, data, path, args in calls:
        before = len(device.received)
        assert await call(ha, domain, service, data) == 200
        assert device.received[before:] == [{"path": path, "body": {"name": path.rsplit("/", 1)[1], "args": args}}]

    # a refused command fails the service call
    await put(
        hub,
        "_entities/failing",
        {"platform": "button", "name": "Failing", "command": {"target": "dev/x", "name": "fail", "args": {}}},
    )
    await wait_ha_state(ha, "button.failing", "unknown")
    assert await call(ha, "button", "press", {"entity_id": "button.failing"}) >= 400
    # Home Assistant writes its log from a queue: the line comes a moment later
    await wait_until(lambda: "statecast command fail to dev/x failed: upstream" in ha.log(), "the refusal logged")

    # the hub killed with -9: unavailable; restarted: live again, no change lost
    await hub.kill()
    await wait_ha_state(ha, "sensor.receiver1_battery", "unavailable")
    await wait_ha_state(ha, "media_player.player1", "unavailable")
    await hub.start()
    await rest(hub.url, "PATCH", "/api/state/micboard/SHURE001", {"battery": 63})
    await wait_ha_state(ha, "sensor.receiver1_battery", "63")
    await wait_ha_state(ha, "media_player.player1", "playing")
    assert "ERROR (MainThread) [custom_components.statecast" not in ha.log(), ha.log(6000)
