"""The connection to one statecast hub: one WebSocket, a REST poll while it is down.

`HubClient` keeps a copy of the topics the integration needs (`_entities/#` and the topics
the entity descriptions name) with their revs and stale flags. It is fed by one WebSocket
(`/ws`), subscribed with `since` set to the revs it holds, so a reconnect after a drop or a
hub restart is sent only what changed meanwhile: nothing missed, no full reload. While the
WebSocket is down it polls the REST API (every `poll_interval` seconds) and retries the
WebSocket with a growing delay. Commands go over the WebSocket, or REST while it is down.

It uses only aiohttp (shipped by Home Assistant) and knows nothing of entities: whoever
owns it passes `on_change(topics)` (the topics whose state or stale flag changed) and
`on_status()` (reachability changed, or the token was refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp

from .const import ENTITIES_PATTERN, ENTITIES_PREFIX

_LOGGER = logging.getLogger(__name__)

RECONNECT_MIN = 0.2  # seconds before the first reconnect; doubled up to RECONNECT_MAX
RECONNECT_MAX = 5.0
REQUEST_TIMEOUT = 10.0
COMMAND_TIMEOUT = 15.0  # longer than a hub route's default timeout (5 s)


class HubError(Exception):
    """The hub could not be reached or answered with an error."""

    def __init__(self, message: str, code: str = "unreachable", details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class AuthError(HubError):
    """The hub refused the token (or wants one)."""


@dataclass
class Topic:
    rev: int
    state: Any
    stale: bool = False


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def normalize_url(url: str) -> str:
    """The hub's base URL without a trailing slash; a bare host:port means http."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


