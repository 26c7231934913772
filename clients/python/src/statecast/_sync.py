"""The synchronous API for scripts: one REST request per call, no background work.

Every function takes ``url`` (the hub's ``http(s)://`` base URL or its ``ws://`` URL; by
default ``$STATECAST_URL`` or ``http://127.0.0.1:8080``, as for the ``statecast`` command),
``token`` (sent as ``Authorization: Bearer``) and ``timeout`` in seconds.
"""

from __future__ import annotations

import os
import urllib.parse
from datetime import datetime, timezone

from . import _http
from ._json import JSON
from ._types import TopicState, WriteResult

DEFAULT_URL = "http://127.0.0.1:8080"


def _base(url: str | None) -> str:
    return _http.derive_urls(url or os.environ.get("STATECAST_URL") or DEFAULT_URL).http


def _if_match(if_rev: int | None) -> dict[str, str]:
    return {} if if_rev is None else {"If-Match": f'"{if_rev}"'}


def write_result(topic: str, body: JSON) -> WriteResult:
    """A ``WriteResult`` from a REST or WebSocket answer (``changed`` defaults to true, as
    for ``DELETE``, whose answer has no ``changed``)."""
    body = body if isinstance(body, dict) else {}
    rev = body.get("rev")
    changed = body.get("changed", True)
    return WriteResult(
        topic=body.get("topic", topic) if isinstance(body.get("topic"), str) else topic,
        rev=rev if isinstance(rev, int) else 0,
        changed=changed if isinstance(changed, bool) else True,
    )


def topic_state(item: JSON) -> TopicState:
    item = item if isinstance(item, dict) else {}
    return TopicState(
        topic=str(item.get("topic", "")),
        rev=int(item.get("rev", 0)),
        state=item.get("state"),
        time=parse_time(item.get("time")),
        stale=item.get("stale") is True,
    )


def parse_time(value: JSON) -> datetime | None:
    """A time the hub sent (RFC 3339, ``2026-12-06T21:00:00.120Z``), ``None`` if absent or
    not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00", 1) if value.endswith("Z") else value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def get(topic: str, *, url: str | None = None, token: str | None = None, timeout: float = 10.0) -> TopicState:
    """The topic's current state and rev. Raises :class:`NotFoundError` if it does not exist.

    >>> statecast.get("railhub/esp32-01").state  # doctest: +SKIP
    {'uptime': 1, 'outputs': [0, 1, 0]}
    """
    res = _http.request("GET", f"{_base(url)}/api/state/{_http.topic_path(topic)}", token=token, timeout=timeout)
    return topic_state(_http.checked(res))


def get_all(
    pattern: str = "#", *, url: str | None = None, token: str | None = None, timeout: float = 10.0
) -> list[TopicState]:
    """Every topic matching ``pattern`` (``+`` one segment, a final ``#`` the rest), sorted."""
    query = urllib.parse.urlencode({"match": pattern})
    res = _http.request("GET", f"{_base(url)}/api/state?{query}", token=token, timeout=timeout)
    body = _http.checked(res)
    topics = body.get("topics") if isinstance(body, dict) else None
    return [topic_state(item) for item in (topics if isinstance(topics, list) else [])]


def set(
    topic: str,
    state: JSON,
    *,
    if_rev: int | None = None,
    url: str | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> WriteResult:
    """Replaces the topic's state. With ``if_rev``, only if the topic is at that rev
    (else :class:`ConflictError`)."""
    res = _http.request(
        "PUT",
        f"{_base(url)}/api/state/{_http.topic_path(topic)}",
        body=state,
        headers=_if_match(if_rev),
        token=token,
        timeout=timeout,
    )
    return write_result(topic, _http.checked(res))


def patch(
    topic: str,
    patch: JSON,
    *,
    if_rev: int | None = None,
    url: str | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> WriteResult:
    """Applies an RFC 7396 merge patch (creating the topic from ``{}`` if it is missing)."""
    res = _http.request(
        "PATCH",
        f"{_base(url)}/api/state/{_http.topic_path(topic)}",
        body=patch,
        headers=_if_match(if_rev),
        token=token,
        timeout=timeout,
    )
    return write_result(topic, _http.checked(res))


def delete(
    topic: str,
    *,
    if_rev: int | None = None,
    url: str | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> WriteResult:
    """Removes the topic. Raises :class:`NotFoundError` if it does not exist."""
    res = _http.request(
        "DELETE",
        f"{_base(url)}/api/state/{_http.topic_path(topic)}",
        headers=_if_match(if_rev),
        token=token,
        timeout=timeout,
    )
    return write_result(topic, _http.checked(res))


def event(topic: str, data: JSON, *, url: str | None = None, token: str | None = None, timeout: float = 10.0) -> None:
    """Publishes an event to the topic's current subscribers."""
    res = _http.request(
        "POST", f"{_base(url)}/api/events/{_http.topic_path(topic)}", body=data, token=token, timeout=timeout
    )
    _http.checked(res)


def command(
    target: str,
    name: str,
    args: JSON = None,
    *,
    url: str | None = None,
    token: str | None = None,
    timeout: float = 30.0,
) -> JSON:
    """Sends a command along the hub's route for ``target`` and returns the answer; for an
    ``http`` route ``{"status": 200, "body": <the device's answer>}``. A device's refusal is
    :class:`UpstreamError` with its ``status`` and ``body``."""
    res = _http.request(
        "POST",
        f"{_base(url)}/api/commands/{_http.topic_path(target)}",
        body={"name": name, "args": {} if args is None else args},
        token=token,
        timeout=timeout,
    )
    return _http.checked(res)
