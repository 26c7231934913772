#!/usr/bin/env python3
"""Smoke test of every benchmark peer against the shared protocol.

For each peer: start it on a free 127.0.0.1 port, wait for GET /health, connect
four subscribers (A: the topic, B: "#", C: "#" and then the topic in a second
subscribe, D: the topic and "#" in one subscribe; C and D must still get each
change once), publish once over REST and once over the
WebSocket / Socket.IO `set` (sent by A), publish to another topic over REST,
and check that every subscriber got exactly the expected snapshot messages
(revs 1 and 2, in order, nothing else) and that every ack is right. Stops the
peer (by its PID) afterwards. Every wait has a timeout.

Prints `peer NAME ok` or `peer NAME FAILED: why` per peer and finally
`N passed, M failed`; exits 1 if any failed.

Usage: target/bench-venv/bin/python bench/peers/check.py [NAME ...]
       (run with any python3, it re-executes itself with target/bench-venv)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent
REPO = PEERS_DIR.parent.parent
VENV_PY = REPO / "target" / "bench-venv" / "bin" / "python"

try:
    from websockets.asyncio.client import connect as ws_connect
except ImportError:  # not in the venv: re-run there
    if VENV_PY.exists() and Path(sys.prefix).resolve() != VENV_PY.parent.parent.resolve():
        os.execv(str(VENV_PY), [str(VENV_PY), *sys.argv])
    sys.exit("check.py: the `websockets` package is missing; run bench/peers/install.sh first")

PEERS = {
    # name: (command, kind)
    "node-ws": (["node", str(PEERS_DIR / "node-ws.js")], "ws"),
    "node-socketio": (["node", str(PEERS_DIR / "node-socketio.js")], "sio"),
    "node-uws": (["node", str(PEERS_DIR / "node-uws.js")], "ws"),
    "flask-socketio": ([str(VENV_PY), str(PEERS_DIR / "flask_socketio_server.py")], "sio"),
    "fastapi": ([str(VENV_PY), str(PEERS_DIR / "fastapi_server.py")], "ws"),
}

STEP_TIMEOUT = 5.0  # any single wait for a message / ack / HTTP answer
STARTUP_TIMEOUT = 30.0  # process start until /health answers 200
QUIET = 0.5  # how long to watch for unexpected extra messages
PEER_TIMEOUT = 90.0  # whole check of one peer

TOPIC = "check/alpha beta"
OTHER = "check/other"
STATE1 = {"n": 1, "s": "h\u00e9llo \u2603", "list": [1, 2, {"x": None}], "nested": {"ok": True}}
STATE2 = [1, "two", 3.5, False, None]
STATE3 = "just a string"


class CheckFailed(Exception):
    pass


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise CheckFailed(what)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=STEP_TIMEOUT) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def rest_put(port: int, topic: str, state) -> dict:
    url = f"http://127.0.0.1:{port}/api/state/{urllib.parse.quote(topic, safe='/')}"
    status, body = await asyncio.to_thread(http, "PUT", url, json.dumps(state).encode())
    expect(status == 200, f"PUT {topic}: HTTP {status} {body[:200]!r}")
    try:
        return json.loads(body)
    except ValueError:
        raise CheckFailed(f"PUT {topic}: body is not JSON: {body[:200]!r}")


# --- clients -----------------------------------------------------------------
# Each client puts every message the server pushes into `inbox`, in arrival
# order, normalized to dicts: snapshots as the snapshot payload, plain-WS
# results/pongs as they are, Socket.IO acks as {"type": "ack", "id": N, "args": [...]}.


class WsClient:
    """The plain WebSocket protocol (node-ws, node-uws, fastapi)."""

    def __init__(self, name: str, port: int):
        self.name = name
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.next_id = 1

    async def connect(self) -> None:
        self.conn = await asyncio.wait_for(
            ws_connect(self.url, compression=None, max_size=None, open_timeout=STEP_TIMEOUT), STEP_TIMEOUT
        )
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.conn:
                expect(isinstance(raw, str), f"{self.name}: got a binary frame")
                await self.inbox.put(json.loads(raw))
        except Exception as e:  # surfaced by the next get()
            await self.inbox.put({"type": "__error__", "error": repr(e)})

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    async def request(self, msg: dict) -> int:
        msg["id"] = self._id()
        await asyncio.wait_for(self.conn.send(json.dumps(msg)), STEP_TIMEOUT)
        return msg["id"]

    async def subscribe(self, topics: list[str]) -> None:
        rid = await self.request({"type": "subscribe", "topics": topics})
        got = await next_message(self)
        expect(got == {"type": "result", "id": rid, "ok": True}, f"{self.name}: subscribe reply {got!r}")

    async def set(self, topic: str, state) -> int:
        return await self.request({"type": "set", "topic": topic, "state": state})

    def set_reply(self, rid: int, rev: int) -> dict:
        return {"type": "result", "id": rid, "ok": True, "rev": rev}

    async def ping(self) -> None:
        rid = await self.request({"type": "ping"})
        got = await next_message(self)
        expect(got == {"type": "pong", "id": rid}, f"{self.name}: ping reply {got!r}")

    async def close(self) -> None:
        self.reader.cancel()
        try:
            await asyncio.wait_for(self.conn.close(), STEP_TIMEOUT)
        except Exception:
            pass


SIO_PACKET = re.compile(r"^4(\d)(/[^,]*,)?(\d*)(.*)$", re.S)


class SioClient(WsClient):
    """Socket.IO v4 over a direct WebSocket transport, raw Engine.IO packets
    (as the load generator speaks it): 0 open, 2/3 ping/pong, 40 connect,
    42 event, 43 ack."""

    def __init__(self, name: str, port: int):
        super().__init__(name, port)
        self.url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"

    async def connect(self) -> None:
        self.conn = await asyncio.wait_for(
            ws_connect(self.url, compression=None, max_size=None, open_timeout=STEP_TIMEOUT), STEP_TIMEOUT
        )
        opened = await asyncio.wait_for(self.conn.recv(), STEP_TIMEOUT)
        expect(isinstance(opened, str) and opened.startswith("0{"), f"{self.name}: Engine.IO open {opened!r}")
        await self.conn.send("40")
        connected = await asyncio.wait_for(self.conn.recv(), STEP_TIMEOUT)
        expect(isinstance(connected, str) and connected.startswith("40"), f"{self.name}: Socket.IO connect {connected!r}")
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.conn:
                expect(isinstance(raw, str), f"{self.name}: got a binary frame")
                if raw == "2":  # Engine.IO ping
                    await self.conn.send("3")
                    continue
                m = SIO_PACKET.match(raw)
                expect(m is not None and m.group(2) is None, f"{self.name}: unexpected packet {raw[:200]!r}")
                kind, pid, data = m.group(1), m.group(3), json.loads(m.group(4) or "null")
                if kind == "2":  # event
                    expect(pid == "", f"{self.name}: server event asks for an ack {raw[:200]!r}")
                    expect(isinstance(data, list) and data, f"{self.name}: bad event {raw[:200]!r}")
                    if data[0] == "snapshot":
                        expect(len(data) == 2, f"{self.name}: snapshot event has {len(data) - 1} args")
                        await self.inbox.put(data[1])
                    else:
                        await self.inbox.put({"type": "__event__", "event": data})
                elif kind == "3":  # ack
                    await self.inbox.put({"type": "ack", "id": int(pid), "args": data})
                else:
                    await self.inbox.put({"type": "__packet__", "raw": raw[:200]})
        except Exception as e:
            await self.inbox.put({"type": "__error__", "error": repr(e)})

    async def emit(self, event: str, payload: dict) -> int:
        rid = self._id()
        await asyncio.wait_for(self.conn.send(f"42{rid}" + json.dumps([event, payload])), STEP_TIMEOUT)
        return rid

    async def subscribe(self, topics: list[str]) -> None:
        rid = await self.emit("subscribe", {"topics": topics})
        got = await next_message(self)
        expect(got == {"type": "ack", "id": rid, "args": [{"ok": True}]}, f"{self.name}: subscribe ack {got!r}")

    async def set(self, topic: str, state) -> int:
        return await self.emit("set", {"topic": topic, "state": state})

    def set_reply(self, rid: int, rev: int) -> dict:
        return {"type": "ack", "id": rid, "args": [{"ok": True, "rev": rev}]}

    async def ping(self) -> None:  # Socket.IO has its own heartbeat; nothing to check
        return None


async def next_message(client: WsClient) -> dict:
    try:
        msg = await asyncio.wait_for(client.inbox.get(), STEP_TIMEOUT)
    except asyncio.TimeoutError:
        raise CheckFailed(f"{client.name}: no message within {STEP_TIMEOUT}s")
    expect(msg.get("type") != "__error__", f"{client.name}: connection error {msg.get('error')}")
    return msg


async def expect_messages(client: WsClient, expected: list[dict]) -> None:
    for i, want in enumerate(expected):
        got = await next_message(client)
        if got != want:
            dup = got.get("type") == "snapshot" and got.get("rev", 0) < want.get("rev", 0)
            hint = " (a duplicate?)" if dup else ""
            raise CheckFailed(f"{client.name}: message {i + 1}: expected {want!r}, got {got!r}{hint}")


def snapshot(topic: str, rev: int, state) -> dict:
    return {"type": "snapshot", "topic": topic, "rev": rev, "state": state}


# --- one peer ------------------------------------------------------------------


async def exercise(name: str, kind: str, port: int) -> None:
    cls = WsClient if kind == "ws" else SioClient
    a, b, c, d = (cls(f"{name}/{x}", port) for x in "ABCD")
    clients = [a, b, c, d]
    try:
        for cl in clients:
            await cl.connect()
        await a.subscribe([TOPIC])
        await b.subscribe(["#"])
        await c.subscribe(["#"])
        await c.subscribe([TOPIC])  # in both: still one message per change
        await d.subscribe([TOPIC, "#"])  # both, the other way round
        await a.ping()

        # 1. REST publish -> rev 1 to everyone
        reply = await rest_put(port, TOPIC, STATE1)
        expect(reply == {"topic": TOPIC, "rev": 1, "changed": True}, f"PUT reply {reply!r}")
        for cl in clients:
            await expect_messages(cl, [snapshot(TOPIC, 1, STATE1)])

        # 2. set over the socket by A -> rev 2 to everyone, then A's ack
        rid = await a.set(TOPIC, STATE2)
        await expect_messages(a, [snapshot(TOPIC, 2, STATE2), a.set_reply(rid, 2)])
        for cl in (b, c, d):
            await expect_messages(cl, [snapshot(TOPIC, 2, STATE2)])

        # 3. another topic: only the "#" subscribers get it, with its own rev 1
        reply = await rest_put(port, OTHER, STATE3)
        expect(reply == {"topic": OTHER, "rev": 1, "changed": True}, f"PUT reply {reply!r}")
        for cl in (b, c, d):
            await expect_messages(cl, [snapshot(OTHER, 1, STATE3)])

        # 4. nothing else may arrive (no duplicates, no stray messages)
        await asyncio.sleep(QUIET)
        for cl in clients:
            if not cl.inbox.empty():
                raise CheckFailed(f"{cl.name}: unexpected extra message {cl.inbox.get_nowait()!r}")
    finally:
        for cl in clients:
            if hasattr(cl, "conn"):
                await cl.close()


def wait_healthy(proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CheckFailed(f"exited with code {proc.returncode} before /health answered")
        try:
            status, _ = http("GET", f"http://127.0.0.1:{port}/health")
            if status == 200:
                return
            last = f"HTTP {status}"
        except (OSError, urllib.error.URLError) as e:
            last = repr(e)
        time.sleep(0.1)
    raise CheckFailed(f"/health not 200 within {STARTUP_TIMEOUT}s ({last})")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def check_peer(name: str, logdir: Path) -> str | None:
    """Returns None when the peer passes, else the reason."""
    cmd, kind = PEERS[name]
    port = free_port()
    log_path = logdir / f"{name}.log"
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(
                [*cmd, "--port", str(port)],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        except OSError as e:
            return f"cannot start {cmd[0]}: {e}"
        try:
            wait_healthy(proc, port)
            asyncio.run(asyncio.wait_for(exercise(name, kind, port), PEER_TIMEOUT))
            if proc.poll() is not None:
                raise CheckFailed(f"exited with code {proc.returncode} during the check")
            return None
        except CheckFailed as e:
            reason = str(e)
        except asyncio.TimeoutError:
            reason = f"check did not finish within {PEER_TIMEOUT}s"
        except Exception as e:  # a crash of the check itself or the connection
            reason = f"{type(e).__name__}: {e}"
        finally:
            stop(proc)
    tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
    if tail:
        reason += "\n    last lines of its output:\n      " + "\n      ".join(tail)
    return reason


def main() -> int:
    parser = argparse.ArgumentParser(description="Check the benchmark peers against the protocol.")
    parser.add_argument("peers", nargs="*", metavar="NAME",
                        help=f"peers to check (default: all of {', '.join(PEERS)})")
    args = parser.parse_args()
    unknown = [n for n in args.peers if n not in PEERS]
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    names = args.peers or list(PEERS)
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="statecast-peers-") as tmp:
        logdir = Path(tmp)
        for name in names:
            reason = check_peer(name, logdir)
            if reason is None:
                passed += 1
                print(f"peer {name} ok", flush=True)
            else:
                failed += 1
                print(f"peer {name} FAILED: {reason}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
