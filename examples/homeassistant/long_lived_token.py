"""Prints a long-lived access token of a Home Assistant for a user of its own provider:
the login flow (username, password) gives a short-lived token, with which the WebSocket
API makes a long-lived one. Waits (up to a minute) for Home Assistant to listen.

    python long_lived_token.py http://127.0.0.1:8123 USER PASSWORD

Runs on the Python of Home Assistant's venv (it uses aiohttp, which comes with it).
"""

import asyncio
import sys
import time

import aiohttp

CLIENT_ID = "http://127.0.0.1/"


async def main(base: str, user: str, password: str) -> str:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            try:
                async with http.get(f"{base}/api/"):
                    break
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        else:
            sys.exit(f"Home Assistant does not answer at {base}")
        flow = await post(
            http,
            f"{base}/auth/login_flow",
            {"client_id": CLIENT_ID, "handler": ["homeassistant", None], "redirect_uri": CLIENT_ID},
        )
        done = await post(
            http,
            f"{base}/auth/login_flow/{flow['flow_id']}",
            {"client_id": CLIENT_ID, "username": user, "password": password},
        )
        if done.get("type") != "create_entry":
            sys.exit(f"login refused: {done.get('errors')}")
        form = {"grant_type": "authorization_code", "code": done["result"], "client_id": CLIENT_ID}
        async with http.post(f"{base}/auth/token", data=form) as response:
            access = (await response.json())["access_token"]
        url = base.replace("http", "ws", 1) + "/api/websocket"
        async with http.ws_connect(url) as ws:
            await ws.receive_json()  # auth_required
            await ws.send_json({"type": "auth", "access_token": access})
            await ws.receive_json()  # auth_ok
            # Long-lived tokens need a name of their own.
            name = f"statecast {time.strftime('%Y-%m-%d %H:%M:%S')}"
            await ws.send_json(
                {"id": 1, "type": "auth/long_lived_access_token", "client_name": name, "lifespan": 3650}
            )
            answer = await ws.receive_json()
            if not answer.get("success"):
                sys.exit(f"no long-lived token: {answer.get('error')}")
            return str(answer["result"])


async def post(http: aiohttp.ClientSession, url: str, body: object) -> dict:
    async with http.post(url, json=body) as response:
        response.raise_for_status()
        return dict(await response.json())


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    print(asyncio.run(main(*sys.argv[1:])))
