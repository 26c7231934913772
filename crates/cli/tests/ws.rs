//! The WebSocket endpoint `/ws` of the real binary, driven by real clients: the welcome,
//! subscriptions and the delivery rules, resume with `since`, a stalled client and the
//! heartbeat.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Sorts messages by `topic`, for sets whose order the contract leaves open.
fn by_topic(mut messages: Vec<Value>) -> Vec<Value> {
    messages.sort_by(|a, b| a["topic"].as_str().cmp(&b["topic"].as_str()));
    messages
}

/// Writes `state` to `topic` through `ws` and checks the `result`.
async fn set(ws: &mut Ws, id: u64, topic: &str, state: Value, rev: u64) {
    let result = ws
        .call(json!({"type": "set", "id": id, "topic": topic, "state": state}))
        .await;
    assert_eq!(
        result,
        json!({"type": "result", "id": id, "ok": true, "rev": rev, "changed": true})
    );
}

async fn patch(ws: &mut Ws, id: u64, topic: &str, patch: Value, rev: u64) {
    let result = ws
        .call(json!({"type": "patch", "id": id, "topic": topic, "patch": patch}))
        .await;
    assert_eq!(
        result,
        json!({"type": "result", "id": id, "ok": true, "rev": rev, "changed": true})
    );
}

