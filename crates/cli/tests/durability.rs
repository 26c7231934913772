//! Durability of the real binary: every acknowledged write survives `kill -9`, and SIGTERM
//! shuts down cleanly (close 1001, exit 0) without losing anything.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::{Value, json};

/// Topic → (rev, state) as the test last had a write acknowledged.
type Expected = BTreeMap<String, (u64, Option<Value>)>;

async fn assert_state(server: &Server, expected: &Expected) {
    for (topic, (rev, state)) in expected {
        let read = server.get(&format!("/api/state/{topic}")).await;
        match state {
            Some(state) => {
                assert_eq!(read.status, 200, "{topic}: {}", read.text);
                assert_eq!(
                    untimed(read.json()),
                    json!({"topic": topic, "rev": rev, "state": state}),
                    "{topic}"
                );
            }
            None => {
                assert_eq!(read.status, 404, "{topic} should be removed: {}", read.text);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_kill_9() {
    let mut server = Server::start(&[]);
    let mut expected = Expected::new();

    // 200 acknowledged changes over REST across 10 topics, then one removal.
    for i in 0..200u64 {
        let k = i % 10;
        let topic = format!("dur/t{k}");
        let path = format!("/api/state/{topic}");
        let entry = expected.entry(topic.clone()).or_insert((0, None));
        let response = if (i / 10) % 2 == 0 {
            let state = json!({"i": i, "k": k, "history": [i, k]});
            let r = server.put(&path, &state).await;
            entry.1 = Some(state);
            r
        } else {
            let patch = json!({"i": i, "p": {"at": i}, "history": null});
            let r = server.patch(&path, &patch).await;
            merge_apply(entry.1.as_mut().expect("created by a PUT"), &patch);
            r
        };
        assert_eq!(response.status, 200, "write {i}: {}", response.text);
        entry.0 += 1;
        assert_eq!(
            response.json(),
            json!({"topic": topic, "rev": entry.0, "changed": true}),
            "write {i}"
        );
    }
    let removed = server.delete("/api/state/dur/t9").await;
    assert_eq!(removed.status, 200);
    let entry = expected.get_mut("dur/t9").unwrap();
    entry.0 += 1;
    entry.1 = None;
    assert_eq!(removed.json(), json!({"topic": "dur/t9", "rev": entry.0}));
    assert_state(&server, &expected).await;

    server.kill9();
    server.restart();

    // Everything acknowledged is there, with its rev.
    assert_state(&server, &expected).await;
    let all = server.all_state().await;
    assert_eq!(all["topics"].as_array().unwrap().len(), 9, "{all}");
    let health = server.get("/api/health").await.json();
    assert_eq!(health["topics"], 9);

    // A client that holds the latest rev gets nothing when it resumes.
    let (t1_rev, _) = expected["dur/t1"].clone();
    let mut ws = server.ws().await;
    let result = ws
        .call(json!({"type": "subscribe", "id": 1, "patterns": ["dur/t1"], "since": {"dur/t1": t1_rev}}))
        .await;
    assert_eq!(result["ok"], true);

    // New writes continue at rev + 1, also for the removed topic.
    let (t0_rev, _) = expected["dur/t0"].clone();
    let write = server
        .patch("/api/state/dur/t0", &json!({"after": true}))
        .await;
    assert_eq!(
        write.json(),
        json!({"topic": "dur/t0", "rev": t0_rev + 1, "changed": true})
    );
    let (t9_rev, _) = expected["dur/t9"].clone();
    let write = server.put("/api/state/dur/t9", &json!({"back": 1})).await;
    assert_eq!(
        write.json(),
        json!({"topic": "dur/t9", "rev": t9_rev + 1, "changed": true})
    );
    let write = server
        .patch("/api/state/dur/t1", &json!({"after": 1}))
        .await;
    assert_eq!(write.json()["rev"], t1_rev + 1);
    assert_eq!(
        ws.recv_json().await,
        json!({"type": "patch", "topic": "dur/t1", "rev": t1_rev + 1, "patch": {"after": 1}})
    );

    // Resuming from the rev before the restart: the one patch written since.
    let mut resumed = server.ws().await;
    let seen = resumed
        .request(json!({"type": "subscribe", "id": 2, "patterns": ["dur/t0"], "since": {"dur/t0": t0_rev}}))
        .await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[0],
        json!({"type": "patch", "topic": "dur/t0", "rev": t0_rev + 1, "patch": {"after": true}})
    );
    assert_eq!(seen[1]["type"], "result");
    assert_eq!(seen[1]["ok"], true);

    // From further back than the history kept across the restart: a snapshot.
    let (t2_rev, t2_state) = expected["dur/t2"].clone();
    let seen = resumed
        .request(json!({"type": "subscribe", "id": 3, "patterns": ["dur/t2"], "since": {"dur/t2": t2_rev - 1}}))
        .await;
    assert_eq!(
        seen[0],
        json!({"type": "snapshot", "topic": "dur/t2", "rev": t2_rev, "state": t2_state.unwrap()})
    );
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_websockets_with_1001_ends_streams_exits_0_and_keeps_the_state() {
    let mut server = Server::start(&[]);
    let mut expected = Expected::new();
    let put = server.put("/api/state/term/a", &json!({"a": 1})).await;
    assert_eq!(put.status, 200);
    expected.insert("term/a".into(), (1, Some(json!({"a": 1}))));

    let mut ws = server.ws().await;
    let result = ws
        .call(json!({"type": "set", "id": 1, "topic": "term/b", "state": {"b": [1, 2]}}))
        .await;
    assert_eq!(result["rev"], 1);
    let result = ws
        .call(json!({"type": "patch", "id": 2, "topic": "term/b", "patch": {"c": true}}))
        .await;
    assert_eq!(result["rev"], 2);
    expected.insert("term/b".into(), (2, Some(json!({"b": [1, 2], "c": true}))));
    let seen = ws
        .request(json!({"type": "subscribe", "id": 3, "patterns": ["term/#"]}))
        .await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    let mut sse = Sse::open(&server, &["term/#"], None).await;
    sse.next().await;
    sse.next().await;

    server.sigterm();
    let close = ws.recv_close().await;
    assert_eq!(close_code(&close), 1001, "{close:?}");
    // Let tungstenite complete the close handshake.
    while let Some(Ok(_)) = within(
        "the end of the WebSocket",
        futures_util::StreamExt::next(&mut ws.stream),
    )
    .await
    {}
    let rest = sse.until_end().await;
    assert!(rest.is_ok(), "the SSE stream broke off: {rest:?}");

    let status = server.wait_exit().await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status:?}; log:\n{}",
        server.log_text()
    );

    server.restart();
    assert_state(&server, &expected).await;
    let write = server
        .patch("/api/state/term/b", &json!({"c": false}))
        .await;
    assert_eq!(write.json()["rev"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_during_pipelined_writes_loses_nothing_acknowledged() {
    const N: u64 = 5_000;
    let mut server = Server::start(&[]);
    let publisher = server.ws().await;
    let (sink, mut results) = futures_util::StreamExt::split(publisher.stream);
    // Write i leaves the state {"n": i} at rev i.
    let sender = tokio::spawn(pipeline_patches(sink, "crash/t", N));

    let mut acknowledged = 0u64;
    let mut killed = false;
    loop {
        let next = within(
            "a result or the end",
            futures_util::StreamExt::next(&mut results),
        )
        .await;
        let text = match next {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            // The connection died with the server.
            Some(Err(_)) | None => break,
        };
        let result: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(result["ok"], true, "{result}");
        assert_eq!(result["id"], acknowledged + 1, "results in order");
        assert_eq!(result["rev"], acknowledged + 1);
        acknowledged += 1;
        if acknowledged == 1_000 {
            server.kill9();
            killed = true;
        }
        assert!(
            acknowledged < N,
            "every write was acknowledged before the kill"
        );
    }
    assert!(killed);
    let _ = within("the sender", sender).await;

    server.restart();
    let read = server.get("/api/state/crash/t").await;
    eprintln!("acknowledged {acknowledged}, after restart {}", read.text);
    assert_eq!(read.status, 200, "{}", read.text);
    let body = read.json();
    let rev = body["rev"].as_u64().unwrap();
    assert!(
        rev >= acknowledged,
        "rev {rev} after restart, but rev {acknowledged} was acknowledged"
    );
    // The stored state is the one of its rev: nothing torn.
    assert_eq!(body["state"], json!({"n": rev}));
    let write = server
        .patch("/api/state/crash/t", &json!({"after": true}))
        .await;
    assert_eq!(write.json()["rev"], rev + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_stalled_client_still_exits_0() {
    let mut server = Server::start(&[]);
    let mut stalled = Ws::connect_small_buffer(server.addr(), 4096).await;
    let result = stalled
        .call(json!({"type": "subscribe", "id": 1, "patterns": ["big/#"]}))
        .await;
    assert_eq!(result["ok"], true);
    // 12 MB of changes the stalled client never reads.
    let mut last = json!(null);
    for i in 0..120u64 {
        let state = json!({"i": i, "blob": format!("{i:0>16}").repeat(6_000)});
        let put = server.put("/api/state/big/t", &state).await;
        assert_eq!(put.status, 200, "{}", put.text);
        last = state;
    }
    let started = std::time::Instant::now();
    server.sigterm();
    let status = server.wait_exit().await;
    eprintln!("exited {:?} after SIGTERM", started.elapsed());
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?}; log:\n{}",
        server.log_text()
    );
    drop(stalled);

    server.restart();
    assert_eq!(
        untimed(server.get("/api/state/big/t").await.json()),
        json!({"topic": "big/t", "rev": 120, "state": last})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_cursor_still_resumes_after_a_restart() {
    let mut server = Server::start(&[]);
    server.put("/api/state/r/a", &json!({"a": 1})).await;
    server.put("/api/state/r/b", &json!({"b": 1})).await;
    server.put("/api/state/r/c", &json!({"c": 1})).await;
    let mut sse = Sse::open(&server, &["r/#"], None).await;
    for _ in 0..3 {
        assert_eq!(sse.next().await.event, "snapshot");
    }
    let last_id = sse.last_id.clone().expect("an id");
    drop(sse);

    // Changed before the crash (its history is not kept across it)...
    server.patch("/api/state/r/a", &json!({"a": 2})).await;
    server.kill9();
    server.restart();
    // ...and after the restart (in the new history).
    server.patch("/api/state/r/b", &json!({"b": 2})).await;

    let mut sse = Sse::open(&server, &["r/#"], Some(&last_id)).await;
    let mut a = Follower {
        rev: 1,
        state: Some(json!({"a": 1})),
        ..Follower::default()
    };
    let mut b_messages = Vec::new();
    while a.rev < 2 || b_messages.is_empty() {
        let message = sse.next().await.json();
        match message["topic"].as_str() {
            Some("r/a") => a.take(&message),
            Some("r/b") => b_messages.push(message),
            _ => panic!("unexpected after resuming: {message}"),
        }
    }
    assert_eq!(a.state, Some(json!({"a": 2})));
    assert_eq!(
        b_messages,
        vec![json!({"type": "patch", "topic": "r/b", "rev": 2, "patch": {"b": 2}})]
    );
    // Nothing else (r/c did not change): the next event is the next change.
    server.patch("/api/state/r/c", &json!({"c": 2})).await;
    assert_eq!(
        sse.next().await.json(),
        json!({"type": "patch", "topic": "r/c", "rev": 2, "patch": {"c": 2}})
    );
}

/// How a WebSocket publisher's connection ended when the server got SIGTERM while it was
/// pipelining writes.
struct SigtermDuringWrites {
    /// Writes whose `result` arrived.
    acknowledged: u64,
    /// The close frame's code, or the read error that ended the connection instead.
    end: Result<Option<u16>, String>,
}

/// Pipelines up to 5,000 patches of `term/t` (write i leaves `{"n": i}` at rev i), sends
/// SIGTERM once 1,000 are acknowledged, reads until the connection ends and waits for the
/// process to exit 0.
async fn sigterm_during_pipelined_writes(server: &mut Server) -> SigtermDuringWrites {
    const N: u64 = 5_000;
    let publisher = server.ws().await;
    let (sink, mut results) = futures_util::StreamExt::split(publisher.stream);
    let sender = tokio::spawn(pipeline_patches(sink, "term/t", N));

    let mut acknowledged = 0u64;
    let end = loop {
        let next = within(
            "a result or the close",
            futures_util::StreamExt::next(&mut results),
        )
        .await;
        match next {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                let result: Value = serde_json::from_str(&text).unwrap();
                if result["ok"] == false {
                    // A write refused while shutting down must say so.
                    assert_eq!(result["error"]["code"], "unavailable", "{result}");
                    continue;
                }
                assert_eq!(result["rev"], acknowledged + 1, "{result}");
                acknowledged += 1;
                if acknowledged == 1_000 {
                    server.sigterm();
                }
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                break Ok(frame.map(|f| u16::from(f.code)));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => break Err(e.to_string()),
            None => break Err("the stream ended without a close frame".into()),
        }
    };
    assert!(acknowledged >= 1_000, "acknowledged {acknowledged}");
    let _ = within("the sender", sender).await;
    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    SigtermDuringWrites { acknowledged, end }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_during_pipelined_writes_exits_0_and_keeps_every_acknowledged_write() {
    let mut server = Server::start(&[]);
    let outcome = sigterm_during_pipelined_writes(&mut server).await;
    let acknowledged = outcome.acknowledged;
    server.restart();
    let body = server.get("/api/state/term/t").await.json();
    let rev = body["rev"].as_u64().unwrap();
    assert!(
        rev >= acknowledged,
        "rev {rev} after restart, {acknowledged} acknowledged"
    );
    assert_eq!(body["state"], json!({"n": rev}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_during_pipelined_writes_still_closes_the_writer_with_1001() {
    let mut server = Server::start(&[]);
    let outcome = sigterm_during_pipelined_writes(&mut server).await;
    assert_eq!(outcome.end, Ok(Some(1001)));
}

/// Sends patches 1..=n of `topic` (patch i sets `{"n": i}`, id i) without waiting for
/// results, flushing every 64; stops quietly when the connection goes.
async fn pipeline_patches<S>(mut sink: S, topic: &'static str, n: u64)
where
    S: futures_util::Sink<tokio_tungstenite::tungstenite::Message> + Unpin,
{
    use futures_util::SinkExt;
    for i in 1..=n {
        let write = json!({"type": "patch", "id": i, "topic": topic, "patch": {"n": i}});
        let message = tokio_tungstenite::tungstenite::Message::text(write.to_string());
        if sink.feed(message).await.is_err() {
            return;
        }
        if i % 64 == 0 && sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.flush().await;
}
