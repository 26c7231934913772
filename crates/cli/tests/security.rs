//! The adversarial cases of issue 17 against the real binary, so they stay fixed: writes
//! from other sites' pages and bodies that are not JSON (refused before anything is carried
//! out), slow request bodies and idle connections (closed in bounded time, so they cannot
//! hold every connection slot), and errors that say what is wrong in the contract's JSON
//! shape, however the request is broken. The JWT `exp` cases are in `auth.rs`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A hub without auth whose file lists one allowed origin, holding `t/a` = `{"v":1}`.
async fn hub_with_allowed_origin(dir: &tempfile::TempDir) -> Server {
    let path = dir.path().join("statecast.toml");
    std::fs::write(&path, "allowed_origins = [\"https://dash.example\"]\n").unwrap();
    let server = Server::start(&["--config", &path.to_string_lossy()]);
    let put = server.put("/api/state/t/a", &json!({"v": 1})).await;
    assert_eq!(put.status, 200, "{}", put.text);
    server
}

/// Every writing route, with a JSON body that would be carried out.
fn writes() -> Vec<(reqwest::Method, &'static str, Value)> {
    vec![
        (reqwest::Method::PUT, "/api/state/t/a", json!({"v": 2})),
        (reqwest::Method::PATCH, "/api/state/t/a", json!({"w": 2})),
        (reqwest::Method::PUT, "/api/state/t/new", json!({"v": 2})),
        (reqwest::Method::DELETE, "/api/state/t/a", Value::Null),
        (reqwest::Method::POST, "/api/events/t/a", json!({"e": 1})),
        (
            reqwest::Method::POST,
            "/api/commands/t/a",
            json!({"name": "reboot"}),
        ),
    ]
}

fn write_request(
    server: &Server,
    method: &reqwest::Method,
    path: &str,
    body: &Value,
) -> reqwest::RequestBuilder {
    let request = http_client().request(method.clone(), server.url(path));
    if body.is_null() {
        request
    } else {
        request.json(body)
    }
}

