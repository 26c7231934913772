"""Against the real hub: initial state, patches, removals, events, writes and their results."""

from __future__ import annotations

import asyncio

from support import HubProcess, arest, wait_until

import statecast


async def next_change(sub: statecast.Subscription, timeout: float = 5.0) -> statecast.Change:
    return await asyncio.wait_for(anext(sub), timeout)


async def test_initial_state_arrives_as_a_snapshot(hub: HubProcess) -> None:
    await arest(hub.base, "PUT", "/api/state/init/dev1", {"temp": 21, "on": True})
    await arest(hub.base, "PUT", "/api/state/other/x", {"no": 1})
    async with statecast.connect(hub.ws_url) as c:
        sub = c.subscribe("init/#")
        first = await next_change(sub)
        assert first == statecast.Snapshot("init/dev1", 1, {"temp": 21, "on": True})
        await asyncio.wait_for(sub.ready(), 5)
        assert c.state("init/dev1") == {"temp": 21, "on": True}
        assert c.rev("init/dev1") == 1
        assert c.topics() == ["init/dev1"], "only subscribed topics are mirrored"
        assert c.status == "open"

        # a second subscription on an overlapping pattern gets the mirrored state locally
        sent: list[dict[str, object]] = []
        c._outgoing = sent.append
        async with c.subscribe("init/+") as second:
            assert await next_change(second) == first
            await asyncio.wait_for(second.ready(), 5)
        assert [m["patterns"] for m in sent if m["type"] == "unsubscribe"] == [["init/+"]]
        assert c.state("init/dev1") == {"temp": 21, "on": True}, "still mirrored through init/#"
        # a subscription of a pattern already held is not sent again
        sent.clear()
        again = c.subscribe("init/#")
        assert await next_change(again) == first
        assert not [m for m in sent if m["type"] == "subscribe"]
        again.close()
        sub.close()
    assert c.status == "closed"


async def test_writes_by_others_arrive_as_patches_then_removal(hub: HubProcess) -> None:
    async with statecast.connect(hub.base) as c:  # the http:// base URL works too
        sub = c.subscribe("p/+")
        await asyncio.wait_for(sub.ready(), 5)
        await arest(hub.base, "PUT", "/api/state/p/x", {"a": 1, "b": {"c": 2}})
        await arest(hub.base, "PATCH", "/api/state/p/x", {"b": {"c": 3, "d": 4}})
        await arest(hub.base, "PUT", "/api/state/p/x", {"a": 2, "b": {"c": 3, "d": 4}})
        await arest(hub.base, "PATCH", "/api/state/p/x", {"a": None})
        await arest(hub.base, "DELETE", "/api/state/p/x")
        changes = [await next_change(sub) for _ in range(5)]
        assert changes == [
            statecast.Snapshot("p/x", 1, {"a": 1, "b": {"c": 2}}),
            statecast.Patch("p/x", 2, {"a": 1, "b": {"c": 3, "d": 4}}, {"b": {"c": 3, "d": 4}}),
            statecast.Patch("p/x", 3, {"a": 2, "b": {"c": 3, "d": 4}}, {"a": 2}),
            statecast.Patch("p/x", 4, {"b": {"c": 3, "d": 4}}, {"a": None}),
            statecast.Removed("p/x", 5),
        ]
        assert c.state("p/x") is None and c.rev("p/x") is None


async def test_events_reach_iterators_and_callbacks(hub: HubProcess) -> None:
    await arest(hub.base, "PUT", "/api/state/ev/button", {"battery": 90})
    async with statecast.connect(hub.ws_url) as c:
        seen_sync: list[statecast.Change] = []
        seen_async: list[statecast.Change] = []

        async def slow(change: statecast.Change) -> None:
            await asyncio.sleep(0)  # an async callback is awaited before the next change
            seen_async.append(change)

        def boom(change: statecast.Change) -> None:
            raise RuntimeError("a callback that fails")

        errors: list[Exception] = []
        c.on_error(errors.append)
        c.subscribe("ev/#", seen_sync.append)
        c.subscribe("ev/+", slow)
        c.subscribe("ev/button", boom)
        sub = c.subscribe("ev/#")
        assert isinstance(await next_change(sub), statecast.Snapshot)
        await asyncio.wait_for(sub.ready(), 5)
        await c.event("ev/button", {"pressed": True})
        await arest(hub.base, "POST", "/api/events/ev/button", {"pressed": False})
        e1, e2 = await next_change(sub), await next_change(sub)
        assert e1 == statecast.Event("ev/button", {"pressed": True}, 1, {"battery": 90})
        assert e2 == statecast.Event("ev/button", {"pressed": False}, 1, {"battery": 90})
        await wait_until(lambda: len(seen_sync) == 3 and len(seen_async) == 3, "callbacks")
        assert seen_sync == seen_async == [statecast.Snapshot("ev/button", 1, {"battery": 90}), e1, e2]
        await wait_until(lambda: len(errors) == 3, "callback errors reported")
        assert all(isinstance(e, RuntimeError) for e in errors)


