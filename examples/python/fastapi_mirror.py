"""A FastAPI service that mirrors a subtree of the hub and serves it from memory.

Every request is answered from the client's local mirror, kept up to date by the hub's
pushes: no request to the hub per page view, and the answers stay current within
milliseconds. Writes and commands go to the hub.

    pip install ./clients/python fastapi uvicorn
    STATECAST_URL=ws://127.0.0.1:8080/ws STATECAST_PATTERN='demo/#' \\
        uvicorn fastapi_mirror:app --app-dir examples/python --port 8000

    curl http://127.0.0.1:8000/topics                      # {"demo/micboard/SHURE001": {...}, ...}
    curl http://127.0.0.1:8000/topics/demo/railhub/esp32-01
    curl -X PATCH http://127.0.0.1:8000/topics/demo/lamp -H 'Content-Type: application/json' -d '{"on": true}'
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI, HTTPException
from pydantic import BaseModel

import statecast

URL = os.environ.get("STATECAST_URL", "ws://127.0.0.1:8080/ws")
PATTERN = os.environ.get("STATECAST_PATTERN", "demo/#")

hub = statecast.connect(URL, os.environ.get("STATECAST_TOKEN"))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with hub:
        mirrored = hub.mirror(PATTERN)  # keeps the topics in hub.state() / hub.states()
        try:
            # start serving once the mirror is in sync, or after 5 s with what there is
            await asyncio.wait_for(mirrored.ready(), 5)
        except asyncio.TimeoutError:
            print(f"statecast: not in sync yet ({hub.status}); serving what arrives")
        yield


app = FastAPI(title="statecast mirror", lifespan=lifespan)


@app.get("/health")
def health() -> dict[str, Any]:
    return {"hub": hub.status, "pattern": PATTERN, "topics": len(hub.topics(PATTERN))}


@app.get("/topics")
def list_topics() -> dict[str, Any]:
    return hub.states(PATTERN)


@app.get("/topics/{topic:path}")
def get_topic(topic: str) -> dict[str, Any]:
    rev = hub.rev(topic)
    if rev is None or not statecast.match_topic(PATTERN, topic):
        raise HTTPException(404, f"{topic} is not in the mirror")
    return {"topic": topic, "rev": rev, "state": hub.state(topic)}


@app.patch("/topics/{topic:path}")
async def patch_topic(topic: str, patch: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    try:
        result = await hub.patch(topic, patch)
    except statecast.HubError as err:  # e.g. invalid_topic
        raise HTTPException(400, {"code": err.code, "message": err.message}) from err
    except statecast.StatecastError as err:  # disconnected, unreachable
        raise HTTPException(503, {"code": err.code, "message": err.message}) from err
    return {"topic": result.topic, "rev": result.rev, "changed": result.changed}


class Command(BaseModel):
    name: str
    args: dict[str, Any] = {}


@app.post("/commands/{target:path}")
async def command(target: str, body: Command) -> Any:
    try:
        return await hub.command(target, body.name, body.args)
    except statecast.UpstreamError as err:
        raise HTTPException(502, {"code": err.code, "status": err.status, "body": err.body}) from err
    except statecast.StatecastError as err:
        raise HTTPException(404 if err.code == "no_route" else 503, {"code": err.code, "message": err.message}) from err


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
