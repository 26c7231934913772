"""Test helpers: the real hub binary in a subprocess, a TCP proxy that can refuse or freeze
WebSockets, a device HTTP server for command routes, and bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("STATECAST_BIN") or REPO / "target" / "debug" / "statecast")

_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


def ensure_binary() -> Path:
    """The hub binary; built with cargo when it is missing (and cargo is there)."""
    if not BIN.exists() and shutil.which("cargo") and "STATECAST_BIN" not in os.environ:
        subprocess.run(["cargo", "build", "-q", "-p", "statecast"], cwd=REPO, check=True)
    if not BIN.exists():
        raise RuntimeError(f"no hub binary at {BIN}: run `cargo build -p statecast` or set STATECAST_BIN")
    return BIN


class HubProcess:
    """``statecast serve`` on 127.0.0.1 with its own data dir. The first start takes an
    ephemeral port; restarts keep it. Only the process started here is ever signalled."""

    def __init__(self, data_dir: Path, args: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.args = args or []
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr: list[str] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 15.0) -> None:
        assert self.proc is None, "already running"
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._start_once(deadline)
                return
            except RuntimeError:
                # e.g. the port of a restart is still held by the old process's sockets
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # retry pacing

    def _start_once(self, deadline: float) -> None:
        cmd = [str(ensure_binary()), "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir)]
        proc = subprocess.Popen(
            [*cmd, *self.args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        found: list[int] = []
        ready = threading.Event()
        lines: list[str] = []

        def read() -> None:
            assert proc.stderr is not None
            for raw in proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip()
                lines.append(line)
                del lines[:-200]
                if not found and (m := _LISTENING.search(line)):
                    found.append(int(m.group(1)))
                    ready.set()
            ready.set()  # the process ended

        threading.Thread(target=read, daemon=True).start()
        ready.wait(max(0.1, deadline - time.monotonic()))
        if not found:
            proc.kill()
            proc.wait()
            raise RuntimeError("the hub did not start:\n" + "\n".join(lines[-20:]))
        self.port = found[0]
        self.proc = proc
        self.stderr = lines

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Sends ``sig`` to the hub's PID and waits for it to exit (SIGKILL after 10 s)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


def rest(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One JSON request, independent of the package under test: ``(status, body)``."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            status, raw = res.status, res.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    return status, (json.loads(raw) if raw else None)


async def arest(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return await asyncio.to_thread(rest, base, method, path, body)


async def wait_until(
    cond: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 10.0, interval: float = 0.01
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Proxy:
    """A TCP proxy in front of the hub, deciding per connection from its request head.

    ``block_ws``: WebSocket upgrades are answered 503 (REST still passes), as by a network
    that lets no WebSocket through. ``freeze()``: the open WebSocket connections stop
    carrying anything in either direction without closing, as a dead link does. Every
    request head is recorded, with the status line of the answer.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.block_ws = False
        self.requests: list[dict[str, Any]] = []
        self._ws_links: list[dict[str, Any]] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self._ws_links:
            for w in link["writers"]:
                w.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def freeze(self) -> None:
        for link in self._ws_links:
            link["frozen"] = True

    def drop_ws(self) -> None:
        for link in self._ws_links:
            for w in link["writers"]:
                w.transport.abort()

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
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        is_ws = headers.get("upgrade", "").lower() == "websocket"
        record: dict[str, Any] = {"line": lines[0], "headers": headers, "ws": is_ws, "answer": None}
        self.requests.append(record)
        if is_ws and self.block_ws:
            record["answer"] = "HTTP/1.1 503 Service Unavailable"
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        link: dict[str, Any] = {"frozen": False, "writers": [writer, up_writer]}
        if is_ws:
            self._ws_links.append(link)
        up_writer.write(head)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, first: bool) -> None:
            while data := await src.read(65536):
                if first:
                    record["answer"] = data.split(b"\r\n", 1)[0].decode("latin-1")
                    first = False
                if not link["frozen"]:
                    dst.write(data)
                    await dst.drain()

        pipes = [
            asyncio.ensure_future(pipe(reader, up_writer, False)),
            asyncio.ensure_future(pipe(up_reader, writer, True)),
        ]
        try:
            # either side closing closes both, as a TCP proxy does
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pipes:
                p.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            up_writer.transport.abort()
            with contextlib.suppress(ValueError):
                self._ws_links.remove(link)


class Device:
    """A device's HTTP API for command routes: ``POST /cmd/switch`` answers
    ``{"done": true}``, anything else 409 ``{"error": "busy"}``."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                received.append({"path": self.path, "body": body})
                ok = self.path == "/cmd/switch"
                payload = json.dumps({"done": True} if ok else {"error": "busy"}).encode()
                self.send_response(200 if ok else 409)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
