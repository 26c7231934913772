"""How long a statecast write takes to become the new state in Home Assistant's state machine.

Starts a hub (the binary at target/debug/statecast, or --bin / $STATECAST_BIN) and a real
Home Assistant (the venv tests/homeassistant/setup.sh makes, or --venv) with the statecast
integration copied in and set up through the config-flow REST API, then writes a sensor's
topic `--writes` times (one after another: the next write once the last state arrived) and
prints p50/p99/max of two spans:

- write -> state machine: from just before the hub's REST PUT is sent to the
  `last_updated` time Home Assistant stamps on the new state (both on this machine's clock)
- write -> hub's answer: the REST PUT's round trip alone, for comparison: the hub's own share
  (it answers once the write is stored)
- write -> subscriber: to the `state_changed` event arriving at this script over Home
  Assistant's WebSocket API (what a dashboard would see; the first span plus one hop)

Run from the repository root, with a Python that has aiohttp (the test venv has it):

    target/homeassistant-test-venv/bin/python bench/homeassistant_latency.py
    target/homeassistant-test-venv/bin/python bench/homeassistant_latency.py --venv target/homeassistant-latest-venv

It is a measurement, not a test: it asserts only that every write arrived, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "homeassistant"))

import support  # noqa: E402
from hass_process import VENV, HomeAssistant  # noqa: E402
from support import Hub, put  # noqa: E402

ENTITY = "sensor.bench_value"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(name: str, values_ms: list[float]) -> str:
    return (
        f"{name:<26} p50 {percentile(values_ms, 0.5):6.2f} ms   p99 {percentile(values_ms, 0.99):6.2f} ms   "
        f"max {max(values_ms):6.2f} ms   mean {statistics.fmean(values_ms):6.2f} ms"
    )


async def measure(ha: HomeAssistant, hub: Hub, writes: int) -> tuple[list[float], list[float], list[float]]:
    to_machine: list[float] = []
    to_subscriber: list[float] = []
    answered: list[float] = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ha.url + "/api/websocket") as ws:
            await ws.receive_json()
            await ws.send_json({"type": "auth", "access_token": ha.token})
            assert (await ws.receive_json())["type"] == "auth_ok"
            await ws.send_json({"id": 1, "type": "subscribe_events", "event_type": "state_changed"})
            assert (await ws.receive_json())["success"]
            for i in range(1, writes + 1):
                sent = time.time()
                async with session.put(f"{hub.url}/api/state/bench/value", json={"v": i}) as res:
                    assert res.status == 200, await res.text()
                answered.append((time.time() - sent) * 1000)
                while True:
                    msg = await asyncio.wait_for(ws.receive_json(), 10)
                    data = msg.get("event", {}).get("data", {})
                    new = data.get("new_state")
                    if data.get("entity_id") == ENTITY and new and new["state"] == str(i):
                        break
                arrived = time.time()
                updated = datetime.fromisoformat(new["last_updated"]).timestamp()
                to_machine.append((updated - sent) * 1000)
                to_subscriber.append((arrived - sent) * 1000)
                await asyncio.sleep(0.01)  # pacing between writes, not synchronisation
    return answered, to_machine, to_subscriber


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--venv", type=Path, default=VENV, help="Home Assistant's venv")
    parser.add_argument("--bin", type=Path, default=Path(os.environ.get("STATECAST_BIN") or support.BIN))
    args = parser.parse_args()
    support.BIN = args.bin
    with tempfile.TemporaryDirectory() as tmp:
        hub = Hub(Path(tmp), "")
        await hub.start()
        ha = HomeAssistant(Path(tmp) / "ha", args.venv)
        try:
            await ha.start()
            await put(hub, "bench/value", {"v": 0})
            await put(
                hub,
                "_entities/bench_value",
                {"platform": "sensor", "name": "Bench", "topic": "bench/value", "value": "/v"},
            )
            status, flow = await ha.api("POST", "/api/config/config_entries/flow", {"handler": "statecast"})
            assert status == 200, flow
            status, done = await ha.api("POST", f"/api/config/config_entries/flow/{flow['flow_id']}", {"url": hub.url})
            assert status == 200 and done["type"] == "create_entry", done
            await support.wait_until(lambda: _is(ha, ENTITY, "0"), "the bench entity", timeout=30)
            answered, to_machine, to_subscriber = await measure(ha, hub, args.writes)
        finally:
            await ha.stop()
            await hub.stop()
    print(f"Home Assistant {ha.version()}, hub {args.bin}, {args.writes} writes, one at a time")
    print(summary("write -> hub's answer", answered))
    print(summary("write -> state machine", to_machine))
    print(summary("write -> WS subscriber", to_subscriber))


async def _is(ha: HomeAssistant, entity_id: str, want: str) -> bool:
    state: dict[str, Any] | None = await ha.state(entity_id)
    return state is not None and state["state"] == want


if __name__ == "__main__":
    asyncio.run(main())
