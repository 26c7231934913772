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
use hyper_util::rt::TokioIo;
use statecast_bridge::Bridge;
use statecast_core::Hub;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

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

/// Commands awaiting a device's answer, across all connections; more are refused.
const MAX_COMMANDS_IN_FLIGHT: usize = 1024;

/// What every handler shares.
pub struct App {
    pub hub: Hub,
    /// Sources' health and the command routes.
    pub bridge: Arc<Bridge>,
    pub commands_in_flight: Arc<Semaphore>,
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
/// 1001, ends SSE streams and makes every accepted write durable. `bridge` answers commands
/// and reports its sources' health.
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    bridge: Bridge,
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
        bridge: Arc::new(bridge),
        commands_in_flight: Arc::new(Semaphore::new(MAX_COMMANDS_IN_FLIGHT)),
        config,
        metrics: Metrics::default(),
        started: Instant::now(),
        shutdown: stopped,
    });
    let router = router(Arc::clone(&app));
    // HTTP/1.1 served by hyper directly (not `axum::serve`, whose auto-detecting builder
    // wraps the socket): an upgraded WebSocket then gets its own `TcpStream` back.
    let open_connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Pushes are small and latency matters: no Nagle delay.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let mut stopping = app.shutdown.clone();
        let open = Arc::clone(&open_connections);
        open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = async { stopping.wait_for(|stop| *stop).await.map(|_| ()) } => {
                    // Finish the request in progress, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!("http connection: {e}");
            }
            open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
    drop(listener);
    app.bridge.stop();
    let _ = stop.send(true);
    // WebSockets and SSE streams see `closed` on their next drain and end.
    hub.close_clients();
    // Give connections a moment to finish: requests in progress, WebSocket close frames.
    let deadline = Instant::now() + Duration::from_secs(3);
    while (app
        .metrics
        .ws_connections
        .load(std::sync::atomic::Ordering::Relaxed)
        > 0
        || open_connections.load(std::sync::atomic::Ordering::Relaxed) > 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ticker.abort();
    hub.shutdown();
    Ok(())
}
