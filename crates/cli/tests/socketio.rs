//! The Socket.IO endpoint at the protocol level, with a hand-made engine.io client over
//! WebSocket: what stock clients cannot show, such as a client that stops reading. (The
//! stock clients are tested in `tests/socketio/`.)

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// A Socket.IO v5 client over engine.io v4's WebSocket transport, connected to `/`.
struct Sio {
    ws: WebSocketStream<TcpStream>,
}

impl Sio {
    /// Connects with a small TCP receive buffer, so that not reading stalls the server soon.
    async fn connect(addr: &str, recv_buffer: u32) -> Sio {
        let tcp = tcp_small_buffer(addr, recv_buffer).await;
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) = within("the handshake", tokio_tungstenite::client_async(url, tcp))
            .await
            .expect("WebSocket handshake");
        let mut sio = Sio { ws };
        let open = sio.recv_text().await;
        assert!(open.starts_with("0{"), "engine.io open: {open}");
        sio.send_text("40").await;
        let connected = sio.recv_text().await;
        assert!(
            connected.starts_with("40{"),
            "Socket.IO connect: {connected}"
        );
        sio
    }

    async fn send_text(&mut self, text: impl Into<String>) {
        within("a send", self.ws.send(Message::text(text.into())))
            .await
            .expect("send");
    }

    async fn recv_text(&mut self) -> String {
        loop {
            match within("a message", self.ws.next()).await {
                Some(Ok(Message::Text(text))) if text.as_str() == "2" => {
                    self.send_text("3").await;
                }
                Some(Ok(Message::Text(text))) => return text.to_string(),
                Some(Ok(_)) => continue,
                other => panic!("the connection ended: {other:?}"),
            }
        }
    }

    /// Emits `event` with `data`, asking for acknowledgement `ack`.
    async fn emit(&mut self, event: &str, data: Value, ack: u64) {
        self.send_text(format!("42{ack}{}", json!([event, data])))
            .await;
    }

    /// The next event as `(name, first argument)`; an acknowledgement as `("ack:<id>", ..)`.
    async fn next(&mut self) -> (String, Value) {
        let text = self.recv_text().await;
        if let Some(rest) = text.strip_prefix("42") {
            let args: Vec<Value> = serde_json::from_str(rest).expect("event arguments");
            let name = args[0].as_str().expect("event name").to_string();
            return (name, args.get(1).cloned().unwrap_or(Value::Null));
        }
        if let Some(rest) = text.strip_prefix("43") {
            let at = rest.find('[').expect("ack arguments");
            let args: Vec<Value> = serde_json::from_str(&rest[at..]).expect("ack arguments");
            return (format!("ack:{}", &rest[..at]), args[0].clone());
        }
        panic!("unexpected packet {text}");
    }
}

/// A client that stops reading holds up neither the writers nor the hub's memory: its
/// events beyond the bounded queues are dropped and counted, state changes are folded into
/// the latest state, and once it reads again it gets every event not counted as dropped,
/// a `lagged` per episode, and the state as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_gets_the_latest_state_and_a_count_of_what_it_missed() {
    const EVENTS: u64 = 1500;
    let server = Server::start(&["--heartbeat-ms", "60000"]);
    let mut slow = Sio::connect(server.addr(), 4096).await;
    slow.emit("subscribe", json!({"patterns": ["load/#"]}), 1)
        .await;
    let (name, ack) = slow.next().await;
    assert_eq!(
        (name.as_str(), &ack),
        ("ack:1", &json!({"type": "result", "ok": true, "topics": 0}))
    );

    // The client reads nothing meanwhile; 48 MB of events are more than every buffer on
    // the way holds.
    let pad = "x".repeat(32 * 1024);
    for i in 0..EVENTS {
        let resp = server
            .post("/api/events/load/ev", &json!({"i": i, "pad": pad}))
            .await;
        assert_eq!(resp.status, 202, "{}", resp.text);
    }
    for n in 1..=50 {
        let resp = server.put("/api/state/load/state", &json!({"n": n})).await;
        assert_eq!(resp.status, 200, "{}", resp.text);
    }

    // Reading again, up to the answer of a request sent now: everything queued before it
    // has arrived by then.
    slow.emit("get", json!({"patterns": ["load/state"]}), 2)
        .await;
    let (mut events, mut dropped, mut lagged) = (0u64, 0u64, 0);
    let mut last_i: Option<u64> = None;
    let mut state: Option<(u64, Value)> = None;
    loop {
        let (name, data) = slow.next().await;
        match name.as_str() {
            "event" => {
                let i = data["data"]["i"].as_u64().expect("i");
                assert!(last_i.is_none_or(|last| i > last), "events out of order");
                last_i = Some(i);
                events += 1;
            }
            "lagged" => {
                lagged += 1;
                dropped += data["dropped_events"].as_u64().expect("dropped_events");
            }
            "snapshot" => state = Some((data["rev"].as_u64().expect("rev"), data["state"].clone())),
            "patch" => {
                let (rev, current) = state.as_mut().expect("a patch before any snapshot");
                assert_eq!(data["rev"].as_u64(), Some(*rev + 1), "a gap in the revs");
                *rev += 1;
                *current = data["patch"].clone();
            }
            "ack:2" => break,
            other => panic!("unexpected {other}: {data}"),
        }
    }
    assert!(
        dropped > 0,
        "nothing was dropped: the test did not fill the queues"
    );
    assert!(lagged >= 1);
    assert_eq!(
        events + dropped,
        EVENTS,
        "{events} events arrived, {dropped} counted as dropped"
    );
    assert_eq!(state, Some((50, json!({"n": 50}))));
    // The hub kept serving others all along.
    let health = server.get("/api/health").await;
    assert_eq!(health.status, 200);
}

