"""A gap in a topic's revs makes the client send `get` and take the hub's snapshot.

The gap is real: a patch the hub sent is dropped on arrival (the client's `_incoming` test
hook), so the next patch skips a rev."""

from __future__ import annotations

import asyncio
from typing import Any

from support import HubProcess, arest, wait_until

import statecast


async def test_a_lost_patch_is_recovered_with_get(hub: HubProcess) -> None:
    async with statecast.connect(hub.ws_url) as c:
        sent: list[dict[str, Any]] = []
        c._outgoing = sent.append
        statuses: list[str] = []
        c.on_status(statuses.append)
        sub = c.subscribe("gap/#")
        await arest(hub.base, "PUT", "/api/state/gap/t", {"v": 1})
        await wait_until(lambda: c.rev("gap/t") == 1, "snapshot")

        def drop_rev_2(msg: dict[str, Any]) -> bool:
            return not (msg.get("type") == "patch" and msg.get("rev") == 2)

        c._incoming = drop_rev_2
        await arest(hub.base, "PATCH", "/api/state/gap/t", {"v": 2})  # lost on the way
        await arest(hub.base, "PATCH", "/api/state/gap/t", {"w": 3})  # rev 3: a gap
        await wait_until(lambda: c.rev("gap/t") == 3 and c.status == "open", "resynced")
        assert c.state("gap/t") == {"v": 2, "w": 3}
        gets = [m for m in sent if m["type"] == "get"]
        assert [m["patterns"] for m in gets] == [["gap/t"]]
        assert "resyncing" in statuses

        # what the subscription saw: rev 1, then the snapshot the get brought (no patch 3
        # applied on top of a stale state)
        changes = [await asyncio.wait_for(anext(sub), 5) for _ in range(2)]
        assert changes == [
            statecast.Snapshot("gap/t", 1, {"v": 1}),
            statecast.Snapshot("gap/t", 3, {"v": 2, "w": 3}),
        ]
        # and the stream goes on with patches
        await arest(hub.base, "PATCH", "/api/state/gap/t", {"w": 4})
        assert await asyncio.wait_for(anext(sub), 5) == statecast.Patch("gap/t", 4, {"v": 2, "w": 4}, {"w": 4})


async def test_out_of_order_unknown_and_duplicate_patches(hub: HubProcess) -> None:
    async with statecast.connect(hub.ws_url) as c:
        sent: list[dict[str, Any]] = []
        c._outgoing = sent.append
        sub = c.subscribe("gap/#")
        await arest(hub.base, "PUT", "/api/state/gap/u", {"w": 1})
        await arest(hub.base, "PATCH", "/api/state/gap/u", {"w": 2})
        await wait_until(lambda: c.rev("gap/u") == 2, "rev 2")
        await sub.ready()

        # a patch far ahead: get; patches of a topic being re-read are ignored
        c._handle({"type": "patch", "topic": "gap/u", "rev": 9, "patch": {"bogus": True}})
        assert c.status == "resyncing"
        c._handle({"type": "patch", "topic": "gap/u", "rev": 3, "patch": {"bogus2": True}})
        await wait_until(lambda: c.status == "open", "open after the re-read")
        assert (c.rev("gap/u"), c.state("gap/u")) == (2, {"w": 2})

        # a patch of a topic the client does not hold: get, and the hub says it is not live
        c._handle({"type": "patch", "topic": "gap/unknown", "rev": 3, "patch": {"z": 1}})
        assert {"type": "get", "patterns": ["gap/unknown"]}.items() <= sent[-1].items()
        await wait_until(lambda: c.status == "open", "open after the unknown topic")
        assert c.state("gap/unknown") is None

        # a duplicate changes nothing and reaches nobody
        c._handle({"type": "patch", "topic": "gap/u", "rev": 2, "patch": {"w": 99}})
        assert c.state("gap/u") == {"w": 2}
        await arest(hub.base, "PATCH", "/api/state/gap/u", {"w": 3})
        changes = [await asyncio.wait_for(anext(sub), 5) for _ in range(4)]
        assert [(ch.type, ch.rev) for ch in changes] == [("snapshot", 1), ("patch", 2), ("snapshot", 2), ("patch", 3)]
