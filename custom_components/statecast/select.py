"""`select`: the value at `value`, one of `options`; choosing one sends `command` with
`{value}` = the option."""

from __future__ import annotations

from typing import Any

from homeassistant.components.select import SelectEntity
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .entity import StatecastEntity, setup_platform


async def async_setup_entry(hass: HomeAssistant, entry: ConfigEntry, async_add_entities: AddEntitiesCallback) -> None:
    setup_platform(hass, entry, async_add_entities, "select", StatecastSelect)


class StatecastSelect(StatecastEntity, SelectEntity):
    platform_name = "select"

    def describe(self, desc: dict[str, Any]) -> None:
        options = desc.get("options")
        self._attr_options = [str(o) for o in options] if isinstance(options, list) else []

    @property
    def current_option(self) -> str | None:
        value = self.read()
        return None if value is None else str(value)

    async def async_select_option(self, option: str) -> None:
        await self.send("command", option)
