"""`button`: pressing it sends `command` (`{value}` = true); `topic` is optional."""

from __future__ import annotations

from homeassistant.components.button import ButtonEntity
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .entity import StatecastEntity, setup_platform


async def async_setup_entry(hass: HomeAssistant, entry: ConfigEntry, async_add_entities: AddEntitiesCallback) -> None:
    setup_platform(hass, entry, async_add_entities, "button", StatecastButton)


class StatecastButton(StatecastEntity, ButtonEntity):
    platform_name = "button"

    async def async_press(self) -> None:
        await self.send("command", True)
