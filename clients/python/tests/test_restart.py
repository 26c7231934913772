"""The hub stops in the middle of a stream and comes back on the same port and data: the
client resumes with `since` and ends on the hub's final state without losing a change."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request

import pytest
from support import HubProcess, rest, wait_until

import statecast


def patch_until_acked(base: str, topic: str, patch: dict[str, int]) -> int:
    """PATCH until the hub acknowledges it (it may be down meanwhile); returns the rev."""
    while True:
        req = urllib.request.Request(
            f"{base}/api/state/{topic}",
            data=json.dumps(patch).encode(),
            method="PATCH",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as res:
                rev: int = json.loads(res.read())["rev"]
                return rev
        except (urllib.error.URLError, OSError):
            pass  # refused or reset while the hub restarts
        time.sleep(0.02)  # retry pacing, not synchronisation


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_hub_restart_mid_stream_loses_no_change(hub: HubProcess, sig: signal.Signals) -> None:
    topic = "restart/counter"
    rest(hub.base, "PUT", f"/api/state/{topic}", {"n": 0})
    epoch = 0  # connection generation, bumped when the client loses the socket
    log: list[tuple[int, statecast.Change]] = []
    statuses: list[str] = []

    def on_status(status: str) -> None:
        nonlocal epoch
        statuses.append(status)
        if status == "connecting":
            epoch += 1

    async with statecast.connect(hub.ws_url, backoff_min=0.05, backoff_max=0.4, poll_after_failures=1000) as c:
        c.on_status(on_status)
        c.subscribe(topic, lambda change: log.append((epoch, change)))
        await wait_until(lambda: c.status == "open" and c.rev(topic) == 1, "initial snapshot")

        loop = asyncio.get_running_loop()
        stopped, noticed = asyncio.Event(), asyncio.Event()

        def writer() -> None:  # in a thread: blocking REST writes, and the restart
            for i in range(1, 201):
                patch_until_acked(hub.base, topic, {"n": i})
                if i == 50:
                    hub.stop(sig)  # to the hub's PID only, then wait for its exit
                    loop.call_soon_threadsafe(stopped.set)
                    # it comes back on the same port and data once the client saw the drop
                    asyncio.run_coroutine_threadsafe(noticed.wait(), loop).result(10)
                    hub.start()

        task = asyncio.create_task(asyncio.to_thread(writer))
        await asyncio.wait_for(stopped.wait(), 20)
        await wait_until(lambda: epoch >= 1, "the client notices the drop")
        noticed.set()
        await asyncio.wait_for(task, 40)

        status, final = rest(hub.base, "GET", f"/api/state/{topic}")
        assert status == 200 and final["state"] == {"n": 200}
        await wait_until(lambda: c.status == "open" and c.rev(topic) == final["rev"], f"rev {final['rev']}", 20)
        assert c.state(topic) == final["state"]
        await wait_until(lambda: log[-1][1].rev == final["rev"], "the callback gets the last change")

    # The whole stream: the first snapshot, then patches each one rev after the other; a
    # snapshot may cover a jump only where the restarted hub had no history to replay (it
    # keeps history in memory), once; revs never go back.
    changes = [ch for _, ch in log]
    assert changes[0] == statecast.Snapshot(topic, 1, {"n": 0})
    expected = 1
    resumes = []
    for ch in changes[1:]:
        if isinstance(ch, statecast.Patch):
            assert ch.rev == expected + 1, f"patch rev {ch.rev} after {expected}"
        else:
            assert isinstance(ch, statecast.Snapshot) and ch.rev >= expected, f"{ch} after {expected}"
            resumes.append(ch.rev)
        expected = ch.rev
    assert expected == final["rev"] == 201
    assert len(resumes) <= 1, f"one resume, at most one snapshot: {resumes}"
    assert any(e >= 1 for e, _ in log), "changes arrived after the restart"
    assert "connecting" in statuses and statuses[-1] == "closed"
