//! Bad input to the real binary, over WebSocket and REST: each refusal carries the
//! contract's error code, the connection stays usable (a `ping` still gets its `pong`) and a
//! refused write changes nothing. Only the contract's closes end a connection: 1009 for a
//! message over `max_frame_bytes`, 1007 for invalid UTF-8.

mod common;

use common::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const MAX_STATE_BYTES: &str = "1000";
const MAX_FRAME_BYTES: &str = "10000";

/// A server with small limits holding one topic, `bad/t` = `{"v":1}` at rev 1, and a
/// WebSocket client.
async fn setup() -> (Server, Ws) {
    let server = Server::start(&[
        "--max-state-bytes",
        MAX_STATE_BYTES,
        "--max-frame-bytes",
        MAX_FRAME_BYTES,
    ]);
    let put = server.put("/api/state/bad/t", &json!({"v": 1})).await;
    assert_eq!(put.status, 200, "{}", put.text);
    let ws = server.ws().await;
    (server, ws)
}

/// The whole published state is still the seeded one.
async fn assert_unchanged(server: &Server) {
    assert_eq!(
        server.all_state().await,
        json!({"topics": [{"topic": "bad/t", "rev": 1, "state": {"v": 1}}]})
    );
}

/// The next message is an `error` (no `id`) with `code` and a message.
async fn expect_error(ws: &mut Ws, code: &str, sent: &str) {
    let message = ws.recv_json().await;
    assert_eq!(message["type"], "error", "after {sent}: {message}");
    assert_eq!(message["error"]["code"], code, "after {sent}: {message}");
    assert!(message["error"]["message"].is_string(), "{message}");
    assert!(message.get("id").is_none(), "{message}");
}

