//! Shared helpers of the integration tests: the real `statecast` binary on an ephemeral
//! port, a WebSocket client with timeouts, a raw (hand-made) WebSocket over TCP, HTTP
//! helpers and an RFC 7396 merge-patch apply to follow a stream of patches.
//!
//! Every wait is bounded by [`TIMEOUT`]: a test that would hang fails instead. Nothing here
//! sleeps to synchronise.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// The longest any single wait of a test may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long the binary may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `fut`, failing the test with `what` if it takes longer than [`TIMEOUT`].
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {TIMEOUT:?} waiting for {what}"),
    }
}

// ---------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------

/// A running `statecast serve` on `127.0.0.1:0` with its own data directory. Killed (by its
/// own PID) when dropped.
pub struct Server {
    child: Option<Child>,
    pid: u32,
    addr: String,
    dir: tempfile::TempDir,
    args: Vec<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the binary with `extra` arguments after `serve --listen .. --data-dir ..`.
    pub fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, addr, log) = launch(dir.path(), &args);
        Server {
            pid: child.id(),
            child: Some(child),
            addr,
            dir,
            args,
            log,
        }
    }

    /// Starts the binary again on the same data directory (and arguments), after the
    /// previous process ended (it is killed first if it still runs). The port changes.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let (child, addr, log) = launch(self.dir.path(), &self.args);
        self.pid = child.id();
        self.child = Some(child);
        self.addr = addr;
        self.log = log;
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The HTTP base URL, `http://127.0.0.1:PORT`.
    pub fn http(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.http(), path)
    }

    /// What the server wrote to stderr so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits (bounded) until the server has logged a line containing `text`.
    pub async fn wait_log(&self, text: &str) {
        within(&format!("{text:?} in the log"), async {
            while !self.log_text().contains(text) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    /// `kill -9`: the process gets no chance to clean up.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("server is running");
        child.kill().expect("SIGKILL the server");
        let status = child.wait().expect("reap the server");
        assert!(
            !status.success(),
            "a SIGKILLed server cannot exit 0: {status:?}"
        );
    }

    /// Sends SIGTERM (the process keeps running until it has shut down).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", self.pid);
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let pid = self.pid;
        let waiting = tokio::task::spawn_blocking(move || child.wait());
        match tokio::time::timeout(Duration::from_secs(15), waiting).await {
            Ok(joined) => joined.expect("join").expect("wait for the server"),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!(
                    "the server did not exit within 15 s; log:\n{}",
                    self.log_text()
                );
            }
        }
    }

    /// The server's resident set size in KiB, from /proc/<pid>/status.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read /proc/<pid>/status");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .expect("VmRSS line");
        line.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("VmRSS value")
    }

    // --- HTTP -------------------------------------------------------------------------

    pub async fn get(&self, path: &str) -> Resp {
        Resp::read(http_client().get(self.url(path)).send().await).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        Resp::read(http_client().put(self.url(path)).json(body).send().await).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        Resp::read(http_client().patch(self.url(path)).json(body).send().await).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        Resp::read(http_client().delete(self.url(path)).send().await).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        Resp::read(http_client().post(self.url(path)).json(body).send().await).await
    }

    /// Sends a request built on [`http_client`].
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Resp {
        Resp::read(request.send().await).await
    }

    /// `GET /api/state?match=#` as a JSON value: the whole published state.
    pub async fn all_state(&self) -> Value {
        let resp = self.get("/api/state").await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        resp.json()
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let resp = self.get("/metrics").await;
        assert_eq!(resp.status, 200);
        resp.text
    }

    /// The value of an unlabelled metric.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        metric_value(&text, name).unwrap_or_else(|| panic!("metric {name} missing:\n{text}"))
    }

    /// Opens a WebSocket and reads its `welcome`.
    pub async fn ws(&self) -> Ws {
        Ws::connect(&self.addr).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
            let tail = &log[log.len().saturating_sub(40)..];
            eprintln!("--- statecast stderr (last {} lines) ---", tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

/// Spawns the binary, waits for its `listening on http://ADDR` line and keeps draining its
/// stderr in a background thread.
fn launch(dir: &std::path::Path, args: &[String]) -> (Child, String, Arc<Mutex<Vec<String>>>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_statecast"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STATECAST_") {
            command.env_remove(key);
        }
    }
    command
        .env("STATECAST_LOG", "info")
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn the statecast binary");
    let stderr = child.stderr.take().expect("stderr pipe");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let thread_log = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let rest = line
                .split("listening on http://")
                .nth(1)
                .or_else(|| line.split("listening on https://").nth(1));
            let addr: Option<String> =
                rest.map(|rest| rest.chars().take_while(|c| !c.is_whitespace()).collect());
            // Logged before the address is handed over: a test that has the address sees
            // the line that announced it.
            thread_log.lock().unwrap().push(line);
            if let Some(addr) = addr
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr);
            }
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(addr) => (child, addr, log),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "statecast did not report `listening on` within {START_TIMEOUT:?}; stderr:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
    }
}

