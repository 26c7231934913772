"""examples/audio-server end to end, as its README shows it: its four simulated Mopidy
players (mopidy_sim.py, on ports of the test's own), a hub with the example's own
statecast.toml (the players' ports put in), and a real Home Assistant with the
integration. The four media players and the stream sensors appear with their devices; a
track the simulator starts shows as `playing`; `media_player.media_pause` and
`volume_set` from Home Assistant reach the simulator through the example's route, and
the state goes to `paused` in statecast and in Home Assistant."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hass_process import HomeAssistant, add_entry, call, wait_ha_state
from support import REPO, Hub, rest, wait_exit, wait_until

EXAMPLE = REPO / "examples" / "audio-server"
PLAYERS = 4
_LISTENING = re.compile(r"mopidy simulator on ws://127\.0\.0\.1:(\d+)/")


class Players:
    """mopidy_sim.py serving the four players on free ports, without its listener
    (`--every 0`: a player changes only when asked); stopped by its PID."""

    def __init__(self, tmp: Path) -> None:
        self.log = tmp / "mopidy_sim.log"
        self.ports: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 10.0) -> None:
        ports = [arg for _ in range(PLAYERS) for arg in ("--port", "0")]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(EXAMPLE / "mopidy_sim.py"), *ports, "--every", "0"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while len(self.ports) < PLAYERS:
            self.ports = [int(p) for p in _LISTENING.findall(self.log.read_text(errors="replace"))]
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mopidy_sim.py did not start:\n" + self.log.read_text(errors="replace"))
            await asyncio.sleep(0.02)  # polling the simulator's log for its ports

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            if not await wait_exit(proc, 10):
                proc.kill()
                await wait_exit(proc, 10)

    async def rpc(self, player: int, method: str, params: dict[str, Any] | None = None) -> Any:
        """A JSON-RPC call to player `player` (1..4) itself, not through statecast."""
        request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{self.ports[player - 1]}/mopidy/rpc"
            async with session.post(url, json=request) as res:
                reply = json.loads(await res.text())
        assert "error" not in reply, reply
        return reply["result"]


def example_config(ports: list[int]) -> str:
    """The example's statecast.toml with player N's port (6680 + N - 1) replaced by the
    simulator's, and its script named by an absolute path (the hub runs in this folder)."""
    text = (EXAMPLE / "statecast.toml").read_text()
    text, count = re.subn(r"127\.0\.0\.1:668([0-3])\b", lambda m: f"127.0.0.1:{ports[int(m.group(1))]}", text)
    assert count >= 2 * PLAYERS, "each player's source and route name its port"
    assert " examples/audio-server/fake-pactl.sh" in text
    return text.replace(" examples/", f" {REPO}/examples/")


@pytest.fixture
async def players(tmp_path: Path) -> AsyncIterator[Players]:
    sim = Players(tmp_path)
    try:
        await sim.start()
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
async def audio_hub(tmp_path: Path, players: Players) -> AsyncIterator[Hub]:
    process = Hub(tmp_path, example_config(players.ports))
    await process.start()
    yield process
    await process.stop()


async def hub_state(hub: Hub, topic: str) -> Any:
    status, body = await rest(hub.url, "GET", f"/api/state/{topic}")
    return body["state"] if status == 200 else None


async def wait_ha_value(ha: HomeAssistant, entity_id: str, values: set[str]) -> dict[str, Any]:
    """Waits until the entity's state in Home Assistant is one of `values`; its state object."""
    seen: dict[str, Any] = {}

    async def check() -> bool:
        seen["state"] = await ha.state(entity_id)
        return seen["state"] is not None and seen["state"]["state"] in values

    await wait_until(check, f"{entity_id} in {values} (is {seen})", timeout=20, interval=0.05)
    return seen["state"]


async def test_the_audio_server_in_home_assistant(ha: HomeAssistant, audio_hub: Hub, players: Players) -> None:
    await add_entry(ha, audio_hub)

    # the four players, stopped (idle), each its own device; the sound system's sensors
    for n in range(1, PLAYERS + 1):
        await wait_ha_state(ha, f"media_player.player{n}", "idle")
    # fake-pactl.sh: one stream and a second one that comes and goes, the volume 60 or 70
    streams = await wait_ha_value(ha, "sensor.pulse_streams", {"1", "2"})
    assert streams["attributes"]["friendly_name"] == "Streams playing", streams
    volume = await wait_ha_value(ha, "sensor.pulse_volume", {"60", "70"})
    assert volume["attributes"]["unit_of_measurement"] == "%", volume
    devices = {d["name"]: d for d in await ha.ws({"type": "config/device_registry/list"})}
    entities = {e["entity_id"]: e for e in await ha.ws({"type": "config/entity_registry/list"})}
    for n in range(1, PLAYERS + 1):
        device = devices[f"Player {n}"]
        assert device["manufacturer"] == "Mopidy", device
        assert entities[f"media_player.player{n}"]["device_id"] == device["id"]
    assert entities["sensor.pulse_volume"]["device_id"] == devices["Sound system"]["id"]

    # the simulator starts a track on player 1 (asked directly, not through statecast)
    await players.rpc(1, "core.playback.play")
    player = await wait_ha_state(ha, "media_player.player1", "playing")
    assert player["attributes"]["media_title"] == "Blue in Green", player
    assert player["attributes"]["media_artist"] == "Miles Davis", player
    assert player["attributes"]["album"] == "Kind of Blue", player
    assert (await hub_state(audio_hub, "audio/player1"))["state"] == "playing"

    # paused from Home Assistant: the command reaches the simulator through the route
    assert await call(ha, "media_player", "media_pause", {"entity_id": "media_player.player1"}) == 200
    assert await players.rpc(1, "core.playback.get_state") == "paused"
    await wait_ha_state(ha, "media_player.player1", "paused")
    assert (await hub_state(audio_hub, "audio/player1"))["state"] == "paused"

    # the volume from Home Assistant (0..1) on Mopidy's scale (0..100)
    data = {"entity_id": "media_player.player1", "volume_level": 0.3}
    assert await call(ha, "media_player", "volume_set", data) == 200
    assert await players.rpc(1, "core.mixer.get_volume") == 30

    async def volume_shown() -> bool:
        state = await ha.state("media_player.player1")
        return state is not None and state["attributes"].get("volume_level") == 0.3

    await wait_until(volume_shown, "player 1's volume 0.3 in Home Assistant", timeout=20, interval=0.05)

    # the others did not move
    for n in range(2, PLAYERS + 1):
        assert (await ha.state(f"media_player.player{n}") or {}).get("state") == "idle"
        assert await players.rpc(n, "core.playback.get_state") == "stopped"
    assert "ERROR (MainThread) [custom_components.statecast" not in ha.log(), ha.log(6000)
