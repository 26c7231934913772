"""statecast's Socket.IO endpoint with the stock python-socketio client (AsyncClient), against
the real hub binary: generic events with acknowledgements, permissions, the [socketio]
mappings, a command mapping to a device, and reconnection after a hub restart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import socketio
from support import Device, HubProcess, arest

MAPPINGS = """
[socketio]
[[socketio.emit]]
event = "apps_list"
topic = "board/apps"
[[socketio.emit]]
event = "current_app"
topic = "board/current_app"
[[socketio.on]]
event = "request_state"
action = "request_state"
[[socketio.on]]
event = "switch"
command = "board/main"
[[socketio.on]]
event = "jam"
command = "board/main"
name = "jammed"
"""

ROUTE = """
[[route]]
target = "board/main"
type = "http"
url = "http://127.0.0.1:{port}/cmd/{{name}}"
"""


class Recorder:
    """Every event a client gets, in order, with bounded waits for the next one."""

    def __init__(self, sio: socketio.AsyncClient) -> None:
        self.events: list[tuple[str, Any]] = []
        self._changed = asyncio.Event()

        @sio.on("*")
        async def any_event(event: str, *args: Any) -> None:
            self.note(event, args[0] if args else None)

        @sio.event
        async def connect() -> None:
            self.note(":connect", None)

        @sio.event
        async def disconnect(reason: Any = None) -> None:
            self.note(":disconnect", reason)

        @sio.event
        async def connect_error(data: Any) -> None:
            self.note(":connect_error", data)

    def note(self, name: str, data: Any) -> None:
        self.events.append((name, data))
        self._changed.set()

    @property
    def mark(self) -> int:
        return len(self.events)

    async def next(
        self, name: str, pred: Callable[[Any], bool] = lambda _: True, start: int = 0, timeout: float = 10.0
    ) -> Any:
        """The data of the first event from index ``start`` named ``name`` passing ``pred``."""
        async with asyncio.timeout(timeout):
            while True:
                for event, data in self.events[start:]:
                    if event == name and pred(data):
                        return data
                self._changed.clear()
                await self._changed.wait()

    def names(self, start: int = 0) -> list[str]:
        return [name for name, _ in self.events[start:]]


async def client(hub: HubProcess, **connect: Any) -> tuple[socketio.AsyncClient, Recorder]:
    sio = socketio.AsyncClient(reconnection_delay=0.1, reconnection_delay_max=0.5)
    recorder = Recorder(sio)
    await sio.connect(hub.base, wait_timeout=10, **connect)
    return sio, recorder


async def ask(sio: socketio.AsyncClient, event: str, data: Any = None) -> Any:
    return await sio.call(event, data, timeout=10)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_generic_events_with_acknowledgements(hub_with: Callable[[str], HubProcess], transport: str) -> None:
    hub = hub_with("")
    await arest(hub.base, "PUT", "/api/state/rail/a", {"speed": 1})
    sio, rec = await client(hub, transports=[transport])
    try:
        start = rec.mark
        ack = await ask(sio, "subscribe", {"patterns": ["rail/#"]})
        assert ack == {"type": "result", "ok": True, "topics": 1}
        # The snapshot came before the acknowledgement.
        assert [d for n, d in rec.events[start:] if n == "snapshot"] == [
            {"type": "snapshot", "topic": "rail/a", "rev": 1, "state": {"speed": 1}}
        ]
        start = rec.mark
        await arest(hub.base, "PATCH", "/api/state/rail/a", {"speed": 2})
        patch = await rec.next("patch", start=start)
        assert patch == {"type": "patch", "topic": "rail/a", "rev": 2, "patch": {"speed": 2}}

        assert await ask(sio, "set", {"topic": "rail/b", "state": {"on": True}}) == {
            "type": "result",
            "ok": True,
            "rev": 1,
            "changed": True,
        }
        assert (await ask(sio, "patch", {"topic": "rail/b", "patch": {"on": False}}))["rev"] == 2
        start = rec.mark
        assert await ask(sio, "get", {"patterns": ["rail/b"]}) == {"type": "result", "ok": True, "topics": 1}
        snapshot = await rec.next("snapshot", lambda m: m["topic"] == "rail/b", start=start)
        assert snapshot["state"] == {"on": False}
        assert (await ask(sio, "delete", {"topic": "rail/b"}))["ok"] is True
        assert (await arest(hub.base, "GET", "/api/state/rail/b"))[0] == 404
    finally:
        await sio.disconnect()


async def test_errors_carry_codes_and_change_nothing(hub_with: Callable[[str], HubProcess]) -> None:
    hub = hub_with("")
    sio, rec = await client(hub)
    try:

        async def code(event: str, data: Any) -> str:
            answer = await ask(sio, event, data)
            assert answer["ok"] is False, answer
            return str(answer["error"]["code"])

        assert await code("set", {"topic": "a//b", "state": 1}) == "invalid_topic"
        assert await code("subscribe", {"patterns": ["#/a"]}) == "invalid_pattern"
        assert await code("set", {"topic": "a/b", "state": None}) == "bad_request"
        assert await code("patch", ["not", "an", "object"]) == "bad_request"
        assert await code("delete", {"topic": "never/was"}) == "not_found"
        assert await code("teleport", {}) == "unknown_type"
        assert (await arest(hub.base, "GET", "/api/state/a/b"))[0] == 404
        start = rec.mark
        await sio.emit("set", {"topic": "a//b", "state": 1})
        error = await rec.next("error", start=start)
        assert error["error"]["code"] == "invalid_topic"
    finally:
        await sio.disconnect()


async def test_permissions_with_auth(hub_with: Callable[[str], HubProcess]) -> None:
    hub = hub_with(
        """
