"""statecast: a Python client for the statecast real-time state hub.

Asynchronous, over one WebSocket, with a local mirror of the subscribed topics::

    import statecast

    async with statecast.connect("ws://127.0.0.1:8080/ws") as hub:
        async for change in hub.subscribe("railhub/#"):
            print(change.topic, change.rev, change.state)

Synchronous, one REST request per call, for scripts::

    statecast.set("railhub/esp32-01", {"uptime": 1})
    print(statecast.get("railhub/esp32-01").state)

Layout: ``_client`` (the async client: connection, mirror, subscriptions, polling),
``_sync`` (the synchronous REST functions), ``_http`` (URLs and one blocking request),
``_types`` (changes and results), ``_errors`` (one exception class per error code),
``_json`` (merge patches and topic patterns).
"""

from ._client import Callback, Hub, Subscription, connect
from ._errors import (
    BadRequestError,
    ClosedError,
    ConflictError,
    DisconnectedError,
    ForbiddenError,
    HubError,
    HubTimeoutError,
    InternalError,
    InvalidPatternError,
    InvalidTopicError,
    NoRouteError,
    NotFoundError,
    RateLimitedError,
    StatecastError,
    TooLargeError,
    UnauthorizedError,
    UnavailableError,
    UnknownTypeError,
    UnreachableError,
    UpstreamError,
)
from ._json import JSON, apply_merge_patch, match_topic
from ._sync import command, delete, event, get, get_all, patch, set
from ._types import Change, Event, Patch, Removed, Snapshot, Stale, Status, TopicState, WriteResult

__version__ = "0.1.0"

__all__ = [
    "JSON",
    "BadRequestError",
    "Callback",
    "Change",
    "ClosedError",
    "ConflictError",
    "DisconnectedError",
    "Event",
    "ForbiddenError",
    "Hub",
    "HubError",
    "HubTimeoutError",
    "InternalError",
    "InvalidPatternError",
    "InvalidTopicError",
    "NoRouteError",
    "NotFoundError",
    "Patch",
    "RateLimitedError",
    "Removed",
    "Snapshot",
    "Stale",
    "StatecastError",
    "Status",
    "Subscription",
    "TooLargeError",
    "TopicState",
    "UnauthorizedError",
    "UnavailableError",
    "UnknownTypeError",
    "UnreachableError",
    "UpstreamError",
    "WriteResult",
    "__version__",
    "apply_merge_patch",
    "command",
    "connect",
    "delete",
    "event",
    "get",
    "get_all",
    "match_topic",
    "patch",
    "set",
]
