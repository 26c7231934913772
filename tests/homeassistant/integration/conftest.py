"""Fixtures: a device server and a hub of the test's own, an entry set up against it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.statecast.const import CONF_POLL_INTERVAL, DOMAIN

from support import Device, Hub

STALE_CONFIG = '[[topics]]\nmatch = "fade/#"\nstale_after = "1s"\n'


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None, socket_enabled: None) -> None:
    """Loads custom_components/statecast; lets the test open sockets (to 127.0.0.1 only)."""


@pytest.fixture
async def device() -> AsyncIterator[Device]:
    dev = Device()
    await dev.start()
    yield dev
    await dev.close()


@pytest.fixture
def hub_config() -> str:
    return ""


@pytest.fixture
async def hub(tmp_path: Path, device: Device, hub_config: str) -> AsyncIterator[Hub]:
    """A hub of its own: the device's command route, a stale policy for `fade/#`."""
    process = Hub(tmp_path, device.route() + STALE_CONFIG + hub_config)
    await process.start()
    yield process
    await process.stop()


async def setup_entry(
    hass: HomeAssistant, hub: Hub, token: str | None = None, poll: int = 10, url: str | None = None
) -> MockConfigEntry:
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={"url": url or hub.url, "token": token},
        options={CONF_POLL_INTERVAL: poll},
        unique_id=f"url:127.0.0.1:{hub.port}",
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


async def unload(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
