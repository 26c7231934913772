"""The socket itself: application pings, a silent socket dropped and reopened, a request
whose socket dies, reconnecting forever."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support import HubProcess, Proxy, arest, free_port, wait_until

import statecast


@pytest.fixture
async def proxy(hub: HubProcess) -> AsyncIterator[Proxy]:
    p = Proxy(hub.port)
    await p.start()
    yield p
    await p.close()


async def test_pings_and_a_silent_socket_is_dropped(hub: HubProcess, proxy: Proxy) -> None:
    async with statecast.connect(proxy.base, ping_interval=0.2, backoff_min=0.01, backoff_max=0.05) as c:
        sent: list[dict[str, Any]] = []
        c._outgoing = sent.append
        sub = c.subscribe("link/#")
        await arest(hub.base, "PUT", "/api/state/link/x", {"n": 1})
        await wait_until(lambda: c.rev("link/x") == 1, "link/x")
        # pings go out, pongs come back, the socket stays
        await wait_until(lambda: sum(1 for m in sent if m["type"] == "ping") >= 3, "three pings")
        assert c.status == "open"
        assert sum(1 for r in proxy.requests if r["ws"]) == 1

        # the link goes dead without closing: the socket is dropped after 2 x ping_interval
        # of silence; a request waiting on it fails with DisconnectedError
        statuses: list[str] = []
        c.on_status(statuses.append)
        proxy.freeze()
        await arest(hub.base, "PATCH", "/api/state/link/x", {"n": 2})  # missed meanwhile
        await arest(hub.base, "PATCH", "/api/state/link/x", {"n": 3})
        with pytest.raises(statecast.DisconnectedError) as lost:
            await asyncio.wait_for(c.set("link/a", {"x": 1}), 5)
        assert lost.value.code == "disconnected"
        await wait_until(lambda: c.status == "open" and c.rev("link/x") == 3, "reopened and resumed")
        # it resumed with `since`: the hub replayed the missed patches from its history
        resubscribe = [m for m in sent if m["type"] == "subscribe"][-1]
        assert (resubscribe["patterns"], resubscribe["since"]) == (["link/#"], {"link/x": 1})
        changes = [await asyncio.wait_for(anext(sub), 5) for _ in range(3)]
        assert changes == [
            statecast.Snapshot("link/x", 1, {"n": 1}),
            statecast.Patch("link/x", 2, {"n": 2}, {"n": 2}),
            statecast.Patch("link/x", 3, {"n": 3}, {"n": 3}),
        ]
        assert statuses[:2] == ["connecting", "open"]
        assert sum(1 for r in proxy.requests if r["ws"]) >= 2
        # the write may or may not have been applied: here it never reached the hub
        status, _ = await arest(hub.base, "GET", "/api/state/link/a")
        assert status == 404
        assert await c.set("link/a", {"x": 1}) == statecast.WriteResult("link/a", 1, True)
        await wait_until(lambda: c.rev("link/a") == 1, "the new socket carries changes")


async def test_reconnects_forever(hub: HubProcess) -> None:
    port = free_port()  # nothing listens here
    async with statecast.connect(f"ws://127.0.0.1:{port}/ws", backoff_min=0.001, backoff_max=0.01) as c:
        attempts: list[float] = []
        real_backoff = c._backoff

        def counting(attempt: int) -> float:
            attempts.append(attempt)
            return real_backoff(attempt)

        c._backoff = counting  # type: ignore[method-assign]
        await wait_until(lambda: len(attempts) >= 20, "twenty attempts")
        assert attempts[:5] == [0, 1, 2, 3, 4]
        assert c.status == "polling"  # after 3 failed attempts; its polls fail too
        # then a hub appears on that port: the client connects
        hub.stop()
        hub.port = port
        await asyncio.to_thread(hub.start)
        sub = c.subscribe("late/#")
        await wait_until(lambda: c.status == "open", "open", 10)
        await asyncio.wait_for(sub.ready(), 5)
