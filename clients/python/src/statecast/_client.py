"""The asynchronous client: one WebSocket to the hub, a local mirror kept by rev.

Layout of this file:

- :class:`Subscription`: what ``hub.subscribe`` returns; an async iterator of changes (or
  the driver of a callback), fed through its own queue.
- :class:`Hub`: the connection. ``_run`` reconnects forever with exponential backoff and
  full jitter; ``_serve`` runs one WebSocket session (a reader, a writer fed by an outbox
  queue, and a pinger that also drops a silent socket); ``_handle`` applies one hub message
  to the mirror and hands the change to the subscriptions; ``_poll_loop`` reads the state
  over REST while the socket is down.

Everything runs on one event loop; nothing here is thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import Any, TypeAlias, TypeVar

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State

from . import _entities, _history, _http, _sync, _types
from ._entities import Entity
from ._errors import ClosedError, DisconnectedError, StatecastError, error_from
from ._history import StepArg, TimeArg
from ._json import JSON, apply_merge_patch, match_topic
from ._types import Change, Event, Patch, Removed, Snapshot, Stale, Status, WriteResult, parse_time

log = logging.getLogger("statecast")

#: A callback for :meth:`Hub.subscribe`: a plain function or a coroutine function.
Callback: TypeAlias = Callable[[Change], Awaitable[None] | None]

Message: TypeAlias = dict[str, Any]

_T = TypeVar("_T")

# A connection that stayed open this long resets the backoff; one that keeps dropping
# sooner (a hub that accepts and then closes) backs off further each time.
_STABLE_AFTER = 10.0
_MAX_EXPONENT = 60


@dataclass(slots=True)
class _Local:
    rev: int
    state: JSON
    stale: bool = False
    since: datetime | None = None  # the last write's time, when stale and the hub said


def _staleness(local: _Local | None, stale: bool) -> datetime | None:
    """The ``since`` to keep for a topic a snapshot or a poll says is (not) ``stale``: they
    carry no time, so the one a ``stale`` message gave is kept while the topic stays stale."""
    return local.since if stale and local is not None and local.stale else None


@dataclass(slots=True)
class _Pattern:
    """One subscribed pattern: how many subscriptions share it, whether it was in sync once."""

    count: int = 0
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    error: StatecastError | None = None


@dataclass(slots=True)
class _Stop:
    """Ends a subscription's queue, with the error that ended it if any."""

    error: StatecastError | None = None


@dataclass(slots=True, eq=False)
class _Entry:
    """A subscription as the hub sees it (no reference back to the Subscription, so an
    iterator that is dropped can be collected and unsubscribed)."""

    pattern: str
    queue: asyncio.Queue[Change | _Stop]
    keep: bool = True  # False: a mirror-only subscription, which takes no changes
    active: bool = True

    def put(self, item: Change | _Stop) -> None:
        if not self.keep and not isinstance(item, _Stop):
            return
        with contextlib.suppress(RuntimeError):  # the event loop is gone
            self.queue.put_nowait(item)


class _Session:
    """One open WebSocket."""

    def __init__(self, ws: ClientConnection, now: float) -> None:
        self.ws = ws
        self.outbox: asyncio.Queue[str] = asyncio.Queue()
        self.last_message_at = now
        self.aborted = False  # dropped by the ping watchdog: no closing handshake


def _release_collected(hub: Hub, entry: _Entry, loop: asyncio.AbstractEventLoop | None) -> None:
    """Releases a collected iterator's subscription on its event loop's thread (a garbage
    collection may run anywhere, e.g. in a REST worker thread)."""
    if loop is None:
        hub._release(entry)
        return
    with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to release
        loop.call_soon_threadsafe(hub._release, entry)


