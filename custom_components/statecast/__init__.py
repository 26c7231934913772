"""statecast: topics of a statecast hub as Home Assistant entities, pushed, controllable.

Layout:
- `hub.py`: the connection to the hub (one WebSocket, resume by rev, a REST poll while it
  is down, commands); aiohttp only, nothing of Home Assistant's entity model.
- `manager.py`: one per config entry; `_entities/<key>` descriptions in, entities and
  devices made, changed and removed as those topics change.
- `entity.py`: what every entity shares (pointers, availability, sending commands);
  one module per platform (`sensor.py`, `switch.py`, ...) adds its entity type.
- `config_flow.py` (setup, options, reauth), `identity.py` (which hub this is),
  `diagnostics.py`.
"""

from __future__ import annotations

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant

from .const import DOMAIN, PLATFORMS
from .manager import EntityManager


async def async_setup_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
    manager = EntityManager(hass, entry)
    hass.data.setdefault(DOMAIN, {})[entry.entry_id] = manager
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    manager.start()  # the platforms listen now: the first snapshots make entities
    entry.async_on_unload(entry.add_update_listener(_options_updated))
    return True


async def async_unload_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
    manager: EntityManager = hass.data[DOMAIN][entry.entry_id]
    await manager.stop()
    unloaded = await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
    if unloaded:
        hass.data[DOMAIN].pop(entry.entry_id)
    return unloaded


async def _options_updated(hass: HomeAssistant, entry: ConfigEntry) -> None:
    await hass.config_entries.async_reload(entry.entry_id)
