"""While the socket is down the client polls the state over REST, slowly, and stops as soon
as the socket is back. The hub is real; a proxy in front of it plays the network: it
passes everything, or refuses WebSocket upgrades while REST still gets through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from support import HubProcess, Proxy, arest, wait_until

import statecast


@pytest.fixture
async def proxy(hub: HubProcess) -> AsyncIterator[Proxy]:
    p = Proxy(hub.port)
    await p.start()
    yield p
    await p.close()


def polls(proxy: Proxy) -> list[dict[str, object]]:
    return [r for r in proxy.requests if str(r["line"]).startswith("GET /api/state?match=")]


async def test_polling_while_the_socket_is_down(hub: HubProcess, proxy: Proxy) -> None:
    await arest(hub.base, "PUT", "/api/state/poll/a", {"v": "real"})
    await arest(hub.base, "PUT", "/api/state/poll/gone", {"v": "soon gone"})
    options = {"poll_after_failures": 1, "poll_interval": 0.1, "backoff_min": 0.2, "backoff_max": 0.5}
    async with statecast.connect(proxy.base, token="t0k", **options) as c:  # type: ignore[arg-type]
        statuses: list[str] = []
        c.on_status(statuses.append)
        seen: list[statecast.Change] = []
        sub = c.subscribe("poll/#", seen.append)
        await asyncio.wait_for(sub.ready(), 5)
        assert c.status == "open" and c.topics() == ["poll/a", "poll/gone"]
        upgrade = next(r for r in proxy.requests if r["ws"])
        assert upgrade["headers"]["authorization"] == "Bearer t0k"

        # the hub goes down: reconnects fail, polls fail, the mirror keeps the last state
        await asyncio.to_thread(hub.stop)
        await wait_until(lambda: c.status == "polling", "status polling")
        n = len(polls(proxy))
        await wait_until(lambda: len(polls(proxy)) >= n + 2, "polls while the hub is down")
        assert c.state("poll/a") == {"v": "real"} and c.rev("poll/a") == 1

        # it is back, but WebSockets do not get through: the polls bring the changes
        proxy.block_ws = True
        await asyncio.to_thread(hub.start)
        await arest(hub.base, "PATCH", "/api/state/poll/a", {"v": "polled"})
        await arest(hub.base, "DELETE", "/api/state/poll/gone")
        await arest(hub.base, "PUT", "/api/state/poll/new", {"fresh": True})
        await wait_until(lambda: c.topics() == ["poll/a", "poll/new"] and c.rev("poll/a") == 2, "polled changes")
        assert c.state("poll/a") == {"v": "polled"}
        assert c.status == "polling"
        polled = [
            statecast.Snapshot("poll/a", 2, {"v": "polled"}),
            statecast.Removed("poll/gone", 1),
            statecast.Snapshot("poll/new", 1, {"fresh": True}),
        ]
        await wait_until(lambda: all(ch in seen for ch in polled), "the callback gets the polled changes")
        poll = polls(proxy)[-1]
        assert poll["line"] == "GET /api/state?match=poll%2F%23 HTTP/1.1"
        assert poll["headers"]["authorization"] == "Bearer t0k"
        # unchanged: the next polls send the ETag back and get 304, nothing is re-applied
        n = len(seen)
        await wait_until(
            lambda: any(
                r["answer"] == "HTTP/1.1 304 Not Modified" and "if-none-match" in r["headers"] for r in polls(proxy)
            ),
            "a 304",
        )
        assert len(seen) == n
        # writes go over REST meanwhile
        assert await c.patch("poll/a", {"w": 1}) == statecast.WriteResult("poll/a", 3, True)
        await wait_until(lambda: c.rev("poll/a") == 3, "own write polled")

        # WebSockets get through again: the socket opens, resumes with `since`, polling stops
        proxy.block_ws = False
        await wait_until(lambda: c.status == "open", "open again")
        n = len(polls(proxy))
        await arest(hub.base, "PATCH", "/api/state/poll/a", {"w": 2})
        pushed = statecast.Patch("poll/a", 4, {"v": "polled", "w": 2}, {"w": 2})
        await wait_until(lambda: seen[-1] == pushed, "a pushed patch")
        assert len(polls(proxy)) <= n + 1, "no polling once open"
        assert statuses[-1] == "open" and "polling" in statuses


async def test_no_polling_when_disabled(hub: HubProcess, proxy: Proxy) -> None:
    proxy.block_ws = True
    async with statecast.connect(proxy.base, poll_interval=None, backoff_min=0.01, backoff_max=0.02) as c:
        c.subscribe("x/#")
        await wait_until(lambda: sum(1 for r in proxy.requests if r["ws"]) >= 5, "several attempts")
        assert c.status == "connecting"
        assert not polls(proxy)
