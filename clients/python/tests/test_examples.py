"""The examples in examples/python run against the real hub (so they never rot)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from support import REPO, HubProcess, arest, rest, wait_until

EXAMPLES = REPO / "examples" / "python"


def test_monitor_once(hub: HubProcess) -> None:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(EXAMPLES / "monitor.py"), "--once", "--url", hub.base],
            capture_output=True,
            text=True,
            timeout=30,
        )

    rest(hub.base, "PUT", "/api/state/demo/micboard/A", {"battery": 80})
    fine = run()
    assert (fine.returncode, fine.stdout) == (0, "0 problem(s)\n"), fine.stderr
    rest(hub.base, "PUT", "/api/state/demo/micboard/B", {"battery": 12})
    rest(hub.base, "PUT", "/api/state/_sources/rx", {"status": "offline", "last_error": "refused"})
    bad = run()
    assert bad.returncode == 1, bad.stderr
    assert bad.stdout.splitlines() == [
        "ALERT source rx is offline: refused",
        "ALERT demo/micboard/B: battery 12% (below 20%)",
        "2 problem(s)",
    ]


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
