"""Entities from `_entities/` topics: states, units and devices; writes followed; entities
appearing, changing and disappearing live; stale and missing topics unavailable."""

from __future__ import annotations

from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er

from custom_components.statecast.const import DOMAIN

from conftest import setup_entry, unload
from descriptions import DESCRIPTIONS, wait_all, write_all
from support import Hub, delete, put, rest, state_of, wait_state, wait_until


async def test_entities_appear_with_their_states_units_and_devices(hass: HomeAssistant, hub: Hub) -> None:
    await write_all(hub)
    entry = await setup_entry(hass, hub)
    await wait_all(hass)

    battery = hass.states.get("sensor.receiver1_battery")
    assert battery is not None and battery.state == "80"
    assert battery.attributes["unit_of_measurement"] == "%"
    assert battery.attributes["device_class"] == "battery"
    assert battery.attributes["state_class"] == "measurement"
    assert battery.attributes["friendly_name"] == "Receiver 1 battery"
    assert state_of(hass, "binary_sensor.receiver1_muted") == "off"
    assert state_of(hass, "switch.station_light") == "on"
    lamp = hass.states.get("light.platform_lamp")
    assert lamp is not None and lamp.state == "on"
    assert lamp.attributes["brightness"] == 102  # 40 of 100
    number = hass.states.get("number.blink_interval")
    assert number is not None and float(number.state) == 500
    assert number.attributes["min"] == 0 and number.attributes["max"] == 5000 and number.attributes["step"] == 50
    assert number.attributes["unit_of_measurement"] == "ms"
    select = hass.states.get("select.board_mode")
    assert select is not None and select.state == "night"
    assert select.attributes["options"] == ["day", "night", "off"]
    assert state_of(hass, "button.board_reboot") == "unknown"  # never pressed
    player = hass.states.get("media_player.player1")
    assert player is not None
    assert player.attributes["media_title"] == "Song A"
    assert player.attributes["media_artist"] == "Band B"
    assert player.attributes["volume_level"] == 0.3

    entities = er.async_get(hass)
    for key, desc in DESCRIPTIONS.items():
        entity_id = f"{desc['platform']}.{key}"
        assert entities.async_get_entity_id(desc["platform"], DOMAIN, f"statecast_{key}") == entity_id
    devices = dr.async_get(hass)
    receiver = devices.async_get_device(identifiers={(DOMAIN, "SHURE001")})
    assert receiver is not None
    assert (receiver.name, receiver.manufacturer, receiver.model) == ("Receiver 1", "Shure", "ULXD4")
    board = devices.async_get_device(identifiers={(DOMAIN, "esp32-01")})
    assert board is not None and board.name == "Station board"
    on_board = {e.entity_id for e in er.async_entries_for_device(entities, board.id)}
    assert on_board == {
        "switch.station_light",
        "light.platform_lamp",
        "number.blink_interval",
        "select.board_mode",
        "button.board_reboot",
    }
    await unload(hass, entry)


async def test_a_write_updates_the_state(hass: HomeAssistant, hub: Hub) -> None:
    await write_all(hub)
    entry = await setup_entry(hass, hub)
    await wait_state(hass, "sensor.receiver1_battery", "80")
    status, _ = await rest(hub.url, "PATCH", "/api/state/micboard/SHURE001", {"battery": 79, "muted": True})
    assert status == 200
    await wait_state(hass, "sensor.receiver1_battery", "79")
    await wait_state(hass, "binary_sensor.receiver1_muted", "on")
    await put(hub, "audio/player1", {"state": "paused", "track": {"title": "Song C", "artist": "Band D"}, "volume": 55})
    await wait_state(hass, "media_player.player1", "paused")
    player = hass.states.get("media_player.player1")
    assert player is not None
    assert (player.attributes["media_title"], player.attributes["volume_level"]) == ("Song C", 0.55)
    await unload(hass, entry)


async def test_entities_and_devices_appear_change_and_disappear_with_their_topics(
    hass: HomeAssistant, hub: Hub
) -> None:
    entry = await setup_entry(hass, hub)  # an empty hub
    assert hass.states.async_entity_ids(DOMAIN) == []
    await put(hub, "room/kitchen", {"t": 21.5})
    desc = {
        "platform": "sensor",
        "name": "Kitchen",
        "topic": "room/kitchen",
        "value": "/t",
        "unit": "°C",
        "device_class": "temperature",
        "device": {"id": "kitchen", "name": "Kitchen sensor"},
    }
    await put(hub, "_entities/kitchen_t", desc)
    await wait_state(hass, "sensor.kitchen_t", "21.5")
    devices = dr.async_get(hass)
    device = devices.async_get_device(identifiers={(DOMAIN, "kitchen")})
    assert device is not None and device.name == "Kitchen sensor"

    # a changed description: new pointer, unit, class and device name, same entity
    await put(hub, "room/kitchen", {"t": 21.5, "h": 55})
    changed = {
        **desc,
        "value": "/h",
        "unit": "%",
        "device_class": "humidity",
        "device": {"id": "kitchen", "name": "Kitchen"},
    }
    await put(hub, "_entities/kitchen_t", changed)
    await wait_state(hass, "sensor.kitchen_t", "55")
    humidity = hass.states.get("sensor.kitchen_t")
    assert humidity is not None
    assert (humidity.attributes["unit_of_measurement"], humidity.attributes["device_class"]) == ("%", "humidity")
    await wait_until(
        lambda: (d := devices.async_get_device(identifiers={(DOMAIN, "kitchen")})) is not None and d.name == "Kitchen",
        "the device renamed",
    )

    # another device: the entity moves, the device left empty goes
    await put(hub, "_entities/kitchen_t", {**changed, "device": {"id": "hall", "name": "Hall sensor"}})
    await wait_until(
        lambda: devices.async_get_device(identifiers={(DOMAIN, "kitchen")}) is None, "the empty device removed"
    )
    hall = devices.async_get_device(identifiers={(DOMAIN, "hall")})
    assert hall is not None and hall.name == "Hall sensor"
    kitchen_t = er.async_get(hass).async_get("sensor.kitchen_t")
    assert kitchen_t is not None and kitchen_t.device_id == hall.id

    # another platform for the same key: the entity is replaced
    await put(
        hub,
        "_entities/kitchen_t",
        {"platform": "binary_sensor", "name": "Kitchen", "topic": "room/kitchen", "value": "/t"},
    )
    await wait_state(hass, "binary_sensor.kitchen_t", "on")
    await wait_state(hass, "sensor.kitchen_t", None)

    # removed: the entity and its then empty device go
    await delete(hub, "_entities/kitchen_t")
    await wait_state(hass, "binary_sensor.kitchen_t", None)
    entities = er.async_get(hass)
    assert entities.async_get_entity_id("binary_sensor", DOMAIN, "statecast_kitchen_t") is None
    assert entities.async_get_entity_id("sensor", DOMAIN, "statecast_kitchen_t") is None
    await wait_until(lambda: devices.async_get_device(identifiers={(DOMAIN, "hall")}) is None, "the device removed")
    await unload(hass, entry)


