#!/usr/bin/env python3
"""Two simulated wireless-microphone receivers (Shure-style; python3, stdlib only).

    stage    http://127.0.0.1:PORT/api/receiver      4 channels, busy: RF and battery
                                                     drift every second or two
    lectern  http://127.0.0.1:PORT+1/api/receiver    2 channels, calm: one change every
                                                     20 s; SHURE006 is switched off and
                                                     on again now and then

Each answers {"receiver": {...}, "channels": [{"id": "SHURE001", "tx": {...},
"rf": {...}, ...}, ...]}.

Usage: python3 receivers.py [--port 8082]
"""

import argparse
import copy
import json
import math
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def channel(number, mic_id, name, tx_model, minutes, rssi, frequency):
    return {
        "id": mic_id,
        "channel": number,
        "name": name,
        "frequency_mhz": frequency,
        "tx": {
            "model": tx_model,
            "status": "on",
            "battery": {"type": "lithium-ion", "minutes": minutes, "bars": bars(minutes)},
        },
        "rf": {"antenna": "A", "rssi_dbm": rssi},
    }


def bars(minutes):
    return max(0, min(5, math.ceil(minutes / 60)))


class Receiver:
    def __init__(self, name, model, channels):
        self.lock = threading.Lock()
        self.state = {
            "receiver": {"name": name, "model": model, "firmware": "2.7.6"},
            "channels": channels,
        }

    def snapshot(self):
        with self.lock:
            return copy.deepcopy(self.state)

    def drift(self, ch):
        """One small change on a channel whose transmitter is on."""
        if ch["tx"]["status"] != "on":
            return
        if random.random() < 0.7:
            rf = ch["rf"]
            rf["rssi_dbm"] = max(-95, min(-45, rf["rssi_dbm"] + random.choice((-3, -2, -1, 1, 2, 3))))
            if random.random() < 0.1:
                rf["antenna"] = "B" if rf["antenna"] == "A" else "A"
        else:
            battery = ch["tx"]["battery"]
            battery["minutes"] = max(0, battery["minutes"] - 1)
            battery["bars"] = bars(battery["minutes"])

    def toggle(self, ch):
        tx = ch["tx"]
        if tx["status"] == "on":
            tx["status"] = "off"
            del ch["rf"]  # nothing received from a transmitter that is off
        else:
            tx["status"] = "on"
            ch["rf"] = {"antenna": "A", "rssi_dbm": -70}


def simulate(stage, lectern):
    second = 0
    while True:
        time.sleep(1)
        second += 1
        with stage.lock:
            for ch in stage.state["channels"]:
                if random.random() < 0.15:
                    stage.drift(ch)
        with lectern.lock:
            channels = lectern.state["channels"]
            if second % 20 == 0:
                lectern.drift(random.choice(channels))
            if second % 60 == 45:
                lectern.toggle(channels[1])


def serve(receiver, host, port):
    class Handler(BaseHTTPRequestHandler):
        server_version = "receiver-sim/2.7.6"

        def do_GET(self):
            if self.path != "/api/receiver":
                status, body = 404, {"error": "not found"}
            else:
                status, body = 200, receiver.snapshot()
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    name = receiver.state["receiver"]["name"]
    print(f"{name:8} receiver on http://{host}:{port}/api/receiver", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8082, help="stage; lectern is PORT+1")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    stage = Receiver("stage", "ULXD4Q", [
        channel(1, "SHURE001", "Lead vocal", "ULXD2", 312, -58, 518.325),
        channel(2, "SHURE002", "Guitar vocal", "ULXD2", 287, -61, 519.100),
        channel(3, "SHURE003", "Keys vocal", "ULXD2", 240, -66, 520.875),
        channel(4, "SHURE004", "Host", "ULXD1", 95, -70, 521.650),
    ])
    lectern = Receiver("lectern", "QLXD4", [
        channel(1, "SHURE005", "Lectern", "QLXD2", 420, -55, 534.200),
        channel(2, "SHURE006", "Spare handheld", "QLXD2", 180, -72, 535.425),
    ])
    serve(stage, args.host, args.port)
    serve(lectern, args.host, args.port + 1)
    try:
        simulate(stage, lectern)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
