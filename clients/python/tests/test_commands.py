"""Commands through a real hub whose `http` route sends them to a device server run here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Device, HubProcess

import statecast


@pytest.fixture
def device() -> Iterator[Device]:
    d = Device()
    yield d
    d.close()


@pytest.fixture
def routed_hub(tmp_path: Path, device: Device) -> Iterator[HubProcess]:
    config = tmp_path / "statecast.toml"
    config.write_text(
        f"""
[[route]]
target = "dev/+"
type = "http"
url = "http://127.0.0.1:{device.port}/cmd/{{name}}"
"""
    )
    process = HubProcess(tmp_path / "data", ["--config", str(config)])
    process.start()
    yield process
    process.stop()


@pytest.mark.parametrize("transport", ["websocket", "rest"])
async def test_a_command_returns_the_device_answer_a_refusal_its_status_and_body(
    routed_hub: HubProcess, device: Device, transport: str
) -> None:
    c = statecast.connect(routed_hub.ws_url)
    if transport == "websocket":
        c.start()  # without start(), nothing is connected: requests go over REST
        sub = c.subscribe("dev/#")
        await sub.ready()
        assert c.status == "open"
    try:
        answer = await c.command("dev/1", "switch", {"on": True})
        assert answer == {"status": 200, "body": {"done": True}}
        assert device.received[-1] == {"path": "/cmd/switch", "body": {"name": "switch", "args": {"on": True}}}

        with pytest.raises(statecast.UpstreamError) as refused:
            await c.command("dev/1", "explode")
        assert refused.value.code == "upstream"
        assert refused.value.status == 409
        assert refused.value.body == {"error": "busy"}
        assert device.received[-1]["body"] == {"name": "explode", "args": {}}

        with pytest.raises(statecast.NoRouteError) as no_route:
            await c.command("other/1", "switch", {})
        assert no_route.value.code == "no_route"
    finally:
        await c.aclose()


def test_synchronous_command(routed_hub: HubProcess) -> None:
    assert statecast.command("dev/7", "switch", {"on": False}, url=routed_hub.base) == {
        "status": 200,
        "body": {"done": True},
    }
    with pytest.raises(statecast.UpstreamError) as refused:
        statecast.command("dev/7", "melt", url=routed_hub.base)
    assert (refused.value.status, refused.value.body, refused.value.http_status) == (409, {"error": "busy"}, 502)
