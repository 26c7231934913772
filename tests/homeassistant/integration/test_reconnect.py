"""The connection's life: a hub killed with -9 and restarted (unavailable, then live again
with every change, resumed by rev, no full reload); a WebSocket that cannot get through
(the REST poll keeps the entities live, commands go over REST, then the socket resumes)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant

from custom_components.statecast.const import DOMAIN

from conftest import setup_entry, unload
from descriptions import wait_all, write_all
from support import Device, Hub, Proxy, put, rest, state_of, wait_until


async def test_a_killed_hub_makes_entities_unavailable_then_live_with_no_lost_change(
    hass: HomeAssistant, hub: Hub
) -> None:
    await write_all(hub)
    entry = await setup_entry(hass, hub)
    client = hass.data[DOMAIN][entry.entry_id].hub
    await wait_all(hass)
    snapshots = client.received.get("snapshot", 0)

    await rest(hub.url, "PATCH", "/api/state/micboard/SHURE001", {"battery": 70})  # just before the kill
    await hub.kill()
    await wait_until(lambda: state_of(hass, "sensor.receiver1_battery") == STATE_UNAVAILABLE, "unavailable")
    for entity_id in ("switch.station_light", "media_player.player1", "button.board_reboot"):
        assert state_of(hass, entity_id) == STATE_UNAVAILABLE, entity_id

    await hub.start()  # the same port and data dir
    await rest(hub.url, "PATCH", "/api/state/micboard/SHURE001", {"battery": 65})  # while the integration is away
    await rest(hub.url, "PATCH", "/api/state/audio/player1", {"state": "paused"})
    await wait_until(lambda: state_of(hass, "sensor.receiver1_battery") == "65", "the change made while away")
    await wait_until(lambda: state_of(hass, "media_player.player1") == "paused", "the player paused")
    assert state_of(hass, "switch.station_light") == "on"
    assert client.connects == 2
    # resumed from the revs held: of the 11 topics only the 2 that changed are sent again
    # (as patches, or as snapshots where the restarted hub has no resume buffer for them)
    assert client.received.get("snapshot", 0) - snapshots <= 2
    await unload(hass, entry)


@pytest.fixture
async def proxy(hub: Hub) -> AsyncIterator[Proxy]:
    p = Proxy(hub.port)
    await p.start()
    yield p
    await p.close()


async def test_without_the_websocket_the_rest_poll_keeps_entities_live(
    hass: HomeAssistant, hub: Hub, proxy: Proxy, device: Device
) -> None:
    await write_all(hub)
    entry = await setup_entry(hass, hub, poll=1, url=proxy.url)
    client = hass.data[DOMAIN][entry.entry_id].hub
    await wait_all(hass)

    proxy.block_ws = True
    proxy.drop_ws()
    await wait_until(lambda: proxy.ws_refused >= 2, "the reconnect attempts refused")
    assert not client.connected
    assert state_of(hass, "sensor.receiver1_battery") == "80"  # still available: polled
    polls = proxy.rest_requests
    await put(hub, "micboard/SHURE001", {"battery": 50, "muted": True})
    await wait_until(lambda: state_of(hass, "sensor.receiver1_battery") == "50", "the polled change")
    assert proxy.rest_requests > polls
    # a new entity and its topic come by poll too
    await put(hub, "room/hall", {"t": 19})
    await put(hub, "_entities/hall_t", {"platform": "sensor", "name": "Hall", "topic": "room/hall", "value": "/t"})
    await wait_until(lambda: state_of(hass, "sensor.hall_t") == "19", "the polled new entity")
    # a command over REST
    await hass.services.async_call("switch", "turn_on", {"entity_id": "switch.station_light"}, blocking=True)
    assert device.received[-1]["path"] == "/cmd/railhub/esp32-01/set_output"

    proxy.block_ws = False
    await wait_until(lambda: client.connected, "the WebSocket back")
    await put(hub, "room/hall", {"t": 20})
    await wait_until(lambda: state_of(hass, "sensor.hall_t") == "20", "a pushed change")
    await unload(hass, entry)


async def test_a_hub_that_is_down_at_start_is_waited_for(hass: HomeAssistant, hub: Hub) -> None:
    await write_all(hub)
    await hub.stop()
    entry = await setup_entry(hass, hub)  # loads all the same, and keeps trying
    client = hass.data[DOMAIN][entry.entry_id].hub
    assert not client.reachable
    await hub.start()
    await wait_all(hass)
    assert client.connected
    await unload(hass, entry)