[auth]
[[auth.keys]]
name = "display"
key = "display-key"
read = ["board/#"]
"""
    )
    for auth in [None, {"token": "wrong"}]:
        refused = socketio.AsyncClient(reconnection=False)
        rec = Recorder(refused)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await refused.connect(hub.base, auth=auth, wait_timeout=10)
        error = await rec.next(":connect_error")
        assert error["message"].startswith("unauthorized: "), error
    sio, _ = await client(hub, auth={"token": "display-key"})
    try:
        answer = await ask(sio, "set", {"topic": "board/current_app", "state": {"name": "x"}})
        assert answer["ok"] is False
        assert answer["error"]["code"] == "forbidden"
        assert (await ask(sio, "subscribe", {"patterns": ["#"]}))["ok"] is True
    finally:
        await sio.disconnect()


async def test_mapped_events_request_state_and_a_command(hub_with: Callable[[str], HubProcess]) -> None:
    device = Device()
    hub = hub_with(MAPPINGS + ROUTE.format(port=device.port))
    await arest(hub.base, "PUT", "/api/state/board/apps", {"apps": ["clock", "snake"]})
    await arest(hub.base, "PUT", "/api/state/board/current_app", {"name": "clock"})
    sio, rec = await client(hub)
    try:
        assert await rec.next("apps_list") == {"apps": ["clock", "snake"]}
        assert await rec.next("current_app") == {"name": "clock"}
        start = rec.mark
        await arest(hub.base, "PATCH", "/api/state/board/current_app", {"name": "snake"})
        assert await rec.next("current_app", start=start) == {"name": "snake"}

        start = rec.mark
        assert await ask(sio, "request_state") == {"type": "result", "ok": True, "topics": 2}
        assert sorted(rec.names(start)) == ["apps_list", "current_app"]

        answer = await ask(sio, "switch", {"output": 2, "on": True})
        assert answer == {"status": 200, "body": {"done": True}}
        assert device.received[-1] == {
            "path": "/cmd/switch",
            "body": {"name": "switch", "args": {"output": 2, "on": True}},
        }
        refused = await ask(sio, "jam")
        assert list(refused) == ["error"]
        assert refused["error"]["code"] == "upstream"
        assert refused["error"]["status"] == 409
        assert device.received[-1]["path"] == "/cmd/jammed"
    finally:
        await sio.disconnect()
        device.close()


async def test_reconnects_after_a_hub_restart(hub_with: Callable[[str], HubProcess]) -> None:
    hub = hub_with(MAPPINGS)
    await arest(hub.base, "PUT", "/api/state/board/current_app", {"name": "clock"})
    sio, rec = await client(hub)
    try:
        assert await rec.next("current_app") == {"name": "clock"}
        start = rec.mark
        await asyncio.to_thread(hub.restart)  # same port, same data dir
        await rec.next(":disconnect", start=start)
        await arest(hub.base, "PATCH", "/api/state/board/current_app", {"name": "snake"})
        await rec.next(":connect", start=start)
        assert await rec.next("current_app", lambda s: s == {"name": "snake"}, start=start) == {"name": "snake"}
        assert sio.connected
    finally:
        await sio.disconnect()
