"""Real parts for the integration's tests: the statecast hub binary in a subprocess (an
ephemeral port, its own data dir, stopped by its PID), a device's HTTP API that the hub's
`http` command route calls, REST helpers, and bounded waits.

No thread is started here (Home Assistant's test harness fails a test that leaves one):
the hub's log goes to a file, and the device server runs on the test's event loop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("STATECAST_BIN") or REPO / "target" / "debug" / "statecast")
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


class Hub:
    """``statecast serve`` with its own data dir and config file. The first start takes an
    ephemeral port; a restart keeps it. Only the process started here is signalled."""

    def __init__(self, tmp: Path, config: str = "") -> None:
        self.tmp = tmp
        self.data_dir = tmp / "data"
        self.config = tmp / "statecast.toml"
        self.config.write_text(config)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 20.0) -> None:
        if not BIN.exists():
            raise RuntimeError(f"no hub binary at {BIN}: run `cargo build -p statecast` or set STATECAST_BIN")
        deadline = time.monotonic() + timeout
        while True:
            self.starts += 1
            log = self.tmp / f"hub-{self.starts}.log"
            cmd = [
                str(BIN),
                "serve",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--data-dir",
                str(self.data_dir),
                "--config",
                str(self.config),
            ]
            with log.open("wb") as out:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out)
            while time.monotonic() < deadline:
                if m := _LISTENING.search(log.read_text(errors="replace")):
                    self.port = int(m.group(1))
                    self.proc = proc
                    return
                if proc.poll() is not None:
                    break
                await asyncio.sleep(0.02)  # polling the log for the start line
            if proc.poll() is None:
                proc.kill()
            await wait_exit(proc, 10)
            if time.monotonic() >= deadline:
                raise RuntimeError("the hub did not start:\n" + log.read_text(errors="replace")[-2000:])
            # e.g. the port of a restart is still held: try again

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            if not await wait_exit(proc, 10):
                proc.kill()
                await wait_exit(proc, 10)

    async def kill(self) -> None:
        """kill -9"""
        await self.stop(signal.SIGKILL)


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Waits for the process to end without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


class Device:
    """A device's HTTP API for the hub's `http` route: records each request's path and
    JSON body; answers 200 ``{"done": true}``, or 409 ``{"error": "busy"}`` for a command
    named ``fail``."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append({"path": request.path, "body": body})
        if request.path.endswith("/fail"):
            return web.json_response({"error": "busy"}, status=409)
        return web.json_response({"done": True})

    def route(self) -> str:
        """The `[[route]]` that sends every command to this device as
        `POST /cmd/<target>/<name>` with body `{"name", "args"}`."""
        return f'[[route]]\ntarget = "#"\ntype = "http"\nurl = "http://127.0.0.1:{self.port}/cmd/{{target}}/{{name}}"\n'


async def rest(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One JSON request to the hub, independent of the integration under test."""
    async with aiohttp.ClientSession() as session:
        async with session.request(method, base + path, json=body) as res:
            text = await res.text()
            return res.status, (json.loads(text) if text else None)


async def put(hub: Hub, topic: str, state: Any) -> int:
    status, answer = await rest(hub.url, "PUT", f"/api/state/{topic}", state)
    assert status == 200, answer
    return int(answer["rev"])


async def delete(hub: Hub, topic: str) -> None:
    status, answer = await rest(hub.url, "DELETE", f"/api/state/{topic}")
    assert status == 200, answer


async def wait_until(
    cond: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 15.0, interval: float = 0.01
) -> None:
    """Waits until ``cond()`` is true, checking every ``interval``; fails after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = cond()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


def state_of(hass: Any, entity_id: str) -> str | None:
    """The entity's state in Home Assistant's state machine, None when it has none."""
    state = hass.states.get(entity_id)
    return None if state is None else state.state


async def wait_state(hass: Any, entity_id: str, want: str | None) -> None:
    await wait_until(
        lambda: state_of(hass, entity_id) == want, f"{entity_id} to be {want} (is {state_of(hass, entity_id)})"
    )


class Proxy:
    """A TCP proxy in front of the hub on the test's event loop, one request per connection.
    With ``block_ws`` it
    answers WebSocket upgrades 503 (REST still passes), as a network that lets no
    WebSocket through; ``drop_ws()`` cuts the open WebSocket connections."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.block_ws = False
        self.ws_refused = 0
        self.rest_requests = 0
        self._ws_writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.drop_ws()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def drop_ws(self) -> None:
        for writer in self._ws_writers:
            writer.transport.abort()
        self._ws_writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._proxy(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.transport.abort()
            self._tasks.discard(task)

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        is_ws = b"upgrade: websocket" in head.lower()
        if is_ws and self.block_ws:
            self.ws_refused += 1
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        if not is_ws:
            # one request per connection, so that each is seen here (a kept-alive
            # connection would carry the next request, or an upgrade, unseen)
            self.rest_requests += 1
            lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
            head = b"\r\n".join(lines[:-2] + [b"Connection: close", b"", b""])
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        if is_ws:
            self._ws_writers += [writer, up_writer]
        up_writer.write(head)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()

        pipes = [asyncio.ensure_future(pipe(reader, up_writer)), asyncio.ensure_future(pipe(up_reader, writer))]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pipes:
                p.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            up_writer.transport.abort()