class HubClient:
    """One hub, as one WebSocket plus a REST fallback. Runs as one task (`start`/`stop`)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        token: str | None,
        poll_interval: float,
        on_change: Callable[[set[str]], None],
        on_status: Callable[[], None],
    ) -> None:
        self.base = normalize_url(url)
        self.ws_url = "ws" + self.base[len("http") :] + "/ws"
        self._session = session
        self._token = token or None
        self.poll_interval = poll_interval
        self._on_change = on_change
        self._on_status = on_status
        self.topics: dict[str, Topic] = {}
        self._wanted: set[str] = set()  # the topics entities name (besides _entities/#)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self.connected = False  # the WebSocket is open and in sync
        self.reachable = False  # the WebSocket is, or the last poll succeeded
        self.auth_failed = False
        self.last_error: str | None = None
        self.connects = 0
        self.received: dict[str, int] = {}  # WebSocket messages by type, for diagnostics
        self.welcome: dict[str, Any] | None = None
        self._closing = False
        self._sends: set[asyncio.Future[None]] = set()

    # --- life cycle ---

    def start(self, create_task: Callable[..., asyncio.Task[None]] | None = None) -> None:
        coro = self._run()
        self._task = create_task(coro) if create_task else asyncio.ensure_future(coro)

    async def stop(self) -> None:
        self._closing = True
        for task in (self._task, self._poll_task):
            if task is not None:
                task.cancel()
        for task in (self._task, self._poll_task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for send in list(self._sends):
            send.cancel()
        self._task = self._poll_task = None
        if self._ws is not None:
            await self._ws.close()
        self._fail_pending(HubError("the integration is stopping"))

    def _spawn(self, coro: Any) -> None:
        """Runs a send in the background (a socket closing meanwhile is no error)."""

        async def send() -> None:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError, RuntimeError):
                await coro

        task = asyncio.ensure_future(send())
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _set_status(self, *, connected: bool | None = None, reachable: bool | None = None) -> None:
        before = (self.connected, self.reachable, self.auth_failed)
        if connected is not None:
            self.connected = connected
        if reachable is not None:
            self.reachable = reachable
        if (self.connected, self.reachable, self.auth_failed) != before:
            self._on_status()

    async def _run(self) -> None:
        delay = RECONNECT_MIN
        while True:
            try:
                synced = await self._serve_ws()
            except AuthError as err:
                self.last_error = str(err)
                self.auth_failed = True
                self._set_status(connected=False, reachable=False)
                _LOGGER.warning("statecast hub %s refused the token: %s", self.base, err)
                self._on_status()
                return  # reauth makes a new client
            except (TimeoutError, aiohttp.ClientError, OSError, HubError) as err:
                self.last_error = str(err) or type(err).__name__
                synced = False
            except Exception as err:
                _LOGGER.exception("statecast hub %s: the connection failed", self.base)
                self.last_error = repr(err)
                synced = False
            self._ws = None
            self._fail_pending(HubError("the connection to the hub closed", "unreachable"))
            self._set_status(connected=False)
            if self._poll_task is None and not self._closing:
                self._poll_task = asyncio.ensure_future(self._poll_loop())
            if synced:
                delay = RECONNECT_MIN
                _LOGGER.info("statecast hub %s: WebSocket closed, polling until it is back", self.base)
            await asyncio.sleep(delay)  # reconnect backoff
            delay = min(delay * 2, RECONNECT_MAX)

    # --- the WebSocket ---

    async def _serve_ws(self) -> bool:
        """Connects, resumes, then handles messages until the socket closes. True if it got
        in sync at least once."""
        try:
            ws = await asyncio.wait_for(
                self._session.ws_connect(self.ws_url, headers=self._headers(), heartbeat=30, max_msg_size=0),
                REQUEST_TIMEOUT,
            )
        except aiohttp.WSServerHandshakeError as err:
            if err.status in (401, 403):
                raise AuthError(f"the hub answered {err.status}", "unauthorized") from err
            raise
        synced = False
        try:
            self._ws = ws
            sub_id = next(self._ids)
            patterns = [ENTITIES_PATTERN, *sorted(self._wanted)]
            await ws.send_json(
                {"type": "subscribe", "id": sub_id, "patterns": patterns, "since": self._since(patterns)}
            )
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    if msg.type == aiohttp.WSMsgType.ERROR:
                        raise HubError(f"WebSocket error: {ws.exception()}")
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                if data.get("type") == "result" and data.get("id") == sub_id:
                    if not data.get("ok"):
                        error = data.get("error") or {}
                        if error.get("code") == "unauthorized":
                            raise AuthError(error.get("message", "unauthorized"), "unauthorized")
                        raise HubError(error.get("message", "subscribe refused"), error.get("code", "internal"))
                    synced = True
                    self.connects += 1
                    self.last_error = None
                    self._stop_polling()
                    self._set_status(connected=True, reachable=True)
                    continue
                self._handle(data)
            if ws.close_code == 1008:
                raise AuthError("the hub closed the connection: unauthorized (1008)", "unauthorized")
        finally:
            await ws.close()
        return synced

    def _since(self, patterns: Iterable[str]) -> dict[str, int]:
        wanted = set(patterns)
        return {
            topic: held.rev
            for topic, held in self.topics.items()
            if topic in wanted or topic.startswith(ENTITIES_PREFIX)
        }

    def _handle(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        topic = data.get("topic")
        self.received[str(kind)] = self.received.get(str(kind), 0) + 1
        if kind == "welcome":
            self.welcome = data
        elif kind == "snapshot" and isinstance(topic, str):
            self.topics[topic] = Topic(int(data.get("rev", 0)), data.get("state"), bool(data.get("stale")))
            self._changed({topic})
        elif kind == "patch" and isinstance(topic, str):
            held = self.topics.get(topic)
            rev = int(data.get("rev", 0))
            if held is None or rev != held.rev + 1:
                self._ask(topic)  # a gap: take a fresh snapshot
                return
            held.rev = rev
            held.state = apply_merge_patch(held.state, data.get("patch"))
            self._changed({topic})
        elif kind == "removed" and isinstance(topic, str):
            if self.topics.pop(topic, None) is not None:
                self._changed({topic})
        elif kind == "stale" and isinstance(topic, str):
            held = self.topics.get(topic)
            if held is not None and held.stale != bool(data.get("stale")):
                held.stale = bool(data.get("stale"))
                self._changed({topic})
        elif kind == "result":
            future = self._pending.pop(data.get("id"), None)  # type: ignore[arg-type]
            if future is not None and not future.done():
                future.set_result(data)
        elif kind == "lagged":
            _LOGGER.debug("statecast hub %s: lagged %s", self.base, data)
        elif kind == "error":
            _LOGGER.warning("statecast hub %s: %s", self.base, data.get("error"))

    def _changed(self, topics: set[str]) -> None:
        """Tells the owner; a failure there is logged, never the connection's end."""
        try:
            self._on_change(topics)
        except Exception:
            _LOGGER.exception("statecast hub %s: handling a change of %s failed", self.base, sorted(topics))

    def _ask(self, topic: str) -> None:
        if self._ws is not None and not self._ws.closed:
            self._spawn(self._ws.send_json({"type": "get", "patterns": [topic]}))

    def _fail_pending(self, err: HubError) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(err)

    # --- which topics ---

    def set_wanted(self, topics: set[str]) -> None:
        """The topics the entities name now; subscribes to new ones, drops the others."""
        added = topics - self._wanted
        gone = self._wanted - topics
        self._wanted = set(topics)
        for topic in gone:
            self.topics.pop(topic, None)
        ws = self._ws
        if ws is None or ws.closed:  # a subscribe in flight is followed by this one
            if added and self._poll_task is not None:
                self._poll_task.cancel()  # poll now, the new topics too
                self._poll_task = asyncio.ensure_future(self._poll_loop())
            return
        if added:
            patterns = sorted(added)
            message = {"type": "subscribe", "id": next(self._ids), "patterns": patterns, "since": self._since(patterns)}
            self._spawn(ws.send_json(message))
        if gone:
            self._spawn(ws.send_json({"type": "unsubscribe", "id": next(self._ids), "patterns": sorted(gone)}))

    # --- REST ---

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One REST request: `(status, JSON answer or None)`; HubError when unreachable."""
        try:
            async with self._session.request(
                method,
                self.base + path,
                json=body,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            ) as res:
                text = await res.text()
                status = res.status
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            raise HubError(f"cannot reach the hub at {self.base}: {err or type(err).__name__}") from err
        try:
            answer = json.loads(text) if text else None
        except ValueError:
            answer = text
        if status in (401, 403) and path != "/api/health":
            raise AuthError(_error_message(answer, status), "unauthorized")
        return status, answer

    def _stop_polling(self) -> None:
        if self._poll_task is not None and self._poll_task is not asyncio.current_task():
            self._poll_task.cancel()
        self._poll_task = None

    async def _poll_loop(self) -> None:
        while True:
            await self._poll_once()
            await asyncio.sleep(self.poll_interval)

    async def _poll_once(self) -> None:
        try:
            changed = await self._poll()
        except AuthError as err:
            self.last_error = str(err)
            self.auth_failed = True
            self._set_status(reachable=False)
            self._on_status()
            return
        except HubError as err:
            self.last_error = str(err)
            self._set_status(reachable=False)
            return
        if self.connected:
            return  # the WebSocket came back meanwhile and is newer
        if changed:
            self._changed(changed)
        self._set_status(reachable=True)

    async def _poll(self) -> set[str]:
        answers: dict[str, dict[str, Any]] = {}
        status, listing = await self.request("GET", f"/api/state?match={ENTITIES_PATTERN.replace('#', '%23')}")
        if status != 200 or not isinstance(listing, dict):
            raise HubError(f"the hub answered {status} to a poll", "internal")
        for item in listing.get("topics", []):
            answers[item["topic"]] = item
        for topic in sorted(self._wanted):
            status, item = await self.request("GET", f"/api/state/{topic}")
            if status == 200 and isinstance(item, dict):
                answers[topic] = item
            elif status != 404:
                raise HubError(f"the hub answered {status} to a poll of {topic}", "internal")
        if self.connected:
            return set()
        changed: set[str] = set()
        for topic in list(self.topics):
            if topic not in answers:
                del self.topics[topic]
                changed.add(topic)
        for topic, item in answers.items():
            held = self.topics.get(topic)
            new = Topic(int(item.get("rev", 0)), item.get("state"), bool(item.get("stale")))
            if held is None or held.rev != new.rev or held.stale != new.stale:
                self.topics[topic] = new
                changed.add(topic)
        return changed

    # --- commands ---

    async def command(self, target: str, name: str, args: Any) -> Any:
        """Sends a command; returns the handler's answer, raises HubError with the hub's
        error code and message when it is refused."""
        ws = self._ws
        if ws is not None and not ws.closed and self.connected:
            msg_id = next(self._ids)
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._pending[msg_id] = future
            try:
                await ws.send_json({"type": "command", "id": msg_id, "target": target, "name": name, "args": args})
                answer = await asyncio.wait_for(future, COMMAND_TIMEOUT)
            except TimeoutError as err:
                raise HubError(f"no answer from the hub to {name} within {COMMAND_TIMEOUT:g} s", "timeout") from err
            finally:
                self._pending.pop(msg_id, None)
            if answer.get("ok"):
                return answer.get("result")
            error = answer.get("error") or {}
            raise HubError(_error_message({"error": error}, 0), error.get("code", "internal"), error)
        status, answer = await self.request("POST", f"/api/commands/{target}", {"name": name, "args": args})
        if status >= 400:
            error = answer.get("error") if isinstance(answer, dict) else None
            raise HubError(_error_message(answer, status), (error or {}).get("code", "internal"), error)
        return answer

    async def health(self) -> dict[str, Any]:
        status, answer = await self.request("GET", "/api/health")
        if status != 200 or not isinstance(answer, dict):
            raise HubError(f"{self.base} is not a statecast hub (GET /api/health answered {status})", "internal")
        return answer


def _error_message(answer: Any, status: int) -> str:
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        text = f"{error.get('code', 'error')}: {error.get('message', '')}"
        if error.get("body") is not None:
            text += f" (the device's answer: {json.dumps(error['body'])})"
        return text
    return f"the hub answered {status}" + (f": {answer}" if answer else "")
