"""Benchmark peer: Flask + Flask-SocketIO on gevent.

Deployed the way Flask-SocketIO's documentation recommends for performance:
async_mode="gevent" with the gevent-websocket package installed, the standard
library monkey-patched, and ``socketio.run(app)`` serving with gevent's
pywsgi WSGIServer and the gevent-websocket handler (one process, one OS
thread, one greenlet per connection; Flask-SocketIO needs sticky sessions and
a message queue for more than one process, which is not how a single-node
deployment is run).

Written the way Flask-SocketIO users write it: one room per topic (room "#"
for every topic), ``join_room(topic)`` in the ``subscribe`` handler, the
handler's return value as the acknowledgement, and
``socketio.emit("snapshot", payload, to=[topic, "#"])`` for the broadcast.
python-socketio encodes the packet once per emit and, given a list of rooms,
sends it once to each client even when it is in both rooms.

Usage: target/bench-venv/bin/python bench/peers/flask_socketio_server.py --port 9004
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
from importlib.metadata import version  # noqa: E402

from flask import Flask, jsonify, request  # noqa: E402
from flask_socketio import SocketIO, join_room  # noqa: E402

ALL = "#"

app = Flask(__name__)
app.json.sort_keys = False
socketio = SocketIO(app, async_mode="gevent")

# topic -> (rev, state)
states: dict = {}


def set_state(topic: str, state) -> int:
    entry = states.get(topic)
    rev = entry[0] + 1 if entry else 1
    states[topic] = (rev, state)
    payload = {"type": "snapshot", "topic": topic, "rev": rev, "state": state}
    socketio.emit("snapshot", payload, to=[topic, ALL])
    return rev


@app.get("/health")
def health():
    return jsonify(ok=True)


@app.put("/api/state/<path:topic>")
def put_state(topic: str):
    state = request.get_json(force=True, silent=True)
    if state is None and request.get_data(cache=True).strip() != b"null":
        return jsonify(error="invalid JSON body"), 400
    rev = set_state(topic, state)
    return jsonify(topic=topic, rev=rev, changed=True)


@socketio.on("subscribe")
def on_subscribe(data):
    topics = data.get("topics", []) if isinstance(data, dict) else []
    for topic in topics:
        join_room(str(topic))
    return {"ok": True}


@socketio.on("set")
def on_set(data):
    if not isinstance(data, dict) or not isinstance(data.get("topic"), str):
        return {"ok": False, "error": "topic required"}
    rev = set_state(data["topic"], data.get("state"))
    return {"ok": True, "rev": rev}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "9004")))
    args = parser.parse_args()
    print(
        f"flask-socketio listening on http://127.0.0.1:{args.port} "
        f"(Flask-SocketIO {version('Flask-SocketIO')}, python-socketio {version('python-socketio')}, "
        f"gevent {version('gevent')}, async_mode={socketio.server.eio.async_mode})",
        flush=True,
    )
    socketio.run(app, host="127.0.0.1", port=args.port, log_output=False)


if __name__ == "__main__":
    main()