/// Subscribes and returns what came before the `result` (checked to be `ok`).
async fn subscribe(ws: &mut Ws, id: &str, request: Value) -> Vec<Value> {
    let mut message = request;
    message["type"] = json!("subscribe");
    message["id"] = json!(id);
    let mut seen = ws.request(message).await;
    let result = seen.pop().expect("a result");
    assert_eq!(result["type"], "result");
    assert_eq!(result["id"], id);
    assert_eq!(result["ok"], true, "{result}");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_carries_server_session_heartbeat_and_frame_limit() {
    let server = Server::start(&[]);
    let first = server.ws().await;
    let welcome = &first.welcome;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["server"], "statecast/0.1.0");
    assert_eq!(welcome["heartbeat_ms"], 25000);
    assert_eq!(welcome["max_frame_bytes"], 1048576);
    let session = welcome["session"].as_str().expect("session is a string");
    assert!(!session.is_empty());
    let second = server.ws().await;
    assert_ne!(
        second.welcome["session"], welcome["session"],
        "sessions differ"
    );

    let configured = Server::start(&["--heartbeat-ms", "1234", "--max-frame-bytes", "54321"]);
    let ws = configured.ws().await;
    assert_eq!(ws.welcome["heartbeat_ms"], 1234);
    assert_eq!(ws.welcome["max_frame_bytes"], 54321);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_sends_a_snapshot_per_matching_topic_then_the_result() {
    let server = Server::start(&[]);
    let mut writer = server.ws().await;
    set(&mut writer, 1, "sub/a", json!({"x": 1}), 1).await;
    set(&mut writer, 2, "sub/b", json!({"y": [1, 2]}), 1).await;
    patch(&mut writer, 3, "sub/b", json!({"z": "s"}), 2).await;
    set(&mut writer, 4, "sub/a/deep", json!({"no": 1}), 1).await;
    set(&mut writer, 5, "other/c", json!({"no": 2}), 1).await;

    let mut client = server.ws().await;
    let snapshots = subscribe(&mut client, "s1", json!({"patterns": ["sub/+"]})).await;
    assert_eq!(
        by_topic(snapshots),
        vec![
            json!({"type": "snapshot", "topic": "sub/a", "rev": 1, "state": {"x": 1}}),
            json!({"type": "snapshot", "topic": "sub/b", "rev": 2, "state": {"y": [1, 2], "z": "s"}}),
        ]
    );
    // A pattern matching nothing: just the result.
    let nothing = subscribe(&mut client, "s2", json!({"patterns": ["none/#"]})).await;
    assert!(nothing.is_empty(), "{nothing:?}");
    client.ping_pong().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_patch_delete_and_event_reach_a_subscriber_as_patch_removed_and_event() {
    let server = Server::start(&[]);
    let mut subscriber = server.ws().await;
    assert!(
        subscribe(&mut subscriber, "s", json!({"patterns": ["live/#"]}))
            .await
            .is_empty()
    );
    let mut writer = server.ws().await;
    let topic = "live/t";

    // Creation arrives as a snapshot.
    set(&mut writer, 1, topic, json!({"a": 1, "b": {"c": 2}}), 1).await;
    assert_eq!(
        subscriber.recv_json().await,
        json!({"type": "snapshot", "topic": topic, "rev": 1, "state": {"a": 1, "b": {"c": 2}}})
    );
    // A patch arrives as the patch of what changed, rev + 1.
    patch(&mut writer, 2, topic, json!({"b": {"c": 3}}), 2).await;
    assert_eq!(
        subscriber.recv_json().await,
        json!({"type": "patch", "topic": topic, "rev": 2, "patch": {"b": {"c": 3}}})
    );
    // Removing a member is a merge patch with null.
    patch(&mut writer, 3, topic, json!({"a": null}), 3).await;
    assert_eq!(
        subscriber.recv_json().await,
        json!({"type": "patch", "topic": topic, "rev": 3, "patch": {"a": null}})
    );
    // An event: result without rev, the event to the subscriber.
    let result = writer
        .call(json!({"type": "event", "id": 4, "topic": topic, "data": {"button": "A"}}))
        .await;
    assert_eq!(result, json!({"type": "result", "id": 4, "ok": true}));
    assert_eq!(
        subscriber.recv_json().await,
        json!({"type": "event", "topic": topic, "data": {"button": "A"}})
    );
    // Delete: removed with the next rev.
    let result = writer
        .call(json!({"type": "delete", "id": 5, "topic": topic}))
        .await;
    assert_eq!(result["type"], "result");
    assert_eq!(result["id"], 5);
    assert_eq!(result["ok"], true);
    assert_eq!(result["rev"], 4);
    assert_eq!(
        subscriber.recv_json().await,
        json!({"type": "removed", "topic": topic, "rev": 4})
    );
    // Re-creation continues the revs and arrives as a snapshot.
    set(&mut writer, 6, topic, json!({"again": true}), 5).await;
    assert_eq!(
        subscriber.recv_json().await,
        json!({"type": "snapshot", "topic": topic, "rev": 5, "state": {"again": true}})
    );
    subscriber.ping_pong().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_set_changing_one_member_arrives_as_a_patch_of_that_member_only() {
    let server = Server::start(&[]);
    let topic = "railhub/esp32-01";
    let mut state = json!({
        "device": "esp32-01",
        "uptime": 123,
        "outputs": [true, false, true, false],
        "wifi": {"ssid": "hall", "rssi": -55},
    });
    let mut writer = server.ws().await;
    set(&mut writer, 1, topic, state.clone(), 1).await;
    let mut subscriber = server.ws().await;
    let snapshot = subscribe(&mut subscriber, "s", json!({"patterns": ["railhub/#"]})).await;
    assert_eq!(
        snapshot,
        vec![json!({"type": "snapshot", "topic": topic, "rev": 1, "state": state})]
    );

    state["uptime"] = json!(124);
    set(&mut writer, 2, topic, state.clone(), 2).await;
    assert_eq!(
        subscriber.recv_json().await,
        json!({"type": "patch", "topic": topic, "rev": 2, "patch": {"uptime": 124}})
    );
    state["wifi"]["rssi"] = json!(-61);
    set(&mut writer, 3, topic, state.clone(), 3).await;
    assert_eq!(
        subscriber.recv_json().await,
        json!({"type": "patch", "topic": topic, "rev": 3, "patch": {"wifi": {"rssi": -61}}})
    );
    state["outputs"][1] = json!(true);
    set(&mut writer, 4, topic, state.clone(), 4).await;
    assert_eq!(
        subscriber.recv_json().await,
        json!({"type": "patch", "topic": topic, "rev": 4, "patch": {"outputs": [true, true, true, false]}})
    );
    subscriber.ping_pong().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_changes_nothing_keeps_the_rev_and_delivers_nothing() {
    let server = Server::start(&[]);
    let topic = "noop/t";
    let mut writer = server.ws().await;
    set(&mut writer, 1, topic, json!({"v": 1, "w": {"x": 2}}), 1).await;
    let mut subscriber = server.ws().await;
    assert_eq!(
        subscribe(&mut subscriber, "s", json!({"patterns": [topic]}))
            .await
            .len(),
        1
    );

    let unchanged =
        |id: u64| json!({"type": "result", "id": id, "ok": true, "rev": 1, "changed": false});
    let result = writer
        .call(json!({"type": "set", "id": 2, "topic": topic, "state": {"w": {"x": 2}, "v": 1}}))
        .await;
    assert_eq!(result, unchanged(2));
    let result = writer
        .call(json!({"type": "patch", "id": 3, "topic": topic, "patch": {"v": 1}}))
        .await;
    assert_eq!(result, unchanged(3));
    let result = writer
        .call(json!({"type": "patch", "id": 4, "topic": topic, "patch": {"gone": null}}))
        .await;
    assert_eq!(result, unchanged(4));

    // The next thing the subscriber receives is the next real change.
    patch(&mut writer, 5, topic, json!({"v": 2}), 2).await;
    assert_eq!(
        subscriber.recv_json().await,
        json!({"type": "patch", "topic": topic, "rev": 2, "patch": {"v": 2}})
    );
    subscriber.ping_pong().await;
    let read = server.get("/api/state/noop/t").await;
    assert_eq!(
        untimed(read.json()),
        json!({"topic": topic, "rev": 2, "state": {"v": 2, "w": {"x": 2}}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_sends_snapshots_then_the_result_and_subscribes_to_nothing() {
    let server = Server::start(&[]);
    let mut writer = server.ws().await;
    set(&mut writer, 1, "g/a", json!({"a": 1}), 1).await;
    set(&mut writer, 2, "g/b/c", json!([1, 2, 3]), 1).await;
    set(&mut writer, 3, "h/x", json!("other"), 1).await;

    let mut reader = server.ws().await;
    let mut seen = reader
        .request(json!({"type": "get", "id": 9, "patterns": ["g/#", "g/a"]}))
        .await;
    let result = seen.pop().unwrap();
    assert_eq!(result["type"], "result");
    assert_eq!(result["id"], 9);
    assert_eq!(result["ok"], true);
    assert_eq!(
        by_topic(seen),
        vec![
            json!({"type": "snapshot", "topic": "g/a", "rev": 1, "state": {"a": 1}}),
            json!({"type": "snapshot", "topic": "g/b/c", "rev": 1, "state": [1, 2, 3]}),
        ]
    );
    // `get` did not subscribe: a later change is not delivered.
    patch(&mut writer, 4, "g/a", json!({"a": 2}), 2).await;
    reader.ping_pong().await;
    // Nothing matches: just the result.
    let result = reader
        .call(json!({"type": "get", "id": 10, "patterns": ["nothing/+"]}))
        .await;
    assert_eq!(result["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_answered_with_pong_carrying_the_id() {
    let server = Server::start(&[]);
    let mut ws = server.ws().await;
    ws.send_json(&json!({"type": "ping"})).await;
    assert_eq!(ws.recv_json().await, json!({"type": "pong"}));
    ws.send_json(&json!({"type": "ping", "id": 7})).await;
    assert_eq!(ws.recv_json().await, json!({"type": "pong", "id": 7}));
    ws.send_json(&json!({"type": "ping", "id": "abc"})).await;
    assert_eq!(ws.recv_json().await, json!({"type": "pong", "id": "abc"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_full_delivers_every_change_as_a_snapshot() {
    let server = Server::start(&[]);
    let topic = "full/t";
    let mut writer = server.ws().await;
    set(&mut writer, 1, topic, json!({"a": 1}), 1).await;
    let mut subscriber = server.ws().await;
    let initial = subscribe(
        &mut subscriber,
        "s",
        json!({"patterns": ["full/#"], "mode": "full"}),
    )
    .await;
    assert_eq!(
        initial,
        vec![json!({"type": "snapshot", "topic": topic, "rev": 1, "state": {"a": 1}})]
    );
    patch(&mut writer, 2, topic, json!({"b": 2}), 2).await;
    assert_eq!(
        subscriber.recv_json().await,
        json!({"type": "snapshot", "topic": topic, "rev": 2, "state": {"a": 1, "b": 2}})
    );
    set(&mut writer, 3, topic, json!({"b": 2}), 3).await;
    assert_eq!(
        subscriber.recv_json().await,
        json!({"type": "snapshot", "topic": topic, "rev": 3, "state": {"b": 2}})
    );
    subscriber.ping_pong().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_matching_two_patterns_is_delivered_once() {
    let server = Server::start(&[]);
    let topic = "dup/x";
    let mut writer = server.ws().await;
    set(&mut writer, 1, topic, json!({"n": 1}), 1).await;
    let mut subscriber = server.ws().await;
    let initial = subscribe(
        &mut subscriber,
        "s1",
        json!({"patterns": ["dup/#", "dup/+", "#"]}),
    )
    .await;
    assert_eq!(
        initial,
        vec![json!({"type": "snapshot", "topic": topic, "rev": 1, "state": {"n": 1}})]
    );
    patch(&mut writer, 2, topic, json!({"n": 2}), 2).await;
    assert_eq!(
        subscriber.recv_json().await,
        json!({"type": "patch", "topic": topic, "rev": 2, "patch": {"n": 2}})
    );
    // A duplicate would have been queued with the first copy, before this pong.
    subscriber.ping_pong().await;

    // A new pattern for an already covered topic sends no second snapshot...
    let again = subscribe(&mut subscriber, "s2", json!({"patterns": ["dup/x"]})).await;
    assert!(again.is_empty(), "{again:?}");
    // ...and changes still arrive once.
    patch(&mut writer, 3, topic, json!({"n": 3}), 3).await;
    assert_eq!(
        subscriber.recv_json().await,
        json!({"type": "patch", "topic": topic, "rev": 3, "patch": {"n": 3}})
    );
    subscriber.ping_pong().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_since_replays_exactly_the_missed_patches_in_order() {
    let server = Server::start(&[]);
    let topic = "resume/t";
    let mut writer = server.ws().await;
    set(&mut writer, 1, topic, json!({"n": 0, "fixed": "x"}), 1).await;
    patch(&mut writer, 2, topic, json!({"n": 1}), 2).await;
    patch(&mut writer, 3, topic, json!({"n": 2}), 3).await;

    // A reads up to rev 3 and goes away.
    let mut a = server.ws().await;
    let initial = subscribe(&mut a, "s", json!({"patterns": ["resume/#"]})).await;
    assert_eq!(
        initial,
        vec![
            json!({"type": "snapshot", "topic": topic, "rev": 3, "state": {"n": 2, "fixed": "x"}})
        ]
    );
    within("closing A", a.stream.close(None))
        .await
        .expect("close A");
    drop(a);

    for (i, n) in (3..8).enumerate() {
        patch(
            &mut writer,
            10 + i as u64,
            topic,
            json!({"n": n}),
            4 + i as u64,
        )
        .await;
    }

    let mut a = server.ws().await;
    let replay = subscribe(
        &mut a,
        "resume",
        json!({"patterns": ["resume/#"], "since": {topic: 3}}),
    )
    .await;
    let expected: Vec<Value> = (3..8)
        .enumerate()
        .map(|(i, n)| json!({"type": "patch", "topic": topic, "rev": 4 + i, "patch": {"n": n}}))
        .collect();
    assert_eq!(replay, expected);
    // Live again: the next change follows.
    patch(&mut writer, 20, topic, json!({"n": 8}), 9).await;
    assert_eq!(
        a.recv_json().await,
        json!({"type": "patch", "topic": topic, "rev": 9, "patch": {"n": 8}})
    );
    a.ping_pong().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_since_at_the_current_rev_sends_nothing_before_the_result() {
    let server = Server::start(&[]);
    let topic = "current/t";
    let mut writer = server.ws().await;
    set(&mut writer, 1, topic, json!({"n": 1}), 1).await;
    patch(&mut writer, 2, topic, json!({"n": 2}), 2).await;
    set(&mut writer, 3, "current/u", json!({"u": 1}), 1).await;

    let mut client = server.ws().await;
    // `current/t` is current: nothing; `current/u` is not named: a snapshot.
    let initial = subscribe(
        &mut client,
        "s",
        json!({"patterns": ["current/#"], "since": {topic: 2}}),
    )
    .await;
    assert_eq!(
        initial,
        vec![json!({"type": "snapshot", "topic": "current/u", "rev": 1, "state": {"u": 1}})]
    );
    let mut only = server.ws().await;
    let nothing = subscribe(
        &mut only,
        "s",
        json!({"patterns": [topic], "since": {topic: 2}}),
    )
    .await;
    assert!(nothing.is_empty(), "{nothing:?}");
    patch(&mut writer, 4, topic, json!({"n": 3}), 3).await;
    assert_eq!(
        only.recv_json().await,
        json!({"type": "patch", "topic": topic, "rev": 3, "patch": {"n": 3}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_past_the_history_gets_a_snapshot() {
    let server = Server::start(&["--resume-len", "3"]);
    let topic = "short/t";
    let mut writer = server.ws().await;
    set(&mut writer, 1, topic, json!({"n": 1}), 1).await;
    for n in 2..=10 {
        patch(&mut writer, n, topic, json!({"n": n}), n).await;
    }
    let mut client = server.ws().await;
    let initial = subscribe(
        &mut client,
        "s",
        json!({"patterns": [topic], "since": {topic: 2}}),
    )
    .await;
    assert_eq!(
        initial,
        vec![json!({"type": "snapshot", "topic": topic, "rev": 10, "state": {"n": 10}})]
    );
    // Within the history: patches.
    let mut recent = server.ws().await;
    let replay = subscribe(
        &mut recent,
        "s",
        json!({"patterns": [topic], "since": {topic: 8}}),
    )
    .await;
    assert_eq!(
        replay,
        vec![
            json!({"type": "patch", "topic": topic, "rev": 9, "patch": {"n": 9}}),
            json!({"type": "patch", "topic": topic, "rev": 10, "patch": {"n": 10}}),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_without_a_handler_is_refused_with_no_route() {
    let server = Server::start(&[]);
    let mut ws = server.ws().await;
    let result = ws
        .call(json!({"type": "command", "id": 3, "target": "railhub/esp32-01", "name": "reboot", "args": {}}))
        .await;
    assert_eq!(result["type"], "result");
    assert_eq!(result["id"], 3);
    assert_eq!(result["ok"], false);
    assert_eq!(result["error"]["code"], "no_route", "{result}");
    assert!(result["error"]["message"].is_string());
    ws.ping_pong().await;
}

/// A client with a small receive buffer, subscribed to `pattern`, that reads nothing
/// until [`catch_up_stalled`].
async fn stalled_client(server: &Server, pattern: &str) -> Ws {
    let mut stalled = Ws::connect_small_buffer(server.addr(), 4096).await;
    assert!(
        subscribe(&mut stalled, "s", json!({"patterns": [pattern]}))
            .await
            .is_empty()
    );
    stalled
}

/// Reads the stalled client until it holds rev `n` of `topic`, which must be `expected`,
/// with fresh snapshots where its patches were dropped, and then nothing but a `lagged`
/// notice before the pong. Returns how many messages it read and its follower.
async fn catch_up_stalled(
    stalled: &mut Ws,
    topic: &str,
    n: u64,
    expected: &Value,
) -> (usize, Follower) {
    let mut follower = Follower::default();
    let mut received = 0usize;
    while follower.rev < n {
        let message = stalled.recv_json().await;
        received += 1;
        if message["type"] != "lagged" {
            assert_eq!(message["topic"], topic, "{message}");
        }
        follower.take(&message);
    }
    assert_eq!(follower.state.as_ref(), Some(expected));
    assert!(
        follower.snapshots >= 2,
        "no fresh snapshot replaced the dropped patches"
    );
    stalled
        .send_json(&json!({"type": "ping", "id": "end"}))
        .await;
    let tail = stalled.recv_until(|m| m["type"] == "pong").await;
    for message in &tail[..tail.len() - 1] {
        assert_eq!(message["type"], "lagged", "{message}");
    }
    (received, follower)
}

/// Write `i` of the stalled-client test's publisher: sets and patches alternate, each with
/// a 2 KiB member that changes every time, so the stream (about 20 MB) is far more than a
/// client's outbox (4 MiB) and socket buffers can hold.
fn stall_write(i: u64, topic: &str) -> Value {
    let blob = format!("{i:0>16}").repeat(128);
    if i.is_multiple_of(2) {
        json!({"type": "set", "id": i, "topic": topic,
               "state": {"n": i, "blob": blob, "fixed": "abcdefgh"}})
    } else {
        json!({"type": "patch", "id": i, "topic": topic, "patch": {"n": i, "blob": blob}})
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_blocks_nobody_stays_bounded_and_catches_up_on_the_final_state() {
    const N: u64 = 10_000;
    let topic = "stall/t";
    let server = Server::start(&["--heartbeat-ms", "60000"]);

    let mut stalled = stalled_client(&server, topic).await;

    let mut normal = server.ws().await;
    assert!(
        subscribe(&mut normal, "s", json!({"patterns": ["stall/#"]}))
            .await
            .is_empty()
    );
    // How far the normal client got: the publisher stays at most `AHEAD` writes (about
    // 2 MB, half its outbox) in front of it, so a test machine busy with other tests
    // cannot make the normal client lag; the stalled one falls behind by all of them.
    const AHEAD: u64 = 1000;
    let (normal_rev, mut normal_at) = tokio::sync::watch::channel(0u64);
    let normal_reader = tokio::spawn(async move {
        let mut follower = Follower::default();
        while follower.rev < N {
            let message = normal.recv_json().await;
            assert_eq!(message["topic"], topic, "{message}");
            follower.take(&message);
            normal_rev.send_replace(follower.rev);
        }
        (normal, follower)
    });

    // The publisher pipelines every write, reading results concurrently.
    let publisher = server.ws().await;
    let (mut sink, mut results) = publisher.stream.split();
    let sender = tokio::spawn(async move {
        for i in 1..=N {
            if i > *normal_at.borrow() + AHEAD {
                sink.flush().await.expect("flush writes");
                while i > *normal_at.borrow_and_update() + AHEAD {
                    within("the normal client", normal_at.changed())
                        .await
                        .expect("the normal client's progress");
                }
            }
            sink.feed(Message::text(stall_write(i, topic).to_string()))
                .await
                .expect("feed a write");
            if i % 128 == 0 {
                sink.flush().await.expect("flush writes");
            }
        }
        sink.flush().await.expect("flush writes");
        sink
    });
    for i in 1..=N {
        let message = loop {
            match within("a write result", results.next()).await {
                Some(Ok(Message::Text(text))) => break text,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("publisher: unexpected {other:?}"),
            }
        };
        let result: Value = serde_json::from_str(&message).unwrap();
        assert_eq!(
            result,
            json!({"type": "result", "id": i, "ok": true, "rev": i, "changed": true})
        );
    }
    let _sink = within("the sender", sender).await.expect("sender task");

    let mut expected = json!({});
    for i in 1..=N {
        let write = stall_write(i, topic);
        match write["type"].as_str() {
            Some("set") => expected = write["state"].clone(),
            _ => merge_apply(&mut expected, &write["patch"]),
        }
    }

    // The normal client got every rev, in order, as patches after the creation snapshot.
    let (mut normal, follower) = within("the normal client", normal_reader)
        .await
        .expect("normal reader task");
    assert_eq!(follower.rev, N);
    assert_eq!(follower.state.as_ref(), Some(&expected));
    assert_eq!(follower.snapshots, 1, "{follower:?}");
    assert_eq!(follower.patches as u64, N - 1, "{follower:?}");
    normal.ping_pong().await;

    let rss_kib = server.rss_kib();
    assert!(
        rss_kib < 200 * 1024,
        "server RSS {rss_kib} KiB after the run with a stalled client"
    );
    // The stalled client's queue overflowed: its pending patches were conflated.
    let conflations = server.metric("statecast_queue_conflations_total").await;
    eprintln!("server RSS {rss_kib} KiB, conflations {conflations}");
    assert!(conflations >= 1.0, "the stalled client was never conflated");

    // Now the stalled client reads: it must end on the final rev and state.
    let (received, follower) = catch_up_stalled(&mut stalled, topic, N, &expected).await;
    assert!(
        (received as u64) < N,
        "the stalled client got every message: {received}"
    );
    eprintln!(
        "stalled client: {received} messages, {} snapshots, {} patches, {} lagged",
        follower.snapshots, follower.patches, follower.lagged
    );
    let read = server.get("/api/state/stall/t").await;
    assert_eq!(
        untimed(read.json()),
        json!({"topic": topic, "rev": N, "state": expected})
    );
}

/// One write at a time keeps the hub quiet, so each change goes straight to the idle
/// sockets from the publisher (a direct write). The stalled client's socket fills up in the
/// middle of a frame: the rest of that frame must still come first and whole, then the
/// queue, and the client must end on the final state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_changes_to_a_stalled_client_stay_whole_frames_in_order() {
    const N: u64 = 800;
    let topic = "direct/t";
    // A small outbox, so it overflows soon after the socket buffers are full.
    let server = Server::start(&["--heartbeat-ms", "60000", "--outbox-bytes", "262144"]);
    let mut stalled = stalled_client(&server, topic).await;
    let mut normal = server.ws().await;
    assert!(
        subscribe(&mut normal, "s", json!({"patterns": [topic]}))
            .await
            .is_empty()
    );
    let mut publisher = server.ws().await;
    let mut normal_follower = Follower::default();
    let mut expected = json!({});
    for i in 1..=N {
        // 8 KiB and an odd length, so a full socket cuts frames anywhere.
        let state = json!({"n": i, "blob": format!("{i:0>17}").repeat(482)});
        let result = publisher
            .call(json!({"type": "set", "id": i, "topic": topic, "state": state}))
            .await;
        assert_eq!(result["rev"], i, "{result}");
        expected = state;
        // Each change reached the reading client before the next write.
        normal_follower.take(&normal.recv_json().await);
        assert_eq!(normal_follower.rev, i);
    }
    assert_eq!(normal_follower.state.as_ref(), Some(&expected));
    assert_eq!(normal_follower.snapshots, 1, "{normal_follower:?}");
    let conflations = server.metric("statecast_queue_conflations_total").await;
    assert!(conflations >= 1.0, "the stalled client was never conflated");

    catch_up_stalled(&mut stalled, topic, N, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_pings_is_closed_and_counted_dead() {
    let server = Server::start(&["--heartbeat-ms", "200"]);
    let mut raw = RawWs::connect(server.addr()).await;
    let (opcode, welcome) = raw.read_frame().await.expect("the welcome frame");
    assert_eq!(opcode, OP_TEXT);
    let welcome: Value = serde_json::from_slice(&welcome).unwrap();
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["heartbeat_ms"], 200);

    // Never answer: read pings until the server ends the connection.
    let mut pings = 0;
    loop {
        match raw.read_frame().await {
            None => break,
            Some((OP_PING, _)) => pings += 1,
            Some((OP_CLOSE, _)) => break,
            Some((opcode, payload)) => panic!("unexpected frame {opcode}: {payload:?}"),
        }
    }
    assert!(pings >= 1, "the server sent no ping before closing");
    let dead = server.metric("statecast_dead_connections_total").await;
    assert!(dead >= 1.0, "statecast_dead_connections_total = {dead}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_answers_pings_stays_connected() {
    let server = Server::start(&["--heartbeat-ms", "100"]);
    let mut ws = server.ws().await;
    // tungstenite answers each ping; six pings span well over 2.5 heartbeats.
    let mut pings = 0;
    while pings < 6 {
        match within("a ping", ws.stream.next()).await {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    ws.ping_pong().await;
    assert_eq!(server.metric("statecast_dead_connections_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_a_merge_patch_cannot_express_arrives_as_a_snapshot() {
    let server = Server::start(&[]);
    let topic = "nulls/t";
    let mut writer = server.ws().await;
    set(&mut writer, 1, topic, json!({"a": 1, "b": 2}), 1).await;
    let mut subscriber = server.ws().await;
    assert_eq!(
        subscribe(&mut subscriber, "s", json!({"patterns": [topic]}))
            .await
            .len(),
        1
    );
    // A member set to null: no merge patch says that.
    set(&mut writer, 2, topic, json!({"a": null, "b": 2}), 2).await;
    assert_eq!(
        subscriber.recv_json().await,
        json!({"type": "snapshot", "topic": topic, "rev": 2, "state": {"a": null, "b": 2}})
    );
    set(
        &mut writer,
        3,
        topic,
        json!({"a": {"deep": null}, "b": 2}),
        3,
    )
    .await;
    assert_eq!(
        subscriber.recv_json().await,
        json!({"type": "snapshot", "topic": topic, "rev": 3, "state": {"a": {"deep": null}, "b": 2}})
    );
    // Back to something a patch expresses.
    set(&mut writer, 4, topic, json!({"a": 5, "b": 2}), 4).await;
    assert_eq!(
        subscriber.recv_json().await,
        json!({"type": "patch", "topic": topic, "rev": 4, "patch": {"a": 5}})
    );
    subscriber.ping_pong().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_the_delivery_of_changes() {
    let server = Server::start(&[]);
    let mut writer = server.ws().await;
    set(&mut writer, 1, "unsub/a", json!({"n": 1}), 1).await;
    let mut subscriber = server.ws().await;
    assert_eq!(
        subscribe(&mut subscriber, "s", json!({"patterns": ["unsub/#"]}))
            .await
            .len(),
        1
    );
    let result = subscriber
        .call(json!({"type": "unsubscribe", "id": "u", "patterns": ["unsub/#"]}))
        .await;
    assert_eq!(result["type"], "result");
    assert_eq!(result["id"], "u");
    assert_eq!(result["ok"], true);
    patch(&mut writer, 2, "unsub/a", json!({"n": 2}), 2).await;
    let event = writer
        .call(json!({"type": "event", "id": 3, "topic": "unsub/a", "data": 1}))
        .await;
    assert_eq!(event["ok"], true);
    subscriber.ping_pong().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replays_a_removal_and_a_re_creation_in_order() {
    let server = Server::start(&[]);
    let topic = "cycle/t";
    let mut writer = server.ws().await;
    set(&mut writer, 1, topic, json!({"n": 1}), 1).await;
    let result = writer
        .call(json!({"type": "delete", "id": 2, "topic": topic}))
        .await;
    assert_eq!(result["rev"], 2);
    set(&mut writer, 3, topic, json!({"n": 3}), 3).await;
    patch(&mut writer, 4, topic, json!({"m": 4}), 4).await;

    let mut client = server.ws().await;
    let replay = subscribe(
        &mut client,
        "s",
        json!({"patterns": [topic], "since": {topic: 1}}),
    )
    .await;
    assert_eq!(
        replay,
        vec![
            json!({"type": "removed", "topic": topic, "rev": 2}),
            json!({"type": "snapshot", "topic": topic, "rev": 3, "state": {"n": 3}}),
            json!({"type": "patch", "topic": topic, "rev": 4, "patch": {"m": 4}}),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_edge_cases_get_the_current_snapshot_or_removed() {
    let server = Server::start(&["--resume-len", "2"]);
    let mut writer = server.ws().await;
    // Removed while the client was away, with the history of it gone.
    set(&mut writer, 1, "edge/gone", json!({"n": 1}), 1).await;
    for n in 2..=4 {
        patch(&mut writer, n, "edge/gone", json!({"n": n}), n).await;
    }
    let result = writer
        .call(json!({"type": "delete", "id": 5, "topic": "edge/gone"}))
        .await;
    assert_eq!(result["rev"], 5);
    set(&mut writer, 6, "edge/live", json!({"v": 1}), 1).await;

    let mut client = server.ws().await;
    let gone = subscribe(
        &mut client,
        "a",
        json!({"patterns": ["edge/gone"], "since": {"edge/gone": 1}}),
    )
    .await;
    assert_eq!(
        gone,
        vec![json!({"type": "removed", "topic": "edge/gone", "rev": 5})]
    );
    // A rev higher than the server's: the current snapshot.
    let ahead = subscribe(
        &mut client,
        "b",
        json!({"patterns": ["edge/live"], "since": {"edge/live": 99}}),
    )
    .await;
    assert_eq!(
        ahead,
        vec![json!({"type": "snapshot", "topic": "edge/live", "rev": 1, "state": {"v": 1}})]
    );
    // A topic the server never held: removed.
    let never = subscribe(
        &mut client,
        "c",
        json!({"patterns": ["edge/never/#"], "since": {"edge/never/x": 3}}),
    )
    .await;
    assert_eq!(never.len(), 1, "{never:?}");
    assert_eq!(never[0]["type"], "removed");
    assert_eq!(never[0]["topic"], "edge/never/x");
    client.ping_pong().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagged_counts_exactly_the_events_a_stalled_client_missed() {
    const N: u64 = 5_000;
    let server = Server::start(&["--heartbeat-ms", "60000"]);
    let mut stalled = Ws::connect_small_buffer(server.addr(), 4096).await;
    assert!(
        subscribe(&mut stalled, "s", json!({"patterns": ["ev/#"]}))
            .await
            .is_empty()
    );

    // 5,000 events of 2 KiB (10 MB): more than a client's outbox and socket buffers.
    let publisher = server.ws().await;
    let (mut sink, mut results) = publisher.stream.split();
    let sender = tokio::spawn(async move {
        for i in 1..=N {
            let data = json!({"i": i, "blob": format!("{i:0>16}").repeat(128)});
            let event = json!({"type": "event", "id": i, "topic": "ev/button", "data": data});
            sink.feed(Message::text(event.to_string()))
                .await
                .expect("feed an event");
            if i % 128 == 0 {
                sink.flush().await.expect("flush");
            }
        }
        // A state change after the events marks the end of the stream.
        let end = json!({"type": "set", "id": "end", "topic": "ev/end", "state": {"done": true}});
        sink.send(Message::text(end.to_string()))
            .await
            .expect("send the end marker");
        sink
    });
    for i in 1..=N {
        let result = loop {
            match within("an event result", results.next()).await {
                Some(Ok(Message::Text(text))) => {
                    break serde_json::from_str::<Value>(&text).unwrap();
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("publisher: unexpected {other:?}"),
            }
        };
        assert_eq!(result, json!({"type": "result", "id": i, "ok": true}));
    }
    let _sink = within("the sender", sender).await.expect("sender task");

    let mut events = Vec::new();
    let mut dropped = 0u64;
    let mut lagged = 0;
    loop {
        let message = stalled.recv_json().await;
        match message["type"].as_str() {
            Some("event") => events.push(message["data"]["i"].as_u64().expect("i")),
            Some("lagged") => {
                lagged += 1;
                dropped += message["dropped_events"].as_u64().expect("dropped_events");
            }
            Some("snapshot") => {
                assert_eq!(message["topic"], "ev/end", "{message}");
                break;
            }
            _ => panic!("unexpected {message}"),
        }
    }
    // A `lagged` may still follow the last message of the episode.
    stalled
        .send_json(&json!({"type": "ping", "id": "end"}))
        .await;
    for message in stalled.recv_until(|m| m["type"] == "pong").await {
        if message["type"] == "lagged" {
            lagged += 1;
            dropped += message["dropped_events"].as_u64().unwrap();
        } else {
            assert_eq!(message["type"], "pong", "{message}");
        }
    }
    eprintln!(
        "stalled: {} events, {dropped} dropped, {lagged} lagged notices",
        events.len()
    );
    assert!(
        events.windows(2).all(|w| w[0] < w[1]),
        "events out of order"
    );
    assert!(
        dropped > 0,
        "no event was dropped: the test did not stall the client"
    );
    assert_eq!(lagged, 1, "one stall is one episode of lag, told once");
    assert_eq!(
        events.len() as u64 + dropped,
        N,
        "received + dropped != sent"
    );
    let server_dropped = server.metric("statecast_queue_dropped_events_total").await;
    assert_eq!(server_dropped as u64, dropped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_make_one_gapless_sequence_of_revs() {
    const WRITERS: u64 = 4;
    const EACH: u64 = 300;
    const TOTAL: u64 = WRITERS * EACH;
    let topic = "conc/t";
    let server = Server::start(&[]);
    let mut subscriber = server.ws().await;
    assert!(
        subscribe(&mut subscriber, "s", json!({"patterns": [topic]}))
            .await
            .is_empty()
    );
    let reader = tokio::spawn(async move {
        let mut follower = Follower::default();
        while follower.rev < TOTAL {
            follower.take(&subscriber.recv_json().await);
        }
        follower
    });

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut ws = server.ws().await;
        writers.push(tokio::spawn(async move {
            for i in 1..=EACH {
                let member = format!("w{w}");
                ws.send_json(
                    &json!({"type": "patch", "id": i, "topic": topic, "patch": {member: i}}),
                )
                .await;
            }
            let mut revs = Vec::new();
            for i in 1..=EACH {
                let result = ws.recv_json().await;
                assert_eq!(result["id"], i, "{result}");
                assert_eq!(result["ok"], true, "{result}");
                assert_eq!(result["changed"], true, "{result}");
                revs.push(result["rev"].as_u64().unwrap());
            }
            revs
        }));
    }
    let mut all = Vec::new();
    for writer in writers {
        let revs = within("a writer", writer).await.expect("writer task");
        assert!(
            revs.windows(2).all(|w| w[0] < w[1]),
            "one writer's revs go back"
        );
        all.extend(revs);
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=TOTAL).collect::<Vec<_>>(),
        "revs are not 1..={TOTAL}"
    );

    let follower = within("the subscriber", reader).await.expect("reader task");
    let expected: serde_json::Map<String, Value> = (0..WRITERS)
        .map(|w| (format!("w{w}"), json!(EACH)))
        .collect();
    assert_eq!(follower.state, Some(Value::Object(expected.clone())));
    assert_eq!(
        untimed(server.get("/api/state/conc/t").await.json()),
        json!({"topic": topic, "rev": TOTAL, "state": expected})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_during_a_stream_of_writes_gives_each_client_a_consistent_sequence() {
    const N: u64 = 3_000;
    const SUBSCRIBERS: u64 = 5;
    let topic = "storm/t";
    let server = Server::start(&[]);
    let mut writer = server.ws().await;
    set(&mut writer, 0, topic, json!({"n": 1}), 1).await;

    // The writer pipelines patches n = 2..=N (rev = n) and reports its progress.
    let (progress, mut acknowledged) = tokio::sync::watch::channel(1u64);
    let (mut sink, mut results) = writer.stream.split();
    let sender = tokio::spawn(async move {
        for n in 2..=N {
            let write = json!({"type": "patch", "id": n, "topic": topic, "patch": {"n": n}});
            sink.feed(Message::text(write.to_string()))
                .await
                .expect("feed");
            if n % 32 == 0 {
                sink.flush().await.expect("flush");
            }
        }
        sink.flush().await.expect("flush");
        sink
    });
    let acks = tokio::spawn(async move {
        for n in 2..=N {
            let text = loop {
                match within("a write result", results.next()).await {
                    Some(Ok(Message::Text(text))) => break text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("writer: unexpected {other:?}"),
                }
            };
            let result: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(result["rev"], n, "{result}");
            let _ = progress.send(n);
        }
    });

    // Subscribers join at different points of the stream and follow it to the end.
    let mut followers = Vec::new();
    for k in 0..SUBSCRIBERS {
        let at = 1 + k * N / (SUBSCRIBERS + 1);
        within("the writer's progress", acknowledged.wait_for(|&n| n >= at))
            .await
            .expect("writer progress");
        let mut ws = server.ws().await;
        let initial = subscribe(&mut ws, "s", json!({"patterns": ["storm/#"]})).await;
        followers.push(tokio::spawn(async move {
            let mut follower = Follower::default();
            for message in &initial {
                follower.take(message);
            }
            assert_eq!(
                follower.snapshots, 1,
                "one snapshot before the result: {initial:?}"
            );
            while follower.rev < N {
                follower.take(&ws.recv_json().await);
            }
            assert_eq!(follower.snapshots, 1, "{follower:?}");
            follower
        }));
    }
    within("the acks", acks).await.expect("acks task");
    let _sink = within("the sender", sender).await.expect("sender task");
    for follower in followers {
        let follower = within("a follower", follower).await.expect("follower task");
        assert_eq!(follower.state, Some(json!({"n": N})));
    }
}

/// A WebSocket ping is answered with a pong carrying its payload (RFC 6455 5.5.2), through
/// the connection's queue like everything else it writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_ping_is_answered_with_its_payload() {
    let server = Server::start(&[]);
    let mut ws = server.ws().await;
    ws.stream
        .send(Message::Ping(b"are you there"[..].into()))
        .await
        .expect("send a ping");
    loop {
        match within("the pong", ws.stream.next()).await {
            Some(Ok(Message::Pong(payload))) => {
                assert_eq!(&payload[..], b"are you there");
                break;
            }
            Some(Ok(Message::Text(_))) => continue,
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    ws.ping_pong().await;
}

/// A client that writes a topic it subscribes to gets its own change before the write's
/// `result`, also when the hub, quiet, writes changes to idle sockets itself and answers
/// the writer before it has written to every subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_subscribes_gets_its_own_change_before_the_result() {
    let topic = "own/t";
    let server = Server::start(&[]);
    let mut others = Vec::new();
    for _ in 0..50 {
        let mut other = server.ws().await;
        subscribe(&mut other, "s", json!({"patterns": [topic]})).await;
        others.push(other);
    }
    let mut writer = server.ws().await;
    subscribe(&mut writer, "s", json!({"patterns": [topic]})).await;
    for i in 1..=100u64 {
        let seen = writer
            .request(json!({"type": "set", "id": i, "topic": topic, "state": {"n": i}}))
            .await;
        let (result, before) = seen.split_last().expect("a result");
        assert_eq!(result["rev"], i, "{result}");
        assert_eq!(before.len(), 1, "write {i}: {seen:?}");
        assert_eq!(before[0]["rev"], i, "write {i}: {seen:?}");
    }
    for mut other in others {
        let mut follower = Follower::default();
        while follower.rev < 100 {
            follower.take(&other.recv_json().await);
        }
        assert_eq!(follower.state, Some(json!({"n": 100})));
    }
}
