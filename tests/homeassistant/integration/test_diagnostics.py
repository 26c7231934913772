"""The diagnostics download: the connection, every description and topic, no token."""

from __future__ import annotations

from homeassistant.core import HomeAssistant

from custom_components.statecast.diagnostics import async_get_config_entry_diagnostics

from conftest import setup_entry, unload
from descriptions import wait_all, write_all
from support import Hub


async def test_diagnostics_show_the_connection_and_entities_without_the_token(hass: HomeAssistant, hub: Hub) -> None:
    await write_all(hub)
    entry = await setup_entry(hass, hub, token="secret-token")  # the hub has no [auth]: any token passes
    await wait_all(hass)
    diagnostics = await async_get_config_entry_diagnostics(hass, entry)
    assert diagnostics["entry"]["data"] == {"url": hub.url, "token": "**REDACTED**"}
    assert "secret-token" not in repr(diagnostics)
    state = diagnostics["hub"]
    assert state["connected"] and state["reachable"] and state["connects"] == 1
    assert state["entities"]["player1"]["entity_id"] == "media_player.player1"
    assert state["topics"]["micboard/SHURE001"]["state"]["battery"] == 80
    await unload(hass, entry)
