//! The `websocket` source against an upstream WebSocket server started in the test.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The next text message the source sent.
async fn receive(ws: &mut WebSocketStream<TcpStream>) -> Value {
    loop {
        let message = within("a message from the source", ws.next())
            .await
            .expect("the source hung up")
            .expect("a WebSocket message");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).expect("the source sends JSON");
        }
    }
}

async fn send(ws: &mut WebSocketStream<TcpStream>, message: Value) {
    ws.send(Message::text(message.to_string()))
        .await
        .expect("send to the source");
}

fn config(url: &str) -> String {
    format!(
        r#"
        [[source]]
        name = "mopidy"
        type = "websocket"
        url = "{url}"
        topic = "music/player"
        send_on_open = [
            {{ jsonrpc = "2.0", id = 1, method = "core.playback.get_state" }},
            {{ jsonrpc = "2.0", id = 2, method = "core.mixer.get_volume" }},
        ]

        [[source.rule]]
        match = {{ id = 1 }}
        action = "patch"
        select = "/result"
        into = "/state"

        [[source.rule]]
        match = {{ event = "playback_state_changed" }}
        action = "patch"
        select = "/new_state"
        into = "/state"

        [[source.rule]]
        match = {{ event = "volume_changed" }}
        action = "set"
        select = "/volume"
        into = "/level"
        topic = "music/{{msg.mixer}}/volume"

        [[source.rule]]
        match = {{ event = "track_playback_started" }}
        action = "event"
        select = "/tl_track/track"
        "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_become_writes_and_the_source_reconnects() {
    let mut upstream = Upstream::start().await;
    let hub = hub();
    let mut watch = Watch::new(&hub, &["music/#", "_sources/#"]);
    let _bridge = start(&hub, &config(&upstream.url));
    let health = health_topic("mopidy");

    // send_on_open reaches the upstream, in order.
    let mut ws = upstream.accept().await;
    assert_eq!(receive(&mut ws).await["method"], "core.playback.get_state");
    assert_eq!(receive(&mut ws).await["method"], "core.mixer.get_volume");
    let h = watch
        .state_where(&health, "the source online", |h| h["status"] == "online")
        .await;
    assert_eq!(h["type"], "websocket");
    assert_eq!(h["error_count"], 0);

    // Answers and events through the rules.
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 1, "result": "paused"}),
    )
    .await;
    watch
        .state_where("music/player", "the state answer", |s| {
            s["state"] == "paused"
        })
        .await;
    send(
        &mut ws,
        json!({"event": "playback_state_changed", "old_state": "paused", "new_state": "playing"}),
    )
    .await;
    send(
        &mut ws,
        json!({"event": "volume_changed", "mixer": "main", "volume": 40}),
    )
    .await;
    let mark = watch.mark();
    send(
        &mut ws,
        json!({"event": "track_playback_started", "tl_track": {"tlid": 3, "track": {"name": "Intro"}}}),
    )
    .await;
    let event = watch
        .frame_after(mark, "the track event", |f| f["type"] == "event")
        .await;
    assert_eq!(
        event,
        json!({"type": "event", "topic": "music/player", "data": {"name": "Intro"}})
    );
    // Messages are handled in order, so the earlier ones are written by now.
    assert_eq!(
        state(&hub, "music/player"),
        Some(json!({"state": "playing"}))
    );
    assert_eq!(state(&hub, "music/main/volume"), Some(json!({"level": 40})));
    let frames: Vec<(Value, Value)> = watch
        .frames_since(0, "music/player")
        .into_iter()
        .filter(|f| f["type"] != "event")
        .map(|f| (f["type"].clone(), f["patch"].clone()))
        .collect();
    assert_eq!(
        frames,
        [
            (json!("snapshot"), Value::Null),
            (json!("patch"), json!({"state": "playing"}))
        ],
        "created by the first patch, changed by the second"
    );

    // Messages no rule takes, or that are not JSON, change nothing.
    let rev_before = rev(&hub, "music/player");
    send(&mut ws, json!({"event": "seeked", "time_position": 10})).await;
    ws.send(Message::text("not json at all")).await.unwrap();
    let mark = watch.mark();
    send(
        &mut ws,
        json!({"event": "track_playback_started", "tl_track": {"track": {"name": "Second"}}}),
    )
    .await;
    watch
        .frame_after(mark, "the second track event", |f| {
            f["data"]["name"] == "Second"
        })
        .await;
    assert_eq!(rev(&hub, "music/player"), rev_before);

    // A message a rule cannot place is counted, and the source stays online.
    send(&mut ws, json!({"event": "volume_changed", "volume": 41})).await;
    let h = watch
        .state_where(&health, "the rejected message to be counted", |h| {
            h["error_count"] == 1
        })
        .await;
    assert_eq!(h["status"], "online", "{h}");
    assert!(
        h["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("msg.mixer")),
        "{h}"
    );

    // The upstream closes: offline, then a new connection, send_on_open again, and new
    // messages flow.
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "restarting".into(),
    })))
    .await
    .expect("close");
    let h = watch
        .state_where(&health, "the source offline", |h| h["status"] == "offline")
        .await;
    assert_eq!(h["error_count"], 2, "{h}");
    let error = h["last_error"].as_str().unwrap();
    assert!(error.contains("closed the connection"), "{error}");

    let mut ws = upstream.accept().await;
    assert_eq!(receive(&mut ws).await["method"], "core.playback.get_state");
    assert_eq!(receive(&mut ws).await["method"], "core.mixer.get_volume");
    watch
        .state_where(&health, "the source online again", |h| {
            h["status"] == "online"
        })
        .await;
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 1, "result": "stopped"}),
    )
    .await;
    watch
        .state_where("music/player", "a message on the new connection", |s| {
            s["state"] == "stopped"
        })
        .await;
    assert_eq!(state(&hub, "music/main/volume"), Some(json!({"level": 40})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_reported_offline_without_its_token() {
    let addr = unreachable_addr();
    let hub = hub();
    let mut watch = Watch::new(&hub, &["_sources/#"]);
    let _bridge = start(
        &hub,
        &format!(
            r#"
            [[source]]
            name = "ws"
            type = "websocket"
            url = "ws://{addr}/stream?token=tok-secret"
            topic = "up/stream"
            "#
        ),
    );
    let h = watch
        .state_where(&health_topic("ws"), "the failed connect", |h| {
            h["error_count"].as_u64() >= Some(1)
        })
        .await;
    assert_eq!(h["status"], "offline");
    assert!(
        h["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("ws://{addr}/stream?***"))),
        "the error names the upstream, not its token: {h}"
    );
    assert!(!h.to_string().contains("secret"), "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_stops_answering_pings_is_dropped_and_reconnected() {
    let mut upstream = Upstream::start().await;
    let hub = hub();
    let mut watch = Watch::new(&hub, &["_sources/#"]);
    let _bridge = start(
        &hub,
        &format!(
            r#"
            [[source]]
            name = "ws"
            type = "websocket"
            url = "{}"
            topic = "up/stream"
            ping_interval_ms = 50
            "#,
            upstream.url
        ),
    );
    // Accepted but never read: no pong ever goes back.
    let _silent = upstream.accept().await;
    let h = watch
        .state_where(&health_topic("ws"), "the dropped connection", |h| {
            h["status"] == "offline"
        })
        .await;
    assert!(
        h["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no answer to pings")),
        "{h}"
    );
    let _second = upstream.accept().await;
}
