"""Entity descriptions (`_entities/<key>` topics) turned into Home Assistant entities.

`EntityManager` owns the config entry's `HubClient`. When an `_entities/` topic appears it
hands the description to its platform (through the dispatcher, `SIGNAL_NEW_ENTITY`), when
it changes it updates the entity (or replaces it when its platform changed), and when it
is removed it removes the entity from the entity registry, and its device once no entity
of the entry is left on it. Every other topic change is passed to the entities that read
that topic; a change of the hub's reachability to all of them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.dispatcher import async_dispatcher_send

from .const import CONF_POLL_INTERVAL, DEFAULT_POLL_INTERVAL, DOMAIN, ENTITIES_PREFIX, PLATFORMS, SIGNAL_NEW_ENTITY
from .hub import HubClient

if TYPE_CHECKING:
    from .entity import StatecastEntity

_LOGGER = logging.getLogger(__name__)


KEY = re.compile(r"[a-z0-9_]{1,64}")


def valid_description(key: str, desc: Any) -> bool:
    """What the integration needs of a description to make an entity of it (the hub
    validates the rest on write): a key that can be an entity id's object id, a platform."""
    return (
        KEY.fullmatch(key) is not None
        and isinstance(desc, dict)
        and desc.get("platform") in PLATFORMS
        and (isinstance(desc.get("topic"), str) or desc.get("platform") == "button")
    )


