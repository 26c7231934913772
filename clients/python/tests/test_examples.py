"""The examples in examples/python run against the real hub (so they never rot)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

from support import REPO, HubProcess, arest, rest, wait_until

EXAMPLES = REPO / "examples" / "python"


async def test_monitor_once(hub: HubProcess, tmp_path: Path) -> None:
    def run(base: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(EXAMPLES / "monitor.py"), "--once", "--url", base],
            capture_output=True,
            text=True,
            timeout=30,
        )

    rest(hub.base, "PUT", "/api/state/demo/micboard/A", {"battery": 80})
    fine = run(hub.base)
    assert (fine.returncode, fine.stdout) == (0, "0 problem(s)\n"), fine.stderr

    # A real source that cannot reach its device (only the hub writes _sources/).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    config = tmp_path / "statecast.toml"
    config.write_text(
        f'[[source]]\nname = "rx"\ntype = "http_poll"\nurl = "http://127.0.0.1:{closed}/"\ntopic = "demo/rx"\n'
    )
    offline = HubProcess(tmp_path / "offline-data", ["--config", str(config)])
    offline.start()
    try:
        await wait_until(
            lambda: rest(offline.base, "GET", "/api/state/_sources/rx")[1].get("state", {}).get("status") == "offline",
            "the source to be offline",
        )
        rest(offline.base, "PUT", "/api/state/demo/micboard/B", {"battery": 12})
        bad = run(offline.base)
    finally:
        offline.stop()
    assert bad.returncode == 1, bad.stderr
    lines = bad.stdout.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("ALERT source rx is offline: "), lines
    assert lines[1:] == ["ALERT demo/micboard/B: battery 12% (below 20%)", "2 problem(s)"]


async def test_home_listener(hub: HubProcess) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "home_listener.py"),
        "--url",
        hub.ws_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []

    async def line_with(text: str) -> None:
        while not any(text in line for line in lines):
            raw = await asyncio.wait_for(proc.stdout.readline(), 10)
            assert raw, f"the listener ended: {lines}"
            lines.append(raw.decode().rstrip())

    try:
        await line_with("hub: open")
        await arest(hub.base, "PATCH", "/api/state/home/hall/motion", {"detected": True})
        await line_with("hall: motion detected, light on")
        assert rest(hub.base, "GET", "/api/state/home/hall/light")[1]["state"] == {"on": True, "by": "motion"}
        await arest(hub.base, "PATCH", "/api/state/home/hall/motion", {"battery": 50})  # not about motion
        await arest(hub.base, "PATCH", "/api/state/home/hall/motion", {"detected": False})
        await line_with("hall: motion gone, light off")
        await arest(hub.base, "POST", "/api/events/home/doorbell", {"button": "front"})
        await line_with("doorbell: {'button': 'front'}")
        await wait_until(lambda: rest(hub.base, "GET", "/api/state/home/porch/light")[0] == 200, "the porch light")
        assert not any("Traceback" in line for line in lines), lines
    finally:
        proc.terminate()  # the process started here, by its PID
        await proc.wait()