/// The value of an unlabelled metric line `name value`.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(name))
            .then(|| parts.next()?.parse().ok())
            .flatten()
    })
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

/// A reqwest client that never goes through a proxy.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .build()
        .expect("reqwest client")
}

/// A whole HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub async fn read(result: reqwest::Result<reqwest::Response>) -> Resp {
        let response = result.expect("HTTP request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("HTTP body");
        Resp {
            status,
            headers,
            text,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error code of a JSON error body.
    pub fn error_code(&self) -> String {
        let body = self.json();
        body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error body: {body}"))
            .to_owned()
    }
}

// ---------------------------------------------------------------------------------------
// WebSocket (tokio-tungstenite)
// ---------------------------------------------------------------------------------------

/// A TCP connection to `addr` with a small receive buffer (SO_RCVBUF), so that a client
/// that stops reading stalls the server's writes early.
pub async fn tcp_small_buffer(addr: &str, recv_buffer: u32) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(recv_buffer).expect("SO_RCVBUF");
    within(
        "a TCP connection",
        socket.connect(addr.parse().expect("socket address")),
    )
    .await
    .expect("TCP connect")
}

/// A WebSocket client; every read is bounded by [`TIMEOUT`].
pub struct Ws {
    pub stream: WebSocketStream<TcpStream>,
    /// The `welcome` the server sent first.
    pub welcome: Value,
}

impl Ws {
    /// Connects to `/ws` at `addr` (`127.0.0.1:PORT`) and reads the `welcome`.
    pub async fn connect(addr: &str) -> Ws {
        let tcp = within("a TCP connection", TcpStream::connect(addr))
            .await
            .expect("TCP connect");
        Ws::over(tcp, addr).await
    }

    /// Like [`Ws::connect`], with a small TCP receive buffer (SO_RCVBUF) so that a client
    /// that stops reading stalls the server's writes early.
    pub async fn connect_small_buffer(addr: &str, recv_buffer: u32) -> Ws {
        Ws::over(tcp_small_buffer(addr, recv_buffer).await, addr).await
    }

    async fn over(tcp: TcpStream, addr: &str) -> Ws {
        Ws::handshake(tcp, addr, "/ws", &[])
            .await
            .expect("WebSocket handshake")
    }

    /// Connects to `path` (`/ws?token=..`) with extra request `headers`; the handshake's
    /// error (a refused upgrade: `Error::Http` with the response) is returned, not a panic.
    pub async fn connect_with(
        addr: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let tcp = within("a TCP connection", TcpStream::connect(addr))
            .await
            .expect("TCP connect");
        Ws::handshake(tcp, addr, path, headers).await
    }

    async fn handshake(
        tcp: TcpStream,
        addr: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        tcp.set_nodelay(true).expect("TCP_NODELAY");
        let mut request = format!("ws://{addr}{path}")
            .into_client_request()
            .expect("a WebSocket request");
        for (name, value) in headers {
            request.headers_mut().insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                value.parse().expect("header value"),
            );
        }
        let (stream, response) = within(
            "the WebSocket handshake",
            tokio_tungstenite::client_async(request, tcp),
        )
        .await?;
        assert_eq!(response.status().as_u16(), 101);
        let mut ws = Ws {
            stream,
            welcome: Value::Null,
        };
        let welcome = ws.recv_json().await;
        assert_eq!(welcome["type"], "welcome", "first message: {welcome}");
        ws.welcome = welcome;
        Ok(ws)
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        within("a send", self.stream.send(Message::text(text.into())))
            .await
            .expect("WebSocket send");
    }

    pub async fn send_json(&mut self, message: &Value) {
        self.send_text(message.to_string()).await;
    }

    /// The next data or close message (pings and pongs are skipped; tungstenite answers
    /// pings by itself).
    pub async fn recv(&mut self) -> Message {
        loop {
            match within("a message from the server", self.stream.next()).await {
                None => panic!("the server ended the connection"),
                Some(Err(e)) => panic!("WebSocket read error: {e}"),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(message)) => return message,
            }
        }
    }

    /// The next message, which must be a JSON text frame.
    pub async fn recv_json(&mut self) -> Value {
        match self.recv().await {
            Message::Text(text) => serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("server sent invalid JSON ({e}): {text}")),
            other => panic!("expected a JSON text frame, got {other:?}"),
        }
    }

    /// Reads messages up to and including the first for which `done` is true.
    pub async fn recv_until(&mut self, mut done: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let message = self.recv_json().await;
            let last = done(&message);
            seen.push(message);
            if last {
                return seen;
            }
        }
    }

    /// Sends `message` (which must carry an `id`) and reads up to its `result`; returns
    /// everything read, the `result` last.
    pub async fn request(&mut self, message: Value) -> Vec<Value> {
        let id = message["id"].clone();
        assert!(!id.is_null(), "request without id: {message}");
        self.send_json(&message).await;
        self.recv_until(|m| m["type"] == "result" && m["id"] == id)
            .await
    }

    /// Like [`Ws::request`], asserting that nothing arrived before the `result`.
    pub async fn call(&mut self, message: Value) -> Value {
        let mut seen = self.request(message).await;
        let result = seen.pop().expect("a result");
        assert!(
            seen.is_empty(),
            "unexpected messages before the result: {seen:?}"
        );
        result
    }

    /// A `ping` whose `pong` must be the very next message: the connection is usable and
    /// nothing else was queued for it.
    pub async fn ping_pong(&mut self) {
        self.send_json(&json!({"type": "ping", "id": "pp"})).await;
        assert_eq!(self.recv_json().await, json!({"type": "pong", "id": "pp"}));
    }

    /// Reads until the server's close frame (text frames in between fail the test).
    pub async fn recv_close(&mut self) -> Option<CloseFrame> {
        loop {
            match within("a close frame", self.stream.next()).await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(Message::Text(text))) => panic!("expected a close frame, got {text}"),
                Some(Ok(_)) => continue,
                None => panic!("the connection ended without a close frame"),
                Some(Err(e)) => panic!("error before a close frame: {e}"),
            }
        }
    }
}