class Subscription:
    """The changes of the topics matching one pattern.

    Iterate over it (``async for change in hub.subscribe("dev/#")``) unless it was created
    with a callback. It starts with a :class:`Snapshot` of each matching topic, then yields
    every :class:`Patch`, :class:`Removed`, :class:`Event` and :class:`Stale` in order; after a reconnect it
    goes on where it stopped. It ends when the hub client is closed, and raises the hub's
    error (e.g. :class:`InvalidPatternError`) if the hub refuses the pattern.

    Close it with :meth:`close` or use it as ``async with``. An iterator that is dropped
    (``break``) is closed when it is garbage-collected; subscriptions with a callback and
    those of :meth:`Hub.mirror` last until they are closed or the client is.
    """

    def __init__(
        self, hub: Hub, pattern: str, pstate: _Pattern, callback: Callback | None, *, iterate: bool = True
    ) -> None:
        self.pattern = pattern
        self._hub = hub
        self._pstate = pstate
        self._iterate = iterate and callback is None
        self._done = False
        self._entry = _Entry(pattern, asyncio.Queue(), keep=iterate or callback is not None)
        self._finalizer: weakref.finalize[[Hub, _Entry, asyncio.AbstractEventLoop | None], Subscription] | None = None
        if self._iterate:
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            self._finalizer = weakref.finalize(self, _release_collected, hub, self._entry, loop)
            self._finalizer.atexit = False
        self._task: asyncio.Task[None] | None = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Change:
        if not self._iterate:
            raise TypeError("statecast: only a subscription without a callback can be iterated")
        if self._done:
            raise StopAsyncIteration
        item = await self._entry.queue.get()
        if isinstance(item, _Stop):
            self._done = True
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    async def ready(self) -> None:
        """Returns once the hub has brought this pattern in sync (its ``result`` to the
        subscribe, or a successful poll): the mirror then holds every matching topic.
        Raises the hub's error if it refused the pattern, :class:`ClosedError` if the client
        was closed first. Wrap it in ``asyncio.wait_for`` to bound the wait."""
        await self._pstate.synced.wait()
        if self._pstate.error is not None:
            raise self._pstate.error

    def close(self) -> None:
        """Stops the subscription: no more changes; the pattern is unsubscribed once no
        other subscription uses it. Changes not yet consumed are dropped."""
        if self._finalizer is not None:
            self._finalizer.detach()
        self._hub._release(self._entry)
        queue = self._entry.queue
        while not queue.empty():
            queue.get_nowait()
        self._entry.put(_Stop())

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def _consume(self, callback: Callback) -> None:
        queue = self._entry.queue
        while True:
            item = await queue.get()
            if isinstance(item, _Stop):  # a refused pattern was reported already
                return
            try:
                result = callback(item)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # a callback's failure is reported, the stream goes on
                self._hub._report(exc)


