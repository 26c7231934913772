"""`switch`: on while the value at `value` is true; turning it on or off sends `command`
with `{value}` = true or false."""

from __future__ import annotations

from typing import Any

from homeassistant.components.switch import SwitchEntity
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .entity import StatecastEntity, as_bool, setup_platform


async def async_setup_entry(hass: HomeAssistant, entry: ConfigEntry, async_add_entities: AddEntitiesCallback) -> None:
    setup_platform(hass, entry, async_add_entities, "switch", StatecastSwitch)


class StatecastSwitch(StatecastEntity, SwitchEntity):
    platform_name = "switch"

    @property
    def is_on(self) -> bool | None:
        return as_bool(self.read())

    async def async_turn_on(self, **kwargs: Any) -> None:
        await self.send("command", True)

    async def async_turn_off(self, **kwargs: Any) -> None:
        await self.send("command", False)