/// The close code of a close frame.
pub fn close_code(frame: &Option<CloseFrame>) -> u16 {
    u16::from(frame.as_ref().expect("a close frame with a code").code)
}

// ---------------------------------------------------------------------------------------
// Raw WebSocket over TCP (for what tungstenite will not do: invalid frames, silence)
// ---------------------------------------------------------------------------------------

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A WebSocket whose handshake and frames are written by hand.
pub struct RawWs {
    pub tcp: TcpStream,
}

impl RawWs {
    /// Connects and upgrades `/ws` by hand (RFC 6455's sample key).
    pub async fn connect(addr: &str) -> RawWs {
        let mut tcp = within("a TCP connection", TcpStream::connect(addr))
            .await
            .expect("TCP connect");
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes())
            .await
            .expect("write the upgrade");
        // Byte by byte, so nothing after the head (the welcome frame) is consumed.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let byte = within("the upgrade response", tcp.read_u8())
                .await
                .expect("read the upgrade response");
            head.push(byte);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "upgrade refused: {head}");
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "bad accept key: {head}"
        );
        RawWs { tcp }
    }

    /// Writes one final, masked frame.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        self.send_raw_frame(true, opcode, payload).await;
    }

    /// Writes one masked frame; `fin: false` starts or continues a fragmented message
    /// (opcode 0 for continuations).
    pub async fn send_raw_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.try_send_raw_frame(fin, opcode, payload)
            .await
            .expect("write a frame");
    }

    /// Like [`RawWs::send_raw_frame`], returning the write error (a reset connection).
    pub async fn try_send_raw_frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if len <= 0xffff {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&frame).await
    }

    /// Reads one frame as `(opcode, payload)`; `None` once the server has ended the
    /// connection (EOF or reset).
    pub async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        within("a frame from the server", async {
            let mut head = [0u8; 2];
            self.tcp.read_exact(&mut head).await.ok()?;
            let opcode = head[0] & 0x0f;
            let masked = head[1] & 0x80 != 0;
            let mut len = u64::from(head[1] & 0x7f);
            if len == 126 {
                len = u64::from(self.tcp.read_u16().await.ok()?);
            } else if len == 127 {
                len = self.tcp.read_u64().await.ok()?;
            }
            let mut mask = [0u8; 4];
            if masked {
                self.tcp.read_exact(&mut mask).await.ok()?;
            }
            let mut payload = vec![0u8; len as usize];
            self.tcp.read_exact(&mut payload).await.ok()?;
            if masked {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
            }
            Some((opcode, payload))
        })
        .await
    }

    /// Reads until the connection ends: `Ok(frames read)` on a clean end of stream (FIN),
    /// `Err` when it breaks off (a reset, as when the server drops a socket with unread
    /// data).
    pub async fn read_to_end(&mut self) -> std::io::Result<usize> {
        let mut buffer = vec![0u8; 64 << 10];
        let mut bytes = 0;
        loop {
            let n = within("the end of the connection", self.tcp.read(&mut buffer)).await?;
            if n == 0 {
                return Ok(bytes);
            }
            bytes += n;
        }
    }

    /// Reads (skipping data, pings, pongs) until the server's close frame; returns its code,
    /// or `None` if the connection ended without one.
    pub async fn read_close_code(&mut self) -> Option<u16> {
        loop {
            let (opcode, payload) = self.read_frame().await?;
            if opcode == OP_CLOSE {
                assert!(payload.len() >= 2, "close frame without a code");
                return Some(u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Following a topic: RFC 7396 and the delivery rules
// ---------------------------------------------------------------------------------------

/// Applies an RFC 7396 merge patch.
pub fn merge_apply(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("an object");
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_apply(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// A client's copy of one topic, kept from `snapshot`/`patch`/`removed` messages while
/// checking the delivery rules (a patch is always previous rev + 1; revs never go back).
#[derive(Debug, Default)]
pub struct Follower {
    pub rev: u64,
    /// `None` until the first snapshot, or after `removed`.
    pub state: Option<Value>,
    pub snapshots: usize,
    pub patches: usize,
    pub lagged: usize,
}

impl Follower {
    /// Takes one message about the followed topic (or `lagged`); panics on a rule broken.
    pub fn take(&mut self, message: &Value) {
        let rev = message["rev"].as_u64();
        match message["type"].as_str() {
            Some("snapshot") => {
                let rev = rev.expect("snapshot rev");
                assert!(rev >= self.rev, "snapshot rev {rev} after rev {}", self.rev);
                self.rev = rev;
                self.state = Some(message["state"].clone());
                self.snapshots += 1;
            }
            Some("patch") => {
                let rev = rev.expect("patch rev");
                assert_eq!(rev, self.rev + 1, "patch out of order: {message}");
                let state = self.state.as_mut().expect("a patch before any snapshot");
                merge_apply(state, &message["patch"]);
                self.rev = rev;
                self.patches += 1;
            }
            Some("removed") => {
                let rev = rev.expect("removed rev");
                assert!(rev > self.rev, "removed rev {rev} after rev {}", self.rev);
                self.rev = rev;
                self.state = None;
            }
            Some("lagged") => self.lagged += 1,
            _ => panic!("unexpected message for a followed topic: {message}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server-Sent Events
// ---------------------------------------------------------------------------------------

/// One dispatched SSE event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
    /// The `id:` field carried by this event, if any.
    pub id: Option<String>,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {}", self.data))
    }
}

/// A small SSE parser over a streaming reqwest response.
pub struct Sse {
    response: reqwest::Response,
    buffer: Vec<u8>,
    event: String,
    data: Vec<String>,
    id: Option<String>,
    /// The last `id:` seen, like a browser's `lastEventId`.
    pub last_id: Option<String>,
}

impl Sse {
    /// `GET /api/stream?match=<patterns..>`, with `Last-Event-ID` when given.
    pub async fn open(server: &Server, patterns: &[&str], last_event_id: Option<&str>) -> Sse {
        let query: Vec<(&str, &str)> = patterns.iter().map(|p| ("match", *p)).collect();
        // No overall timeout: the stream stays open; each read below is bounded.
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let mut request = client
            .get(server.url("/api/stream"))
            .query(&query)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = within("the SSE response", request.send())
            .await
            .expect("SSE request");
        Sse::from_response(response, last_event_id)
    }

    /// The stream of a `GET /api/stream` answered 200.
    pub fn from_response(response: reqwest::Response, last_event_id: Option<&str>) -> Sse {
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Sse {
            response,
            buffer: Vec::new(),
            event: String::new(),
            data: Vec::new(),
            id: None,
            last_id: last_event_id.map(str::to_owned),
        }
    }

    /// The next event with data (comments and id-only blocks are consumed on the way).
    pub async fn next(&mut self) -> SseEvent {
        loop {
            while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                let line = String::from_utf8(line).expect("SSE is UTF-8");
                if let Some(event) = self.line(&line) {
                    return event;
                }
            }
            let chunk = within("an SSE chunk", self.response.chunk())
                .await
                .expect("SSE read")
                .expect("the SSE stream ended");
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// Reads until the server ends the stream; returns the events still received, or the
    /// error if the stream broke off instead of ending cleanly.
    pub async fn until_end(&mut self) -> Result<Vec<SseEvent>, reqwest::Error> {
        let mut events = Vec::new();
        loop {
            match within("the end of the SSE stream", self.response.chunk()).await? {
                None => return Ok(events),
                Some(chunk) => {
                    self.buffer.extend_from_slice(&chunk);
                    while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                        let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                        line.pop();
                        let line = String::from_utf8(line).expect("SSE is UTF-8");
                        events.extend(self.line(line.trim_end_matches('\r')));
                    }
                }
            }
        }
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            let id = self.id.take();
            if id.is_some() {
                self.last_id = id.clone();
            }
            if data.is_empty() {
                return None;
            }
            return Some(SseEvent {
                event: if event.is_empty() {
                    "message".into()
                } else {
                    event
                },
                data: data.join("\n"),
                id,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => self.data.push(value.to_owned()),
            "id" => self.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}
