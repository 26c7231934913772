"""The values the client hands out: changes of subscribed topics, topic states, write results,
the history API's changes and points; and the readers of the hub's times and topic states."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal, TypeAlias

from ._json import JSON


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A topic's whole state: the first one a subscription gets, a re-creation, a change a
    merge patch cannot express, or a re-sync after a gap or a poll. ``stale`` is true when the
    topic is stale (see :class:`Stale`)."""

    topic: str
    rev: int
    state: JSON
    stale: bool = False
    type: Literal["snapshot"] = field(default="snapshot", init=False)


@dataclass(frozen=True, slots=True)
class Patch:
    """A change applied as an RFC 7396 merge patch: ``patch`` holds only what changed,
    ``state`` is the topic's state after it."""

    topic: str
    rev: int
    state: JSON
    patch: JSON
    type: Literal["patch"] = field(default="patch", init=False)


@dataclass(frozen=True, slots=True)
class Removed:
    """The topic was deleted (``state`` is ``None``)."""

    topic: str
    rev: int
    state: None = field(default=None, init=False)
    type: Literal["removed"] = field(default="removed", init=False)


@dataclass(frozen=True, slots=True)
class Event:
    """A one-off event published on the topic. ``rev`` and ``state`` are the client's copy
    of the topic at that moment (``None`` if it holds no state)."""

    topic: str
    data: JSON
    rev: int | None = None
    state: JSON = None
    type: Literal["event"] = field(default="event", init=False)


@dataclass(frozen=True, slots=True)
class Stale:
    """The topic turned stale (``stale`` true: it was not written within its policy's
    ``stale_after``, or a source marked it because its device is gone) or fresh again
    (``stale`` false: a write came, which counts even when it changed nothing; sent before
    the patch of that write, if it made one). ``state`` and ``rev`` are unchanged; ``since``
    is the time of the topic's last write (UTC), ``None`` when the hub did not say (a poll)."""

    topic: str
    rev: int
    state: JSON
    stale: bool
    since: datetime | None = None
    type: Literal["stale"] = field(default="stale", init=False)


#: What a subscription yields; tell them apart with ``isinstance``, ``match`` or ``.type``.
Change: TypeAlias = Snapshot | Patch | Removed | Event | Stale

#: The client's connection status.
Status: TypeAlias = Literal["connecting", "open", "resyncing", "polling", "closed"]


@dataclass(frozen=True, slots=True)
class TopicState:
    """A topic as the REST API returns it: ``time`` is when it last changed (UTC; ``None``
    from a hub that does not say; left out of ``==``, which compares what the topic holds),
    ``stale`` whether it is stale (see :class:`Stale`)."""

    topic: str
    rev: int
    state: JSON
    time: datetime | None = field(default=None, compare=False)
    stale: bool = False


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The hub's answer to ``set``, ``patch`` or ``delete``: the topic's rev after the write
    and whether it changed anything (a write that changes nothing gets no new rev)."""

    topic: str
    rev: int
    changed: bool


@dataclass(frozen=True, slots=True)
class HistoryChange:
    """One recorded change of a topic: ``state`` is the state after it (with ``fields``,
    ``{"/battery": 80, ...}``, a missing field absent), or ``removed`` is true (and
    ``state`` ``None``) for its removal. ``time`` is when the hub recorded it (UTC)."""

    rev: int
    time: datetime
    state: JSON = None
    removed: bool = False


class History(list[HistoryChange]):
    """What ``history`` returns: a list of the changes, oldest first. ``next`` is set when
    ``limit`` stopped the reading before the end: pass it as ``from_`` (with the same
    ``to``) for the rest; ``None`` when every change is in."""

    def __init__(self, changes: list[HistoryChange], next: str | None = None) -> None:  # noqa: A002
        super().__init__(changes)
        self.next = next


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One step of a series of a numeric field, a level held until it changes: ``t`` the
    step's start (UTC), ``min`` and ``max`` over the values held during the step, ``avg``
    weighted by how long each was held, ``last`` the value at the step's end (carried
    forward from earlier steps), ``changes`` the writes in the step."""

    t: datetime
    min: float | None
    max: float | None
    avg: float | None
    last: float | None
    changes: int


def topic_state(item: JSON) -> TopicState:
    """A :class:`TopicState` from the REST answer about a topic."""
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