async fn assert_unchanged(server: &Server) {
    assert_eq!(
        server.all_state().await,
        json!({"topics": [{"topic": "t/a", "rev": 1, "state": {"v": 1}}]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_other_sites_are_refused_403_before_anything_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let server = hub_with_allowed_origin(&dir).await;
    let foreign: [&[(&str, &str)]; 5] = [
        &[("origin", "http://evil.example")],
        &[("origin", "null")],
        // Same host name, another port: another origin.
        &[("origin", "http://127.0.0.1:1")],
        &[("sec-fetch-site", "cross-site")],
        &[
            ("origin", "https://dash.example.evil"),
            ("sec-fetch-site", "cross-site"),
        ],
    ];
    for headers in foreign {
        for (method, path, body) in writes() {
            let mut request = write_request(&server, &method, path, &body);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let resp = server.send(request).await;
            assert_eq!(
                resp.status, 403,
                "{method} {path} {headers:?}: {}",
                resp.text
            );
            assert_eq!(
                resp.error_code(),
                "forbidden",
                "{method} {path} {headers:?}"
            );
            let message = resp.json()["error"]["message"].as_str().unwrap().to_owned();
            assert!(
                message.contains("origin") || message.contains("another site"),
                "{message}"
            );
        }
    }
    assert_unchanged(&server).await;
    // Reads are not writes: a foreign page may still GET (CORS keeps the answer from it).
    let read = server
        .send(
            http_client()
                .get(server.url("/api/state/t/a"))
                .header("origin", "http://evil.example"),
        )
        .await;
    assert_eq!(read.status, 200, "{}", read.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_the_hubs_own_pages_listed_origins_and_non_browsers_pass() {
    let dir = tempfile::tempdir().unwrap();
    let server = hub_with_allowed_origin(&dir).await;
    let own = format!("http://{}", server.addr());
    let allowed: [&[(&str, &str)]; 5] = [
        &[],
        &[("origin", &own)],
        &[("origin", "https://dash.example")],
        &[("sec-fetch-site", "same-origin")],
        &[("sec-fetch-site", "none")],
    ];
    for headers in allowed {
        let mut request = http_client()
            .put(server.url("/api/state/t/b"))
            .json(&json!({"from": format!("{headers:?}")}));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let resp = server.send(request).await;
        assert_eq!(resp.status, 200, "{headers:?}: {}", resp.text);
        // The command passes the gate and meets the router: no route for it here.
        let mut command = http_client()
            .post(server.url("/api/commands/t/b"))
            .json(&json!({"name": "go"}));
        for (name, value) in headers {
            command = command.header(*name, *value);
        }
        assert_eq!(server.send(command).await.error_code(), "no_route");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_declared_json_is_415_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = hub_with_allowed_origin(&dir).await;
    for (method, path, body) in writes() {
        if body.is_null() {
            continue;
        }
        // The simple requests a page may send without asking: no type, text/plain, forms.
        for content_type in [
            None,
            Some("text/plain"),
            Some("text/plain;charset=UTF-8"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
        ] {
            let mut request = http_client()
                .request(method.clone(), server.url(path))
                .body(body.to_string());
            if let Some(t) = content_type {
                request = request.header("content-type", t);
            }
            let resp = server.send(request).await;
            assert_eq!(
                resp.status, 415,
                "{method} {path} {content_type:?}: {}",
                resp.text
            );
            assert_eq!(resp.error_code(), "bad_request");
        }
    }
    // merge-patch is a PATCH's type only.
    let put = server
        .send(
            http_client()
                .put(server.url("/api/state/t/a"))
                .header("content-type", "application/merge-patch+json")
                .body(r#"{"v":3}"#),
        )
        .await;
    assert_eq!(put.status, 415, "{}", put.text);
    assert_unchanged(&server).await;
    let charset = server
        .send(
            http_client()
                .patch(server.url("/api/state/t/a"))
                .header("content-type", "application/json; charset=utf-8")
                .body(r#"{"w":1}"#),
        )
        .await;
    assert_eq!(charset.status, 200, "{}", charset.text);
}

/// Sends the headers of a request whose `Content-Length: 1000` body will come one byte
/// every 50 ms (`trickle`) or not at all.
async fn start_slow_body(addr: &str, path: &str) -> tokio::net::TcpStream {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"v\":"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp
}

/// Goes on with the body (or not); returns what the server answered before it closed the
/// connection.
async fn finish_slow_body(mut tcp: tokio::net::TcpStream, trickle: bool) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            read = tcp.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick(), if trickle => {
                if tcp.write_all(b"1").await.is_err() {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_and_idle_connections_cannot_hold_every_slot() {
    let server = Server::start(&["--max-connections", "5", "--handshake-timeout-ms", "1500"]);
    let addr = server.addr().to_owned();
    // An idle keep-alive connection after one request.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(format!("GET /api/health HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answered = [0u8; 12];
    idle.read_exact(&mut answered).await.unwrap();
    assert_eq!(&answered, b"HTTP/1.1 200");
    let mut slow = Vec::new();
    for (path, trickle) in [
        ("/api/state/t/a", true),
        ("/api/state/t/b", true),
        ("/api/state/t/c", false),
        ("/api/state/t/d", false),
    ] {
        let tcp = start_slow_body(&addr, path).await;
        slow.push(tokio::spawn(finish_slow_body(tcp, trickle)));
    }
    // All five slots are taken: one more connection is refused.
    let refused = server.get("/api/health").await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    // Each slow body is answered 408 with the contract's error, and closed.
    for task in slow {
        let answer = within("a slow body to be cut off", task).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
        let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
        assert_eq!(body["error"]["code"], "timeout", "{answer}");
    }
    // The idle connection is closed too (after its one answer).
    let mut rest = Vec::new();
    within(
        "the idle connection to be closed",
        idle.read_to_end(&mut rest),
    )
    .await
    .unwrap();
    // The slots are free again: a new client gets in.
    within("a new client to get in", async {
        loop {
            if server.get("/api/health").await.status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(server.all_state().await, json!({"topics": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_http_error_is_the_contracts_json_error() {
    let server = Server::start(&[]);
    let json_error = |what: &str, resp: &Resp, status: u16| {
        assert_eq!(resp.status, status, "{what}: {}", resp.text);
        assert!(
            resp.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{what}: {:?}",
            resp.headers
        );
        let code = resp.error_code();
        let message = resp.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(!message.is_empty(), "{what}");
        code
    };
    let put = |path: &str| {
        http_client()
            .put(server.url(path))
            .header("content-type", "application/json")
            .body("{\"v\":1}")
    };
    for (what, request, status, code) in [
        (
            "a path that is not UTF-8",
            put("/api/state/a/%FF"),
            400,
            "bad_request",
        ),
        (
            "a GET of it",
            http_client().get(server.url("/api/state/a/%FF")),
            400,
            "bad_request",
        ),
        (
            "a query that is not UTF-8",
            http_client().get(server.url("/api/state?match=%FF")),
            400,
            "invalid_pattern",
        ),
        (
            "an event to it",
            http_client()
                .post(server.url("/api/events/%C3%28"))
                .json(&json!(1)),
            400,
            "bad_request",
        ),
        (
            "a wrong method",
            http_client().delete(server.url("/api/health")),
            405,
            "bad_request",
        ),
        (
            "an unknown path",
            http_client().get(server.url("/api/nope")),
            404,
            "not_found",
        ),
    ] {
        let resp = server.send(request).await;
        assert_eq!(json_error(what, &resp, status), code, "{what}");
    }
    assert_eq!(server.all_state().await, json!({"topics": []}));
}

/// Sends `request` on a new connection and reads the answer until the hub closes it.
async fn raw_exchange(addr: &str, request: &[u8]) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    within("the hub to answer and close", tcp.read_to_end(&mut answer))
        .await
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_hyper_cannot_parse_gets_the_contracts_json_error() {
    let server = Server::start(&[]);
    let addr = server.addr().to_owned();
    let too_many: String = (0..200).map(|i| format!("h{i}: x\r\n")).collect();
    let too_many = format!("GET / HTTP/1.1\r\nHost: x\r\n{too_many}\r\n");
    for (what, request, status, code) in [
        (
            "a raw 0xFF in the request line",
            &b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            "400",
            "bad_request",
        ),
        (
            "a control character in the path",
            b"GET /api/\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
            "400",
            "bad_request",
        ),
        (
            "a header name with a space",
            b"GET /api/health HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
            "400",
            "bad_request",
        ),
        (
            "an unknown HTTP version",
            b"GET /api/health HTTP/7.0\r\nHost: x\r\n\r\n",
            "400",
            "bad_request",
        ),
        (
            "Content-Lengths that disagree",
            b"PUT /api/state/t/a HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 1\r\nContent-Length: 2\r\n\r\n1",
            "400",
            "bad_request",
        ),
        ("too many headers", too_many.as_bytes(), "431", "too_large"),
    ] {
        let answer = raw_exchange(&addr, request).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {answer:?}"
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\ncontent-type: application/json\r\n"),
            "{what}: {head}"
        );
        let body: Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {answer:?}"));
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("head")),
            "{what}: {body}"
        );
    }
    // On a keep-alive connection: a good request is answered, then the bad head after it
    // (sent at once, pipelined) gets the JSON error, and the connection is closed.
    let mut pipelined = b"PUT /api/state/t/a HTTP/1.1\r\nHost: x\r\n\
        Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"v\":1}"
        .to_vec();
    pipelined.extend_from_slice(b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n");
    let answers = raw_exchange(&addr, &pipelined).await;
    let (first, second) = answers
        .split_once("HTTP/1.1 400 ")
        .unwrap_or_else(|| panic!("no 400 after the good request: {answers:?}"));
    assert!(first.starts_with("HTTP/1.1 200 "), "{answers:?}");
    assert!(second.contains("application/json"), "{answers:?}");
    assert!(second.contains("\"bad_request\""), "{answers:?}");
    // A second request on a connection, after a good one and its answer.
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let health = format!("GET /api/health HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    tcp.write_all(health.as_bytes()).await.unwrap();
    let mut answer = [0u8; 12];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    tcp.write_all(b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    within("the hub to answer and close", tcp.read_to_end(&mut rest))
        .await
        .unwrap();
    let rest = String::from_utf8_lossy(&rest);
    let second = rest.split_once("HTTP/1.1 400 ").map(|(_, s)| s);
    assert!(
        second.is_some_and(|s| s.contains("application/json") && s.contains("\"bad_request\"")),
        "{rest:?}"
    );
    // A good head still goes through, and so does a second request on its connection.
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let health = format!("GET /api/health HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    tcp.write_all(format!("{health}{health}").as_bytes())
        .await
        .unwrap();
    let mut answers = String::new();
    within("two answers on one connection", async {
        let mut buf = [0u8; 4096];
        while answers.matches("HTTP/1.1 200").count() < 2 || !answers.ends_with('}') {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {answers:?}");
            answers.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await;
    // Only the good PUT was carried out.
    assert_eq!(
        server.all_state().await,
        json!({"topics": [{"topic": "t/a", "rev": 1, "state": {"v": 1}}]})
    );
}