async def test_writes_answer_with_results(hub: HubProcess) -> None:
    async with statecast.connect(hub.ws_url) as c:
        sub = c.subscribe("w/#")
        await asyncio.wait_for(sub.ready(), 5)
        assert c.status == "open"
        assert await c.set("w/a", {"x": 1}) == statecast.WriteResult("w/a", 1, True)
        assert await c.patch("w/a", {"y": 2}) == statecast.WriteResult("w/a", 2, True)
        assert await c.patch("w/a", {"y": 2}) == statecast.WriteResult("w/a", 2, False)
        await wait_until(lambda: c.rev("w/a") == 2, "own write mirrored")
        assert c.state("w/a") == {"x": 1, "y": 2}
        assert await c.delete("w/a") == statecast.WriteResult("w/a", 3, True)
        assert await c.event("w/ev", [1, "two"]) is None
        assert c.states("w/#") == {}
        changes = [await next_change(sub) for _ in range(4)]
        assert [ch.type for ch in changes] == ["snapshot", "patch", "removed", "event"]


async def test_writes_go_over_rest_while_the_socket_is_not_open(hub: HubProcess) -> None:
    c = statecast.connect(hub.ws_url, token="t0k")  # not started: no socket
    assert c.status == "connecting"
    assert await c.set("rest/a", {"x": 1}) == statecast.WriteResult("rest/a", 1, True)
    assert await c.patch("rest/a", {"y": 2}) == statecast.WriteResult("rest/a", 2, True)
    assert await c.event("rest/ev", 1) is None
    assert await c.delete("rest/a") == statecast.WriteResult("rest/a", 3, True)
    await c.aclose()
    assert c.status == "closed"


def test_synchronous_api(hub: HubProcess) -> None:
    url = hub.base
    assert statecast.set("sync/a", {"x": 1}, url=url) == statecast.WriteResult("sync/a", 1, True)
    assert statecast.patch("sync/a", {"y": 2}, url=url).rev == 2
    assert statecast.get("sync/a", url=hub.ws_url) == statecast.TopicState("sync/a", 2, {"x": 1, "y": 2})
    statecast.set("sync/b", [1, 2], url=url)
    assert [t.topic for t in statecast.get_all("sync/#", url=url)] == ["sync/a", "sync/b"]
    assert statecast.patch("sync/a", {"y": 3}, if_rev=2, url=url).rev == 3
    statecast.event("sync/a", {"ping": 1}, url=url)
    assert statecast.delete("sync/b", url=url).rev == 2
    assert statecast.get_all("sync/#", url=url) == [statecast.TopicState("sync/a", 3, {"x": 1, "y": 3})]


async def test_mirror_only_and_dropped_iterators(hub: HubProcess) -> None:
    await arest(hub.base, "PUT", "/api/state/m/a", {"x": 1})
    async with statecast.connect(hub.ws_url) as c:
        sent: list[dict[str, object]] = []
        c._outgoing = sent.append
        held = c.mirror("m/#")  # no changes handed out, the mirror is kept
        await asyncio.wait_for(held.ready(), 5)
        assert c.states() == {"m/a": {"x": 1}}
        await arest(hub.base, "PATCH", "/api/state/m/a", {"x": 2})
        await wait_until(lambda: c.state("m/a") == {"x": 2}, "mirrored patch")

        # an iterator left with `break` is unsubscribed once it is collected
        await arest(hub.base, "PUT", "/api/state/n/a", {"y": 1})
        async for change in c.subscribe("n/#"):
            assert change == statecast.Snapshot("n/a", 1, {"y": 1})
            break
        await wait_until(lambda: any(m["type"] == "unsubscribe" for m in sent), "unsubscribe")
        assert [m["patterns"] for m in sent if m["type"] == "unsubscribe"] == [["n/#"]]
        assert c.topics() == ["m/a"]
        held.close()
        assert c.topics() == []
