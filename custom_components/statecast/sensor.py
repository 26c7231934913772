"""`sensor`: the value at `value`, with `unit`, `device_class` and `state_class`."""

from __future__ import annotations

import json
from typing import Any

from homeassistant.components.sensor import SensorDeviceClass, SensorEntity, SensorStateClass
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .entity import StatecastEntity, setup_platform


async def async_setup_entry(hass: HomeAssistant, entry: ConfigEntry, async_add_entities: AddEntitiesCallback) -> None:
    setup_platform(hass, entry, async_add_entities, "sensor", StatecastSensor)


def enum_or_none(kind: Any, value: Any) -> Any:
    try:
        return kind(value) if isinstance(value, str) else None
    except ValueError:
        return None


class StatecastSensor(StatecastEntity, SensorEntity):
    platform_name = "sensor"

    def describe(self, desc: dict[str, Any]) -> None:
        self._attr_native_unit_of_measurement = desc.get("unit")
        self._attr_device_class = enum_or_none(SensorDeviceClass, desc.get("device_class"))
        self._attr_state_class = enum_or_none(SensorStateClass, desc.get("state_class"))
        if isinstance(desc.get("precision"), int):
            self._attr_suggested_display_precision = desc["precision"]

    @property
    def native_value(self) -> Any:
        value = self.read()
        if isinstance(value, dict | list):
            return json.dumps(value)[:255]
        if isinstance(value, bool):
            return "on" if value else "off"
        return value
