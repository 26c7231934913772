#!/usr/bin/env python3
"""A simulated ESP32 output controller (python3, stdlib only).

    GET  /api/status          -> {"device", "outputs": [8 x bool], "uptime_s", "wifi": {...}}
    POST /api/outputs/<n>     body {"on": true|false, "device": "esp32-01"}
                              -> {"output": n, "on": ...}; 404 for another device id,
                                 400 for a bad output or body

Usage: python3 device.py [--port 8081] [--device esp32-01]
"""

import argparse
import json
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUTPUTS = 8


class Device:
    def __init__(self, device_id):
        self.id = device_id
        self.started = time.monotonic()
        self.outputs = [False] * OUTPUTS
        self.rssi = -58
        self.lock = threading.Lock()

    def status(self):
        with self.lock:
            # The Wi-Fi signal wanders by a dB now and then, as a real one does.
            if random.random() < 0.3:
                self.rssi = max(-80, min(-40, self.rssi + random.choice((-1, 1))))
            return {
                "device": self.id,
                "firmware": "1.4.2",
                "outputs": list(self.outputs),
                "uptime_s": int(time.monotonic() - self.started),
                "wifi": {"ssid": "workshop", "rssi": self.rssi},
            }

    def switch(self, output, on):
        with self.lock:
            self.outputs[output] = on


class Handler(BaseHTTPRequestHandler):
    server_version = "esp32-sim/1.4.2"
    device = None  # set in main()

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/api/status":
            self.answer(200, self.device.status())
        else:
            self.answer(404, {"error": "not found"})

    def do_POST(self):
        match = re.fullmatch(r"/api/outputs/(\d+)", self.path)
        if not match:
            return self.answer(404, {"error": "not found"})
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self.answer(400, {"error": "the body is not JSON"})
        output = int(match.group(1))
        if body.get("device", self.device.id) != self.device.id:
            return self.answer(404, {"error": f"this is {self.device.id}, not {body['device']}"})
        if output >= OUTPUTS:
            return self.answer(400, {"error": f"outputs are 0..{OUTPUTS - 1}"})
        if not isinstance(body.get("on"), bool):
            return self.answer(400, {"error": "`on` must be true or false"})
        self.device.switch(output, body["on"])
        print(f"output {output} -> {'on' if body['on'] else 'off'}", flush=True)
        self.answer(200, {"output": output, "on": body["on"]})

    def log_message(self, fmt, *args):
        pass  # statecast polls every second or two; keep the terminal readable


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--device", default="esp32-01")
    args = parser.parse_args()
    Handler.device = Device(args.device)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"{args.device} listening on http://{args.host}:{args.port}/api/status", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