/// A payload that is JSON but not JSON the hub takes (nesting deeper than 128) is refused
/// with that reason, not with a field it seems to lack; an event without any payload still
/// works. (A number beyond f64 is kept as written: see the test below.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_the_hub_cannot_take_is_refused_with_the_real_reason() {
    let server = Server::start(&[]);
    let mut sio = Sio::connect(server.addr(), 1 << 16).await;
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    for (what, state, reason) in [("deep nesting", deep, "recursion limit")] {
        sio.send_text(format!(
            r#"421["set",{{"topic":"bad/t","state":{{"x":{state}}}}}]"#
        ))
        .await;
        let (name, answer) = sio.next().await;
        assert_eq!(name, "ack:1", "{what}: {answer}");
        assert_eq!(answer["ok"], false, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request", "{what}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(reason) && !message.contains("missing field"),
            "{what}: {message}"
        );
    }
    sio.send_text(r#"422["ping"]"#).await;
    let (name, answer) = sio.next().await;
    assert_eq!(name, "ack:2", "{answer}");
    assert!(
        answer.get("error").is_none(),
        "an event without payload: {answer}"
    );
    assert_eq!(server.all_state().await, json!({"topics": []}));
}

/// The hub's own topics are refused over Socket.IO as on every other transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_the_hubs_own_topics_is_refused() {
    let server = Server::start(&[]);
    let mut sio = Sio::connect(server.addr(), 1 << 16).await;
    sio.emit(
        "set",
        json!({"topic": "_sources/fake", "state": {"status": "online"}}),
        1,
    )
    .await;
    let (name, ack) = sio.next().await;
    assert_eq!(name, "ack:1");
    assert_eq!(ack["error"]["code"], "forbidden", "{ack}");
    assert_eq!(server.get("/api/state/_sources/fake").await.status, 404);
}

/// A state written over Socket.IO keeps its numbers as written (more digits than an `f64`
/// holds, exponents out of its range), in the acknowledgement's `changed`, in the snapshot
/// a `get` emits and over REST. The packets are read as text: parsing them could round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_written_over_socketio_come_back_exactly_as_written() {
    const STATE: &str =
        r#"{"big":123456789012345678901234567890123456789,"huge":1e+400,"tiny":1e-400}"#;
    let server = Server::start(&[]);
    let mut sio = Sio::connect(server.addr(), 1 << 20).await;
    sio.send_text(format!(r#"421["set",{{"topic":"num/s","state":{STATE}}}]"#))
        .await;
    let (name, ack) = sio.next().await;
    assert_eq!(name, "ack:1", "{ack}");
    assert_eq!(ack["changed"], true, "{ack}");

    let state = format!(r#""state":{STATE}"#);
    sio.emit("get", json!({"patterns": ["num/s"]}), 2).await;
    let snapshot = sio.recv_text().await;
    assert!(
        snapshot.starts_with(r#"42["snapshot","#) && snapshot.contains(&state),
        "{snapshot}"
    );
    assert_eq!(sio.next().await.0, "ack:2");
    let get = server.get("/api/state/num/s").await;
    assert!(get.text.contains(&state), "{}", get.text);
}

/// A state its topic's schema refuses is refused over Socket.IO too, with the violations,
/// and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_that_breaks_its_schema_is_refused_with_the_violations() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("statecast.toml");
    std::fs::write(
        &config,
        r#"
        [[topics]]
        match = "mic/+"
        schema = { type = "object", properties = { battery = { type = "integer" } } }
        "#,
    )
    .unwrap();
    let server = Server::start(&["--config", &config.to_string_lossy()]);
    let mut sio = Sio::connect(server.addr(), 1 << 16).await;
    sio.emit(
        "set",
        json!({"topic": "mic/1", "state": {"battery": "85%"}}),
        1,
    )
    .await;
    let (name, ack) = sio.next().await;
    assert_eq!(name, "ack:1");
    assert_eq!(ack["error"]["code"], "invalid_state", "{ack}");
    assert_eq!(ack["error"]["details"][0]["pointer"], "/battery", "{ack}");
    assert_eq!(server.get("/api/state/mic/1").await.status, 404);
}

/// A topic that nobody writes within its `stale_after` turns stale over Socket.IO too (a
/// generic `stale` event), and fresh again on its next write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_topic_turns_stale_and_fresh_as_events() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("statecast.toml");
    std::fs::write(
        &config,
        "[[topics]]\nmatch = \"railhub/+\"\nstale_after = \"300ms\"\n",
    )
    .unwrap();
    let server = Server::start(&["--config", &config.to_string_lossy()]);
    let mut sio = Sio::connect(server.addr(), 1 << 16).await;
    sio.emit("subscribe", json!({"patterns": ["railhub/#"]}), 1)
        .await;
    assert_eq!(sio.next().await.0, "ack:1");
    server
        .put("/api/state/railhub/esp32-01", &json!({"uptime": 1}))
        .await;
    let mut seen = Vec::new();
    let stale = loop {
        let (name, data) = sio.next().await;
        if name == "stale" {
            break data;
        }
        seen.push(name);
    };
    assert_eq!(seen, ["snapshot"]);
    assert_eq!(
        (stale["topic"].clone(), stale["stale"].clone()),
        (json!("railhub/esp32-01"), json!(true))
    );
    server
        .put("/api/state/railhub/esp32-01", &json!({"uptime": 1}))
        .await;
    let (name, data) = sio.next().await;
    assert_eq!(
        (name.as_str(), data["stale"].clone()),
        ("stale", json!(false))
    );
}