class Hub:
    """A connection to a statecast hub; create it with :func:`connect`.

    Use it as ``async with statecast.connect(url) as hub:`` (or call :meth:`start` and
    :meth:`aclose`). See the package README for the options.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        backoff_min: float = 0.5,
        backoff_max: float = 30.0,
        ping_interval: float = 15.0,
        poll_interval: float | None = 10.0,
        poll_after_failures: int = 3,
        open_timeout: float = 10.0,
        rest_timeout: float = 10.0,
    ) -> None:
        self._urls = _http.derive_urls(url)
        self._token = token
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._ping_interval = ping_interval
        self._poll_interval = poll_interval
        self._poll_after_failures = poll_after_failures
        self._open_timeout = open_timeout
        self._rest_timeout = rest_timeout

        self._entries: list[_Entry] = []
        self._patterns: dict[str, _Pattern] = {}
        self._mirror: dict[str, _Local] = {}
        self._resyncing: set[str] = set()
        self._resync_gets: dict[int, str] = {}  # id of a `get` -> its topic
        self._subscribe_ids: dict[int, list[str]] = {}  # id of a `subscribe` -> its patterns
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._etags: dict[str, str] = {}
        self._status_listeners: list[Callable[[Status], None]] = []
        self._error_listeners: list[Callable[[Exception], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()

        self._status: Status = "connecting"
        self._closed = False
        self._session: _Session | None = None
        self._runner: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._next_id = 1
        self._random = random.Random()

        # Test hooks, not API: `_incoming(msg)` returning False drops a message from the
        # hub before it is handled; `_outgoing(msg)` sees every message sent.
        self._incoming: Callable[[Message], bool] | None = None
        self._outgoing: Callable[[Message], None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Hub:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def start(self) -> None:
        """Starts connecting (in the background: the call does not wait for the socket)."""
        if self._closed:
            raise ClosedError("the client is closed")
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="statecast")

    async def aclose(self) -> None:
        """Closes the socket, stops polling, ends every subscription. Requests still waiting
        fail with :class:`ClosedError`."""
        if self._closed:
            return
        self._closed = True
        self._stop_polling()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        for entry in list(self._entries):
            entry.put(_Stop())
        for pstate in self._patterns.values():
            if not pstate.synced.is_set():
                pstate.error = ClosedError("the client was closed before the pattern was in sync")
                pstate.synced.set()
        current = asyncio.current_task()
        consumers = [t for t in self._tasks if t is not current]
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        self._update_status()

    # ------------------------------------------------------------------ public API

    @property
    def status(self) -> Status:
        """``connecting``, ``open``, ``resyncing`` (a topic is re-read after a gap),
        ``polling`` (the socket is down, the state is read over REST) or ``closed``."""
        return self._status

    @property
    def ws_url(self) -> str:
        return self._urls.ws

    @property
    def http_url(self) -> str:
        return self._urls.http

    def subscribe(self, pattern: str, callback: Callback | None = None) -> Subscription:
        """Subscribes to the topics matching ``pattern`` (``+`` one segment, a final ``#``
        the rest).

        Without ``callback``, iterate over the result. With one, it is called with every
        change, in order and one at a time (an async callback is awaited before the next
        change); exceptions it raises are reported (see :meth:`on_error`). Several
        subscriptions may share a pattern: the hub is asked once. Topics already mirrored
        come first, as snapshots.
        """
        return self._subscribe(pattern, callback, iterate=True)

    def mirror(self, pattern: str) -> Subscription:
        """Keeps the topics matching ``pattern`` in the local mirror (:meth:`state`,
        :meth:`states`) without handing out their changes: for services that answer from
        the mirror. ``await sub.ready()`` waits until it is in sync; it lasts until it is
        closed or the client is."""
        return self._subscribe(pattern, None, iterate=False)

    def _subscribe(self, pattern: str, callback: Callback | None, *, iterate: bool) -> Subscription:
        if not isinstance(pattern, str):
            raise TypeError("statecast: the pattern must be a string")
        if self._closed:
            raise ClosedError("the client is closed")
        pstate = self._patterns.get(pattern)
        first = pstate is None
        if pstate is None:
            pstate = self._patterns[pattern] = _Pattern()
        pstate.count += 1
        sub = Subscription(self, pattern, pstate, callback, iterate=iterate)
        self._entries.append(sub._entry)
        if first:
            self._send_subscribe(pattern)
        for topic, local in self._mirror.items():
            if match_topic(pattern, topic):
                sub._entry.put(Snapshot(topic, local.rev, local.state, local.stale))
        if callback is not None:
            task = asyncio.get_running_loop().create_task(sub._consume(callback))
            sub._task = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return sub

    def state(self, topic: str) -> JSON:
        """The mirrored state of a subscribed topic, ``None`` if the client holds none.
        Treat it as read-only: the client replaces states, it never changes them in place."""
        local = self._mirror.get(topic)
        return local.state if local is not None else None

    def rev(self, topic: str) -> int | None:
        """The mirrored rev of a subscribed topic."""
        local = self._mirror.get(topic)
        return local.rev if local is not None else None

    def is_stale(self, topic: str) -> bool:
        """Whether a mirrored topic is stale: not written within its policy's
        ``stale_after``, or marked by a source whose device is gone (false for a topic the
        client does not hold)."""
        local = self._mirror.get(topic)
        return local is not None and local.stale

    def stale_since(self, topic: str) -> datetime | None:
        """Since when a mirrored topic is stale (the time of its last write, UTC); ``None``
        for a fresh one, and when only a snapshot or a poll said it is stale (they carry no
        time)."""
        local = self._mirror.get(topic)
        return local.since if local is not None and local.stale else None

    def topics(self, pattern: str = "#") -> list[str]:
        """The mirrored topics matching ``pattern``, sorted."""
        return sorted(t for t in self._mirror if match_topic(pattern, t))

    def states(self, pattern: str = "#") -> dict[str, JSON]:
        """``{topic: state}`` of the mirrored topics matching ``pattern``, sorted by topic."""
        return {t: self._mirror[t].state for t in self.topics(pattern)}

    def entities(self) -> list[Entity]:
        """The entities whose descriptions the client holds (subscribe to ``_entities/#``,
        and to their topics for their values), sorted by key. See :class:`Entity`."""

        def state(topic: str) -> tuple[bool, JSON, bool]:
            local = self._mirror.get(topic)
            return (local is not None, local.state if local else None, bool(local and local.stale))

        return _entities.entities(self.states(_entities.PREFIX + "+"), state)

    async def operate(self, key: str, value: JSON = None, control: str = "command") -> JSON:
        """Operates an entity: sends its ``command`` (or another command field of its
        description, such as a media player's ``pause``) with every ``"{value}"`` in its args
        replaced by ``value``, and returns the answer as :meth:`command` does. Raises
        ``KeyError`` when the client holds no such entity or command."""
        local = self._mirror.get(_entities.PREFIX + key)
        found = _entities.command_of(local.state if local else None, control)
        if found is None:
            raise KeyError(f"entity {key!r} has no {control} (subscribe to _entities/# first)")
        target, name, args = found
        return await self.command(target, name, _entities.fill_value(args, value))

    async def set(self, topic: str, state: JSON) -> WriteResult:
        """Replaces the topic's state."""
        body, _ = await self._call(
            {"type": "set", "topic": topic, "state": state}, "PUT", f"/api/state/{_http.topic_path(topic)}", state
        )
        return _sync.write_result(topic, body)

    async def patch(self, topic: str, patch: JSON) -> WriteResult:
        """Applies an RFC 7396 merge patch (a missing topic is created from ``{}``)."""
        body, _ = await self._call(
            {"type": "patch", "topic": topic, "patch": patch}, "PATCH", f"/api/state/{_http.topic_path(topic)}", patch
        )
        return _sync.write_result(topic, body)

    async def delete(self, topic: str) -> WriteResult:
        """Removes the topic (:class:`NotFoundError` if it does not exist)."""
        path = f"/api/state/{_http.topic_path(topic)}"
        body, _ = await self._call({"type": "delete", "topic": topic}, "DELETE", path)
        return _sync.write_result(topic, body)

    async def event(self, topic: str, data: JSON) -> None:
        """Publishes an event to the topic's current subscribers."""
        await self._call(
            {"type": "event", "topic": topic, "data": data}, "POST", f"/api/events/{_http.topic_path(topic)}", data
        )

    async def command(self, target: str, name: str, args: JSON = None) -> JSON:
        """Sends a command along the hub's route for ``target`` and returns the answer (for
        an ``http`` route ``{"status": 200, "body": ...}``). A device's refusal raises
        :class:`UpstreamError` carrying its ``status`` and ``body``."""
        args = {} if args is None else args
        body, via_ws = await self._call(
            {"type": "command", "target": target, "name": name, "args": args},
            "POST",
            f"/api/commands/{_http.topic_path(target)}",
            {"name": name, "args": args},
        )
        return body.get("result") if via_ws else body

    async def history(
        self,
        topic: str,
        *,
        from_: TimeArg | None = None,
        to: TimeArg | None = None,
        fields: Sequence[str] | str | None = None,
        limit: int | None = None,
    ) -> _types.History:
        """The topic's recorded changes, oldest first, over REST; see :func:`statecast.history`."""
        return await self._rest(_history.history, topic, from_=from_, to=to, fields=fields, limit=limit)

    async def series(
        self,
        topic: str,
        field: str,
        *,
        from_: TimeArg | None = None,
        to: TimeArg | None = None,
        step: StepArg | None = None,
    ) -> list[_types.SeriesPoint]:
        """A numeric field of the topic per step, over REST; see :func:`statecast.series`."""
        return await self._rest(_history.series, topic, field, from_=from_, to=to, step=step)

    async def state_at(self, topic: str, at: TimeArg) -> _types.TopicState:
        """The topic as it was at ``at``, over REST; see :func:`statecast.state_at`."""
        return await self._rest(_history.state_at, topic, at)

    def on_status(self, listener: Callable[[Status], None]) -> Callable[[], None]:
        """Calls ``listener(status)`` on every status change; returns the function that
        removes it."""
        self._status_listeners.append(listener)
        return lambda: self._discard(self._status_listeners, listener)

    def on_error(self, listener: Callable[[Exception], None]) -> Callable[[], None]:
        """Calls ``listener(exc)`` for errors that belong to no request: exceptions raised by
        callbacks, ``error`` messages of the hub, a pattern the hub refused. Without a
        listener they are logged on the ``statecast`` logger."""
        self._error_listeners.append(listener)
        return lambda: self._discard(self._error_listeners, listener)

    # ------------------------------------------------------------------ internals: events

    @staticmethod
    def _discard(items: list[Any], item: Any) -> None:
        with contextlib.suppress(ValueError):
            items.remove(item)

    def _report(self, err: Exception) -> None:
        if not self._error_listeners:
            log.error("statecast: %s", err, exc_info=err if not isinstance(err, StatecastError) else None)
            return
        for listener in list(self._error_listeners):
            try:
                listener(err)
            except Exception:
                log.exception("statecast: an error listener failed")

    def _update_status(self) -> None:
        status: Status
        if self._closed:
            status = "closed"
        elif self._session is not None:
            status = "resyncing" if self._resyncing else "open"
        elif self._poller is not None:
            status = "polling"
        else:
            status = "connecting"
        if status == self._status:
            return
        self._status = status
        for listener in list(self._status_listeners):
            try:
                listener(status)
            except Exception as exc:
                self._report(exc)

    def _notify(self, change: Change) -> None:
        for entry in list(self._entries):
            if entry.active and match_topic(entry.pattern, change.topic):
                entry.put(change)

    def _is_subscribed(self, topic: str) -> bool:
        return any(match_topic(p, topic) for p in self._patterns)

    def _since(self, pattern: str) -> dict[str, int]:
        return {t: local.rev for t, local in self._mirror.items() if match_topic(pattern, t)}

    def _release(self, entry: _Entry) -> None:
        """Removes a subscription; unsubscribes its pattern when no other one uses it."""
        if not entry.active:
            return
        entry.active = False
        self._discard(self._entries, entry)
        pstate = self._patterns.get(entry.pattern)
        if pstate is None:
            return
        pstate.count -= 1
        if pstate.count > 0:
            return
        del self._patterns[entry.pattern]
        self._etags.pop(entry.pattern, None)
        if self._closed:
            return
        self._send({"type": "unsubscribe", "id": self._new_id(), "patterns": [entry.pattern]})
        for topic in [t for t in self._mirror if not self._is_subscribed(t)]:
            del self._mirror[topic]
        self._resyncing = {t for t in self._resyncing if self._is_subscribed(t)}
        self._update_status()

    def _fail_pattern(self, pattern: str, err: StatecastError) -> None:
        """The hub refused a pattern: its subscriptions end with the error."""
        pstate = self._patterns.pop(pattern, None)
        if pstate is None:
            return
        pstate.error = err
        pstate.synced.set()
        for entry in [e for e in self._entries if e.pattern == pattern]:
            entry.active = False
            self._entries.remove(entry)
            entry.put(_Stop(err))

    # ------------------------------------------------------------------ internals: messages

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _send(self, msg: Message) -> bool:
        session = self._session
        if session is None:
            return False
        if self._outgoing is not None:
            self._outgoing(msg)
        session.outbox.put_nowait(json.dumps(msg, separators=(",", ":"), allow_nan=False))
        return True

    def _send_subscribe(self, pattern: str) -> None:
        msg_id = self._new_id()
        if self._send({"type": "subscribe", "id": msg_id, "patterns": [pattern], "since": self._since(pattern)}):
            self._subscribe_ids[msg_id] = [pattern]

    def _request_resync(self, topic: str) -> None:
        if topic in self._resyncing:
            return
        self._resyncing.add(topic)
        msg_id = self._new_id()
        self._resync_gets[msg_id] = topic
        self._send({"type": "get", "id": msg_id, "patterns": [topic]})
        self._update_status()

    def _handle(self, msg: Message) -> None:
        """Applies one message of the hub."""
        kind = msg.get("type")
        topic = msg.get("topic")
        rev = msg.get("rev")
        if kind == "snapshot" and isinstance(topic, str) and isinstance(rev, int):
            if not self._is_subscribed(topic):
                return
            state = msg.get("state")
            stale = msg.get("stale") is True
            self._mirror[topic] = _Local(rev, state, stale, _staleness(self._mirror.get(topic), stale))
            if topic in self._resyncing:
                self._resyncing.discard(topic)
                self._update_status()
            self._notify(Snapshot(topic, rev, state, stale))
        elif kind == "patch" and isinstance(topic, str) and isinstance(rev, int):
            if topic in self._resyncing or not self._is_subscribed(topic):
                return
            local = self._mirror.get(topic)
            if local is not None and rev <= local.rev:
                return  # a duplicate
            if local is None or rev != local.rev + 1:
                self._request_resync(topic)  # a gap: something was missed
                return
            patch = msg.get("patch")
            state = apply_merge_patch(local.state, patch)
            # A change is a write: fresh (the hub said `stale:false` before it already).
            self._mirror[topic] = _Local(rev, state)
            self._notify(Patch(topic, rev, state, patch))
        elif kind == "removed" and isinstance(topic, str):
            had = self._mirror.pop(topic, None)
            was_resyncing = topic in self._resyncing
            if was_resyncing:
                self._resyncing.discard(topic)
                self._update_status()
            if had is not None or was_resyncing:
                self._notify(Removed(topic, rev if isinstance(rev, int) else 0))
        elif kind == "stale" and isinstance(topic, str):
            self._handle_stale(topic, msg)
        elif kind == "event" and isinstance(topic, str):
            local = self._mirror.get(topic)
            self._notify(
                Event(
                    topic,
                    msg.get("data"),
                    local.rev if local is not None else None,
                    local.state if local is not None else None,
                )
            )
        elif kind == "result":
            self._handle_result(msg)
        elif kind == "error":
            self._report(error_from(msg.get("error")))
        elif kind == "lagged":
            log.warning("statecast: the client lagged; the hub dropped %s events", msg.get("dropped_events"))
        # welcome, pong: nothing to do (any message keeps the socket alive)

    def _handle_stale(self, topic: str, msg: Message) -> None:
        """A topic turned stale or fresh. The hub also says so on a resume, often telling
        what the client knows already: only a turn is handed to the subscriptions."""
        local = self._mirror.get(topic)
        stale = msg.get("stale")
        if local is None or not isinstance(stale, bool):
            return
        since = parse_time(msg.get("since"))
        turned = local.stale != stale
        local.stale = stale
        local.since = since if stale else None
        if turned:
            self._notify(Stale(topic, local.rev, local.state, stale, since))

    def _handle_result(self, msg: Message) -> None:
        msg_id = msg.get("id")
        if not isinstance(msg_id, int):
            return
        ok = msg.get("ok") is not False
        if msg_id in self._resync_gets:
            topic = self._resync_gets.pop(msg_id)
            if topic in self._resyncing:
                # no snapshot came: the topic is not live any more
                self._resyncing.discard(topic)
                local = self._mirror.pop(topic, None)
                if local is not None:
                    self._notify(Removed(topic, local.rev))
                self._update_status()
            return
        if msg_id in self._subscribe_ids:
            patterns = self._subscribe_ids.pop(msg_id)
            for pattern in patterns:
                if not ok:
                    err = error_from(msg.get("error"))
                    self._fail_pattern(pattern, err)
                    self._report(err)
                elif (pstate := self._patterns.get(pattern)) is not None:
                    pstate.synced.set()
            return
        future = self._pending.get(msg_id)
        if future is None:
            if not ok:
                self._report(error_from(msg.get("error")))
            return
        if future.done():
            return
        if ok:
            future.set_result(msg)
        else:
            future.set_exception(error_from(msg.get("error")))

    # ------------------------------------------------------------------ internals: requests

    async def _call(
        self, msg: Message, method: str, path: str, body: JSON | object = _http._NO_BODY
    ) -> tuple[Any, bool]:
        """Sends a request over the socket if it is open, else over REST. Returns the
        WebSocket ``result`` message or the REST answer's body, and which one it is."""
        if self._closed:
            raise ClosedError("the client is closed")
        if self._session is not None:
            msg_id = self._new_id()
            future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
            self._pending[msg_id] = future
            try:
                if self._send({**msg, "id": msg_id}):
                    return await future, True
            finally:
                self._pending.pop(msg_id, None)
        response = await asyncio.to_thread(
            _http.request,
            method,
            self._urls.http + path,
            body=body,
            token=self._token,
            timeout=self._rest_timeout,
        )
        return _http.checked(response), False

    async def _rest(self, call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``call(base, *args, token=, timeout=, **kwargs)``, one of the blocking REST
        functions, in a worker thread."""
        if self._closed:
            raise ClosedError("the client is closed")
        return await asyncio.to_thread(
            call, self._urls.http, *args, token=self._token, timeout=self._rest_timeout, **kwargs
        )

    # ------------------------------------------------------------------ internals: connection

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, min * 2^attempt))."""
        ceiling = min(self._backoff_max, self._backoff_min * 2 ** min(attempt, _MAX_EXPONENT))
        return self._random.uniform(0, ceiling)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0  # backoff exponent
        failures = 0  # consecutive attempts that never opened
        headers = {"Authorization": f"Bearer {self._token}"} if self._token is not None else None
        while not self._closed:
            try:
                ws = await ws_connect(
                    self._urls.ws,
                    additional_headers=headers,
                    open_timeout=self._open_timeout,
                    ping_interval=None,  # application pings instead, see _ping_loop
                    close_timeout=2,
                    max_size=None,  # the hub bounds what it sends (states, history)
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.debug("statecast: cannot connect to %s: %s", self._urls.ws, exc)
                if isinstance(exc, InvalidStatus) and exc.response.status_code in (401, 403):
                    code = "unauthorized" if exc.response.status_code == 401 else "forbidden"
                    self._report(error_from({"code": code, "message": f"the hub refused the WebSocket: {exc}"}))
            else:
                failures = 0
                opened_at = loop.time()
                try:
                    await self._serve(ws)
                except Exception as exc:  # a bug here must not end the reconnecting
                    self._report(exc)
                if loop.time() - opened_at >= _STABLE_AFTER:
                    attempt = 0
            if self._closed:
                break
            if self._poll_interval is not None and failures >= self._poll_after_failures:
                self._start_polling()
            delay = self._backoff(attempt)
            attempt += 1
            self._update_status()
            await asyncio.sleep(delay)

    async def _serve(self, ws: ClientConnection) -> None:
        """Runs one open socket until it drops."""
        loop = asyncio.get_running_loop()
        session = _Session(ws, loop.time())
        self._session = session
        self._stop_polling()
        self._resyncing.clear()  # the new connection brings every topic in sync by itself
        for pattern in list(self._patterns):
            self._send_subscribe(pattern)
        self._update_status()
        writer = loop.create_task(self._write_loop(session))
        pinger = loop.create_task(self._ping_loop(session))
        try:
            async for raw in ws:
                session.last_message_at = loop.time()
                if not isinstance(raw, str):
                    continue
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(msg, dict):
                    continue
                if self._incoming is not None and not self._incoming(msg):
                    continue
                try:
                    self._handle(msg)
                except Exception as exc:
                    self._report(exc)
        except ConnectionClosed:
            pass
        finally:
            writer.cancel()
            pinger.cancel()
            self._session = None
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(
                        ClosedError("the client was closed before the result arrived")
                        if self._closed
                        else DisconnectedError("the connection to the hub was lost before the result arrived")
                    )
            self._pending.clear()
            self._resync_gets.clear()
            self._subscribe_ids.clear()
            if ws.state is not State.CLOSED and not session.aborted:
                # a closing handshake, bounded: a peer that does not answer is cut off
                closing = loop.create_task(ws.close())
                await asyncio.wait({closing}, timeout=2)
                if not closing.done():
                    ws.transport.abort()
            else:
                ws.transport.abort()
            code = ws.protocol.close_code
            if code not in (None, 1000, 1001, 1006):  # e.g. 1008 policy, 1011 internal
                self._report(
                    StatecastError(
                        f"the hub closed the connection: {code} {ws.protocol.close_reason}".rstrip(),
                        code="disconnected",
                    )
                )
            self._update_status()

    async def _write_loop(self, session: _Session) -> None:
        while True:
            text = await session.outbox.get()
            try:
                await session.ws.send(text)
            except Exception:  # the socket is gone (or broken): drop it, _run reopens one
                session.ws.transport.abort()
                return

    async def _ping_loop(self, session: _Session) -> None:
        """Sends ``{"type":"ping"}`` every ``ping_interval``; a socket from which nothing
        arrived for twice that is dropped (and reopened by ``_run``)."""
        loop = asyncio.get_running_loop()
        limit = 2 * self._ping_interval
        next_ping = loop.time() + self._ping_interval
        while True:
            now = loop.time()
            if now - session.last_message_at >= limit:
                log.debug("statecast: nothing from the hub for %.1f s; reconnecting", limit)
                session.aborted = True
                session.ws.transport.abort()
                return
            if now >= next_ping:
                self._send({"type": "ping"})
                next_ping = now + self._ping_interval
            await asyncio.sleep(min(next_ping, session.last_message_at + limit) - now)

    # ------------------------------------------------------------------ internals: polling

    def _start_polling(self) -> None:
        if self._poller is None and not self._closed:
            self._poller = asyncio.get_running_loop().create_task(self._poll_loop(), name="statecast-poll")
            self._update_status()

    def _stop_polling(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
            self._update_status()

    async def _poll_loop(self) -> None:
        """Reads ``GET /api/state?match=<pattern>`` every ``poll_interval`` while the socket
        is down; ``If-None-Match`` makes an unchanged answer a 304."""
        assert self._poll_interval is not None
        while True:
            for pattern in list(self._patterns):
                headers = {}
                if (etag := self._etags.get(pattern)) is not None:
                    headers["If-None-Match"] = etag
                url = f"{self._urls.http}/api/state?{urllib.parse.urlencode({'match': pattern})}"
                try:
                    res = await asyncio.to_thread(
                        _http.request, "GET", url, headers=headers, token=self._token, timeout=self._rest_timeout
                    )
                except StatecastError:
                    continue
                # a socket that opened meanwhile is the better source
                if self._session is not None or pattern not in self._patterns:
                    continue
                if res.status == 200 and isinstance(res.body, dict):
                    tag = res.headers.get("ETag")
                    if tag:
                        self._etags[pattern] = tag
                    else:
                        self._etags.pop(pattern, None)
                    topics = res.body.get("topics")
                    self._apply_polled(pattern, topics if isinstance(topics, list) else [])
                if res.status in (200, 304):
                    self._patterns[pattern].synced.set()
            await asyncio.sleep(self._poll_interval)

    def _apply_polled(self, pattern: str, items: list[Any]) -> None:
        """Changed topics become snapshots, topics missing from the list removals."""
        seen: set[str] = set()
        for item in items:
            if not isinstance(item, dict):
                continue
            topic, rev = item.get("topic"), item.get("rev")
            if not isinstance(topic, str) or not isinstance(rev, int) or not match_topic(pattern, topic):
                continue
            seen.add(topic)
            local = self._mirror.get(topic)
            stale = item.get("stale") is True
            if local is not None and local.rev == rev:
                # The same state, but it may have turned stale or fresh meanwhile.
                if local.stale != stale:
                    self._mirror[topic] = replace(local, stale=stale, since=None)
                    self._notify(Stale(topic, rev, local.state, stale))
                continue
            state = item.get("state")
            self._mirror[topic] = _Local(rev, state, stale, _staleness(local, stale))
            self._resyncing.discard(topic)
            self._notify(Snapshot(topic, rev, state, stale))
        for topic in [t for t in self._mirror if match_topic(pattern, t) and t not in seen]:
            local = self._mirror.pop(topic)
            self._notify(Removed(topic, local.rev))


def connect(
    url: str,
    token: str | None = None,
    *,
    backoff_min: float = 0.5,
    backoff_max: float = 30.0,
    ping_interval: float = 15.0,
    poll_interval: float | None = 10.0,
    poll_after_failures: int = 3,
    open_timeout: float = 10.0,
    rest_timeout: float = 10.0,
) -> Hub:
    """A client of the hub at ``url``: its WebSocket URL (``ws://host:8080/ws``) or its
    HTTP base URL (``http://host:8080``). Use it as ``async with``::

        async with statecast.connect("ws://127.0.0.1:8080/ws") as hub:
            async for change in hub.subscribe("railhub/#"):
                print(change.topic, change.rev, change.state)

    ``token`` is sent as ``Authorization: Bearer`` on the WebSocket upgrade and on REST.
    Times are in seconds:

    - ``backoff_min``, ``backoff_max``: a reconnect waits a random time in
      ``[0, min(backoff_max, backoff_min * 2^attempt))`` (exponential backoff, full jitter).
    - ``ping_interval``: ``{"type":"ping"}`` this often; a socket silent for twice as long is
      dropped and reopened.
    - ``poll_interval``: while the socket is down (after ``poll_after_failures`` failed
      attempts in a row), the state is read over REST this often; ``None`` never polls.
    - ``open_timeout``: bound on one connection attempt; ``rest_timeout``: on one REST request.
    """
    return Hub(
        url,
        token,
        backoff_min=backoff_min,
        backoff_max=backoff_max,
        ping_interval=ping_interval,
        poll_interval=poll_interval,
        poll_after_failures=poll_after_failures,
        open_timeout=open_timeout,
        rest_timeout=rest_timeout,
    )
