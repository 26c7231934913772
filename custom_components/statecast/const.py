"""Names shared by the statecast integration's modules."""

from __future__ import annotations

DOMAIN = "statecast"

CONF_POLL_INTERVAL = "poll_interval"
DEFAULT_POLL_INTERVAL = 10  # seconds between REST polls while the WebSocket is down

ENTITIES_PREFIX = "_entities/"
ENTITIES_PATTERN = "_entities/#"

PLATFORMS = [
    "binary_sensor",
    "button",
    "light",
    "media_player",
    "number",
    "select",
    "sensor",
    "switch",
]

# Sent through the dispatcher: "<signal>_<entry_id>"
SIGNAL_NEW_ENTITY = "statecast_new_entity"
