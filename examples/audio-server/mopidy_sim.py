#!/usr/bin/env python3
"""Simulated Mopidy music servers (python3, stdlib only; WebSocket written by hand).

    ws://127.0.0.1:PORT/mopidy/ws     JSON-RPC 2.0 requests in, replies and events out
    POST http://127.0.0.1:PORT/mopidy/rpc   the same JSON-RPC requests over HTTP

One player per `--port` (default: the four players of examples/audio-server on 6680 to
6683; `--port 0` takes a free port), each with its own state. It prints
`mopidy simulator on ws://127.0.0.1:PORT/mopidy/ws` per player once it listens.

Methods: core.playback.get_state, get_current_track, get_time_position, play, pause,
resume, stop, next, previous; core.mixer.get_volume, set_volume {"volume": N}.
A player starts stopped. Every few seconds its "listener" does something (start a
track, pause, resume, change the volume, skip, stop), the players a little apart, and
every connected client gets Mopidy's events for it: playback_state_changed,
track_playback_started/paused/resumed/ended, volume_changed. `--every 0`: no listener,
the players change only when a client asks.

Usage: python3 mopidy_sim.py [--port 6680 --port 6681 ...] [--every 5]
"""

import argparse
import base64
import hashlib
import itertools
import json
import socketserver
import struct
import threading
import time

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

TRACKS = [
    ("local:track:blue-in-green.flac", "Blue in Green", "Miles Davis", "Kind of Blue", 337000),
    ("local:track:teardrop.flac", "Teardrop", "Massive Attack", "Mezzanine", 330000),
    ("local:track:hyperballad.flac", "Hyperballad", "Björk", "Post", 321000),
    ("local:track:windowlicker.flac", "Windowlicker", "Aphex Twin", "Windowlicker", 366000),
]


def track_model(i):
    uri, name, artist, album, length = TRACKS[i]
    return {
        "__model__": "Track",
        "uri": uri,
        "name": name,
        "artists": [{"__model__": "Artist", "name": artist}],
        "album": {"__model__": "Album", "name": album},
        "length": length,
    }


class Player:
    """The playback state, shared by every connection; changes emit Mopidy events."""

    def __init__(self, name, first_track=0):
        self.name = name
        self.lock = threading.RLock()
        self.state = "stopped"
        self.index = first_track % len(TRACKS)
        self.tlid = 1
        self.volume = 60
        self.started = time.monotonic()  # when the current track's position was 0
        self.paused_at = 0
        self.clients = set()

    # --- events -------------------------------------------------------------------------

    def broadcast(self, event, **fields):
        message = json.dumps({"event": event, **fields})
        print(f"{self.name} event {message[:100]}", flush=True)
        for client in list(self.clients):
            client.send_text(message)

    def tl_track(self):
        return {"__model__": "TlTrack", "tlid": self.tlid, "track": track_model(self.index)}

    def position(self):
        if self.state == "playing":
            return int((time.monotonic() - self.started) * 1000)
        return self.paused_at if self.state == "paused" else 0

    def set_state(self, new):
        old, self.state = self.state, new
        if old != new:
            self.broadcast("playback_state_changed", old_state=old, new_state=new)

    # --- the methods clients call --------------------------------------------------------

    def call(self, method, params):
        with self.lock:
            p = "core.playback."
            if method == p + "get_state":
                return self.state
            if method == p + "get_current_track":
                return None if self.state == "stopped" else track_model(self.index)
            if method == p + "get_time_position":
                return self.position()
            if method == "core.mixer.get_volume":
                return self.volume
            if method == "core.mixer.set_volume":
                volume = params.get("volume") if isinstance(params, dict) else None
                if not isinstance(volume, int) or not 0 <= volume <= 100:
                    raise ValueError("volume must be an integer 0..100")
                if volume != self.volume:
                    self.volume = volume
                    self.broadcast("volume_changed", volume=volume)
                return True
            if method == p + "pause" and self.state == "playing":
                self.paused_at = self.position()
                self.broadcast("track_playback_paused", tl_track=self.tl_track(), time_position=self.paused_at)
                self.set_state("paused")
                return None
            if method in (p + "resume", p + "play") and self.state == "paused":
                self.started = time.monotonic() - self.paused_at / 1000
                self.broadcast("track_playback_resumed", tl_track=self.tl_track(), time_position=self.paused_at)
                self.set_state("playing")
                return None
            if method == p + "play" and self.state == "stopped":
                self.start_track(self.index)
                return None
            if method == p + "stop" and self.state != "stopped":
                self.broadcast("track_playback_ended", tl_track=self.tl_track(), time_position=self.position())
                self.set_state("stopped")
                return None
            if method in (p + "next", p + "previous"):
                step = 1 if method.endswith("next") else -1
                if self.state != "stopped":
                    self.broadcast("track_playback_ended", tl_track=self.tl_track(), time_position=self.position())
                self.start_track((self.index + step) % len(TRACKS))
                return None
            if method.startswith(p) and method[len(p):] in ("pause", "resume", "play", "stop"):
                return None  # already in that state
            raise LookupError(method)

    def start_track(self, index):
        self.index = index
        self.tlid += 1
        self.started = time.monotonic()
        self.set_state("playing")
        self.broadcast("track_playback_started", tl_track=self.tl_track())

    def rpc(self, request):
        """A JSON-RPC 2.0 reply (None for a notification)."""
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Invalid Request"}}
        reply = {"jsonrpc": "2.0", "id": request.get("id")}
        try:
            reply["result"] = self.call(request["method"], request.get("params") or {})
        except LookupError:
            reply["error"] = {"code": -32601, "message": "Method not found"}
        except ValueError as e:
            reply["error"] = {"code": -32602, "message": f"Invalid params: {e}"}
        return reply if "id" in request else None


