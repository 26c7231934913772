"""`binary_sensor`: on while the value at `value` is true (or "on", 1, ...), with
`device_class`."""

from __future__ import annotations

from typing import Any

from homeassistant.components.binary_sensor import BinarySensorDeviceClass, BinarySensorEntity
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .entity import StatecastEntity, as_bool, setup_platform
from .sensor import enum_or_none


async def async_setup_entry(hass: HomeAssistant, entry: ConfigEntry, async_add_entities: AddEntitiesCallback) -> None:
    setup_platform(hass, entry, async_add_entities, "binary_sensor", StatecastBinarySensor)


class StatecastBinarySensor(StatecastEntity, BinarySensorEntity):
    platform_name = "binary_sensor"

    def describe(self, desc: dict[str, Any]) -> None:
        self._attr_device_class = enum_or_none(BinarySensorDeviceClass, desc.get("device_class"))

    @property
    def is_on(self) -> bool | None:
        return as_bool(self.read())
