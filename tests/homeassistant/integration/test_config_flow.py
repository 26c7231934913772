"""The config flow against a real hub: success, cannot connect, the same hub twice under two
URLs, a refused token; reauth started when the hub refuses the entry's token; options."""

from __future__ import annotations

import pytest
from homeassistant import config_entries, data_entry_flow
from homeassistant.core import HomeAssistant

from custom_components.statecast.const import CONF_POLL_INTERVAL, DOMAIN

from conftest import setup_entry, unload
from support import Hub, put, wait_until

AUTH = """
[auth]
[[auth.keys]]
name = "ha"
key = "good-token"
read = ["#"]
write = ["#"]
command = ["#"]
admin = true
"""


async def start_flow(hass: HomeAssistant, url: str, token: str | None = None) -> data_entry_flow.FlowResult:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": config_entries.SOURCE_USER})
    assert result["type"] == data_entry_flow.FlowResultType.FORM
    data = {"url": url} if token is None else {"url": url, "token": token}
    return await hass.config_entries.flow.async_configure(result["flow_id"], data)


async def test_a_hub_is_added_once_with_its_epoch_as_unique_id(hass: HomeAssistant, hub: Hub) -> None:
    await put(hub, "_entities/t", {"platform": "sensor", "name": "T", "topic": "room/t", "value": "/t"})
    result = await start_flow(hass, hub.url)
    assert result["type"] == data_entry_flow.FlowResultType.CREATE_ENTRY, result
    assert result["data"] == {"url": hub.url, "token": None}
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    assert entry.unique_id is not None and entry.unique_id.startswith("epoch:")
    await hass.async_block_till_done()

    # the same hub under another name for the same address: refused
    again = await start_flow(hass, f"localhost:{hub.port}/")
    assert again["type"] == data_entry_flow.FlowResultType.ABORT
    assert again["reason"] == "already_configured"
    await hass.async_block_till_done()  # the entry reloads with the URL it was given now
    assert entry.data["url"] == f"http://localhost:{hub.port}"
    await unload(hass, entry)


async def test_an_empty_hub_is_known_by_its_address(hass: HomeAssistant, hub: Hub) -> None:
    result = await start_flow(hass, hub.url + "/")
    assert result["type"] == data_entry_flow.FlowResultType.CREATE_ENTRY, result
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    assert entry.unique_id == f"url:127.0.0.1:{hub.port}"
    assert entry.data["url"] == hub.url
    again = await start_flow(hass, hub.url)
    assert again["type"] == data_entry_flow.FlowResultType.ABORT
    await hass.async_block_till_done()
    await unload(hass, entry)


async def test_no_hub_there_cannot_connect(hass: HomeAssistant, hub: Hub) -> None:
    port = hub.port
    await hub.stop()
    result = await start_flow(hass, f"http://127.0.0.1:{port}")
    assert result["type"] == data_entry_flow.FlowResultType.FORM
    assert result["errors"] == {"base": "cannot_connect"}


async def test_something_else_there_cannot_connect(hass: HomeAssistant, device) -> None:
    result = await start_flow(hass, f"http://127.0.0.1:{device.port}")
    assert result["errors"] == {"base": "cannot_connect"}


@pytest.mark.parametrize("hub_config", [AUTH])
async def test_a_refused_token_is_invalid_auth_and_a_good_one_passes(hass: HomeAssistant, hub: Hub) -> None:
    result = await start_flow(hass, hub.url, "bad-token")
    assert result["type"] == data_entry_flow.FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_auth"}
    result = await start_flow(hass, hub.url)  # none at all
    assert result["errors"] == {"base": "invalid_auth"}
    result = await start_flow(hass, hub.url, "good-token")
    assert result["type"] == data_entry_flow.FlowResultType.CREATE_ENTRY, result
    assert result["data"]["token"] == "good-token"
    await hass.async_block_till_done()
    await unload(hass, hass.config_entries.async_entries(DOMAIN)[0])


@pytest.mark.parametrize("hub_config", [AUTH])
async def test_a_token_the_hub_refuses_starts_reauth(hass: HomeAssistant, hub: Hub) -> None:
    entry = await setup_entry(hass, hub, token="revoked-token")
    await wait_until(
        lambda: any(f["context"]["source"] == "reauth" for f in hass.config_entries.flow.async_progress()),
        "a reauth flow",
    )
    flow = next(f for f in hass.config_entries.flow.async_progress() if f["context"]["source"] == "reauth")
    result = await hass.config_entries.flow.async_configure(flow["flow_id"], {"token": "still-bad"})
    assert result["errors"] == {"base": "invalid_auth"}
    result = await hass.config_entries.flow.async_configure(flow["flow_id"], {"token": "good-token"})
    assert result["type"] == data_entry_flow.FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert entry.data["token"] == "good-token"
    await hass.async_block_till_done()
    manager = hass.data[DOMAIN][entry.entry_id]
    await wait_until(lambda: manager.hub.connected, "the connection with the new token")
    await unload(hass, entry)


async def test_the_options_set_the_poll_interval(hass: HomeAssistant, hub: Hub) -> None:
    entry = await setup_entry(hass, hub)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] == data_entry_flow.FlowResultType.FORM
    result = await hass.config_entries.options.async_configure(result["flow_id"], {CONF_POLL_INTERVAL: 3})
    assert result["type"] == data_entry_flow.FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert entry.options[CONF_POLL_INTERVAL] == 3
    assert hass.data[DOMAIN][entry.entry_id].hub.poll_interval == 3
    await unload(hass, entry)