async def test_a_stale_or_missing_topic_makes_its_entity_unavailable(hass: HomeAssistant, hub: Hub) -> None:
    # fade/# turns stale after 1 s without a write (conftest's policy)
    await put(hub, "_entities/fading", {"platform": "sensor", "name": "Fading", "topic": "fade/x", "value": "/v"})
    absent = {"platform": "switch", "name": "Absent", "topic": "nowhere/x", "value": "/on"}
    absent["command"] = {"target": "nowhere/x", "name": "switch", "args": {"on": "{value}"}}
    await put(hub, "_entities/absent", absent)
    entry = await setup_entry(hass, hub)
    await wait_state(hass, "switch.absent", STATE_UNAVAILABLE)
    await put(hub, "fade/x", {"v": 1})
    await wait_state(hass, "sensor.fading", "1")
    await wait_state(hass, "sensor.fading", STATE_UNAVAILABLE)  # stale
    await put(hub, "fade/x", {"v": 2})
    await wait_state(hass, "sensor.fading", "2")  # fresh again

    await put(hub, "nowhere/x", {"on": True})
    await wait_state(hass, "switch.absent", "on")
    await delete(hub, "nowhere/x")
    await wait_state(hass, "switch.absent", STATE_UNAVAILABLE)
    await unload(hass, entry)


async def test_entities_whose_description_went_while_unloaded_are_removed(hass: HomeAssistant, hub: Hub) -> None:
    await write_all(hub)
    entry = await setup_entry(hass, hub)
    await wait_all(hass)
    await unload(hass, entry)
    await delete(hub, "_entities/receiver1_battery")
    await delete(hub, "_entities/receiver1_muted")
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_state(hass, "media_player.player1", "playing")
    entities = er.async_get(hass)
    assert entities.async_get_entity_id("sensor", DOMAIN, "statecast_receiver1_battery") is None
    assert entities.async_get_entity_id("binary_sensor", DOMAIN, "statecast_receiver1_muted") is None
    assert entities.async_get_entity_id("switch", DOMAIN, "statecast_station_light") == "switch.station_light"
    assert dr.async_get(hass).async_get_device(identifiers={(DOMAIN, "SHURE001")}) is None  # no entity left on it
    await unload(hass, entry)


async def test_a_value_home_assistant_refuses_breaks_nothing_else(hass: HomeAssistant, hub: Hub) -> None:
    await write_all(hub)
    entry = await setup_entry(hass, hub)
    await wait_all(hass)
    client = hass.data[DOMAIN][entry.entry_id].hub
    # text for a sensor with a state_class: Home Assistant refuses to write it
    await rest(hub.url, "PATCH", "/api/state/micboard/SHURE001", {"battery": "low"})
    await put(hub, "audio/player1", {"state": "idle"})
    await wait_state(hass, "media_player.player1", "idle")
    assert client.connects == 1  # the connection went on
    await rest(hub.url, "PATCH", "/api/state/micboard/SHURE001", {"battery": 12})
    await wait_state(hass, "sensor.receiver1_battery", "12")
    await unload(hass, entry)


async def test_a_description_with_a_bad_key_or_platform_makes_no_entity(hass: HomeAssistant, hub: Hub) -> None:
    await put(hub, "room/x", {"t": 1})
    # a hub that validates descriptions refuses these already; one that does not stores them
    bad = {"Bad-Key": "sensor", "two/levels": "sensor", "odd": "vacuum"}
    for key, platform in bad.items():
        await rest(
            hub.url,
            "PUT",
            f"/api/state/_entities/{key}",
            {"platform": platform, "name": key, "topic": "room/x", "value": "/t"},
        )
    await put(hub, "_entities/good", {"platform": "sensor", "name": "Good", "topic": "room/x", "value": "/t"})
    entry = await setup_entry(hass, hub)
    await wait_state(hass, "sensor.good", "1")
    assert sorted(e.entity_id for e in er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)) == [
        "sensor.good"
    ]
    await unload(hass, entry)
