"""Fixtures: a device server and a hub of the test's own (fixtures.py), Home Assistant's
test harness set up for custom integrations and local sockets, an entry set up against the hub."""

from __future__ import annotations

import pytest
from fixtures import device, hub, hub_config, pytest_terminal_summary  # noqa: F401 (fixtures, hook)
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.statecast.const import CONF_POLL_INTERVAL, DOMAIN

from support import Hub


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None, socket_enabled: None) -> None:
    """Loads custom_components/statecast; lets the test open sockets (to 127.0.0.1 only)."""


async def setup_entry(
    hass: HomeAssistant, server: Hub, token: str | None = None, poll: int = 10, url: str | None = None
) -> MockConfigEntry:
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={"url": url or server.url, "token": token},
        options={CONF_POLL_INTERVAL: poll},
        unique_id=f"url:127.0.0.1:{server.port}",
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


async def unload(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
