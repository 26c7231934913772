//! Numbers reach every reader with the digits the device wrote: digits beyond an `f64`,
//! exponents an `f64` cannot hold, trailing zeros, over REST, WebSocket and SSE, in the
//! state, in snapshots and in patches, and across a restart. (An exponent comes back spelled
//! `e+N` or `e-N`: `1E2` as `1e+2`.)
//!
//! The checks read the raw text of each answer: parsing it into a `serde_json::Value` could
//! itself round the number this file is about.

mod common;

use common::*;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// A state no `f64` holds: 39 digits, an exponent out of range both ways, a trailing zero, a
/// zero-padded exponent. Keys are in the order the hub writes them (sorted).
const STATE: &str = r#"{"big":123456789012345678901234567890123456789,"exp":1e+02,"f":1.10,"huge":1e+400,"tiny":1e-400}"#;

/// `STATE` after patching `big` with [`BIGGER`].
const PATCHED: &str = r#"{"big":123456789012345678901234567890123456790,"exp":1e+02,"f":1.10,"huge":1e+400,"tiny":1e-400}"#;
const BIGGER: &str = "123456789012345678901234567890123456790";

/// `PUT /api/state/{topic}` with `body` sent as it is.
async fn put_raw(server: &Server, topic: &str, body: &str) -> Resp {
    let request = http_client()
        .put(server.url(&format!("/api/state/{topic}")))
        .header("content-type", "application/json")
        .body(body.to_owned());
    server.send(request).await
}

/// The next text frame, as sent.
async fn recv_text(ws: &mut Ws) -> String {
    match ws.recv().await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Reads text frames up to the `result` with `id`; returns the frames before it and the
/// result, as sent.
async fn until_result(ws: &mut Ws, id: u64) -> (Vec<String>, String) {
    let mut before = Vec::new();
    loop {
        let text = recv_text(ws).await;
        let message: Value = serde_json::from_str(&text).expect("JSON");
        if message["type"] == "result" && message["id"] == id {
            return (before, text);
        }
        before.push(text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_come_back_exactly_as_written_in_state_snapshots_and_patches() {
    let mut server = Server::start(&[]);
    let mut ws = server.ws().await;
    ws.send_text(r#"{"id":1,"type":"subscribe","patterns":["num/#"]}"#)
        .await;
    until_result(&mut ws, 1).await;
    let mut sse = Sse::open(&server, &["num/#"], None).await;

    // Written over REST: acknowledged, and what every reader gets is the text as sent.
    let put = put_raw(&server, "num/a", STATE).await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert!(put.text.contains(r#""changed":true"#), "{}", put.text);
    let state = format!(r#""state":{STATE}"#);
    let get = server.get("/api/state/num/a").await;
    assert!(get.text.contains(&state), "GET: {}", get.text);
    let pushed = recv_text(&mut ws).await;
    assert!(pushed.contains(&state), "WebSocket: {pushed}");
    let streamed = sse.next().await;
    assert!(streamed.data.contains(&state), "SSE: {streamed:?}");

    // The same text again is no change.
    let again = put_raw(&server, "num/a", STATE).await;
    assert!(again.text.contains(r#""changed":false"#), "{}", again.text);

    // Written over WebSocket: the patch holds the one number that changed, as written.
    ws.send_text(format!(
        r#"{{"id":2,"type":"patch","topic":"num/a","patch":{{"big":{BIGGER}}}}}"#
    ))
    .await;
    let (pushed, result) = until_result(&mut ws, 2).await;
    assert!(result.contains(r#""changed":true"#), "{result}");
    let patch = format!(r#""patch":{{"big":{BIGGER}}}"#);
    assert!(
        pushed.len() == 1 && pushed[0].contains(&patch),
        "WebSocket: {pushed:?}"
    );
    let streamed = sse.next().await;
    assert!(streamed.data.contains(&patch), "SSE: {streamed:?}");

    // Snapshots, after a restart too (the store keeps the text).
    let state = format!(r#""state":{PATCHED}"#);
    ws.send_text(r#"{"id":3,"type":"get","patterns":["num/a"]}"#)
        .await;
    let (snapshots, _) = until_result(&mut ws, 3).await;
    assert!(
        snapshots.len() == 1 && snapshots[0].contains(&state),
        "WebSocket: {snapshots:?}"
    );
    drop((ws, sse));
    server.restart();
    let get = server.get("/api/state/num/a").await;
    assert!(
        get.text.contains(&state),
        "GET after a restart: {}",
        get.text
    );
    let mut sse = Sse::open(&server, &["num/#"], None).await;
    let snapshot = sse.next().await;
    assert!(snapshot.data.contains(&state), "SSE: {snapshot:?}");
}

/// The hub compares numbers as written (see `merge.rs`): `1.1` after `1.10` is a change, and
/// the patch says so with the new text, so every reader holds what the device last wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_written_differently_is_a_change_with_the_new_text() {
    let server = Server::start(&[]);
    let put = put_raw(&server, "num/b", r#"{"f":1.10,"n":100}"#).await;
    assert_eq!(put.status, 200, "{}", put.text);
    let mut sse = Sse::open(&server, &["num/b"], None).await;
    sse.next().await;
    let put = put_raw(&server, "num/b", r#"{"f":1.1,"n":100}"#).await;
    assert!(put.text.contains(r#""changed":true"#), "{}", put.text);
    let streamed = sse.next().await;
    assert!(
        streamed.data.contains(r#""patch":{"f":1.1}"#),
        "{streamed:?}"
    );
    let get = server.get("/api/state/num/b").await;
    assert!(
        get.text.contains(r#""state":{"f":1.1,"n":100}"#),
        "{}",
        get.text
    );
}
