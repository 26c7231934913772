"""The base of every statecast entity: its description, its topic's state, its commands.

An entity reads the state of its description's `topic` (held by the entry's `HubClient`)
through JSON pointers, is available while the hub is reachable and the topic is present
and fresh, and sends the description's commands with `{value}` filled in. Each platform
module adds only what its Home Assistant entity type needs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .const import DOMAIN, SIGNAL_NEW_ENTITY
from .hub import HubError
from .manager import EntityManager

_LOGGER = logging.getLogger(__name__)
_MISSING = object()


def resolve_pointer(doc: Any, pointer: Any) -> Any:
    """RFC 6901; None when the pointer is not a string or names nothing."""
    if not isinstance(pointer, str):
        return None
    if pointer == "":
        return doc
    if not pointer.startswith("/"):
        return None
    for raw in pointer[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(doc, dict):
            doc = doc.get(part, _MISSING)
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return None
        if doc is _MISSING:
            return None
    return doc


def fill_value(template: Any, value: Any) -> Any:
    """`args` with every `"{value}"` replaced by the JSON value (inside a longer string, by
    its JSON text, or the string itself)."""
    if isinstance(template, str):
        if template == "{value}":
            return value
        if "{value}" in template:
            text = value if isinstance(value, str) else json.dumps(value)
            return template.replace("{value}", text)
        return template
    if isinstance(template, dict):
        return {k: fill_value(v, value) for k, v in template.items()}
    if isinstance(template, list):
        return [fill_value(v, value) for v in template]
    return template


def as_bool(value: Any) -> bool | None:
    """A state value as on/off: booleans, numbers, and on/off-like strings."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("on", "true", "1", "yes", "open", "active", "playing", "home"):
            return True
        if text in ("off", "false", "0", "no", "closed", "inactive", "idle", "stopped", "", "not_home"):
            return False
        return None
    return bool(value)


def setup_platform(
    hass: HomeAssistant,
    entry: ConfigEntry,
    async_add_entities: AddEntitiesCallback,
    platform: str,
    make: Callable[[EntityManager, str, dict[str, Any]], StatecastEntity],
) -> None:
    """Adds an entity of this platform for each description the manager hands over."""
    manager: EntityManager = hass.data[DOMAIN][entry.entry_id]

    @callback
    def add(key: str, desc: dict[str, Any]) -> None:
        entity = make(manager, key, desc)
        manager.entities[key] = entity
        async_add_entities([entity])

    entry.async_on_unload(async_dispatcher_connect(hass, f"{SIGNAL_NEW_ENTITY}_{entry.entry_id}_{platform}", add))


class StatecastEntity(Entity):
    """An entity described by `_entities/<key>`."""

    _attr_should_poll = False
    platform_name: str = ""

    def __init__(self, manager: EntityManager, key: str, desc: dict[str, Any]) -> None:
        self.manager = manager
        self.key = key
        self.desc = desc
        self._attr_unique_id = f"{DOMAIN}_{key}"
        self.entity_id = f"{self.platform_name}.{key}"  # on first registration
        self._unlisten: Callable[[], None] | None = None
        self._apply_description()

    # --- the description ---

    def _apply_description(self) -> None:
        desc = self.desc
        self._attr_name = desc.get("name") or self.key
        if isinstance(desc.get("icon"), str):
            self._attr_icon = desc["icon"]
        device = desc.get("device")
        if isinstance(device, dict) and "id" in device:
            self._attr_device_info = DeviceInfo(
                identifiers={(DOMAIN, str(device["id"]))},
                name=device.get("name") or str(device["id"]),
                manufacturer=device.get("manufacturer"),
                model=device.get("model"),
                sw_version=device.get("sw_version"),
            )
        else:
            self._attr_device_info = None
        self.describe(desc)

    def describe(self, desc: dict[str, Any]) -> None:
        """Platform-specific fields of the description (units, options, ...)."""

    @callback
    def set_description(self, desc: dict[str, Any]) -> None:
        """The description changed, same platform: re-read it, re-listen, update."""
        old_topic = self.desc.get("topic")
        self.desc = desc
        self._apply_description()
        if self.hass is None:
            return
        self.manager.update_device(self.entity_id, desc)
        if desc.get("topic") != old_topic and self._unlisten is not None:
            self._unlisten()
            self._unlisten = self.manager.listen(desc.get("topic"), self._topic_changed)
        self._topic_changed()

    # --- the state ---

    @property
    def topic_state(self) -> Any:
        held = self.manager.hub.topics.get(self.desc.get("topic", ""))
        return None if held is None else held.state

    def read(self, field: str = "value") -> Any:
        """The value the description's pointer `field` names in the topic's state."""
        pointer = self.desc.get(field)
        if pointer is None:
            return None
        return resolve_pointer(self.topic_state, pointer)

    @property
    def available(self) -> bool:
        if not self.manager.available:
            return False
        topic = self.desc.get("topic")
        if topic is None:  # a button without a topic
            return True
        held = self.manager.hub.topics.get(topic)
        return held is not None and not held.stale

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        attributes = self.desc.get("attributes")
        if not isinstance(attributes, dict):
            return None
        return {name: self.read_pointer(pointer) for name, pointer in attributes.items()}

    def read_pointer(self, pointer: Any) -> Any:
        return resolve_pointer(self.topic_state, pointer)

    async def async_added_to_hass(self) -> None:
        self._unlisten = self.manager.listen(self.desc.get("topic"), self._topic_changed)

    async def async_will_remove_from_hass(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        if self.manager.entities.get(self.key) is self:
            del self.manager.entities[self.key]

    @callback
    def _topic_changed(self) -> None:
        if self.hass is None or self.entity_id is None:
            return
        try:
            self.async_write_ha_state()
        except Exception:  # a value Home Assistant refuses (text for a numeric sensor)
            _LOGGER.exception("statecast: %s cannot show the state of %s", self.entity_id, self.desc.get("topic"))

    # --- commands ---

    async def send(self, field: str, value: Any = None) -> Any:
        """Sends the description's command `field` with `{value}` filled in; a refusal is
        a HomeAssistantError."""
        command = self.desc.get(field)
        if not isinstance(command, dict) or not isinstance(command.get("target"), str):
            raise HomeAssistantError(f"{self.entity_id} has no {field} command")
        args = fill_value(command.get("args", {}), value)
        try:
            return await self.manager.hub.command(command["target"], str(command.get("name", "")), args)
        except HubError as err:
            raise HomeAssistantError(
                f"statecast command {command.get('name')} to {command['target']} failed: {err}"
            ) from err
