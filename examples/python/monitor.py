"""A monitoring script: alerts when a source goes offline or a battery runs low.

Two ways to run it:

    python examples/python/monitor.py --once   # check now, exit 1 on a problem (cron, Nagios)
    python examples/python/monitor.py          # follow every change, print alerts as they come

It watches the health of the hub's sources (``_sources/+``) and the topics matching
``--watch`` (default ``demo/micboard/+``, the simulated mics of ``statecast serve --demo``;
use ``micboard/+`` with examples/microphones). A battery is ``"battery": <percent>`` or
``"tx": {"battery": {"minutes": <left>}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import statecast


def problems(topic: str, state: Any, args: argparse.Namespace) -> list[str]:
    """What is wrong with one topic's state, as alert texts (none: all is well)."""
    if not isinstance(state, dict):
        return []
    found = []
    if topic.startswith("_sources/") and state.get("status") != "online":
        found.append(f"source {topic.split('/', 1)[1]} is {state.get('status')}: {state.get('last_error')}")
    battery = state.get("battery")
    if isinstance(battery, (int, float)) and battery < args.battery_min:
        found.append(f"{topic}: battery {battery}% (below {args.battery_min:g}%)")
    tx = state.get("tx")
    if isinstance(tx, dict):
        minutes = (tx.get("battery") or {}).get("minutes")
        if isinstance(minutes, (int, float)) and minutes < args.minutes_min:
            found.append(f"{topic}: battery {minutes} min left (below {args.minutes_min:g})")
        if tx.get("status") == "off":
            found.append(f"{topic}: transmitter off")
    return found


def check_once(args: argparse.Namespace) -> int:
    """The synchronous API: one REST request per pattern."""
    alerts = []
    for pattern in ("_sources/+", args.watch):
        for item in statecast.get_all(pattern, url=args.url, token=args.token):
            alerts += problems(item.topic, item.state, args)
    for alert in alerts:
        print(f"ALERT {alert}")
    print(f"{len(alerts)} problem(s)")
    return 1 if alerts else 0


async def follow(args: argparse.Namespace) -> None:
    """The async API: alert when a problem appears, say so when it is gone."""
    active: dict[str, set[str]] = {}  # topic -> its current alerts

    async def watch(pattern: str) -> None:
        async for change in hub.subscribe(pattern):
            if isinstance(change, statecast.Event):
                continue
            now = set(problems(change.topic, change.state, args))
            before = active.get(change.topic, set())
            for alert in sorted(now - before):
                print(f"ALERT {alert}", flush=True)
            for alert in sorted(before - now):
                print(f"ok    {alert}", flush=True)
            active[change.topic] = now

    # polling stays on (the default): if WebSockets are blocked, the state still arrives
    async with statecast.connect(args.url, args.token) as hub:
        hub.on_status(lambda status: print(f"hub: {status}", flush=True))
        await asyncio.gather(watch("_sources/+"), watch(args.watch))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the hub's http:// or ws:// URL")
    parser.add_argument("--token", default=None)
    parser.add_argument("--watch", default="demo/micboard/+", help="pattern of the topics to check")
    parser.add_argument("--battery-min", type=float, default=20, help="percent")
    parser.add_argument("--minutes-min", type=float, default=30, help="minutes left")
    parser.add_argument("--once", action="store_true", help="check now and exit (1 if anything is wrong)")
    args = parser.parse_args()
    if args.once:
        try:
            return check_once(args)
        except statecast.StatecastError as err:
            print(f"ALERT cannot check: {err}")
            return 2
    try:
        asyncio.run(follow(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
