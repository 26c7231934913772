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
pub mod auth;
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
use std::sync::atomic::Ordering;

use statecast_bridge::Bridge;
use statecast_core::{ErrorCode, HubError};

use crate::auth::{Action, Auth, Caller, Peer};
use statecast_core::Hub;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::metrics::Metrics;

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            heartbeat_ms: 25_000,
            max_frame_bytes: 1 << 20,
            auth: Arc::new(Auth::off()),
            allowed_origins: Vec::new(),
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

impl App {
    /// The caller's grant: its token (a bearer header, or `query` where a transport allows
    /// `?token=`), checked; everything while authentication is off. A refusal is counted and
    /// logged.
    pub fn caller(
        &self,
        headers: &axum::http::HeaderMap,
        query: Option<&str>,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<Caller, HubError> {
        match self.config.auth.grant(headers, query) {
            Ok(Some(grant)) => Ok(Caller { grant, peer }),
            Ok(None) => {
                let e = HubError::new(
                    ErrorCode::Unauthorized,
                    "this hub needs a token: send `Authorization: Bearer <token>`",
                );
                self.refused(peer, &e);
                Err(e)
            }
            Err(e) => {
                self.refused(peer, &e);
                Err(e)
            }
        }
    }

    /// `Ok` if the caller may do `action` on `topic`; else `forbidden`, counted and logged.
    pub fn check(&self, caller: &Caller, action: Action, topic: &str) -> Result<(), HubError> {
        caller
            .grant
            .check(action, topic)
            .inspect_err(|e| self.refused(caller.peer, e))
    }

    /// Counts a refused attempt and logs it, at most once a second (with how many were not
    /// logged), so a flood of bad requests cannot flood the log.
    pub fn refused(&self, peer: Option<std::net::SocketAddr>, e: &HubError) {
        let counter = match e.code {
            ErrorCode::Forbidden => &self.metrics.refused_forbidden,
            _ => &self.metrics.refused_unauthorized,
        };
        Metrics::add(counter, 1);
        // Seconds since start, from 1: the first refusal always differs from the initial 0.
        let now = self.started.elapsed().as_secs() + 1;
        let last = self.metrics.refusal_logged_at.load(Ordering::Relaxed);
        self.metrics
            .refusals_unlogged
            .fetch_add(1, Ordering::Relaxed);
        if now != last
            && self
                .metrics
                .refusal_logged_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let skipped = self.metrics.refusals_unlogged.swap(0, Ordering::Relaxed);
            let peer = peer.map_or_else(|| "?".to_string(), |p| p.to_string());
            tracing::warn!(%peer, skipped = skipped.saturating_sub(1), "refused: {e}");
        }
    }
}

/// Refuses a browser page from another site (cross-site WebSocket hijacking): a request
/// with an `Origin` is allowed when it is the hub's own (same host) or listed in
/// `allowed_origins`. Clients that are not browsers send no `Origin` and pass.
pub fn check_origin(
    app: &App,
    headers: &axum::http::HeaderMap,
    peer: Option<std::net::SocketAddr>,
) -> Result<(), HubError> {
    let Some(origin) = headers
        .get(axum::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok());
    let same_site = origin
        .split_once("://")
        .is_some_and(|(_, rest)| Some(rest) == host);
    let listed = app
        .config
        .allowed_origins
        .iter()
        .any(|o| o == "*" || o.trim_end_matches('/') == origin);
    if same_site || listed {
        return Ok(());
    }
    let e = HubError::new(
        ErrorCode::Forbidden,
        format!("origin {origin} is not allowed (allowed_origins)"),
    );
    app.refused(peer, &e);
    Err(e)
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
        .layer(cors(&app.config.allowed_origins))
        .with_state(app)
}

/// CORS for pages from `allowed_origins` calling the REST API (none listed: no CORS
/// headers, so browsers keep other sites' pages out).
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::POST,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([header::ETAG])
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
        let (tcp, peer) = tokio::select! {
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
        // The peer's address goes with each request, for the log of refused attempts.
        let service = hyper_util::service::TowerToHyperService::new(
            router.clone().layer(axum::Extension(Peer(peer))),
        );
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