class EntityManager:
    """One per config entry: the hub connection and the entities made from it."""

    def __init__(self, hass: HomeAssistant, entry: ConfigEntry) -> None:
        self.hass = hass
        self.entry = entry
        self.descriptions: dict[str, dict[str, Any]] = {}  # key -> description
        self.entities: dict[str, StatecastEntity] = {}  # key -> the live entity
        self._listeners: dict[str, set[Callable[[], None]]] = {}  # topic -> entity callbacks
        self.hub = HubClient(
            async_get_clientsession(hass),
            entry.data["url"],
            entry.data.get("token"),
            entry.options.get(CONF_POLL_INTERVAL, DEFAULT_POLL_INTERVAL),
            self._topics_changed,
            self._status_changed,
        )
        self._reauth_started = False
        self._pruned = False

    def start(self) -> None:
        self.hub.start(
            lambda coro: self.entry.async_create_background_task(self.hass, coro, f"statecast {self.hub.base}")
        )

    async def stop(self) -> None:
        await self.hub.stop()

    @property
    def available(self) -> bool:
        return self.hub.reachable

    # --- entities register what they read ---

    @callback
    def listen(self, topic: str | None, update: Callable[[], None]) -> Callable[[], None]:
        key = topic or ""
        self._listeners.setdefault(key, set()).add(update)

        def remove() -> None:
            self._listeners.get(key, set()).discard(update)

        return remove

    # --- the hub's callbacks ---

    @callback
    def _status_changed(self) -> None:
        if self.hub.auth_failed and not self._reauth_started:
            self._reauth_started = True
            self.entry.async_start_reauth(self.hass)
        if self.hub.reachable and not self._pruned:
            self._pruned = True
            self._prune()
        for updates in list(self._listeners.values()):
            for update in list(updates):
                update()

    @callback
    def _topics_changed(self, topics: set[str]) -> None:
        described = False
        for topic in sorted(topics):
            if topic.startswith(ENTITIES_PREFIX):
                described = True
                self._description_changed(topic[len(ENTITIES_PREFIX) :])
        if described:
            self.hub.set_wanted({d["topic"] for d in self.descriptions.values() if isinstance(d.get("topic"), str)})
        for topic in topics:
            for update in list(self._listeners.get(topic, ())):
                update()

    @callback
    def _description_changed(self, key: str) -> None:
        held = self.hub.topics.get(ENTITIES_PREFIX + key)
        desc = held.state if held is not None else None
        if desc is not None and not valid_description(key, desc):
            _LOGGER.warning("statecast: ignoring the entity description _entities/%s: %s", key, desc)
            desc = None
        old = self.descriptions.get(key)
        if desc == old:
            return
        if desc is None:
            del self.descriptions[key]
            self._remove_entity(key, old["platform"])  # type: ignore[index]
            return
        self.descriptions[key] = desc
        entity = self.entities.get(key)
        if entity is not None and old is not None and old.get("platform") == desc.get("platform"):
            entity.set_description(desc)
            return
        if old is not None:
            self._remove_entity(key, old["platform"])
        async_dispatcher_send(self.hass, f"{SIGNAL_NEW_ENTITY}_{self.entry.entry_id}_{desc['platform']}", key, desc)

    @callback
    def _remove_entity(self, key: str, platform: str) -> None:
        entity = self.entities.pop(key, None)
        registry = er.async_get(self.hass)
        entity_id = registry.async_get_entity_id(platform, DOMAIN, f"{DOMAIN}_{key}")
        if entity_id is None:
            if entity is not None:
                self.hass.async_create_task(entity.async_remove(force_remove=True))
            return
        entry = registry.async_get(entity_id)
        registry.async_remove(entity_id)  # the entity leaves the state machine too
        if entry is not None and entry.device_id is not None:
            self._remove_device_if_empty(entry.device_id)

    @callback
    def _prune(self) -> None:
        """Once the hub's descriptions are known (the first sync or poll): removes this
        entry's entities whose description went while Home Assistant was not watching."""
        registry = er.async_get(self.hass)
        for entity in er.async_entries_for_config_entry(registry, self.entry.entry_id):
            key = (entity.unique_id or "").removeprefix(f"{DOMAIN}_")
            desc = self.descriptions.get(key)
            if desc is None or desc.get("platform") != entity.domain:
                registry.async_remove(entity.entity_id)
                if entity.device_id is not None:
                    self._remove_device_if_empty(entity.device_id)

    @callback
    def _remove_device_if_empty(self, device_id: str) -> None:
        registry = er.async_get(self.hass)
        if er.async_entries_for_device(registry, device_id, include_disabled_entities=True):
            return
        devices = dr.async_get(self.hass)
        if devices.async_get(device_id) is not None:
            devices.async_update_device(device_id, remove_config_entry_id=self.entry.entry_id)

    @callback
    def update_device(self, entity_id: str | None, desc: dict[str, Any]) -> None:
        """A changed description's device: its name, manufacturer and model updated in
        place; a device of another id takes the entity (the one left empty goes)."""
        device = desc.get("device")
        device_id = None
        if isinstance(device, dict) and "id" in device:
            device_id = (
                dr.async_get(self.hass)
                .async_get_or_create(
                    config_entry_id=self.entry.entry_id,
                    identifiers={(DOMAIN, str(device["id"]))},
                    name=device.get("name") or str(device["id"]),
                    manufacturer=device.get("manufacturer"),
                    model=device.get("model"),
                    sw_version=device.get("sw_version"),
                )
                .id
            )
        registry = er.async_get(self.hass)
        entry = registry.async_get(entity_id) if entity_id else None
        if entry is not None and entry.device_id != device_id:
            old = entry.device_id
            registry.async_update_entity(entry.entity_id, device_id=device_id)
            if old is not None:
                self._remove_device_if_empty(old)

    def diagnostics(self) -> dict[str, Any]:
        return {
            "url": self.hub.base,
            "connected": self.hub.connected,
            "reachable": self.hub.reachable,
            "auth_failed": self.hub.auth_failed,
            "last_error": self.hub.last_error,
            "connects": self.hub.connects,
            "received": dict(self.hub.received),
            "poll_interval": self.hub.poll_interval,
            "welcome": self.hub.welcome,
            "entities": {
                key: {"description": desc, "entity_id": getattr(self.entities.get(key), "entity_id", None)}
                for key, desc in sorted(self.descriptions.items())
            },
            "topics": {
                topic: {"rev": held.rev, "stale": held.stale, "state": held.state}
                for topic, held in sorted(self.hub.topics.items())
            },
        }