/// Sends `request` (with an `id`) and expects only its `result` with `ok:false` and `code`.
async fn expect_refused(ws: &mut Ws, request: Value, code: &str) {
    let id = request["id"].clone();
    let sent = request.to_string();
    let result = ws.call(request).await;
    assert_eq!(result["type"], "result", "after {sent}: {result}");
    assert_eq!(result["id"], id, "after {sent}: {result}");
    assert_eq!(result["ok"], false, "after {sent}: {result}");
    assert_eq!(result["error"]["code"], code, "after {sent}: {result}");
    assert!(result["error"]["message"].is_string(), "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_text_is_answered_with_error_bad_request() {
    let (server, mut ws) = setup().await;
    for text in ["nope", "{\"type\":\"set\",", "", "{'type':'ping'}"] {
        ws.send_text(text).await;
        expect_error(&mut ws, "bad_request", text).await;
        ws.ping_pong().await;
    }
    assert_unchanged(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_that_is_not_an_object_is_answered_with_error_bad_request() {
    let (server, mut ws) = setup().await;
    for text in [r#"[{"type":"ping"}]"#, "42", r#""ping""#, "null", "true"] {
        ws.send_text(text).await;
        expect_error(&mut ws, "bad_request", text).await;
        ws.ping_pong().await;
    }
    assert_unchanged(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_frame_is_answered_with_error_bad_request() {
    let (server, mut ws) = setup().await;
    let frame = json!({"type": "set", "id": 1, "topic": "bad/t", "state": {"v": 2}}).to_string();
    within(
        "a send",
        ws.stream.send(Message::binary(frame.into_bytes())),
    )
    .await
    .expect("send a binary frame");
    expect_error(&mut ws, "bad_request", "a binary frame").await;
    ws.ping_pong().await;
    assert_unchanged(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_type_is_refused_with_unknown_type() {
    let (server, mut ws) = setup().await;
    expect_refused(&mut ws, json!({"type": "fly", "id": 5}), "unknown_type").await;
    expect_refused(
        &mut ws,
        json!({"type": "request_state", "id": "x", "topic": "bad/t"}),
        "unknown_type",
    )
    .await;
    ws.ping_pong().await;
    ws.send_json(&json!({"type": "fly"})).await;
    expect_error(&mut ws, "unknown_type", "fly without id").await;
    ws.ping_pong().await;
    assert_unchanged(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_mistyped_fields_are_refused_with_bad_request() {
    let (server, mut ws) = setup().await;
    for request in [
        json!({"id": 1}),
        json!({"id": 2, "type": 7}),
        json!({"id": 3, "type": "set", "topic": "bad/t"}),
        json!({"id": 4, "type": "set", "state": {"v": 2}}),
        json!({"id": 5, "type": "set", "topic": 5, "state": {"v": 2}}),
        json!({"id": 6, "type": "patch", "topic": "bad/t"}),
        json!({"id": 7, "type": "delete"}),
        json!({"id": 8, "type": "event", "data": 1}),
        json!({"id": 9, "type": "subscribe"}),
        json!({"id": 10, "type": "subscribe", "patterns": "bad/#"}),
        json!({"id": 11, "type": "subscribe", "patterns": [1]}),
        json!({"id": 12, "type": "subscribe", "patterns": ["bad/#"], "mode": "delta"}),
        json!({"id": 13, "type": "subscribe", "patterns": ["bad/#"], "since": {"bad/t": -1}}),
        json!({"id": 14, "type": "subscribe", "patterns": ["bad/#"], "since": [1]}),
        json!({"id": 15, "type": "get"}),
        json!({"id": 16, "type": "unsubscribe"}),
        json!({"id": 17, "type": "command", "target": "bad/t"}),
    ] {
        expect_refused(&mut ws, request, "bad_request").await;
    }
    ws.ping_pong().await;
    // Without an id: `error`.
    for text in [
        r#"{"type":"set","topic":"bad/t"}"#,
        r#"{"type":"delete"}"#,
        r#"{"state":{"v":2}}"#,
        r#"{"type":"ping","id":[1]}"#,
        r#"{"type":"ping","id":{"a":1}}"#,
    ] {
        ws.send_text(text).await;
        expect_error(&mut ws, "bad_request", text).await;
    }
    ws.ping_pong().await;
    assert_unchanged(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_topics_are_refused_with_invalid_topic() {
    let (server, mut ws) = setup().await;
    let too_long = vec!["a".repeat(100); 6].join("/"); // 605 bytes, segments of 100
    assert!(too_long.len() > 512);
    let too_deep = vec!["a"; 17].join("/");
    let long_segment = format!("bad/{}", "s".repeat(129));
    let mut id = 0;
    for topic in [
        "a//b",
        "a/+",
        "a/#",
        "#",
        "",
        "/a",
        "a/",
        "a b",
        "bad/t?",
        "caf\u{e9}",
        too_long.as_str(),
        too_deep.as_str(),
        long_segment.as_str(),
    ] {
        for request in [
            json!({"type": "set", "topic": topic, "state": {"v": 2}}),
            json!({"type": "patch", "topic": topic, "patch": {"v": 2}}),
            json!({"type": "delete", "topic": topic}),
            json!({"type": "event", "topic": topic, "data": 1}),
        ] {
            id += 1;
            let mut request = request;
            request["id"] = json!(id);
            expect_refused(&mut ws, request, "invalid_topic").await;
        }
    }
    expect_refused(
        &mut ws,
        json!({"type": "command", "id": "c", "target": "a//b", "name": "x", "args": {}}),
        "invalid_topic",
    )
    .await;
    ws.send_json(&json!({"type": "set", "topic": "a/+", "state": 1}))
        .await;
    expect_error(&mut ws, "invalid_topic", "set a/+ without id").await;
    ws.ping_pong().await;
    assert_unchanged(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_at_the_limits_are_accepted() {
    let (server, mut ws) = setup().await;
    let deepest = vec!["d"; 16].join("/");
    // 4 segments of 127 bytes and separators: 511 bytes; with one more byte 512.
    let mut longest = vec!["l".repeat(127); 4].join("/");
    longest.push('l');
    assert_eq!(longest.len(), 512);
    let widest = format!("w/{}", "s".repeat(128));
    let chars = "A-z_0.9:@~/x";
    for (id, topic) in [deepest.as_str(), longest.as_str(), widest.as_str(), chars]
        .iter()
        .enumerate()
    {
        let result = ws
            .call(json!({"type": "set", "id": id, "topic": topic, "state": {"ok": true}}))
            .await;
        assert_eq!(result["ok"], true, "{topic}: {result}");
        let read = server.get(&format!("/api/state/{topic}")).await;
        assert_eq!(read.status, 200, "{topic}: {}", read.text);
        assert_eq!(read.json()["topic"], *topic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_patterns_are_refused_with_invalid_pattern() {
    let (server, mut ws) = setup().await;
    let mut id = 0;
    for pattern in ["a/#/b", "#/a", "a//b", "", "a/b+", "a/#b"] {
        for kind in ["subscribe", "get", "unsubscribe"] {
            id += 1;
            expect_refused(
                &mut ws,
                json!({"type": kind, "id": id, "patterns": [pattern]}),
                "invalid_pattern",
            )
            .await;
        }
    }
    // One bad pattern refuses the whole subscribe: no snapshot of `bad/t` before the result.
    expect_refused(
        &mut ws,
        json!({"type": "subscribe", "id": "mixed", "patterns": ["bad/#", "a/#/b"]}),
        "invalid_pattern",
    )
    .await;
    ws.send_json(&json!({"type": "get", "patterns": ["a/#/b"]}))
        .await;
    expect_error(&mut ws, "invalid_pattern", "get a/#/b without id").await;
    ws.ping_pong().await;
    assert_unchanged(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_over_max_state_bytes_is_refused_with_too_large() {
    let (server, mut ws) = setup().await;
    let big = "x".repeat(2000);
    expect_refused(
        &mut ws,
        json!({"type": "set", "id": 1, "topic": "bad/t", "state": {"s": big}}),
        "too_large",
    )
    .await;
    expect_refused(
        &mut ws,
        json!({"type": "patch", "id": 2, "topic": "bad/t", "patch": {"s": big}}),
        "too_large",
    )
    .await;
    expect_refused(
        &mut ws,
        json!({"type": "set", "id": 3, "topic": "bad/new", "state": {"s": big}}),
        "too_large",
    )
    .await;
    expect_refused(
        &mut ws,
        json!({"type": "event", "id": 4, "topic": "bad/t", "data": {"s": big}}),
        "too_large",
    )
    .await;
    // Patches that each fit but together pass the limit.
    let half = "h".repeat(600);
    let result = ws
        .call(json!({"type": "patch", "id": 5, "topic": "bad/grow", "patch": {"a": half}}))
        .await;
    assert_eq!(result["ok"], true, "{result}");
    expect_refused(
        &mut ws,
        json!({"type": "patch", "id": 6, "topic": "bad/grow", "patch": {"b": half}}),
        "too_large",
    )
    .await;
    ws.ping_pong().await;
    let grow = untimed(server.get("/api/state/bad/grow").await.json());
    assert_eq!(
        grow,
        json!({"topic": "bad/grow", "rev": 1, "state": {"a": half}})
    );
    server.delete("/api/state/bad/grow").await;

    // Over REST: 413 too_large, also for a body far over the limit.
    let put = server.put("/api/state/bad/t", &json!({"s": big})).await;
    assert_eq!(put.status, 413, "{}", put.text);
    assert_eq!(put.error_code(), "too_large");
    let huge = json!({"s": "x".repeat(300_000)});
    for resp in [
        server.put("/api/state/bad/t", &huge).await,
        server.patch("/api/state/bad/t", &huge).await,
        server.post("/api/events/bad/t", &huge).await,
    ] {
        assert_eq!(resp.status, 413, "{}", resp.text);
        assert_eq!(resp.error_code(), "too_large");
    }
    assert_unchanged(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_state_is_refused_with_bad_request() {
    let (server, mut ws) = setup().await;
    expect_refused(
        &mut ws,
        json!({"type": "set", "id": 1, "topic": "bad/t", "state": null}),
        "bad_request",
    )
    .await;
    expect_refused(
        &mut ws,
        json!({"type": "set", "id": 2, "topic": "bad/new", "state": null}),
        "bad_request",
    )
    .await;
    // A merge patch of `null` would leave `null`.
    expect_refused(
        &mut ws,
        json!({"type": "patch", "id": 3, "topic": "bad/t", "patch": null}),
        "bad_request",
    )
    .await;
    ws.ping_pong().await;
    let put = server
        .send(
            http_client()
                .put(server.url("/api/state/bad/t"))
                .header("content-type", "application/json")
                .body("null"),
        )
        .await;
    assert_eq!(put.status, 400, "{}", put.text);
    assert_eq!(put.error_code(), "bad_request");
    assert_unchanged(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_max_frame_bytes_is_closed_with_1009() {
    let (server, mut ws) = setup().await;
    let big = format!(
        r#"{{"type":"set","id":1,"topic":"bad/t","state":{{"s":"{}"}}}}"#,
        "x".repeat(20_000)
    );
    assert!(big.len() > 20_000);
    ws.send_text(big).await;
    let close = ws.recv_close().await;
    assert_eq!(close_code(&close), 1009, "{close:?}");
    // The server is fine: a new connection works and nothing changed.
    let mut again = server.ws().await;
    again.ping_pong().await;
    assert_unchanged(&server).await;
}

/// Sends `message` on a raw connection, expects close 1009, answers the close and reads
/// to the end: `Err` if the server reset the connection instead of completing the close
/// handshake.
async fn close_handshake_after_1009(server: &Server, fragments: &[Vec<u8>]) -> std::io::Result<()> {
    let mut raw = RawWs::connect(server.addr()).await;
    let (opcode, _) = raw.read_frame().await.expect("welcome");
    assert_eq!(opcode, OP_TEXT);
    for (i, fragment) in fragments.iter().enumerate() {
        let opcode = if i == 0 { OP_TEXT } else { OP_CONTINUATION };
        raw.send_raw_frame(i + 1 == fragments.len(), opcode, fragment)
            .await;
    }
    assert_eq!(raw.read_close_code().await, Some(1009));
    raw.try_send_raw_frame(true, OP_CLOSE, &1009u16.to_be_bytes())
        .await?;
    raw.read_to_end().await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_closing_a_fragmented_message_with_1009_the_server_completes_the_close_handshake() {
    let (server, _ws) = setup().await;
    for _ in 0..5 {
        let end = close_handshake_after_1009(&server, &vec![vec![b' '; 4000]; 5]).await;
        assert!(
            end.is_ok(),
            "the connection was reset instead of closed: {end:?}"
        );
    }
    assert_unchanged(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_closing_an_oversized_frame_with_1009_the_server_completes_the_close_handshake() {
    let (server, _ws) = setup().await;
    for _ in 0..5 {
        let end = close_handshake_after_1009(&server, &[vec![b' '; 20_000]]).await;
        assert!(
            end.is_ok(),
            "the connection was reset instead of closed: {end:?}"
        );
    }
    assert_unchanged(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_message_over_max_frame_bytes_is_closed_with_1009() {
    let (server, _ws) = setup().await;
    let mut raw = RawWs::connect(server.addr()).await;
    let (opcode, _) = raw.read_frame().await.expect("welcome");
    assert_eq!(opcode, OP_TEXT);
    // Five fragments of 4000 bytes: each under the limit, the message over it.
    let chunk = vec![b'x'; 4000];
    raw.send_raw_frame(false, OP_TEXT, &chunk).await;
    for i in 0..4 {
        raw.send_raw_frame(i == 3, OP_CONTINUATION, &chunk).await;
    }
    assert_eq!(raw.read_close_code().await, Some(1009));
    let mut again = server.ws().await;
    again.ping_pong().await;
    assert_unchanged(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_text_frame_is_closed_with_1007() {
    let (server, _ws) = setup().await;
    let mut raw = RawWs::connect(server.addr()).await;
    let (opcode, welcome) = raw.read_frame().await.expect("welcome");
    assert_eq!(opcode, OP_TEXT);
    assert_eq!(
        serde_json::from_slice::<Value>(&welcome).unwrap()["type"],
        "welcome"
    );
    raw.send_frame(OP_TEXT, &[0xff, 0xfe]).await;
    assert_eq!(raw.read_close_code().await, Some(1007));
    // Answer the close; the server then ends the connection.
    raw.send_frame(OP_CLOSE, &1007u16.to_be_bytes()).await;
    assert!(
        raw.read_frame().await.is_none(),
        "the server kept the connection open"
    );
    let mut again = server.ws().await;
    again.ping_pong().await;
    assert_unchanged(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_body_that_is_not_json_is_400_bad_request() {
    let (server, _ws) = setup().await;
    for (method, path) in [
        (reqwest::Method::PUT, "/api/state/bad/t"),
        (reqwest::Method::PATCH, "/api/state/bad/t"),
        (reqwest::Method::PUT, "/api/state/bad/new"),
        (reqwest::Method::POST, "/api/events/bad/t"),
    ] {
        for body in ["{nope", "", "{\"v\":2} trailing"] {
            let resp = server
                .send(
                    http_client()
                        .request(method.clone(), server.url(path))
                        .header("content-type", "application/json")
                        .body(body),
                )
                .await;
            assert_eq!(resp.status, 400, "{method} {path} {body:?}: {}", resp.text);
            assert_eq!(resp.error_code(), "bad_request", "{method} {path} {body:?}");
        }
    }
    assert_unchanged(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_body_with_a_wrong_content_type_is_415_bad_request() {
    let (server, _ws) = setup().await;
    for (method, path) in [
        (reqwest::Method::PUT, "/api/state/bad/t"),
        (reqwest::Method::PATCH, "/api/state/bad/t"),
        (reqwest::Method::PUT, "/api/state/bad/new"),
    ] {
        for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
            let resp = server
                .send(
                    http_client()
                        .request(method.clone(), server.url(path))
                        .header("content-type", content_type)
                        .body(r#"{"v":2}"#),
                )
                .await;
            assert_eq!(
                resp.status, 415,
                "{method} {path} {content_type}: {}",
                resp.text
            );
            assert_eq!(resp.error_code(), "bad_request");
        }
    }
    assert_unchanged(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_path_is_404_json_not_found() {
    let (server, _ws) = setup().await;
    for path in [
        "/api/nope",
        "/nope.html",
        "/api",
        "/api/statex/bad/t",
        "/ws/extra",
    ] {
        let resp = server.get(path).await;
        assert_eq!(resp.status, 404, "{path}: {}", resp.text);
        assert!(
            resp.header("content-type")
                .unwrap_or("")
                .starts_with("application/json"),
            "{path}: {:?}",
            resp.headers
        );
        assert_eq!(resp.error_code(), "not_found", "{path}");
    }
    let resp = server.post("/api/nope", &json!({"v": 2})).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.error_code(), "not_found");
    assert_unchanged(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_invalid_topic_is_400_invalid_topic() {
    let (server, _ws) = setup().await;
    let too_deep = vec!["a"; 17].join("/");
    for topic in ["a//b", "a/+", "a/b/", too_deep.as_str()] {
        let path = format!("/api/state/{topic}");
        for resp in [
            server.get(&path).await,
            server.put(&path, &json!({"v": 2})).await,
            server.patch(&path, &json!({"v": 2})).await,
            server.delete(&path).await,
            server
                .post(&format!("/api/events/{topic}"), &json!(1))
                .await,
        ] {
            assert_eq!(resp.status, 400, "{topic}: {}", resp.text);
            assert_eq!(resp.error_code(), "invalid_topic", "{topic}");
        }
    }
    let resp = server
        .send(
            http_client()
                .get(server.url("/api/state"))
                .query(&[("match", "a/#/b")]),
        )
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text);
    assert_eq!(resp.error_code(), "invalid_pattern");
    assert_unchanged(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_exactly_max_frame_bytes_is_accepted() {
    let (server, mut ws) = setup().await;
    let head = r#"{"type":"ping","id":"pp","pad":""#;
    let tail = r#""}"#;
    let limit: usize = MAX_FRAME_BYTES.parse().unwrap();
    let text = format!(
        "{head}{}{tail}",
        "x".repeat(limit - head.len() - tail.len())
    );
    assert_eq!(text.len(), limit);
    ws.send_text(text).await;
    assert_eq!(ws.recv_json().await, json!({"type": "pong", "id": "pp"}));
    ws.ping_pong().await;
    assert_unchanged(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_of_exactly_max_state_bytes_is_accepted_and_one_more_is_not() {
    let (server, mut ws) = setup().await;
    let limit: usize = MAX_STATE_BYTES.parse().unwrap();
    let exact = json!({"s": "x".repeat(limit - r#"{"s":""}"#.len())});
    assert_eq!(exact.to_string().len(), limit);
    let over = json!({"s": "x".repeat(limit + 1 - r#"{"s":""}"#.len())});
    expect_refused(
        &mut ws,
        json!({"type": "set", "id": 1, "topic": "bad/t", "state": over}),
        "too_large",
    )
    .await;
    assert_unchanged(&server).await;
    let result = ws
        .call(json!({"type": "set", "id": 2, "topic": "bad/t", "state": exact}))
        .await;
    assert_eq!(
        result,
        json!({"type": "result", "id": 2, "ok": true, "rev": 2, "changed": true})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_is_a_json_error() {
    let (server, _ws) = setup().await;
    let resp = server.post("/api/state/bad/t", &json!({"v": 2})).await;
    assert_eq!(resp.status, 405, "{}", resp.text);
    assert!(resp.json()["error"]["code"].is_string(), "{}", resp.text);
    let resp = server.delete("/api/health").await;
    assert_eq!(resp.status, 405, "{}", resp.text);
    assert!(resp.json()["error"]["code"].is_string(), "{}", resp.text);
    assert_unchanged(&server).await;
}
