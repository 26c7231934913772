"""`light`: on while the value at `value` is true; `brightness` points at its brightness
(0..`brightness_scale`, default 255). Turning it on sends `command` with `{value}` = true,
or, when a brightness is asked for and the description has `brightness_command`, that
command with `{value}` = the brightness on the hub's scale; off sends `command` with false."""

from __future__ import annotations

from typing import Any

from homeassistant.components.light import ATTR_BRIGHTNESS, ColorMode, LightEntity
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .entity import StatecastEntity, as_bool, setup_platform


async def async_setup_entry(hass: HomeAssistant, entry: ConfigEntry, async_add_entities: AddEntitiesCallback) -> None:
    setup_platform(hass, entry, async_add_entities, "light", StatecastLight)


class StatecastLight(StatecastEntity, LightEntity):
    platform_name = "light"

    def describe(self, desc: dict[str, Any]) -> None:
        dims = "brightness" in desc or "brightness_command" in desc
        mode = ColorMode.BRIGHTNESS if dims else ColorMode.ONOFF
        self._attr_color_mode = mode
        self._attr_supported_color_modes = {mode}
        scale = desc.get("brightness_scale", 255)
        self._scale = float(scale) if isinstance(scale, int | float) and scale > 0 else 255.0

    @property
    def is_on(self) -> bool | None:
        return as_bool(self.read())

    @property
    def brightness(self) -> int | None:
        value = self.read("brightness")
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        return max(0, min(255, round(value * 255 / self._scale)))

    async def async_turn_on(self, **kwargs: Any) -> None:
        if ATTR_BRIGHTNESS in kwargs and "brightness_command" in self.desc:
            level = kwargs[ATTR_BRIGHTNESS] * self._scale / 255
            await self.send("brightness_command", round(level) if self._scale >= 10 else level)
        else:
            await self.send("command", True)

    async def async_turn_off(self, **kwargs: Any) -> None:
        await self.send("command", False)
