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
``_history`` (the history API's parameters and answers), ``_types`` (changes, results,
history changes and series points), ``_errors`` (one exception class per error code),
``_json`` (merge patches and topic patterns).
"""

from ._client import Callback, Hub, Subscription, connect
from ._entities import Entity
from ._errors import (
    BadRequestError,
    ClosedError,
    ConflictError,
    DisconnectedError,
    ForbiddenError,
    GoneError,
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
from ._history import StepArg, TimeArg
from ._json import JSON, apply_merge_patch, match_topic
from ._sync import command, delete, entities, event, get, get_all, history, patch, series, set, state_at
from ._types import (
    Change,
    Event,
    History,
    HistoryChange,
    Patch,
    Removed,
    SeriesPoint,
    Snapshot,
    Stale,
    Status,
    TopicState,
    WriteResult,
)

__version__ = "0.1.0"

__all__ = [
    "JSON",
    "BadRequestError",
    "Callback",
    "Change",
    "ClosedError",
    "ConflictError",
    "DisconnectedError",
    "Entity",
    "Event",
    "ForbiddenError",
    "GoneError",
    "History",
    "HistoryChange",
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
    "SeriesPoint",
    "Snapshot",
    "Stale",
    "StatecastError",
    "Status",
    "StepArg",
    "Subscription",
    "TimeArg",
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
    "entities",
    "event",
    "get",
    "get_all",
    "history",
    "match_topic",
    "patch",
    "series",
    "set",
    "state_at",
]
