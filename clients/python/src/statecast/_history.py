"""The history API over REST: the query parameters from Python values, one blocking call
per function, and the typed answers.

``GET /api/history/{topic}`` gives a topic's recorded changes (page after page, each
``next`` asked for as the following ``from``) or, with ``field`` and ``step``, a numeric
field summed up per step; ``GET /api/state/{topic}?at=`` the state as it was at a time. The
synchronous API calls these directly, the async client in a worker thread.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TypeAlias

from . import _http
from ._errors import InternalError
from ._json import JSON
from ._types import History, HistoryChange, SeriesPoint, TopicState, parse_time, topic_state

#: A time for the history API: a ``datetime`` (a naive one is taken as UTC), a
#: ``timedelta`` (that long before now, on the hub's clock), an ``int`` or ``float`` of
#: Unix milliseconds, or a string the hub reads (RFC 3339, Unix ms, ``-1h``, ``-90s``, ``-7d``).
TimeArg: TypeAlias = datetime | timedelta | int | float | str

#: A series' step: a ``timedelta``, an ``int`` of milliseconds, or a duration (``"60s"``, ``"1m"``).
StepArg: TypeAlias = timedelta | int | str

#: The most changes one request may ask for (the hub's cap).
PAGE_MAX = 100_000


def _duration(ms: int) -> str:
    """Whole milliseconds as the hub's duration: in seconds when they are whole (``90s``)."""
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _whole_ms(delta: timedelta) -> int:
    return delta // timedelta(milliseconds=1)


def time_param(value: TimeArg, name: str = "time") -> str:
    """A time as the hub's query parameter."""
    if isinstance(value, bool):
        raise TypeError(f"statecast: {name} must be a datetime, timedelta, Unix ms or string, not a bool")
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        return aware.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, timedelta):
        # How long before now: `timedelta(hours=1)` and `-timedelta(hours=1)` both mean `-1h`.
        return "-" + _duration(abs(_whole_ms(value)))
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"statecast: {name} must be a finite number of Unix ms")
        return str(int(value))
    if isinstance(value, str):
        return value
    raise TypeError(f"statecast: {name} must be a datetime, timedelta, Unix ms or string, not {type(value).__name__}")


def step_param(value: StepArg) -> str:
    """A series' step as the hub's query parameter."""
    if isinstance(value, bool):
        raise TypeError("statecast: step must be a timedelta, ms or a duration string, not a bool")
    if isinstance(value, timedelta):
        ms = _whole_ms(value)
    elif isinstance(value, int):
        ms = value
    elif isinstance(value, str):
        return value
    else:
        raise TypeError(f"statecast: step must be a timedelta, ms or a duration string, not {type(value).__name__}")
    if ms <= 0:
        raise ValueError("statecast: step must be at least 1 ms")
    return _duration(ms)


def _url(base: str, kind: str, topic: str, params: dict[str, str | None]) -> str:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    return f"{base}/api/{kind}/{_http.topic_path(topic)}" + (f"?{query}" if query else "")


def _time(value: JSON, what: str) -> datetime:
    parsed = parse_time(value)
    if parsed is None:
        raise InternalError(f"the hub's answer has {what} without a valid time: {value!r}")
    return parsed


def _number(value: JSON) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def history_change(item: JSON) -> HistoryChange:
    item = item if isinstance(item, dict) else {}
    rev = item.get("rev")
    return HistoryChange(
        rev=rev if isinstance(rev, int) else 0,
        time=_time(item.get("time"), "a change"),
        state=item.get("state"),
        removed=item.get("removed") is True,
    )


def series_point(item: JSON) -> SeriesPoint:
    item = item if isinstance(item, dict) else {}
    t = item.get("t")
    if not isinstance(t, int) or isinstance(t, bool):
        raise InternalError(f"the hub's answer has a point without a valid t: {t!r}")
    changes = item.get("changes")
    return SeriesPoint(
        t=datetime.fromtimestamp(t / 1000, timezone.utc),
        min=_number(item.get("min")),
        max=_number(item.get("max")),
        avg=_number(item.get("avg")),
        last=_number(item.get("last")),
        changes=changes if isinstance(changes, int) else 0,
    )


def history(
    base: str,
    topic: str,
    *,
    from_: TimeArg | None = None,
    to: TimeArg | None = None,
    fields: Sequence[str] | str | None = None,
    limit: int | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> History:
    """The topic's recorded changes, oldest first, every page followed until none is left
    or ``limit`` changes are in (then :attr:`History.next` says where the rest begins)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError("statecast: limit must be a whole number of at least 1")
    params: dict[str, str | None] = {
        "from": None if from_ is None else time_param(from_, "from_"),
        "to": None if to is None else time_param(to, "to"),
        "fields": None if fields is None else fields if isinstance(fields, str) else ",".join(fields),
    }
    changes: list[HistoryChange] = []
    while True:
        remaining = None if limit is None else limit - len(changes)
        params["limit"] = None if remaining is None else str(min(remaining, PAGE_MAX))
        body = _http.checked(_http.request("GET", _url(base, "history", topic, params), token=token, timeout=timeout))
        page = body.get("changes") if isinstance(body, dict) else None
        got = page if isinstance(page, list) else []
        changes.extend(history_change(item) for item in got[:remaining])
        after = body.get("next") if isinstance(body, dict) else None
        next_from = after if isinstance(after, str) else None
        # An empty page with a `next` would never end: stop there, keeping the `next`.
        if next_from is None or not got or (limit is not None and len(changes) >= limit):
            return History(changes, next_from)
        params["from"] = next_from


def series(
    base: str,
    topic: str,
    field: str,
    *,
    from_: TimeArg | None = None,
    to: TimeArg | None = None,
    step: StepArg | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> list[SeriesPoint]:
    """The numeric ``field`` (a JSON pointer) of the topic, one point per step."""
    params: dict[str, str | None] = {
        "field": field,
        "step": None if step is None else step_param(step),
        "from": None if from_ is None else time_param(from_, "from_"),
        "to": None if to is None else time_param(to, "to"),
    }
    body = _http.checked(_http.request("GET", _url(base, "history", topic, params), token=token, timeout=timeout))
    points = body.get("points") if isinstance(body, dict) else None
    return [series_point(item) for item in (points if isinstance(points, list) else [])]


def state_at(base: str, topic: str, at: TimeArg, *, token: str | None = None, timeout: float = 10.0) -> TopicState:
    """The topic as it was at ``at``."""
    url = _url(base, "state", topic, {"at": time_param(at, "at")})
    return topic_state(_http.checked(_http.request("GET", url, token=token, timeout=timeout)))
