"""The synchronous API for scripts: one REST request per call, no background work.

Every function takes ``url`` (the hub's ``http(s)://`` base URL or its ``ws://`` URL; by
default ``$STATECAST_URL`` or ``http://127.0.0.1:8080``, as for the ``statecast`` command),
``token`` (sent as ``Authorization: Bearer``) and ``timeout`` in seconds.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Sequence

from . import _entities, _history, _http
from ._history import StepArg, TimeArg
from ._json import JSON
from ._types import History, SeriesPoint, TopicState, WriteResult, topic_state

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


def history(
    topic: str,
    *,
    from_: TimeArg | None = None,
    to: TimeArg | None = None,
    fields: Sequence[str] | str | None = None,
    limit: int | None = None,
    url: str | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> History:
    """The topic's recorded changes from ``from_`` to ``to``, oldest first: a list of
    :class:`HistoryChange` (``rev``, ``time``, ``state`` or ``removed``), every page of the
    hub's read until none is left or ``limit`` changes are in (then ``.next`` is the
    ``from_`` of the rest). With ``fields`` (JSON pointers) each state is reduced to them.

    Times are a ``datetime`` (naive: UTC), a ``timedelta`` (that long before now), Unix ms,
    or a string the hub reads (RFC 3339, ``"-1h"``, ``"-7d"``).

    >>> statecast.history("micboard/SHURE001", from_=timedelta(hours=1), fields=["/battery"])  # doctest: +SKIP
    [HistoryChange(rev=17, time=datetime(...), state={'/battery': 80}, removed=False), ...]
    """
    return _history.history(
        _base(url), topic, from_=from_, to=to, fields=fields, limit=limit, token=token, timeout=timeout
    )


def series(
    topic: str,
    field: str,
    *,
    from_: TimeArg | None = None,
    to: TimeArg | None = None,
    step: StepArg | None = None,
    url: str | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> list[SeriesPoint]:
    """The numeric ``field`` (a JSON pointer such as ``"/battery"``) of the topic summed up
    per ``step`` (a ``timedelta``, ms, or ``"60s"``, ``"1m"``): one :class:`SeriesPoint`
    per step from ``from_`` to ``to``; a step before the topic existed is absent. Without
    ``from_``, the steps start at the oldest change kept."""
    return _history.series(_base(url), topic, field, from_=from_, to=to, step=step, token=token, timeout=timeout)


def state_at(
    topic: str, at: TimeArg, *, url: str | None = None, token: str | None = None, timeout: float = 10.0
) -> TopicState:
    """The topic as it was at ``at``; ``time`` is that of the change that made it.
    Raises :class:`NotFoundError` if it did not exist then, :class:`GoneError` if ``at`` is
    older than the history the hub keeps."""
    return _history.state_at(_base(url), topic, at, token=token, timeout=timeout)


def entities(*, url: str | None = None, token: str | None = None, timeout: float = 10.0) -> list[_entities.Entity]:
    """Every entity the hub holds (the topics ``_entities/<key>``), sorted by key, each with
    the current value at its pointer and whether its topic exists and is fresh: two REST
    requests, the descriptions and the topics they show.

    >>> [(e.key, e.value) for e in statecast.entities()]  # doctest: +SKIP
    [('mic_1_battery', 312)]
    """
    described = {t.topic: t.state for t in get_all(_entities.PREFIX + "+", url=url, token=token, timeout=timeout)}
    shown = {t.topic: t for t in get_all("#", url=url, token=token, timeout=timeout)}

    def state(topic: str) -> tuple[bool, JSON, bool]:
        found = shown.get(topic)
        return (found is not None, found.state if found else None, bool(found and found.stale))

    return _entities.entities(described, state)
