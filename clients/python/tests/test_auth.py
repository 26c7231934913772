"""With authentication on, the token goes as `Authorization: Bearer` on the WebSocket
upgrade and on REST; refusals are typed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import HubProcess, wait_until

import statecast


@pytest.fixture
def auth_hub(tmp_path: Path) -> Iterator[HubProcess]:
    config = tmp_path / "statecast.toml"
    config.write_text(
        """
[[auth.keys]]
name = "python-tests"
key = "s3cret"
read = ["a/#"]
write = ["a/#", "b/#"]
"""
    )
    process = HubProcess(tmp_path / "data", ["--config", str(config)])
    process.start()
    yield process
    process.stop()


async def test_a_token_reads_and_writes_what_it_may(auth_hub: HubProcess) -> None:
    async with statecast.connect(auth_hub.ws_url, token="s3cret") as c:
        sub = c.subscribe("#")  # narrowed by the hub to what the key may read
        await asyncio.wait_for(sub.ready(), 5)
        assert c.status == "open"
        assert (await c.set("b/hidden", {"x": 1})).rev == 1  # may write, may not read
        assert (await c.set("a/seen", {"x": 2})).rev == 1
        assert await asyncio.wait_for(anext(sub), 5) == statecast.Snapshot("a/seen", 1, {"x": 2})
        with pytest.raises(statecast.ForbiddenError) as forbidden:
            await c.set("c/other", {"x": 3})
        assert forbidden.value.code == "forbidden"
        assert c.topics() == ["a/seen"]
    assert statecast.get("a/seen", url=auth_hub.base, token="s3cret").state == {"x": 2}


async def test_a_bad_token_is_refused(auth_hub: HubProcess) -> None:
    async with statecast.connect(auth_hub.ws_url, token="wrong", backoff_min=0.05, backoff_max=0.1) as c:
        errors: list[Exception] = []
        c.on_error(errors.append)
        await wait_until(lambda: len(errors) >= 1, "the refused upgrade reported")
        assert isinstance(errors[0], statecast.UnauthorizedError)
        assert c.status in ("connecting", "polling")
        with pytest.raises(statecast.UnauthorizedError) as refused:  # over REST: no socket
            await c.set("a/x", {"x": 1})
        assert refused.value.http_status == 401
    with pytest.raises(statecast.UnauthorizedError):
        statecast.get("a/seen", url=auth_hub.base)
