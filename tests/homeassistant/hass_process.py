"""A real Home Assistant process for the end-to-end tests (tests/homeassistant/e2e/): the
release setup.sh installs (target/homeassistant-venv, or $STATECAST_HA_VENV), in a config
directory of its own with the statecast integration copied into custom_components/, on a
free loopback port, with a test user (`hass --script auth`) logged in for an access token.
Stopped by its PID. As crates/testkit/src/homeassistant.rs does for the Rust tests, the
configuration is minimal (no default_config, no onboarding), so it starts in seconds."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from support import REPO, Hub, wait_exit, wait_until

VERSION = "2024.1.6"
VENV = REPO / os.environ.get("STATECAST_HA_VENV", "target/homeassistant-venv")
USER, PASSWORD = "statecast", "statecast-test-password"
CLIENT_ID = "http://127.0.0.1/"
START_LIMIT = 120.0  # the first start after an install reads everything from disk


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HomeAssistant:
    def __init__(self, config_dir: Path, venv: Path = VENV) -> None:
        self.dir = config_dir
        self.hass = venv / "bin" / "hass"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""
        if not self.hass.exists():
            raise RuntimeError(f"no Home Assistant at {self.hass}: run tests/homeassistant/setup.sh")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def version(self) -> str:
        return subprocess.run([self.hass, "--version"], capture_output=True, text=True, check=True).stdout.strip()

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(REPO / "custom_components" / "statecast", self.dir / "custom_components" / "statecast")
        (self.dir / "configuration.yaml").write_text(
            "homeassistant:\n  name: statecast e2e\n  latitude: 52.37\n  longitude: 4.89\n  elevation: 0\n"
            "  unit_system: metric\n  time_zone: UTC\n  currency: EUR\n  country: NL\n"
            f"http:\n  server_host: 127.0.0.1\n  server_port: {self.port}\n"
            "api:\nwebsocket_api:\nauth:\nconfig:\n"
            "logger:\n  default: warning\n  logs:\n    custom_components.statecast: debug\n"
        )
        added = await asyncio.create_subprocess_exec(
            str(self.hass), "--script", "auth", "-c", str(self.dir), "add", USER, PASSWORD,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await added.communicate()
        if added.returncode != 0:
            raise RuntimeError(f"hass --script auth add failed: {out.decode(errors='replace')}")
        try:
            await self.launch()
            self.token = await self._log_in()
        except BaseException:
            await self.stop()  # a start that failed leaves no process behind
            raise

    async def launch(self) -> None:
        with (self.dir / "hass.out").open("wb") as out:
            self.proc = subprocess.Popen(
                [str(self.hass), "--skip-pip", "-c", str(self.dir)], stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        deadline = time.monotonic() + START_LIMIT
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"hass exited ({self.proc.returncode}) while starting:\n{self.log(6000)}")
                try:
                    async with session.get(self.url + "/api/", timeout=aiohttp.ClientTimeout(total=5)):
                        return  # any answer (401 without a token): it is up
                except (TimeoutError, aiohttp.ClientError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Home Assistant did not listen within {START_LIMIT} s:\n{self.log(6000)}")
                await asyncio.sleep(0.05)  # polling for the port

    async def _log_in(self) -> str:
        async with aiohttp.ClientSession() as session:
            flow = await _json(
                session.post(
                    self.url + "/auth/login_flow",
                    json={"client_id": CLIENT_ID, "handler": ["homeassistant", None], "redirect_uri": CLIENT_ID},
                )
            )
            done = await _json(
                session.post(
                    f"{self.url}/auth/login_flow/{flow['flow_id']}",
                    json={"client_id": CLIENT_ID, "username": USER, "password": PASSWORD},
                )
            )
            token = await _json(
                session.post(
                    self.url + "/auth/token",
                    data={"grant_type": "authorization_code", "code": done["result"], "client_id": CLIENT_ID},
                )
            )
        return str(token["access_token"])

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A request to Home Assistant's REST API with the test user's token."""
        async with aiohttp.ClientSession() as session:
            async with session.request(
                method, self.url + path, json=body, headers={"Authorization": f"Bearer {self.token}"}
            ) as res:
                text = await res.text()
                try:
                    return res.status, json.loads(text) if text else None
                except ValueError:
                    return res.status, text  # a plain-text error page

    async def ws(self, message: dict[str, Any]) -> Any:
        """One command over Home Assistant's WebSocket API (the registries have no REST)."""
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(self.url + "/api/websocket") as ws:
                await ws.receive_json()  # auth_required
                await ws.send_json({"type": "auth", "access_token": self.token})
                ok = await ws.receive_json()
                assert ok["type"] == "auth_ok", ok
                await ws.send_json({"id": 1, **message})
                while True:
                    answer = await ws.receive_json()
                    if answer.get("id") == 1:
                        assert answer["success"], answer
                        return answer["result"]

    async def state(self, entity_id: str) -> dict[str, Any] | None:
        status, body = await self.api("GET", f"/api/states/{entity_id}")
        return body if status == 200 else None

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        if not await wait_exit(proc, 30):
            proc.kill()
            await wait_exit(proc, 10)

    def log(self, tail: int | None = None) -> str:
        """What hass printed and its log file (each only its last `tail` characters)."""
        parts = []
        for name in ("hass.out", "home-assistant.log"):
            path = self.dir / name
            if path.exists():
                text = path.read_text(errors="replace")
                parts.append(f"--- {name} ---\n{text[-tail:] if tail else text}")
        return "\n".join(parts)


async def wait_ha_state(ha: HomeAssistant, entity_id: str, want: str | None, timeout: float = 20) -> dict[str, Any]:
    """Waits until the entity's state in Home Assistant is `want` (None: no such entity);
    its state object."""
    seen: dict[str, Any] = {}

    async def check() -> bool:
        state = await ha.state(entity_id)
        seen["state"] = state
        return (state is None and want is None) or (state is not None and state["state"] == want)

    await wait_until(check, f"{entity_id} to be {want} in Home Assistant (is {seen})", timeout=timeout, interval=0.05)
    return seen["state"] or {}


async def add_entry(ha: HomeAssistant, hub: Hub) -> dict[str, Any]:
    """The statecast integration added for the hub, through the config-flow REST API."""
    status, flow = await ha.api("POST", "/api/config/config_entries/flow", {"handler": "statecast"})
    assert status == 200 and flow["type"] == "form" and flow["step_id"] == "user", flow
    status, done = await ha.api("POST", f"/api/config/config_entries/flow/{flow['flow_id']}", {"url": hub.url})
    assert status == 200 and done["type"] == "create_entry", done
    return done


async def call(ha: HomeAssistant, domain: str, service: str, data: dict[str, Any]) -> int:
    """A service call through the REST API; its HTTP status."""
    status, _ = await ha.api("POST", f"/api/services/{domain}/{service}", data)
    return status


async def _json(request: Any) -> Any:
    async with request as res:
        body = await res.json(content_type=None)
        assert res.status == 200, (res.status, body)
        return body
