//! Staleness end to end, through the real binary: a topic under a `stale_after` policy
//! turns stale when nobody writes it and fresh again on the next write (an unchanged one
//! too), seen over WebSocket, SSE and REST, in health and metrics; across a restart and a
//! resume; and marked at once by a source that knows its device is gone (an `http_poll`
//! device stopped, an MQTT last will on the real Mosquitto).
//!
//! `stale_after` is a few hundred milliseconds; the tests wait (bounded) for the messages,
//! never for a time.

mod common;

use common::*;
use serde_json::{Value, json};

/// A `statecast.toml` in a new directory; returns both.
fn config(toml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("statecast.toml");
    std::fs::write(&path, toml).unwrap();
    let path = path.to_string_lossy().into_owned();
    (dir, path)
}

const STALE_AFTER_300MS: &str = r##"
    [[topics]]
    match = "railhub/+"
    stale_after = "300ms"
"##;

fn is_stale(m: &Value, topic: &str, stale: bool) -> bool {
    m["type"] == "stale" && m["topic"] == topic && m["stale"] == stale
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_topic_turns_stale_and_fresh_again_on_its_next_write_over_every_transport() {
    let (_dir, config) = config(STALE_AFTER_300MS);
    let server = Server::start(&["--config", &config]);
    let topic = "railhub/esp32-01";
    // Subscribed before the topic exists, so its turn to stale comes after.
    let mut ws = server.ws().await;
    ws.request(json!({"type": "subscribe", "id": 1, "patterns": ["railhub/#"]}))
        .await;
    let mut sse = Sse::open(&server, &["railhub/#"], None).await;
    let state = json!({"uptime": 1, "outputs": [true]});
    let put = server.put(&format!("/api/state/{topic}"), &state).await;
    assert_eq!(put.status, 200, "{}", put.text);
    let written = server.get(&format!("/api/state/{topic}")).await.json();
    let time = written["time"].as_str().expect("a time").to_owned();
    assert!(
        time.ends_with('Z') && time.len() == 24,
        "RFC 3339 with ms: {time}"
    );

    // Nobody writes: stale, with `since` the time of the last write.
    let seen = ws.recv_until(|m| is_stale(m, topic, true)).await;
    let stale = seen.last().unwrap();
    assert_eq!(
        (stale["rev"].clone(), stale["since"].clone()),
        (json!(1), json!(time))
    );
    let event = loop {
        let event = sse.next().await;
        if event.event == "stale" {
            break event;
        }
    };
    assert_eq!(event.json()["stale"], true, "{}", event.data);
    let get = server.get(&format!("/api/state/{topic}")).await.json();
    assert_eq!(get["stale"], true, "{get}");
    let listed = server.get("/api/state?stale=true").await.json();
    assert_eq!(listed["topics"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(server.get("/api/health").await.json()["stale_topics"], 1);
    assert_eq!(server.metric("statecast_stale_topics").await, 1.0);
    // A new subscriber's snapshot says so.
    let mut late = server.ws().await;
    let got = late
        .request(json!({"type": "subscribe", "id": 2, "patterns": [topic]}))
        .await;
    assert_eq!(got[0]["stale"], true, "{got:?}");

    // The device repeats the same state: fresh again, no new rev.
    let same = server
        .put(&format!("/api/state/{topic}"), &state)
        .await
        .json();
    assert_eq!(same["changed"], false, "{same}");
    let seen = ws.recv_until(|m| is_stale(m, topic, false)).await;
    assert_eq!(seen.last().unwrap()["rev"], 1);
    let fresh = server.get(&format!("/api/state/{topic}")).await.json();
    assert!(fresh.get("stale").is_none(), "{fresh}");
    assert_eq!(
        server.get("/api/state?stale=true").await.json()["topics"],
        json!([])
    );
    // And stale again once it is silent: the deadline was armed again by that write.
    ws.recv_until(|m| is_stale(m, topic, true)).await;
    // A change freshens it, `stale:false` before the patch, at the rev the client holds
    // until the patch arrives (so a client resuming from it misses nothing).
    server
        .patch(&format!("/api/state/{topic}"), &json!({"uptime": 2}))
        .await;
    let fresh = ws.recv_json().await;
    assert!(is_stale(&fresh, topic, false), "{fresh}");
    assert_eq!(fresh["rev"], json!(1), "{fresh}");
    let patch = ws.recv_json().await;
    assert_eq!(
        (patch["type"].clone(), patch["rev"].clone()),
        (json!("patch"), json!(2))
    );
    // Topics no policy matches never turn stale: `other/x` stays out of the listing even
    // after railhub's topic turned stale a third time.
    server.put("/api/state/other/x", &json!(1)).await;
    ws.recv_until(|m| is_stale(m, topic, true)).await;
    let listed = server.get("/api/state?stale=true").await.json();
    let names: Vec<&str> = listed["topics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["topic"].as_str())
        .collect();
    assert_eq!(names, [topic]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staleness_survives_a_restart_and_a_resume() {
    let (_dir, config) = config(STALE_AFTER_300MS);
    let mut server = Server::start(&["--config", &config]);
    let topic = "railhub/esp32-01";
    let state = json!({"uptime": 1});
    let mut ws = server.ws().await;
    ws.request(json!({"type": "subscribe", "id": 1, "patterns": [topic]}))
        .await;
    server.put(&format!("/api/state/{topic}"), &state).await;
    let changed = server.get(&format!("/api/state/{topic}")).await.json()["time"].clone();
    // An unchanged write later: its time is what the topic's staleness counts from.
    ws.recv_until(|m| is_stale(m, topic, true)).await;
    server.put(&format!("/api/state/{topic}"), &state).await;
    ws.recv_until(|m| is_stale(m, topic, false)).await;
    drop(ws);

    // A clean restart: the topic is fresh until its deadline, then stale, with `since`
    // the unchanged write's time (stored), not the change's.
    server.sigterm();
    assert!(server.wait_exit().await.success());
    server.restart();
    let mut ws = server.ws().await;
    let got = ws
        .request(json!({"type": "subscribe", "id": 1, "patterns": [topic], "since": {topic: 1}}))
        .await;
    let seen = if got.iter().any(|m| is_stale(m, topic, true)) {
        got
    } else {
        ws.recv_until(|m| is_stale(m, topic, true)).await
    };
    let since = seen.iter().rev().find(|m| m["type"] == "stale").unwrap()["since"].clone();
    assert!(
        since.as_str() > changed.as_str(),
        "since {since} should be the later unchanged write, not the change at {changed}"
    );
    drop(ws);

    // A client that was away while the topic went stale is told so when it resumes,
    // although its rev is current.
    let mut ws = server.ws().await;
    let got = ws
        .request(json!({"type": "subscribe", "id": 2, "patterns": [topic], "since": {topic: 1}}))
        .await;
    assert!(got.iter().any(|m| is_stale(m, topic, true)), "{got:?}");
    // Over SSE with Last-Event-ID too.
    let mut sse = Sse::open(&server, &[topic], None).await;
    let first = sse.next().await;
    assert_eq!(first.json()["stale"], true, "{}", first.data);
    let cursor = first.id.clone().or(sse.last_id.clone()).expect("a cursor");
    drop(sse);
    let mut resumed = Sse::open(&server, &[topic], Some(&cursor)).await;
    let told = resumed.next().await;
    assert_eq!(
        (told.event.as_str(), told.json()["stale"].clone()),
        ("stale", json!(true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_poll_device_that_stops_answering_makes_its_topic_stale() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/status",
        axum::routing::get(|| async { axum::Json(json!({"outputs": [true]})) }),
    );
    let device = tokio::spawn(async move { axum::serve(listener, app).await });
    // No stale_after: only the source can tell.
    let (_dir, config) = config(&format!(
        r#"
        [[source]]
        name = "esp32"
        type = "http_poll"
        url = "http://{addr}/status"
        topic = "railhub/esp32-01"
        min_interval_ms = 20
        idle_interval_ms = 20
        max_interval_ms = 40
        "#
    ));
    let server = Server::start(&["--config", &config]);
    let mut ws = server.ws().await;
    let got = ws
        .request(json!({"type": "subscribe", "id": 1, "patterns": ["railhub/#"]}))
        .await;
    if !got.iter().any(|m| m["type"] == "snapshot") {
        ws.recv_until(|m| m["type"] == "snapshot").await;
    }
    device.abort();
    let _ = device.await;
    ws.recv_until(|m| is_stale(m, "railhub/esp32-01", true))
        .await;
    let get = server.get("/api/state/railhub/esp32-01").await.json();
    assert_eq!(get["stale"], true, "{get}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_last_will_makes_its_devices_topic_stale() {
    let prefix = format!("statecast-test-lwt-{:08x}", rand_u32());
    let (_dir, config) = config(&format!(
        r#"
        [[source]]
        name = "tasmota"
        type = "mqtt"
        broker = "mqtt://127.0.0.1:1883"
        subscribe = ["{prefix}/tele/+/STATE"]
        topic = "tasmota/{{3}}"

        [source.last_will]
        topic = "{prefix}/tele/+/LWT"
        offline = "Offline"
        stale_topic = "tasmota/{{3}}"
        "#
    ));
    let server = Server::start(&["--config", &config]);
    let mut ws = server.ws().await;
    let online = |m: &Value| {
        m["topic"] == "_sources/tasmota"
            && (m["state"]["status"] == "online" || m["patch"]["status"] == "online")
    };
    let got = ws
        .request(
            json!({"type": "subscribe", "id": 1, "patterns": ["tasmota/#", "_sources/tasmota"]}),
        )
        .await;
    if !got.iter().any(online) {
        ws.recv_until(online).await;
    }
    let mut options = rumqttc::MqttOptions::new(format!("{prefix}-pub"), "127.0.0.1", 1883);
    options.set_keep_alive(std::time::Duration::from_secs(5));
    let (client, mut events) = rumqttc::AsyncClient::new(options, 10);
    let polling = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let publish = |topic: String, payload: &'static str| {
        let client = client.clone();
        async move {
            client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .await
                .unwrap()
        }
    };
    publish(format!("{prefix}/tele/plug1/STATE"), r#"{"POWER":"ON"}"#).await;
    ws.recv_until(|m| m["topic"] == "tasmota/plug1" && m["type"] == "snapshot")
        .await;
    // "Online" changes nothing; "Offline" is the last will.
    publish(format!("{prefix}/tele/plug1/LWT"), "Online").await;
    publish(format!("{prefix}/tele/plug1/LWT"), "Offline").await;
    let seen = ws.recv_until(|m| m["type"] == "stale").await;
    assert!(
        is_stale(seen.last().unwrap(), "tasmota/plug1", true),
        "{seen:?}"
    );
    // The LWT message was not written as a state.
    assert!(seen.iter().all(|m| m["type"] != "patch"), "{seen:?}");
    // The device is back: its next state makes the topic fresh.
    publish(format!("{prefix}/tele/plug1/STATE"), r#"{"POWER":"ON"}"#).await;
    ws.recv_until(|m| is_stale(m, "tasmota/plug1", false)).await;
    polling.abort();
}

/// A random number for names of the test's own, on the shared broker.
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish() as u32
}
