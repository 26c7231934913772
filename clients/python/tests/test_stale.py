"""Staleness through the client, against the real hub with a ``stale_after`` of 300 ms: a
silent topic turns stale (flag, time, a ``Stale`` change), an unchanged write makes it fresh
again, a change freshens it before its patch, a late subscriber's snapshot says it is stale,
a client that only polls sees the same turns, and ``statecast.get`` reports it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from support import HubProcess, Proxy, arest, wait_until

import statecast

# The polled topic's second is time for several polls (every 50 ms) while it is fresh.
POLICIES = """
[[topics]]
match = "dev/+"
stale_after = "300ms"

[[topics]]
match = "polled/+"
stale_after = "1s"
"""


@pytest.fixture
def stale_hub(tmp_path: Path) -> Iterator[HubProcess]:
    config = tmp_path / "statecast.toml"
    config.write_text(POLICIES)
    process = HubProcess(tmp_path / "data", ["--config", str(config)])
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def proxy(stale_hub: HubProcess) -> AsyncIterator[Proxy]:
    p = Proxy(stale_hub.port)
    await p.start()
    yield p
    await p.close()


def turns(seen: list[statecast.Change], topic: str) -> list[statecast.Stale]:
    return [c for c in seen if isinstance(c, statecast.Stale) and c.topic == topic]


def rfc3339(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_a_silent_topic_turns_stale_and_fresh_again(stale_hub: HubProcess) -> None:
    topic = "dev/esp32-01"
    async with statecast.connect(stale_hub.ws_url) as c:
        seen: list[statecast.Change] = []
        sub = c.subscribe("dev/#", seen.append)
        await asyncio.wait_for(sub.ready(), 5)
        await arest(stale_hub.base, "PUT", f"/api/state/{topic}", {"uptime": 1})
        _, written = await arest(stale_hub.base, "GET", f"/api/state/{topic}")

        await wait_until(lambda: len(turns(seen, topic)) == 1, "the turn to stale")
        stale = turns(seen, topic)[0]
        assert (stale.rev, stale.state, stale.stale) == (1, {"uptime": 1}, True)
        assert stale.since is not None and rfc3339(stale.since) == written["time"]
        assert c.is_stale(topic) and c.stale_since(topic) == stale.since
        # What the REST API says, through the synchronous API.
        got = await asyncio.to_thread(statecast.get, topic, url=stale_hub.base)
        assert got.stale and got.time == stale.since

        # A late subscriber's snapshot says it is stale; since when, only a `stale` message says.
        async with statecast.connect(stale_hub.ws_url) as late:
            late_sub = late.subscribe(topic)
            first = await asyncio.wait_for(anext(late_sub), 5)
            assert first == statecast.Snapshot(topic, 1, {"uptime": 1}, stale=True)
            assert late.is_stale(topic) and late.stale_since(topic) is None
            late_sub.close()

        # The device repeats its state: fresh again, no new rev.
        assert not (await c.set(topic, {"uptime": 1})).changed
        await wait_until(lambda: len(turns(seen, topic)) >= 2, "the turn to fresh")
        fresh = turns(seen, topic)[1]
        assert (fresh.stale, fresh.rev) == (False, 1)
        assert fresh.since is not None and fresh.since > stale.since, "the unchanged write's time"
        assert not c.is_stale(topic) and c.stale_since(topic) is None

        # Silent again, then a change: fresh first, then the patch.
        await wait_until(lambda: len(turns(seen, topic)) >= 3, "stale again")
        before = len(seen)
        await c.patch(topic, {"uptime": 2})
        await wait_until(lambda: len(seen) >= before + 2, "fresh and the patch")
        first_change, second_change = seen[before : before + 2]
        assert isinstance(first_change, statecast.Stale) and not first_change.stale
        assert second_change == statecast.Patch(topic, 2, {"uptime": 2}, {"uptime": 2})

        # A topic no policy matches never turns stale.
        await arest(stale_hub.base, "PUT", "/api/state/dev/x/y", 1)
        await wait_until(lambda: len(turns(seen, topic)) >= 5, "the policy's topic stale a third time")
        assert not c.is_stale("dev/x/y") and not turns(seen, "dev/x/y")
        listed = await asyncio.to_thread(statecast.get_all, "dev/#", url=stale_hub.base)
        assert [(t.topic, t.stale) for t in listed] == [("dev/esp32-01", True), ("dev/x/y", False)]


async def test_a_client_that_only_polls_sees_the_turns(stale_hub: HubProcess, proxy: Proxy) -> None:
    topic = "polled/plug"
    proxy.block_ws = True  # WebSockets do not get through: the client polls the REST state
    options = {"poll_after_failures": 1, "poll_interval": 0.05, "backoff_min": 1.0, "backoff_max": 2.0}
    async with statecast.connect(proxy.base, **options) as c:  # type: ignore[arg-type]
        seen: list[statecast.Change] = []
        c.subscribe("polled/+", seen.append)
        await wait_until(lambda: c.status == "polling", "polling")
        await arest(stale_hub.base, "PUT", f"/api/state/{topic}", {"on": True})
        await wait_until(lambda: c.state(topic) is not None, "the first poll")
        await wait_until(lambda: c.is_stale(topic), "the poll to see it stale")

        # Callbacks run from a queue: wait for the one that says so, not only the mirror.
        def last_said_stale() -> bool:
            said = [getattr(x, "stale", False) for x in seen if x.topic == topic]
            return said[-1:] == [True]

        await wait_until(last_said_stale, "the stale callback")
        before = len(turns(seen, topic))
        # The device repeats its state: the same rev, fresh again, then stale again.
        await arest(stale_hub.base, "PUT", f"/api/state/{topic}", {"on": True})
        await wait_until(lambda: len(turns(seen, topic)) >= before + 2, "the callbacks for fresh and stale again")
        assert c.is_stale(topic)
        assert turns(seen, topic)[before:] == [
            statecast.Stale(topic, 1, {"on": True}, False),
            statecast.Stale(topic, 1, {"on": True}, True),
        ]
        assert c.stale_since(topic) is None, "a poll does not say since when"
