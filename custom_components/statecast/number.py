"""`number`: the value at `value` within `min`/`max`/`step` with `unit`; setting it sends
`command` with `{value}` = the number (an integer when it is whole)."""

from __future__ import annotations

from typing import Any

from homeassistant.components.number import NumberEntity, NumberMode
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .entity import StatecastEntity, setup_platform


async def async_setup_entry(hass: HomeAssistant, entry: ConfigEntry, async_add_entities: AddEntitiesCallback) -> None:
    setup_platform(hass, entry, async_add_entities, "number", StatecastNumber)


def whole(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


class StatecastNumber(StatecastEntity, NumberEntity):
    platform_name = "number"

    def describe(self, desc: dict[str, Any]) -> None:
        for field, attr, default in (("min", "native_min_value", 0), ("max", "native_max_value", 100)):
            value = desc.get(field, default)
            setattr(self, f"_attr_{attr}", float(value) if isinstance(value, int | float) else float(default))
        step = desc.get("step", 1)
        self._attr_native_step = float(step) if isinstance(step, int | float) and step > 0 else 1.0
        self._attr_native_unit_of_measurement = desc.get("unit")
        mode = desc.get("mode")
        self._attr_mode = NumberMode(mode) if mode in ("box", "slider", "auto") else NumberMode.AUTO

    @property
    def native_value(self) -> float | None:
        value = self.read()
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    async def async_set_native_value(self, value: float) -> None:
        await self.send("command", whole(value))
