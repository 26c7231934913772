"""Bad input is answered with typed exceptions carrying the hub's error code, over the
socket, over REST and from the synchronous API; the connection stays usable."""

from __future__ import annotations

import asyncio

import pytest
from support import HubProcess, free_port

import statecast


async def test_bad_input_over_the_socket(hub: HubProcess) -> None:
    async with statecast.connect(hub.ws_url) as c:
        ok = c.subscribe("ok/#")
        await asyncio.wait_for(ok.ready(), 5)
        with pytest.raises(statecast.InvalidTopicError) as bad_topic:
            await c.set("a//b", {"x": 1})
        assert bad_topic.value.code == "invalid_topic" and "segment 2 is empty" in bad_topic.value.message
        with pytest.raises(statecast.BadRequestError) as null_state:
            await c.set("ok/null", None)
        assert null_state.value.code == "bad_request"
        with pytest.raises(statecast.NotFoundError):
            await c.delete("ok/missing")
        with pytest.raises(statecast.TooLargeError):
            await c.set("ok/big", {"blob": "x" * 300_000})
        with pytest.raises(statecast.NoRouteError):
            await c.command("ok/device", "reboot", {"now": True})
        with pytest.raises(ValueError):  # not JSON: refused before it is sent
            await c.set("ok/nan", {"x": float("nan")})

        # a pattern the hub refuses ends its subscription with the error
        errors: list[Exception] = []
        c.on_error(errors.append)
        bad = c.subscribe("a/#/b")
        bad_with_callback = c.subscribe("a/#/b", lambda change: None)
        with pytest.raises(statecast.InvalidPatternError) as bad_pattern:
            await asyncio.wait_for(bad.ready(), 5)
        assert bad_pattern.value.code == "invalid_pattern"
        with pytest.raises(statecast.InvalidPatternError):
            await asyncio.wait_for(anext(bad), 5)
        with pytest.raises(statecast.InvalidPatternError):
            await asyncio.wait_for(bad_with_callback.ready(), 5)
        assert [type(e) for e in errors] == [statecast.InvalidPatternError], "reported once"

        # the connection is still fine
        assert c.status == "open"
        assert (await c.set("ok/a", {"fine": True})).rev == 1
    with pytest.raises(statecast.ClosedError) as closed:
        await c.set("ok/a", {})
    assert closed.value.code == "closed"
    # a subscription ends with the client, after what it had received
    assert [ch async for ch in ok] == [statecast.Snapshot("ok/a", 1, {"fine": True})]


async def test_bad_input_over_rest(hub: HubProcess) -> None:
    c = statecast.connect(hub.base)  # not started: requests go over REST
    with pytest.raises(statecast.InvalidTopicError) as bad_topic:
        await c.patch("a/b c", {"x": 1})
    assert bad_topic.value.http_status == 400
    with pytest.raises(statecast.BadRequestError):
        await c.set("ok/null", None)
    with pytest.raises(statecast.NotFoundError) as missing:
        await c.delete("ok/missing")
    assert (missing.value.code, missing.value.http_status) == ("not_found", 404)
    with pytest.raises(statecast.NoRouteError):
        await c.command("ok/device", "reboot")
    await c.aclose()


def test_bad_input_from_the_synchronous_api(hub: HubProcess) -> None:
    with pytest.raises(statecast.NotFoundError):
        statecast.get("nothing/here", url=hub.base)
    with pytest.raises(statecast.InvalidPatternError):
        statecast.get_all("a/#/b", url=hub.base)
    statecast.set("cond/a", {"v": 1}, url=hub.base)
    with pytest.raises(statecast.ConflictError) as conflict:
        statecast.set("cond/a", {"v": 2}, if_rev=7, url=hub.base)
    assert (conflict.value.code, conflict.value.http_status) == ("conflict", 412)
    with pytest.raises(statecast.UnreachableError) as unreachable:
        statecast.get("a/b", url=f"http://127.0.0.1:{free_port()}", timeout=2)
    assert unreachable.value.code == "unreachable"
    with pytest.raises(statecast.StatecastError):  # every error shares the base class
        statecast.delete("nothing/here", url=hub.base)
