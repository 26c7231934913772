#!/usr/bin/env python3
"""A simulated LED matrix board (python3, stdlib only), the process that used to run the
Flask-SocketIO server: it now writes its state to statecast and takes commands over HTTP.

State it writes (PUT /api/state/<topic> on the hub, whenever it changes):
    ledboard/apps         {"apps": [{"id", "name"}, ...]}
    ledboard/current_app  {"id", "name", "since"}         (the carousel moves it along)
    ledboard/settings     {"brightness": 0..100, "rotation": 0|90|180|270, "night_mode": bool}
    ledboard/carousel     {"enabled": bool, "interval_s": 2..3600, "apps": [ids]}

Commands it takes (statecast's route posts {"name", "args"} to /api/<name>):
    POST /api/set_app          args {"app": id}              -> {"current_app": {...}}
    POST /api/update_settings  args: any settings fields     -> {"settings": {...}}
    POST /api/update_carousel  args: any carousel fields     -> {"carousel": {...}}
A bad command is answered 400 (or 404 for an unknown app) with {"error": why} and changes
nothing.

Usage: python3 board.py [--port 8090] [--hub http://127.0.0.1:8080] [--token KEY]
"""

import argparse
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

APPS = [
    {"id": "clock", "name": "Clock"},
    {"id": "weather", "name": "Weather"},
    {"id": "snake", "name": "Snake"},
    {"id": "ticker", "name": "News ticker"},
]


class Invalid(Exception):
    """A command the board refuses: (status, why)."""


class Board:
    def __init__(self, hub, token):
        self.hub = hub.rstrip("/")
        self.token = token
        self.lock = threading.Lock()
        self.current = self.app("clock")
        self.settings = {"brightness": 60, "rotation": 0, "night_mode": False}
        self.carousel = {"enabled": True, "interval_s": 15, "apps": ["clock", "weather"]}
        self.shown_at = time.monotonic()

    def app(self, app_id):
        for app in APPS:
            if app["id"] == app_id:
                return {**app, "since": int(time.time())}
        raise Invalid(404, f"no app {app_id!r}; the board has {[a['id'] for a in APPS]}")

    # --- writing state to the hub -------------------------------------------------------

    def put(self, topic, state):
        """Writes one topic; retries while the hub is not up (it may start after us)."""
        body = json.dumps(state).encode()
        for attempt in range(60):
            request = urllib.request.Request(f"{self.hub}/api/state/{topic}", data=body, method="PUT")
            request.add_header("Content-Type", "application/json")
            if self.token:
                request.add_header("Authorization", f"Bearer {self.token}")
            try:
                with urllib.request.urlopen(request, timeout=5):
                    return
            except urllib.error.HTTPError as e:
                print(f"board: the hub refused {topic}: {e.code} {e.read().decode()}")
                return
            except OSError:
                time.sleep(min(0.1 * (attempt + 1), 1.0))
        print(f"board: the hub at {self.hub} is not answering; {topic} not written")

    def publish_all(self):
        with self.lock:
            snapshot = [
                ("ledboard/apps", {"apps": APPS}),
                ("ledboard/current_app", self.current),
                ("ledboard/settings", self.settings),
                ("ledboard/carousel", self.carousel),
            ]
        for topic, state in snapshot:
            self.put(topic, state)

    # --- commands -----------------------------------------------------------------------

    def set_app(self, args):
        app_id = args.get("app")
        if not isinstance(app_id, str):
            raise Invalid(400, 'set_app needs {"app": "<id>"}')
        with self.lock:
            self.current = self.app(app_id)
            self.shown_at = time.monotonic()
            current = self.current
        self.put("ledboard/current_app", current)
        print(f"board: showing {current['name']}")
        return {"current_app": current}

    def update_settings(self, args):
        checks = {
            "brightness": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 100,
            "rotation": lambda v: v in (0, 90, 180, 270),
            "night_mode": lambda v: isinstance(v, bool),
        }
        with self.lock:
            settings = self.merge(self.settings, args, checks)
            self.settings = settings
        self.put("ledboard/settings", settings)
        return {"settings": settings}

    def update_carousel(self, args):
        ids = {a["id"] for a in APPS}
        checks = {
            "enabled": lambda v: isinstance(v, bool),
            "interval_s": lambda v: isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 3600,
            "apps": lambda v: isinstance(v, list) and v and all(a in ids for a in v),
        }
        with self.lock:
            carousel = self.merge(self.carousel, args, checks)
            self.carousel = carousel
        self.put("ledboard/carousel", carousel)
        return {"carousel": carousel}

    @staticmethod
    def merge(current, args, checks):
        if not isinstance(args, dict) or not args:
            raise Invalid(400, f"expected an object with some of {sorted(checks)}")
        for key, value in args.items():
            if key not in checks:
                raise Invalid(400, f"unknown field {key!r}; known: {sorted(checks)}")
            if not checks[key](value):
                raise Invalid(400, f"bad value for {key!r}: {value!r}")
        return {**current, **args}

    # --- the carousel -------------------------------------------------------------------

    def run_carousel(self):
        while True:
            time.sleep(0.5)
            with self.lock:
                c = self.carousel
                due = c["enabled"] and time.monotonic() - self.shown_at >= c["interval_s"]
                if not due:
                    continue
                apps = c["apps"]
                now = self.current["id"]
                following = apps[(apps.index(now) + 1) % len(apps)] if now in apps else apps[0]
                self.current = self.app(following)
                self.shown_at = time.monotonic()
                current = self.current
            self.put("ledboard/current_app", current)


def handler_for(board):
    commands = {
        "/api/set_app": board.set_app,
        "/api/update_settings": board.update_settings,
        "/api/update_carousel": board.update_carousel,
    }

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            command = commands.get(self.path)
            if command is None:
                return self.answer(404, {"error": f"no command at {self.path}"})
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                self.answer(200, command(body.get("args") or {}))
            except Invalid as e:
                status, why = e.args
                self.answer(status, {"error": why})
            except (ValueError, AttributeError) as e:
                self.answer(400, {"error": f"bad request: {e}"})

        def answer(self, status, body):
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format, *args):  # noqa: A002
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--hub", default="http://127.0.0.1:8080")
    parser.add_argument("--token", help="an API key allowed to write ledboard/#")
    args = parser.parse_args()
    board = Board(args.hub, args.token)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(board))
    print(f"board: commands on http://127.0.0.1:{server.server_address[1]}/api/, state to {args.hub}", flush=True)
    threading.Thread(target=board.publish_all, daemon=True).start()
    threading.Thread(target=board.run_carousel, daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
