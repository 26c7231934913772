//! A WebSocket client of `/ws` (tokio-tungstenite) that reads the `welcome` first and
//! bounds every read by [`TIMEOUT`](crate::TIMEOUT), with shortcuts for the protocol's
//! request and result.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::wait::within;

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
