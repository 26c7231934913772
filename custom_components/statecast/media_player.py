"""`media_player`: `state` (playing, paused, idle, stopped, off, on), `title`, `artist` and
`volume` (0..`volume_max`, default 100) pointers; the `play`, `pause`, `stop`, `next` and
`volume_set` commands (`{value}` = the volume on the hub's scale), each offered when the
description has it."""

from __future__ import annotations

from typing import Any

from homeassistant.components.media_player import MediaPlayerEntity, MediaPlayerEntityFeature, MediaPlayerState
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .entity import StatecastEntity, setup_platform
from .number import whole

STATES = {
    "playing": MediaPlayerState.PLAYING,
    "play": MediaPlayerState.PLAYING,
    "paused": MediaPlayerState.PAUSED,
    "pause": MediaPlayerState.PAUSED,
    "idle": MediaPlayerState.IDLE,
    "stopped": MediaPlayerState.IDLE,
    "stop": MediaPlayerState.IDLE,
    "off": MediaPlayerState.OFF,
    "on": MediaPlayerState.ON,
    "buffering": MediaPlayerState.BUFFERING,
    "standby": MediaPlayerState.STANDBY,
}

FEATURES = {
    "play": MediaPlayerEntityFeature.PLAY,
    "pause": MediaPlayerEntityFeature.PAUSE,
    "stop": MediaPlayerEntityFeature.STOP,
    "next": MediaPlayerEntityFeature.NEXT_TRACK,
    "previous": MediaPlayerEntityFeature.PREVIOUS_TRACK,
    "volume_set": MediaPlayerEntityFeature.VOLUME_SET,
}


async def async_setup_entry(hass: HomeAssistant, entry: ConfigEntry, async_add_entities: AddEntitiesCallback) -> None:
    setup_platform(hass, entry, async_add_entities, "media_player", StatecastMediaPlayer)


class StatecastMediaPlayer(StatecastEntity, MediaPlayerEntity):
    platform_name = "media_player"

    def describe(self, desc: dict[str, Any]) -> None:
        features = MediaPlayerEntityFeature(0)
        for field, feature in FEATURES.items():
            if isinstance(desc.get(field), dict):
                features |= feature
        self._attr_supported_features = features
        top = desc.get("volume_max", 100)
        self._volume_max = float(top) if isinstance(top, int | float) and top > 0 else 100.0

    @property
    def state(self) -> MediaPlayerState | None:
        value = self.read("state")
        if isinstance(value, bool):
            return MediaPlayerState.ON if value else MediaPlayerState.OFF
        return STATES.get(str(value).lower()) if value is not None else None

    @property
    def media_title(self) -> str | None:
        value = self.read("title")
        return None if value is None else str(value)

    @property
    def media_artist(self) -> str | None:
        value = self.read("artist")
        return None if value is None else str(value)

    @property
    def volume_level(self) -> float | None:
        value = self.read("volume")
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        return max(0.0, min(1.0, value / self._volume_max))

    async def async_media_play(self) -> None:
        await self.send("play")

    async def async_media_pause(self) -> None:
        await self.send("pause")

    async def async_media_stop(self) -> None:
        await self.send("stop")

    async def async_media_next_track(self) -> None:
        await self.send("next")

    async def async_media_previous_track(self) -> None:
        await self.send("previous")

    async def async_set_volume_level(self, volume: float) -> None:
        level = volume * self._volume_max
        await self.send("volume_set", whole(round(level, 3)) if self._volume_max > 1 else level)
