//! statecast's transports around a [`Hub`]: the WebSocket endpoint, the Server-Sent Events
//! stream, the REST API, health and Prometheus metrics. The transports only parse, call the
//! hub and write what it hands them; no state lives here.
//!
//! # Layout
//! - [`ws`]: `/ws`, one task per connection (requests in, batched frames out, heartbeat).
//! - [`request`]: parsing and validating client messages.
//! - [`sse`]: `/api/stream`, resumable with `Last-Event-ID`.
//! - [`rest`]: `/api/state`, `/api/events`, `/api/commands`, `/api/health`, `/metrics`.
//! - [`assets`]: the dashboard (`/`) and the JavaScript client (`/statecast.js`).
//! - [`error`]: JSON error responses; [`metrics`]: transport counters and the exposition.

pub mod assets;
pub mod error;
pub mod metrics;
pub mod request;
pub mod rest;
pub mod sse;
pub mod ws;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use statecast_core::Hub;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Settings of the transports.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Interval of WebSocket pings (and SSE keep-alive comments).
    pub heartbeat_ms: u64,
    /// Largest WebSocket message accepted (after reassembly).
    pub max_frame_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            heartbeat_ms: 25_000,
            max_frame_bytes: 1 << 20,
        }
    }
}

/// What every handler shares.
pub struct App {
    pub hub: Hub,
    pub config: ServerConfig,
    pub metrics: Metrics,
    pub started: Instant,
    /// Turns `true` when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
}

/// The routes of the hub.
pub fn router(app: Arc<App>) -> Router {
    let body_limit = app.hub.config().max_state_bytes + 64 * 1024;
    Router::new()
        .route("/", get(assets::dashboard))
        .route("/statecast.js", get(assets::client_js))
        .route("/ws", get(ws::upgrade))
        .route("/api/state", get(rest::list_state))
        .route(
            "/api/state/{*topic}",
            get(rest::get_state)
                .put(rest::put_state)
                .patch(rest::patch_state)
                .delete(rest::delete_state),
        )
        .route("/api/events/{*topic}", post(rest::post_event))
        .route("/api/commands/{*target}", post(rest::post_command))
        .route("/api/stream", get(sse::stream))
        .route("/api/health", get(rest::health))
        .route("/metrics", get(rest::metrics))
        .fallback(rest::not_found)
        .method_not_allowed_fallback(rest::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(app)
}

/// Serves `hub` on `listener` until `shutdown` resolves, then closes every WebSocket with
/// 1001, ends SSE streams and makes every accepted write durable.
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopped) = watch::channel(false);
    // The heartbeat: one timer wakes every connection (see `ws.rs`).
    let period = Duration::from_millis(config.heartbeat_ms.max(1));
    let beating = hub.clone();
    let ticker = tokio::spawn(async move {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            beating.tick_clients();
        }
    });
    let app = Arc::new(App {
        hub: hub.clone(),
        config,
        metrics: Metrics::default(),
        started: Instant::now(),
        shutdown: stopped,
    });
    let closing = hub.clone();
    // Pushes are small and latency matters: no Nagle delay.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
    });
    let result = axum::serve(listener, router(Arc::clone(&app)))
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop.send(true);
            // WebSockets and SSE streams see `closed` on their next drain and end.
            closing.close_clients();
        })
        .await;
    // Upgraded connections outlive the HTTP server; give them a moment to send their close.
    let deadline = Instant::now() + Duration::from_secs(3);
    while app
        .metrics
        .ws_connections
        .load(std::sync::atomic::Ordering::Relaxed)
        > 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ticker.abort();
    hub.shutdown();
    result
}
