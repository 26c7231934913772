//! The Server-Sent Events stream `/api/stream` of the real binary: snapshots, live changes
//! and resuming with `Last-Event-ID`.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::{Value, json};

/// Groups messages per topic, keeping their order.
fn per_topic(messages: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut grouped: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for message in messages {
        let topic = message["topic"].as_str().expect("a topic").to_owned();
        grouped.entry(topic).or_default().push(message.clone());
    }
    grouped
}

/// The next SSE event, checking that `event:` names the JSON's `type`.
async fn next_message(sse: &mut Sse) -> Value {
    let event = sse.next().await;
    let message = event.json();
    assert_eq!(
        message["type"].as_str(),
        Some(event.event.as_str()),
        "event: and type differ: {event:?}"
    );
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sends_snapshots_then_live_changes_and_resumes_from_last_event_id() {
    let server = Server::start(&[]);
    server.put("/api/state/sse/a", &json!({"x": 1})).await;
    server
        .put("/api/state/sse/b", &json!({"y": 1, "z": [1]}))
        .await;
    server.put("/api/state/other/c", &json!({"c": 1})).await;

    let mut sse = Sse::open(&server, &["sse/#"], None).await;
    let first = vec![next_message(&mut sse).await, next_message(&mut sse).await];
    let mut snapshots = first.clone();
    snapshots.sort_by(|a, b| a["topic"].as_str().cmp(&b["topic"].as_str()));
    assert_eq!(
        snapshots,
        vec![
            json!({"type": "snapshot", "topic": "sse/a", "rev": 1, "state": {"x": 1}}),
            json!({"type": "snapshot", "topic": "sse/b", "rev": 1, "state": {"y": 1, "z": [1]}}),
        ]
    );

    // Live changes, as the same JSON as on WebSocket.
    server.patch("/api/state/sse/a", &json!({"x": 2})).await;
    assert_eq!(
        next_message(&mut sse).await,
        json!({"type": "patch", "topic": "sse/a", "rev": 2, "patch": {"x": 2}})
    );
    server.post("/api/events/sse/a", &json!({"press": 1})).await;
    assert_eq!(
        next_message(&mut sse).await,
        json!({"type": "event", "topic": "sse/a", "data": {"press": 1}})
    );
    server.put("/api/state/sse/new", &json!({"n": 1})).await;
    assert_eq!(
        next_message(&mut sse).await,
        json!({"type": "snapshot", "topic": "sse/new", "rev": 1, "state": {"n": 1}})
    );
    let last_id = sse.last_id.clone().expect("the stream carried an id");
    drop(sse);

    // Changes while disconnected.
    server.patch("/api/state/sse/a", &json!({"x": 3})).await;
    server
        .put("/api/state/sse/b", &json!({"y": 2, "z": [1]}))
        .await;
    server
        .post("/api/events/sse/b", &json!({"missed": true}))
        .await;
    server.put("/api/state/other/c", &json!({"c": 2})).await;
    server.patch("/api/state/sse/a", &json!({"x": 4})).await;
    server.delete("/api/state/sse/b").await;

    let mut sse = Sse::open(&server, &["sse/#"], Some(&last_id)).await;
    let mut missed = Vec::new();
    for _ in 0..4 {
        missed.push(next_message(&mut sse).await);
    }
    let grouped = per_topic(&missed);
    let mut expected = BTreeMap::new();
    expected.insert(
        "sse/a".to_owned(),
        vec![
            json!({"type": "patch", "topic": "sse/a", "rev": 3, "patch": {"x": 3}}),
            json!({"type": "patch", "topic": "sse/a", "rev": 4, "patch": {"x": 4}}),
        ],
    );
    expected.insert(
        "sse/b".to_owned(),
        vec![
            json!({"type": "patch", "topic": "sse/b", "rev": 2, "patch": {"y": 2}}),
            json!({"type": "removed", "topic": "sse/b", "rev": 3}),
        ],
    );
    assert_eq!(grouped, expected, "replayed: {missed:?}");

    // Nothing else was replayed: the next event is the next change.
    server.patch("/api/state/sse/new", &json!({"n": 2})).await;
    assert_eq!(
        next_message(&mut sse).await,
        json!({"type": "patch", "topic": "sse/new", "rev": 2, "patch": {"n": 2}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_from_the_newest_id_replays_nothing() {
    let server = Server::start(&[]);
    server.put("/api/state/head/t", &json!({"v": 1})).await;
    let mut sse = Sse::open(&server, &["head/#"], None).await;
    assert_eq!(
        next_message(&mut sse).await,
        json!({"type": "snapshot", "topic": "head/t", "rev": 1, "state": {"v": 1}})
    );
    server.patch("/api/state/head/t", &json!({"v": 2})).await;
    assert_eq!(next_message(&mut sse).await["rev"], 2);
    let last_id = sse.last_id.clone().expect("an id");
    drop(sse);

    let mut sse = Sse::open(&server, &["head/#"], Some(&last_id)).await;
    server.patch("/api/state/head/t", &json!({"v": 3})).await;
    assert_eq!(
        next_message(&mut sse).await,
        json!({"type": "patch", "topic": "head/t", "rev": 3, "patch": {"v": 3}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_last_event_id_starts_afresh_with_snapshots() {
    let server = Server::start(&[]);
    server.put("/api/state/fresh/t", &json!({"v": 1})).await;
    server.patch("/api/state/fresh/t", &json!({"v": 2})).await;
    let mut sse = Sse::open(&server, &["fresh/#"], Some("not-a-cursor")).await;
    assert_eq!(
        next_message(&mut sse).await,
        json!({"type": "snapshot", "topic": "fresh/t", "rev": 2, "state": {"v": 2}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_past_the_history_gets_a_snapshot() {
    let server = Server::start(&["--resume-len", "2"]);
    server.put("/api/state/old/t", &json!({"v": 1})).await;
    server.put("/api/state/old/u", &json!({"u": 1})).await;
    let mut sse = Sse::open(&server, &["old/#"], None).await;
    next_message(&mut sse).await;
    next_message(&mut sse).await;
    let last_id = sse.last_id.clone().expect("an id");
    drop(sse);

    for v in 2..=6 {
        server.patch("/api/state/old/t", &json!({"v": v})).await;
    }
    server.patch("/api/state/old/u", &json!({"u": 2})).await;
    let mut sse = Sse::open(&server, &["old/#"], Some(&last_id)).await;
    let mut resumed = vec![next_message(&mut sse).await, next_message(&mut sse).await];
    resumed.sort_by(|a, b| a["topic"].as_str().cmp(&b["topic"].as_str()));
    assert_eq!(
        resumed,
        vec![
            json!({"type": "snapshot", "topic": "old/t", "rev": 6, "state": {"v": 6}}),
            json!({"type": "patch", "topic": "old/u", "rev": 2, "patch": {"u": 2}}),
        ]
    );
    server.patch("/api/state/old/t", &json!({"v": 7})).await;
    assert_eq!(
        next_message(&mut sse).await,
        json!({"type": "patch", "topic": "old/t", "rev": 7, "patch": {"v": 7}})
    );
}
