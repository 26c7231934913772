"""Entities through a real hub: ``entities()`` (async mirror and sync REST) lists the
descriptions with their values and availability, ``operate()`` sends a description's
command with ``{value}`` filled in to a device behind a route run here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Device, HubProcess, wait_until

import statecast

CONFIG = """
[[route]]
target = "dev/+"
type = "http"
url = "http://127.0.0.1:{port}/cmd/{{name}}"
body = "{{args}}"

[[entity]]
key = "light"
platform = "switch"
topic = "dev/1"
value = "/outputs/0"
command = {{ target = "dev/1", name = "switch", args = {{ output = 0, on = "{{value}}" }} }}

[[entity]]
key = "reboot"
platform = "button"
topic = "dev/1"
command = {{ target = "dev/1", name = "reboot" }}
"""


@pytest.fixture
def device() -> Iterator[Device]:
    d = Device()
    yield d
    d.close()


@pytest.fixture
def hub(tmp_path: Path, device: Device) -> Iterator[HubProcess]:
    config = tmp_path / "statecast.toml"
    config.write_text(CONFIG.format(port=device.port))
    process = HubProcess(tmp_path / "data", ["--config", str(config)])
    process.start()
    yield process
    process.stop()


async def test_entities_are_listed_with_their_values_and_operated_through_their_commands(
    hub: HubProcess, device: Device
) -> None:
    async with statecast.connect(hub.ws_url) as c:
        descriptions = c.subscribe("_entities/#")  # held: a collected subscription ends
        await descriptions.ready()
        assert [(e.key, e.value, e.available) for e in c.entities()] == [
            ("light", None, False),
            ("reboot", None, False),
        ]
        devices = c.subscribe("dev/#")
        await devices.ready()
        await c.set("dev/1", {"outputs": [True, False]})
        await wait_until(lambda: [e.available for e in c.entities()] == [True, True], "available entities")
        light = c.entities()[0]
        assert (light.key, light.value, light.description["platform"]) == ("light", True, "switch")

        await c.operate("light", False)
        assert device.received[-1] == {"path": "/cmd/switch", "body": {"output": 0, "on": False}}
        with pytest.raises(statecast.UpstreamError):
            await c.operate("reboot", True)
        with pytest.raises(KeyError):
            await c.operate("nothing", 1)

    # The synchronous API asks REST for the same.
    listed = statecast.entities(url=hub.base)
    assert [(e.key, e.value, e.available) for e in listed] == [("light", True, True), ("reboot", None, True)]