def listener(player, every, delay):
    """What someone at the speakers does, one step every `every` seconds after `delay`."""
    steps = itertools.cycle([
        ("core.playback.play", {}),
        ("core.playback.pause", {}),
        ("core.playback.resume", {}),
        ("core.mixer.set_volume", {"volume": 45}),
        ("core.playback.next", {}),
        ("core.mixer.set_volume", {"volume": 60}),
        ("core.playback.next", {}),
        ("core.playback.stop", {}),
    ])
    time.sleep(delay)
    for method, params in steps:
        time.sleep(every)
        player.call(method, params)


class Connection(socketserver.StreamRequestHandler):
    player = None  # each player's server has a subclass that sets it (see main())

    def setup(self):
        super().setup()
        self.send_lock = threading.Lock()

    def handle(self):
        request_line = self.rfile.readline().decode("latin-1").strip()
        headers = {}
        while True:
            line = self.rfile.readline().decode("latin-1").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        method, path = [*request_line.split(" "), "", ""][:2]
        if method == "GET" and path == "/mopidy/ws" and "websocket" in headers.get("upgrade", "").lower():
            self.websocket(headers)
        elif method == "POST" and path == "/mopidy/rpc":
            body = self.rfile.read(int(headers.get("content-length") or 0))
            try:
                reply = self.player.rpc(json.loads(body))
            except ValueError:
                reply = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}
            self.http(200, reply)
        else:
            self.http(404, {"error": "try ws://.../mopidy/ws or POST /mopidy/rpc"})

    def http(self, status, body):
        data = json.dumps(body).encode()
        reason = {200: "OK", 404: "Not Found"}[status]
        self.wfile.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
        )

    # --- WebSocket (RFC 6455) ------------------------------------------------------------

    def websocket(self, headers):
        key = headers.get("sec-websocket-key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.wfile.write(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        print(f"{self.player.name} client {peer} connected", flush=True)
        self.player.clients.add(self)
        try:
            message, opcode_of_message = b"", None
            while True:
                frame = self.read_frame()
                if frame is None:
                    break
                fin, opcode, payload = frame
                if opcode == 0x8:  # close: answer it and end
                    self.send_frame(0x8, payload[:2])
                    break
                if opcode == 0x9:  # ping
                    self.send_frame(0xA, payload)
                    continue
                if opcode == 0xA:  # pong
                    continue
                if opcode in (0x1, 0x2):
                    message, opcode_of_message = payload, opcode
                elif opcode == 0x0:
                    message += payload
                if fin and opcode_of_message == 0x1:
                    self.on_text(message.decode("utf-8", "replace"))
        finally:
            self.player.clients.discard(self)
            print(f"{self.player.name} client {peer} disconnected", flush=True)

    def on_text(self, text):
        try:
            request = json.loads(text)
        except ValueError:
            reply = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}
        else:
            reply = self.player.rpc(request)
        if reply is not None:
            self.send_text(json.dumps(reply))

    def read_frame(self):
        """(fin, opcode, unmasked payload), or None when the connection ends."""
        head = self.rfile.read(2)
        if len(head) < 2:
            return None
        fin, opcode = head[0] & 0x80, head[0] & 0x0F
        masked, length = head[1] & 0x80, head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", self.rfile.read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self.rfile.read(8))[0]
        mask = self.rfile.read(4) if masked else b"\0\0\0\0"
        payload = self.rfile.read(length)
        if len(payload) < length:
            return None
        # Clients mask every frame (RFC 6455 5.3): XOR with the 4-byte key.
        return fin, opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def send_frame(self, opcode, payload):
        # Servers send unmasked frames, one frame per message.
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, length)
        elif length < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, length)
        with self.send_lock:
            try:
                self.wfile.write(head + payload)
            except OSError:
                pass  # the reader notices the broken connection

    def send_text(self, text):
        self.send_frame(0x1, text.encode())


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, action="append", help="one player per port (default 6680..6683)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--every", type=float, default=5, help="seconds between listener actions (0: none)")
    args = parser.parse_args()
    ports = args.port or [6680, 6681, 6682, 6683]
    servers = []
    for i, port in enumerate(ports):
        player = Player(f"player{i + 1}", first_track=i)
        handler = type(f"Connection{i + 1}", (Connection,), {"player": player})
        server = Server((args.host, port), handler)
        servers.append(server)
        print(f"mopidy simulator on ws://{args.host}:{server.server_address[1]}/mopidy/ws", flush=True)
        if args.every > 0:
            delay = args.every * i / len(ports)  # the players a little apart
            threading.Thread(target=listener, args=(player, args.every, delay), daemon=True).start()
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        servers[0].serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
