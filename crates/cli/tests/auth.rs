//! Authentication and permissions through the real binary: API keys and HS256 JWTs on every
//! entry point (REST, SSE with header and `?token=`, the WebSocket upgrade with header and
//! `?token=`, the WebSocket `auth` message), narrowing of broad subscriptions, forbidden
//! writes, token expiry and refresh, origin checks and the safe default for public
//! addresses.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

const SECRET: &str = "test-secret-of-the-hub";
const ADMIN_KEY: &str = "admin-key-1";
const DASHBOARD_KEY: &str = "dashboard-key-1";

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JWT signed with `secret`, with these claims on top of a valid issuer and audience.
fn jwt(secret: &str, claims: Value) -> String {
    let mut all = json!({
        "sub": "tester",
        "iss": "statecast-test",
        "aud": "hub",
        "exp": now_s() + 600,
        "statecast": {"read": ["railhub/#"], "write": ["railhub/#"]},
    });
    if let (Value::Object(all), Value::Object(claims)) = (&mut all, claims) {
        all.extend(claims);
    }
    encode(
        &Header::default(),
        &all,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Tokens that must be refused, with a word their refusal must contain.
fn bad_tokens() -> Vec<(&'static str, String, &'static str)> {
    vec![
        ("unknown key", "nobody-knows-this".into(), "unknown API key"),
        ("malformed", "abc.def.ghi".into(), "malformed"),
        (
            "expired",
            jwt(SECRET, json!({"exp": now_s() - 120})),
            "expired",
        ),
        (
            "wrongly signed",
            jwt("another-secret", json!({})),
            "signature",
        ),
        (
            "wrong audience",
            jwt(SECRET, json!({"aud": "other"})),
            "audience",
        ),
        (
            "wrong issuer",
            jwt(SECRET, json!({"iss": "other"})),
            "issuer",
        ),
    ]
}

fn config(dir: &tempfile::TempDir, extra: &str) -> String {
    let path = dir.path().join("statecast.toml");
    std::fs::write(
        &path,
        format!(
            r##"
            allowed_origins = ["https://dash.example"]
            {extra}
            [auth]
            auth_timeout_ms = 400
            [auth.jwt]
            secret = "{SECRET}"
            issuer = "statecast-test"
            audience = "hub"
            [[auth.keys]]
            name = "admin"
            key = "{ADMIN_KEY}"
            read = ["#"]
            write = ["#"]
            event = ["#"]
            admin = true
            [[auth.keys]]
            name = "dashboard"
            key = "{DASHBOARD_KEY}"
            read = ["railhub/#"]
            "##
        ),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

fn start() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir, "");
    (Server::start(&["--config", &config]), dir)
}

async fn get_as(server: &Server, path: &str, token: &str) -> Resp {
    server
        .send(http_client().get(server.url(path)).bearer_auth(token))
        .await
}

async fn put_as(server: &Server, path: &str, token: &str, body: Value) -> Resp {
    server
        .send(
            http_client()
                .put(server.url(path))
                .bearer_auth(token)
                .json(&body),
        )
        .await
}

/// The status of a refused WebSocket upgrade.
fn refused_status(result: Result<Ws, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_refuses_missing_and_bad_tokens_and_takes_valid_ones() {
    let (server, _dir) = start();
    let none = server.get("/api/state").await;
    assert_eq!(none.status, 401);
    assert_eq!(none.error_code(), "unauthorized");
    for (what, token, why) in bad_tokens() {
        let resp = get_as(&server, "/api/state", &token).await;
        assert_eq!(resp.status, 401, "{what}: {}", resp.text);
        assert_eq!(resp.error_code(), "unauthorized", "{what}");
        assert!(resp.text.contains(why), "{what}: {}", resp.text);
    }
    let valid = get_as(&server, "/api/state", &jwt(SECRET, json!({}))).await;
    assert_eq!(valid.status, 200, "{}", valid.text);
    assert_eq!(get_as(&server, "/api/state", ADMIN_KEY).await.status, 200);

    // Only admin reads /metrics; the refusals above were counted there.
    assert_eq!(get_as(&server, "/metrics", DASHBOARD_KEY).await.status, 403);
    let metrics = get_as(&server, "/metrics", ADMIN_KEY).await.text;
    let refused = metric_value(&metrics, "statecast_refused_unauthorized_total").unwrap();
    assert!(refused >= 7.0, "{refused}");
    server.wait_log("refused: unauthorized").await;
    server.wait_log("peer=127.0.0.1:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_takes_a_header_or_query_token_and_refuses_bad_ones() {
    let (server, _dir) = start();
    let url = server.url("/api/stream");
    for (what, token, _) in bad_tokens() {
        let by_query = http_client()
            .get(&url)
            .query(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(by_query.status().as_u16(), 401, "{what}");
        let by_header = http_client()
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(by_header.status().as_u16(), 401, "{what}");
    }
    assert_eq!(
        http_client()
            .get(&url)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    put_as(&server, "/api/state/railhub/a", ADMIN_KEY, json!(1)).await;
    let stream = reqwest::Client::new()
        .get(&url)
        .query(&[("match", "#"), ("token", DASHBOARD_KEY)])
        .send()
        .await
        .unwrap();
    let mut sse = Sse::from_response(stream, None);
    assert_eq!(sse.next().await.json()["topic"], "railhub/a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_with_a_bad_token_is_refused_with_401() {
    let (server, _dir) = start();
    for (what, token, _) in bad_tokens() {
        let header = format!("Bearer {token}");
        let by_header = Ws::connect_with(server.addr(), "/ws", &[("authorization", &header)]).await;
        assert_eq!(refused_status(by_header), 401, "{what}");
        let path = format!("/ws?token={token}");
        assert_eq!(
            refused_status(Ws::connect_with(server.addr(), &path, &[]).await),
            401,
            "{what}"
        );
    }
    let header = format!("Bearer {DASHBOARD_KEY}");
    let mut ws = Ws::connect_with(server.addr(), "/ws", &[("authorization", &header)])
        .await
        .unwrap();
    let result = ws
        .call(json!({"type": "subscribe", "id": 1, "patterns": ["#"]}))
        .await;
    assert_eq!(result["ok"], true, "{result}");
    let path = format!("/ws?token={}", jwt(SECRET, json!({})));
    let mut ws = Ws::connect_with(server.addr(), &path, &[]).await.unwrap();
    ws.ping_pong().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_message_must_come_first_and_a_bad_one_closes_1008() {
    let (server, _dir) = start();
    for (what, token, why) in bad_tokens() {
        let mut ws = server.ws().await;
        let early = ws
            .call(json!({"type": "subscribe", "id": 1, "patterns": ["#"]}))
            .await;
        assert_eq!(early["error"]["code"], "unauthorized", "{what}: {early}");
        let result = ws
            .request(json!({"type": "auth", "id": 2, "token": token}))
            .await;
        let result = result.last().unwrap();
        assert_eq!(result["error"]["code"], "unauthorized", "{what}");
        assert!(
            result["error"]["message"].as_str().unwrap().contains(why),
            "{what}: {result}"
        );
        assert_eq!(close_code(&ws.recv_close().await), 1008, "{what}");
    }
    let mut ws = server.ws().await;
    let result = ws
        .call(json!({"type": "auth", "id": 1, "token": DASHBOARD_KEY}))
        .await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["subject"], "dashboard");
    let result = ws
        .call(json!({"type": "subscribe", "id": 2, "patterns": ["#"]}))
        .await;
    assert_eq!(result["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_authenticates_is_closed_1008() {
    let (server, _dir) = start();
    let mut ws = server.ws().await;
    let error = ws.recv_json().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error"]["code"], "unauthorized");
    assert_eq!(close_code(&ws.recv_close().await), 1008);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broad_subscriptions_are_narrowed_on_every_path() {
    let (server, _dir) = start();
    let header = format!("Bearer {DASHBOARD_KEY}");
    let mut ws = Ws::connect_with(server.addr(), "/ws", &[("authorization", &header)])
        .await
        .unwrap();
    ws.call(json!({"type": "subscribe", "id": 1, "patterns": ["#"]}))
        .await;
    let stream = reqwest::Client::new()
        .get(server.url("/api/stream"))
        .query(&[("match", "#")])
        .bearer_auth(DASHBOARD_KEY)
        .send()
        .await
        .unwrap();
    let mut sse = Sse::from_response(stream, None);

    put_as(
        &server,
        "/api/state/secret/keys",
        ADMIN_KEY,
        json!({"k": 1}),
    )
    .await;
    put_as(
        &server,
        "/api/state/railhub/a",
        ADMIN_KEY,
        json!({"on": true}),
    )
    .await;
    let event = http_client()
        .post(server.url("/api/events/secret/alarm"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!("intruder"));
    assert_eq!(server.send(event).await.status, 202);
    put_as(
        &server,
        "/api/state/secret/keys",
        ADMIN_KEY,
        json!({"k": 2}),
    )
    .await;
    // The last write is readable: once it arrives, everything before it has been fanned out.
    put_as(&server, "/api/state/railhub/zz", ADMIN_KEY, json!("end")).await;

    let seen = ws.recv_until(|m| m["topic"] == "railhub/zz").await;
    let topics: Vec<&str> = seen.iter().filter_map(|m| m["topic"].as_str()).collect();
    assert_eq!(topics, ["railhub/a", "railhub/zz"], "{seen:?}");
    let mut sse_topics = Vec::new();
    loop {
        let event = sse.next().await.json();
        let topic = event["topic"].as_str().unwrap().to_string();
        sse_topics.push(topic.clone());
        if topic == "railhub/zz" {
            break;
        }
    }
    assert_eq!(sse_topics, ["railhub/a", "railhub/zz"]);

    let listed = get_as(&server, "/api/state?match=%23", DASHBOARD_KEY)
        .await
        .json();
    let listed: Vec<&str> = listed["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topic"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["railhub/a", "railhub/zz"]);
    let secret = get_as(&server, "/api/state/secret/keys", DASHBOARD_KEY).await;
    assert_eq!(secret.status, 403);
    assert_eq!(secret.error_code(), "forbidden");
    let got = ws
        .request(json!({"type": "get", "id": 2, "patterns": ["secret/#", "railhub/a"]}))
        .await;
    let topics: Vec<&str> = got.iter().filter_map(|m| m["topic"].as_str()).collect();
    assert_eq!(topics, ["railhub/a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_writes_change_nothing() {
    let (server, _dir) = start();
    put_as(
        &server,
        "/api/state/secret/keys",
        ADMIN_KEY,
        json!({"k": 1}),
    )
    .await;
    let refused = put_as(
        &server,
        "/api/state/secret/keys",
        DASHBOARD_KEY,
        json!({"k": 2}),
    )
    .await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.error_code(), "forbidden");
    let writer = jwt(SECRET, json!({}));
    let refused = put_as(&server, "/api/state/secret/keys", &writer, json!({"k": 3})).await;
    assert_eq!(refused.status, 403);

    let mut ws = server.ws().await;
    ws.call(json!({"type": "auth", "id": 1, "token": writer}))
        .await;
    for (i, message) in [
        json!({"type": "set", "topic": "secret/keys", "state": {"k": 4}}),
        json!({"type": "patch", "topic": "secret/keys", "patch": {"k": 5}}),
        json!({"type": "delete", "topic": "secret/keys"}),
        json!({"type": "event", "topic": "railhub/a", "data": 1}),
        json!({"type": "command", "target": "railhub/a", "name": "x"}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut message = message;
        message["id"] = json!(10 + i);
        let result = ws.call(message.clone()).await;
        assert_eq!(result["error"]["code"], "forbidden", "{message}: {result}");
    }
    // What the token allows still works.
    let ok = ws
        .call(json!({"type": "set", "id": 20, "topic": "railhub/a", "state": 1}))
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    let state = get_as(&server, "/api/state/secret/keys", ADMIN_KEY)
        .await
        .json();
    assert_eq!(state["rev"], 1);
    assert_eq!(state["state"], json!({"k": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_closes_the_connection_unless_refreshed() {
    let (server, _dir) = start();
    // Expires within 1 to 2 s (JWT times are whole seconds).
    let short = jwt(SECRET, json!({"exp": now_s() + 2}));
    let mut ws = server.ws().await;
    ws.call(json!({"type": "auth", "id": 1, "token": short}))
        .await;
    let error = ws.recv_json().await;
    assert_eq!(error["error"]["code"], "unauthorized", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    assert_eq!(close_code(&ws.recv_close().await), 1008);

    let short_exp = now_s() + 2;
    let short = jwt(SECRET, json!({"exp": short_exp}));
    let mut ws = server.ws().await;
    ws.call(json!({"type": "auth", "id": 1, "token": short}))
        .await;
    let fresh = jwt(SECRET, json!({}));
    let result = ws
        .call(json!({"type": "auth", "id": 2, "token": fresh}))
        .await;
    assert_eq!(result["ok"], true);
    // Past the first token's expiry, the connection still answers.
    within("the first token's expiry to pass", async {
        while now_s() <= short_exp + 1 {
            ws.ping_pong().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    ws.ping_pong().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_from_other_origins_are_refused() {
    let (server, _dir) = start();
    let auth = format!("Bearer {DASHBOARD_KEY}");
    let evil = Ws::connect_with(
        server.addr(),
        "/ws",
        &[("origin", "https://evil.example"), ("authorization", &auth)],
    )
    .await;
    assert_eq!(refused_status(evil), 403);
    let own = format!("http://{}", server.addr());
    for origin in [own.as_str(), "https://dash.example"] {
        let mut ws = Ws::connect_with(
            server.addr(),
            "/ws",
            &[("origin", origin), ("authorization", &auth)],
        )
        .await
        .unwrap_or_else(|e| panic!("{origin}: {e}"));
        ws.ping_pong().await;
    }
    let sse = http_client()
        .get(server.url("/api/stream"))
        .bearer_auth(DASHBOARD_KEY)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status().as_u16(), 403);

    // CORS for the REST API: listed origins only.
    for (origin, allowed) in [
        ("https://dash.example", true),
        ("https://evil.example", false),
    ] {
        let preflight = http_client()
            .request(reqwest::Method::OPTIONS, server.url("/api/state/railhub/a"))
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
            .await
            .unwrap();
        let acao = preflight
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(
            acao.as_deref() == Some(origin),
            allowed,
            "{origin}: {acao:?}"
        );
    }
}

#[test]
fn a_public_address_without_auth_is_refused_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_statecast"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("without authentication") && stderr.contains("--insecure"),
        "{stderr}"
    );
}

/// An ES256 key pair: (private PKCS#8 PEM, public SPKI PEM).
fn ec_key_pair() -> (String, String) {
    let pair = rcgen::KeyPair::generate().unwrap();
    (pair.serialize_pem(), pair.public_key_pem())
}

fn es256(private_pem: &str, kid: Option<&str>) -> String {
    let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    let claims = json!({
        "sub": "signed-elsewhere",
        "exp": now_s() + 600,
        "statecast": {"read": ["#"]},
    });
    encode(
        &header,
        &claims,
        &EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_verify_against_a_public_key_file_or_a_jwks() {
    let (private, public) = ec_key_pair();
    let (other_private, _) = ec_key_pair();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("public.pem"), &public).unwrap();
    let key = EncodingKey::from_ec_pem(private.as_bytes()).unwrap();
    let mut jwk =
        jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("k1".into());
    std::fs::write(
        dir.path().join("jwks.json"),
        serde_json::to_string(&json!({"keys": [jwk]})).unwrap(),
    )
    .unwrap();
    for (name, file) in [
        ("public_key_file", "public.pem"),
        ("jwks_file", "jwks.json"),
    ] {
        let path = dir.path().join(file);
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!("[auth.jwt]\n{name} = {:?}\n", path.to_string_lossy()),
        )
        .unwrap();
        let server = Server::start(&["--config", &config.to_string_lossy()]);
        let valid = get_as(&server, "/api/state", &es256(&private, Some("k1"))).await;
        assert_eq!(valid.status, 200, "{name}: {}", valid.text);
        let forged = get_as(&server, "/api/state", &es256(&other_private, Some("k1"))).await;
        assert_eq!(forged.status, 401, "{name}: {}", forged.text);
        assert!(forged.text.contains("signature"), "{name}: {}", forged.text);
        let hs = get_as(&server, "/api/state", &jwt(SECRET, json!({}))).await;
        assert_eq!(hs.status, 401, "{name}: an HS256 token is not accepted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_verify_against_a_public_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("rsa.pem");
    let public = dir.path().join("rsa.pub.pem");
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    let private_arg = private.to_string_lossy().into_owned();
    let public_arg = public.to_string_lossy().into_owned();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &private_arg,
    ]);
    openssl(&["pkey", "-in", &private_arg, "-pubout", "-out", &public_arg]);
    let config = dir.path().join("statecast.toml");
    std::fs::write(
        &config,
        format!("[auth.jwt]\npublic_key_file = {public_arg:?}\naudience = \"hub\"\n"),
    )
    .unwrap();
    let server = Server::start(&["--config", &config.to_string_lossy()]);
    let key = EncodingKey::from_rsa_pem(&std::fs::read(&private).unwrap()).unwrap();
    let token = |audience: &str| {
        let claims = json!({
            "sub": "rsa", "aud": audience, "exp": now_s() + 600,
            "statecast": {"read": ["#"]},
        });
        encode(&Header::new(jsonwebtoken::Algorithm::RS256), &claims, &key).unwrap()
    };
    assert_eq!(
        get_as(&server, "/api/state", &token("hub")).await.status,
        200
    );
    let other = get_as(&server, "/api/state", &token("elsewhere")).await;
    assert_eq!(other.status, 401);
    assert!(other.text.contains("audience"), "{}", other.text);
}

fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `GET path` (an SSE stream) with `token` as a bearer header.
async fn sse_as(server: &Server, path: &str, token: &str) -> reqwest::Response {
    http_client()
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// A Socket.IO client's connect to `/` over engine.io's WebSocket transport with `?token=`:
/// the socket and the answer to the connect (`40{..}` accepted, `44{..}` refused).
async fn socketio_connect(
    server: &Server,
    token: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    String,
) {
    use futures_util::SinkExt;
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&token={token}",
        server.addr()
    );
    let (mut ws, _) = within(
        "the engine.io handshake",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("engine.io over WebSocket");
    let open = socketio_text(&mut ws).await;
    assert!(open.starts_with("0{"), "engine.io open: {open}");
    ws.send(tungstenite::Message::text("40")).await.unwrap();
    let answer = socketio_text(&mut ws).await;
    (ws, answer)
}

/// The next text frame of a Socket.IO connection (answering engine.io pings).
async fn socketio_text(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> String {
    use futures_util::{SinkExt, StreamExt};
    loop {
        match within("a Socket.IO message", ws.next()).await {
            Some(Ok(tungstenite::Message::Text(text))) if text.as_str() == "2" => {
                ws.send(tungstenite::Message::text("3")).await.unwrap();
            }
            Some(Ok(tungstenite::Message::Text(text))) => return text.to_string(),
            Some(Ok(_)) => continue,
            other => return format!("ended: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fractional_exp_expires_open_websockets_sse_streams_and_socketio() {
    let (server, _dir) = start();
    let token = jwt(SECRET, json!({"exp": now_f64() + 2.5}));
    let auth = format!("Bearer {token}");
    let mut ws = Ws::connect_with(server.addr(), "/ws", &[("authorization", &auth)])
        .await
        .unwrap();
    ws.ping_pong().await;
    let stream = sse_as(&server, "/api/stream?match=railhub/%23", &token).await;
    let mut sse = Sse::from_response(stream, None);
    let (mut sio, connected) = socketio_connect(&server, &token).await;
    assert!(connected.starts_with("40{"), "{connected}");
    // All three end by themselves once the token has expired.
    let error = ws.recv_json().await;
    assert_eq!(error["error"]["code"], "unauthorized", "{error}");
    assert_eq!(close_code(&ws.recv_close().await), 1008);
    sse.until_end().await.expect("the stream ends cleanly");
    let mut seen = Vec::new();
    loop {
        let text = socketio_text(&mut sio).await;
        let ended = text == "41" || text.starts_with("ended");
        seen.push(text);
        if ended {
            break;
        }
    }
    assert!(
        seen.iter().any(|t| t.contains("expired")),
        "Socket.IO after expiry: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exp_that_is_not_a_time_is_refused_as_such_on_every_entry_point() {
    let (server, _dir) = start();
    for exp in [json!(-1), json!(-0.5), json!("1893456000"), json!(null)] {
        let token = jwt(SECRET, json!({"exp": exp}));
        let rest = get_as(&server, "/api/state?match=railhub/%23", &token).await;
        assert_eq!(rest.status, 401, "exp {exp}: {}", rest.text);
        let message = rest.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            message.contains("`exp` is not a valid time"),
            "exp {exp}: {message}"
        );
        let auth = format!("Bearer {token}");
        let upgrade = Ws::connect_with(server.addr(), "/ws", &[("authorization", &auth)]).await;
        assert_eq!(refused_status(upgrade), 401, "exp {exp}");
        let sse = sse_as(&server, "/api/stream", &token).await;
        assert_eq!(sse.status().as_u16(), 401, "exp {exp}");
        let mut ws = server.ws().await;
        let refused = ws
            .call(json!({"type": "auth", "id": 1, "token": token}))
            .await;
        assert!(
            refused.to_string().contains("`exp` is not a valid time"),
            "exp {exp}: {refused}"
        );
        let (_sio, answer) = socketio_connect(&server, &token).await;
        assert!(
            answer.starts_with("44") && answer.contains("`exp` is not a valid time"),
            "exp {exp}: {answer}"
        );
    }
    // A token without `exp` still says so.
    let token = {
        let all = json!({"sub": "t", "iss": "statecast-test", "aud": "hub"});
        encode(
            &Header::default(),
            &all,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let rest = get_as(&server, "/api/state", &token).await;
    assert_eq!(rest.status, 401);
    assert!(rest.text.contains("no `exp`"), "{}", rest.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_future_exp_never_expires_and_panics_nowhere() {
    let (server, _dir) = start();
    let metric = async || {
        let text = get_as(&server, "/metrics", ADMIN_KEY).await.text;
        metric_value(&text, "statecast_ws_connections").unwrap_or(f64::NAN)
    };
    for exp in [
        json!(u64::MAX),
        json!(1e300),
        json!(now_s() + 200 * 365 * 86_400),
    ] {
        let token = jwt(SECRET, json!({"exp": exp}));
        let rest = get_as(&server, "/api/state?match=railhub/%23", &token).await;
        assert_eq!(rest.status, 200, "exp {exp}: {}", rest.text);
        let auth = format!("Bearer {token}");
        let mut ws = Ws::connect_with(server.addr(), "/ws", &[("authorization", &auth)])
            .await
            .unwrap_or_else(|e| panic!("exp {exp}: {e}"));
        ws.ping_pong().await;
        let mut by_message = server.ws().await;
        let result = by_message
            .call(json!({"type": "auth", "id": 1, "token": token}))
            .await;
        assert_eq!(result["ok"], true, "exp {exp}: {result}");
        let stream = sse_as(&server, "/api/stream?match=railhub/%23", &token).await;
        assert_eq!(stream.status().as_u16(), 200, "exp {exp}");
        let (sio, connected) = socketio_connect(&server, &token).await;
        assert!(connected.starts_with("40{"), "exp {exp}: {connected}");
        assert_eq!(metric().await, 2.0, "exp {exp}: the two on /ws");
        drop((ws, by_message, sio, stream));
        within("every connection to be uncounted", async {
            while metric().await != 0.0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_shows_source_details_only_to_an_admin_key_and_never_a_credential() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        r#"
        [[source]]
        name = "cam"
        type = "http_poll"
        url = "http://admin:pw-secret@{closed}/status?apikey=key-secret"
        topic = "cams/door"
        "#
    );
    let config = config(&dir, &source);
    let server = Server::start(&["--config", &config]);
    let failed = within("the source's first failure", async {
        loop {
            let health = get_as(&server, "/api/health", ADMIN_KEY).await.json();
            if health["sources"]["cam"]["error_count"].as_u64() >= Some(1) {
                return health;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let error = failed["sources"]["cam"]["last_error"].as_str().unwrap();
    assert!(error.contains(&format!("{closed}/status?***")), "{failed}");
    for (who, health) in [
        ("no token", server.get("/api/health").await),
        (
            "a bad token",
            get_as(&server, "/api/health", "nobody").await,
        ),
        (
            "a key that is not admin",
            get_as(&server, "/api/health", DASHBOARD_KEY).await,
        ),
    ] {
        assert_eq!(health.status, 200, "{who}: {}", health.text);
        let body = health.json();
        assert!(body["sources"].is_null(), "{who} sees the sources: {body}");
        assert!(
            body["version"].is_string(),
            "{who} gets the summary: {body}"
        );
    }
    let topic = get_as(&server, "/api/state/_sources/cam", ADMIN_KEY).await;
    for shown in [failed.to_string(), topic.text, server.log_text()] {
        assert!(!shown.contains("secret"), "a credential leaked: {shown}");
    }
}
