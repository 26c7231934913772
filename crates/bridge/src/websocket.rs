//! The `websocket` source: an upstream JSON event stream (a music server's `/mopidy/ws`, say).
//! After each connect it sends `send_on_open` (requests for the current state), then turns
//! every message into a write by its rules. A silent upstream is pinged, and dropped when
//! it does not answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use statecast_core::Hub;
use tokio_tungstenite::tungstenite::Message;

use crate::config::WebSocketConfig;
use crate::health::Health;
use crate::rules::Rules;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct WebSocketSource {
    hub: Hub,
    health: Arc<Health>,
    url: String,
    send_on_open: Vec<String>,
    rules: Rules,
    ping_every: Duration,
}

impl WebSocketSource {
    pub fn new(
        hub: Hub,
        health: Arc<Health>,
        c: WebSocketConfig,
    ) -> Result<WebSocketSource, String> {
        let url = reqwest::Url::parse(&c.url).map_err(|e| format!("url {:?}: {e}", c.url))?;
        if !matches!(url.scheme(), "ws" | "wss") {
            return Err(format!(
                "url {:?}: the scheme must be ws:// or wss://",
                c.url
            ));
        }
        Ok(WebSocketSource {
            hub,
            health,
            url: c.url,
            send_on_open: c.send_on_open.iter().map(|m| m.to_string()).collect(),
            rules: Rules::new(&c.topic, &c.rules)?,
            ping_every: Duration::from_millis(c.ping_interval_ms.max(1)),
        })
    }

    /// One connection, until it ends.
    pub async fn run(self: Arc<Self>) -> Result<(), String> {
        let started = Instant::now();
        let connecting = tokio_tungstenite::connect_async(self.url.as_str());
        let (mut socket, _) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| format!("{}: no connection within {CONNECT_TIMEOUT:?}", self.url))?
            .map_err(|e| format!("{}: {e}", self.url))?;
        for message in &self.send_on_open {
            socket
                .send(Message::text(message.as_str()))
                .await
                .map_err(|e| format!("{}: {e}", self.url))?;
        }
        self.health.ok(Some(started.elapsed())).await;
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + self.ping_every,
            self.ping_every,
        );
        let mut silent_periods = 0;
        loop {
            let message = tokio::select! {
                message = socket.next() => message,
                _ = ping.tick() => {
                    silent_periods += 1;
                    if silent_periods > 2 {
                        return Err(format!("{}: no answer to pings", self.url));
                    }
                    socket.send(Message::Ping(Default::default())).await
                        .map_err(|e| format!("{}: {e}", self.url))?;
                    continue;
                }
            };
            silent_periods = 0;
            let text = match message {
                None => return Err(format!("{}: the connection ended", self.url)),
                Some(Err(e)) => return Err(format!("{}: {e}", self.url)),
                Some(Ok(Message::Close(frame))) => {
                    let why = frame
                        .map(|f| format!(" ({} {})", f.code, f.reason))
                        .unwrap_or_default();
                    return Err(format!(
                        "{}: the upstream closed the connection{why}",
                        self.url
                    ));
                }
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
            };
            match self.rules.apply_text(&text) {
                Ok(Some(output)) => match output.write(&self.hub).await {
                    Ok(_) => self.health.ok(None).await,
                    Err(e) => self.health.rejected(&e.to_string()).await,
                },
                Ok(None) => {}
                Err(e) => self.health.rejected(&e).await,
            }
        }
    }
}
