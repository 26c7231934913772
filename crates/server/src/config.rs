//! The transports' settings ([`ServerConfig`], [`Limits`]) and their defaults.

use std::sync::Arc;

use statecast_core::Pattern;

use crate::auth::Auth;
use crate::socketio::Mappings;
use crate::tls::Tls;

/// Settings of the transports.
#[derive(Clone)]
pub struct ServerConfig {
    /// Interval of WebSocket pings (and SSE keep-alive comments).
    pub heartbeat_ms: u64,
    /// Largest WebSocket message accepted (after reassembly).
    pub max_frame_bytes: usize,
    /// Credentials; [`Auth::off`] lets everyone do everything.
    pub auth: Arc<Auth>,
    /// Origins (`https://host[:port]`) whose pages may open WebSockets and SSE streams,
    /// besides the hub's own; `*` allows any.
    pub allowed_origins: Vec<String>,
    pub limits: Limits,
    /// TLS (and HTTP/2) when given; reloaded on SIGHUP.
    pub tls: Option<Arc<Tls>>,
    /// The Socket.IO endpoint and its event mappings.
    pub socketio: Mappings,
    /// The hub's own topics, which only the hub itself writes: a client's write or event on
    /// one is refused (`forbidden`) whatever its grant. By default the sources' health,
    /// `_sources/#`; an embedder adds what it owns (the config's entities, say).
    pub reserved: Vec<Pattern>,
}

/// What one client or address may take of the hub.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections in all, and from one IP address; more get HTTP 503.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Subscription patterns one WebSocket may hold.
    pub max_subscriptions: usize,
    /// Messages per second one WebSocket may send (bursts as large).
    pub messages_per_second: u32,
    /// WebSocket messages and REST requests per second from one IP address.
    pub messages_per_second_per_ip: u32,
    /// Time to send a request's headers, and as long again for its body; an idle
    /// keep-alive connection is closed after it too.
    pub handshake_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 16_000,
            max_connections_per_ip: 16_000,
            max_subscriptions: 1_000,
            messages_per_second: 10_000,
            messages_per_second_per_ip: 100_000,
            handshake_timeout_ms: 10_000,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            heartbeat_ms: 25_000,
            max_frame_bytes: 1 << 20,
            auth: Arc::new(Auth::off()),
            allowed_origins: Vec::new(),
            limits: Limits::default(),
            tls: None,
            socketio: Mappings::default(),
            reserved: vec![
                Pattern::new(statecast_bridge::HEALTH_TOPICS)
                    .unwrap_or_else(|_| unreachable!("_sources/# is a pattern")),
            ],
        }
    }
}
