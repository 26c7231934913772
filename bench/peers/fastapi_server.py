"""Benchmark peer: FastAPI with its WebSocket support, served by uvicorn.

Run the way FastAPI apps are deployed on one core: a single uvicorn worker
with uvloop as the event loop and httptools as the HTTP parser (what
``uvicorn[standard]`` installs and uvicorn picks by itself when present; set
explicitly here so a missing one fails loudly), and uvicorn's default
WebSocket implementation ("auto" = the websockets package, sans-I/O
protocol). Access logging is off.

Written the way FastAPI users write a broadcast hub (the "ConnectionManager"
of FastAPI's WebSocket docs, with topics): a dict topic -> set of WebSocket,
``json.dumps`` once per change and ``await websocket.send_text(message)`` to
each subscriber in turn.

Usage: target/bench-venv/bin/python bench/peers/fastapi_server.py --port 9005
"""

from __future__ import annotations

import argparse
import json
import os
from importlib.metadata import version
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

ALL = "#"


class Hub:
    def __init__(self) -> None:
        self.states: dict[str, tuple[int, Any]] = {}
        self.subscribers: dict[str, set[WebSocket]] = {}
        self.topics_of: dict[WebSocket, set[str]] = {}

    def subscribe(self, websocket: WebSocket, topic: str) -> None:
        self.subscribers.setdefault(topic, set()).add(websocket)
        self.topics_of.setdefault(websocket, set()).add(topic)

    def disconnect(self, websocket: WebSocket) -> None:
        for topic in self.topics_of.pop(websocket, ()):
            subs = self.subscribers.get(topic)
            if subs is not None:
                subs.discard(websocket)
                if not subs:
                    del self.subscribers[topic]

    async def set_state(self, topic: str, state: Any) -> int:
        entry = self.states.get(topic)
        rev = entry[0] + 1 if entry else 1
        self.states[topic] = (rev, state)
        await self.broadcast(topic, rev, state)
        return rev

    async def broadcast(self, topic: str, rev: int, state: Any) -> None:
        message = json.dumps({"type": "snapshot", "topic": topic, "rev": rev, "state": state})
        # Each client once, even if subscribed to both the topic and "#";
        # copy first: the sets may change while we await.
        targets = set(self.subscribers.get(topic, ()))
        targets.update(self.subscribers.get(ALL, ()))
        for websocket in targets:
            try:
                await websocket.send_text(message)
            except Exception:  # the client went away mid-broadcast
                self.disconnect(websocket)


hub = Hub()
app = FastAPI()


@app.get("/health")
async def health() -> dict:
    return {"ok": True}


@app.put("/api/state/{topic:path}")
async def put_state(topic: str, request: Request):
    try:
        state = await request.json()
    except ValueError:
        return JSONResponse({"error": "invalid JSON body"}, status_code=400)
    rev = await hub.set_state(topic, state)
    return {"topic": topic, "rev": rev, "changed": True}


@app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            try:
                msg = json.loads(text)
            except ValueError:
                await websocket.send_text(json.dumps({"type": "error", "error": "invalid JSON"}))
                continue
            kind = msg.get("type") if isinstance(msg, dict) else None
            if kind == "subscribe":
                for topic in msg.get("topics") or []:
                    hub.subscribe(websocket, str(topic))
                await websocket.send_text(json.dumps({"type": "result", "id": msg.get("id"), "ok": True}))
            elif kind == "set":
                rev = await hub.set_state(str(msg.get("topic")), msg.get("state"))
                await websocket.send_text(
                    json.dumps({"type": "result", "id": msg.get("id"), "ok": True, "rev": rev})
                )
            elif kind == "ping":
                await websocket.send_text(json.dumps({"type": "pong", "id": msg.get("id")}))
            else:
                await websocket.send_text(
                    json.dumps({"type": "result", "id": msg.get("id") if isinstance(msg, dict) else None,
                                "ok": False, "error": "unknown type"})
                )
    except WebSocketDisconnect:
        pass
    finally:
        hub.disconnect(websocket)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "9005")))
    args = parser.parse_args()
    print(
        f"fastapi listening on http://127.0.0.1:{args.port} "
        f"(fastapi {version('fastapi')}, uvicorn {version('uvicorn')}, uvloop {version('uvloop')}, "
        f"httptools {version('httptools')}, websockets {version('websockets')})",
        flush=True,
    )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="auto",
        workers=1,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
