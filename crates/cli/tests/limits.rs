//! Limits through the real binary: connections per address, message rates per connection
//! and per address, subscriptions per connection, topics in all, and the time a client has
//! to send its request headers (slowloris).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_address_limit_get_503() {
    let server = Server::start(&["--max-connections-per-ip", "3"]);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(server.ws().await);
    }
    match Ws::connect_with(server.addr(), "/ws", &[]).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert!(body.contains("too many connections"), "{body}");
        }
        Err(e) => panic!("expected 503, got {e}"),
        Ok(_) => panic!("a fourth connection was accepted"),
    }
    // One closes: its slot is free again.
    let mut first = open.remove(0);
    first.stream.close(None).await.unwrap();
    let _ = first.recv_close().await;
    drop(first);
    let again = within("a slot to free up", async {
        loop {
            if let Ok(ws) = Ws::connect_with(server.addr(), "/ws", &[]).await {
                return ws;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    drop(again);
    drop(open);
    // The closed connections free their slots as the server notices; until then even the
    // metrics request is refused.
    let metrics = within("a slot for the metrics request", async {
        loop {
            let resp = server.get("/metrics").await;
            if resp.status == 200 {
                return resp.text;
            }
            assert_eq!(resp.status, 503);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let refused = metric_value(&metrics, "statecast_refused_connections_total").unwrap();
    assert!(refused >= 1.0, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_sender_is_refused_then_closed_when_it_keeps_on() {
    let server = Server::start(&["--messages-per-second", "5"]);
    let mut ws = server.ws().await;
    for i in 0..20 {
        ws.send_json(&json!({"type": "ping", "id": i})).await;
    }
    let (mut pongs, mut limited) = (0, 0);
    for _ in 0..20 {
        let reply = ws.recv_json().await;
        match reply["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("result") if reply["error"]["code"] == "rate_limited" => limited += 1,
            _ => panic!("unexpected {reply}"),
        }
    }
    assert!((5..20).contains(&pongs), "{pongs} pongs");
    assert_eq!(pongs + limited, 20);
    // The connection is still usable once the client slows down.
    within("the rate to allow a ping again", async {
        loop {
            ws.send_json(&json!({"type": "ping", "id": "slow"})).await;
            if ws.recv_json().await["type"] == "pong" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // Refused without a break for over 5 s: closed 1008.
    let closed = within("the close for sustained abuse", async {
        loop {
            ws.send_json(&json!({"type": "ping"})).await;
            match ws.recv().await {
                tungstenite::Message::Close(frame) => return frame,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    assert_eq!(close_code(&closed), 1008);
    assert!(server.metric("statecast_rate_limited_total").await >= 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_requests_over_the_per_address_rate_get_429() {
    let server = Server::start(&["--messages-per-second-per-ip", "5"]);
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(server.get("/api/state").await.status);
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    // A burst of 5, then 5 a second: however slow this machine is, no more got through.
    let allowed = statuses.iter().filter(|s| **s == 200).count() as f64;
    assert!(
        allowed <= 5.0 + 5.0 * elapsed + 1.0,
        "{statuses:?} in {elapsed:.2} s"
    );
    assert!(statuses.contains(&429), "{statuses:?} in {elapsed:.2} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_connection_and_topics_are_bounded() {
    let server = Server::start(&["--max-subscriptions", "2", "--max-topics", "2"]);
    let mut ws = server.ws().await;
    let ok = ws
        .call(json!({"type": "subscribe", "id": 1, "patterns": ["a/#", "b/#"]}))
        .await;
    assert_eq!(ok["ok"], true);
    let refused = ws
        .call(json!({"type": "subscribe", "id": 2, "patterns": ["c/#"]}))
        .await;
    assert_eq!(refused["error"]["code"], "too_large", "{refused}");
    // Subscribing again to a held pattern still fits.
    ws.call(json!({"type": "unsubscribe", "id": 3, "patterns": ["b/#"]}))
        .await;
    let ok = ws
        .call(json!({"type": "subscribe", "id": 4, "patterns": ["c/#"]}))
        .await;
    assert_eq!(ok["ok"], true, "{ok}");

    assert_eq!(server.put("/api/state/t/1", &json!(1)).await.status, 200);
    assert_eq!(server.put("/api/state/t/2", &json!(1)).await.status, 200);
    let third = server.put("/api/state/t/3", &json!(1)).await;
    assert_eq!(third.status, 413, "{}", third.text);
    assert_eq!(third.error_code(), "too_large");
    assert_eq!(server.get("/api/state/t/3").await.status, 404);
    assert_eq!(server.put("/api/state/t/1", &json!(2)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let server = Server::start(&["--handshake-timeout-ms", "300"]);
    let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    tcp.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // The server answers 408 or just closes; either way the connection ends.
    within(
        "the server to drop the slow client",
        tcp.read_to_end(&mut buf),
    )
    .await
    .ok();
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}
