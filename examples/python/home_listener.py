"""A home-automation listener, the way Home Assistant automations work: listen, react.

Motion sensors publish their state on ``home/<room>/motion`` (``{"detected": true}``); this
listener keeps ``home/<room>/light`` in step with them, and turns the porch light on when
the doorbell rings (an event on ``home/doorbell``).

    python examples/python/home_listener.py --url ws://127.0.0.1:8080/ws

It writes the state it wants rather than toggling, so reacting twice is harmless (the hub
drops a write that changes nothing), and it reacts to snapshots too: after a reconnect the
client resumes with ``since`` and a change missed meanwhile arrives as a patch, or as a
snapshot where the hub's history no longer holds it. That is why no backup poll is needed
(``poll_interval=None``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import statecast


async def on_motion(hub: statecast.Hub, change: statecast.Change) -> None:
    room = change.topic.split("/")[1]
    if isinstance(change, statecast.Removed):
        return  # the sensor was removed: leave the light as it is
    if isinstance(change, statecast.Patch) and "detected" not in change.patch:
        return  # only the battery or the like changed
    detected = bool(isinstance(change.state, dict) and change.state.get("detected"))
    result = await hub.patch(f"home/{room}/light", {"on": detected, "by": "motion"})
    if result.changed:
        print(f"{room}: motion {'detected' if detected else 'gone'}, light {'on' if detected else 'off'}", flush=True)


async def on_doorbell(hub: statecast.Hub, change: statecast.Change) -> None:
    if isinstance(change, statecast.Event):
        print(f"doorbell: {change.data}", flush=True)
        await hub.patch("home/porch/light", {"on": True, "by": "doorbell"})


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws", help="the hub's WebSocket or http:// URL")
    parser.add_argument("--token", default=None)
    args = parser.parse_args()

    async with statecast.connect(args.url, args.token, poll_interval=None) as hub:
        hub.on_status(lambda status: print(f"hub: {status}", flush=True))
        # callbacks run one at a time per subscription, in order; an exception is logged
        # and the next change still arrives
        hub.subscribe("home/+/motion", lambda change: on_motion(hub, change))
        hub.subscribe("home/doorbell", lambda change: on_doorbell(hub, change))
        await asyncio.Event().wait()  # until Ctrl-C


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
