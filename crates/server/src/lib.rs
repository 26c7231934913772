//! statecast's transports around a [`Hub`]: the WebSocket endpoint, the Server-Sent Events
//! stream, the REST API, health and Prometheus metrics. The transports only parse, call the
//! hub and write what it hands them; no state lives here.
//!
//! # Layout
//! - [`ws`]: `/ws`, one task per connection (requests in, batched frames out, heartbeat).
//! - [`sse`]: `/api/stream`, resumable with `Last-Event-ID`.
//! - [`socketio`]: `/socket.io/`, the same protocol as Socket.IO events, plus the event
//!   mappings that let Flask-SocketIO front ends run unchanged.
//! - [`rest`]: `/api/state`, `/api/events`, `/api/commands`, `/api/health`, `/metrics`.
//! - [`assets`]: the dashboard (`/`) and the JavaScript client (`/statecast.js`).
//! - [`error`]: JSON error responses; [`metrics`]: transport counters and the exposition.

pub mod assets;
pub mod auth;
pub mod error;
pub mod metrics;
pub mod rest;
pub mod socketio;
pub mod sse;
pub mod tls;
pub mod ws;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicU64, Ordering};

use statecast_bridge::Bridge;
use statecast_core::{ErrorCode, HubError};

use crate::auth::{Action, Auth, Caller, Peer};
use crate::tls::Tls;
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
    pub limits: Limits,
    /// TLS (and HTTP/2) when given; reloaded on SIGHUP.
    pub tls: Option<Arc<Tls>>,
    /// The Socket.IO endpoint and its event mappings.
    pub socketio: socketio::Mappings,
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
    /// Time to send the request headers.
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
            socketio: socketio::Mappings::default(),
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
    /// Messages and requests per IP address.
    pub per_ip_rate: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    /// Open connections per IP address.
    pub connections: Mutex<HashMap<std::net::IpAddr, usize>>,
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

    /// `Ok` unless `ip` sent more than `messages_per_second_per_ip` (or the connection
    /// `connection` more than `messages_per_second`); else `rate_limited`, counted.
    pub fn check_rate(
        &self,
        ip: Option<std::net::IpAddr>,
        connection: Option<&Slot>,
    ) -> Result<(), HubError> {
        let over_ip = ip.is_some_and(|ip| self.per_ip_rate.check_key(&ip).is_err());
        let over_connection = connection.is_some_and(|slot| !slot.take_message(self));
        if over_ip || over_connection {
            Metrics::add(&self.metrics.rate_limited, 1);
            let which = if over_connection {
                "messages_per_second"
            } else {
                "messages_per_second_per_ip"
            };
            return Err(HubError::new(
                ErrorCode::RateLimited,
                format!("too many messages; slow down ({which})"),
            ));
        }
        Ok(())
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
        match e.code {
            ErrorCode::Forbidden => Metrics::add(&self.metrics.refused_forbidden, 1),
            ErrorCode::Unauthorized => Metrics::add(&self.metrics.refused_unauthorized, 1),
            _ => {}
        }
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

/// One open connection, counted in all and per address while it exists.
pub struct Slot {
    app: std::sync::Weak<App>,
    pub peer: std::net::SocketAddr,
    /// The connection's message budget (`messages_per_second`, bursts as large) by the
    /// generic cell rate algorithm that governor uses: the time, in ns since the server
    /// started, at which the messages taken so far are paid off. Eight bytes here rather
    /// than governor's per-key map entry or its 48-byte direct limiter, in every connection.
    paid_off_at: AtomicU64,
}

impl Slot {
    /// A slot for a new connection from `ip`, unless the limits are reached.
    fn take(app: &Arc<App>, peer: std::net::SocketAddr) -> Option<Slot> {
        let ip = peer.ip();
        let limits = &app.config.limits;
        let mut connections = app.connections.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = app.metrics.connections.load(Ordering::Relaxed) as usize;
        let from_ip = connections.entry(ip).or_insert(0);
        if total >= limits.max_connections || *from_ip >= limits.max_connections_per_ip {
            return None;
        }
        *from_ip += 1;
        Metrics::add(&app.metrics.connections, 1);
        Some(Slot {
            app: Arc::downgrade(app),
            peer,
            paid_off_at: AtomicU64::new(0),
        })
    }

    /// Takes one message from the connection's budget; `false` (and nothing taken) when it
    /// is spent. Only the connection's own task calls it.
    pub fn take_message(&self, app: &App) -> bool {
        let per_second = u64::from(app.config.limits.messages_per_second.max(1));
        let cost = 1_000_000_000 / per_second;
        // A full burst (one second's worth) may be outstanding at once.
        let tolerance = cost * per_second;
        let now = u64::try_from(app.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let paid_off_at = self.paid_off_at.load(Ordering::Relaxed).max(now) + cost;
        if paid_off_at - now > tolerance {
            return false;
        }
        self.paid_off_at.store(paid_off_at, Ordering::Relaxed);
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(app) = self.app.upgrade() else {
            return;
        };
        app.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        let mut connections = app.connections.lock().unwrap_or_else(|e| e.into_inner());
        let ip = self.peer.ip();
        if let Some(n) = connections.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                connections.remove(&ip);
            }
        }
    }
}

/// Reloads the TLS certificate and key on every SIGHUP (open connections keep theirs).
async fn reload_on_sighup(tls: Arc<Tls>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot watch SIGHUP: the TLS certificate will not be reloaded");
            return;
        };
        while hangups.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => tracing::error!("TLS reload failed, the old certificate stays: {e}"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tls;
}

/// Serves one HTTP connection until it ends; at shutdown, finishes the request in progress
/// and closes.
async fn drive<C, E>(
    connection: C,
    mut stopping: watch::Receiver<bool>,
    graceful_shutdown: impl FnOnce(std::pin::Pin<&mut C>),
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = async { stopping.wait_for(|stop| *stop).await.map(|_| ()) } => {
            graceful_shutdown(connection.as_mut());
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("http connection: {e}");
    }
}

/// Answers a connection over the limits with 503 and closes it.
async fn refuse_connection(app: Arc<App>, tcp: tokio::net::TcpStream, peer: std::net::SocketAddr) {
    let e = HubError::new(
        ErrorCode::Unavailable,
        "too many connections (max_connections, max_connections_per_ip)",
    );
    Metrics::add(&app.metrics.refused_connections, 1);
    app.refused(Some(peer), &e);
    let body = serde_json::json!({"error": e.to_json()}).to_string();
    let service = hyper::service::service_fn(move |_| {
        let body = body.clone();
        async move {
            axum::http::Response::builder()
                .status(axum::http::StatusCode::SERVICE_UNAVAILABLE)
                .header(axum::http::header::CONTENT_TYPE, "application/json")
                .header(axum::http::header::CONNECTION, "close")
                .body(axum::body::Body::from(body))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_millis(
            app.config.limits.handshake_timeout_ms,
        ))
        .serve_connection(TokioIo::new(tcp), service);
    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
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

/// The routes of the hub; `socketio` serves the Socket.IO endpoint in front of them.
pub fn router(app: Arc<App>, socketio: Option<socketioxide::layer::SocketIoLayer>) -> Router {
    let body_limit = app.hub.config().max_state_bytes + 64 * 1024;
    let routes = Router::new()
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
        .method_not_allowed_fallback(rest::method_not_allowed);
    // Inside the CORS layer: pages from `allowed_origins` may poll it too.
    let routes = match socketio {
        Some(socketio) => routes.layer(socketio),
        None => routes,
    };
    routes
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
    bridge: Arc<Bridge>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopped) = watch::channel(false);
    // The heartbeat: one timer wakes every connection (see `ws.rs`).
    let period = Duration::from_millis(config.heartbeat_ms.max(1));
    let beating = hub.clone();
    let (app_tx, app_rx) = tokio::sync::oneshot::channel::<Arc<App>>();
    let ticker = tokio::spawn(async move {
        let Ok(app) = app_rx.await else { return };
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            beating.tick_clients();
            // Addresses quiet for a while hold no rate state.
            app.per_ip_rate.retain_recent();
        }
    });
    let per_ip_rate = governor::RateLimiter::keyed(governor::Quota::per_second(
        std::num::NonZeroU32::new(config.limits.messages_per_second_per_ip)
            .unwrap_or(std::num::NonZeroU32::MIN),
    ));
    let app = Arc::new(App {
        per_ip_rate,
        connections: Mutex::new(HashMap::new()),
        hub: hub.clone(),
        bridge,
        commands_in_flight: Arc::new(Semaphore::new(MAX_COMMANDS_IN_FLIGHT)),
        config,
        metrics: Metrics::default(),
        started: Instant::now(),
        shutdown: stopped,
    });
    let _ = app_tx.send(Arc::clone(&app));
    let reloader = app
        .config
        .tls
        .clone()
        .map(|tls| tokio::spawn(reload_on_sighup(tls)));
    let socketio = app.config.socketio.enabled.then(|| socketio::layer(&app));
    let router = router(Arc::clone(&app), socketio);
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
        let Some(slot) = Slot::take(&app, peer) else {
            tokio::spawn(refuse_connection(Arc::clone(&app), tcp, peer));
            continue;
        };
        // The peer's address and its connection slot go with each request: for the log of
        // refused attempts, and so that a WebSocket keeps the slot after the upgrade.
        let peer = Peer(peer, Arc::new(slot));
        let routes = router.clone();
        let service = hyper_util::service::TowerToHyperService::new(tower::service_fn(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(peer.clone());
                // A router is always ready: no `poll_ready` needed before `call`.
                tower::Service::call(&mut routes.clone(), request)
            },
        ));
        let open = Arc::clone(&open_connections);
        open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stopping = app.shutdown.clone();
        let handshake = Duration::from_millis(app.config.limits.handshake_timeout_ms);
        match &app.config.tls {
            None => {
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(handshake)
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades();
                tokio::spawn(async move {
                    drive(connection, stopping, |c| c.graceful_shutdown()).await;
                    open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                });
            }
            Some(tls) => {
                let acceptor = tls.acceptor();
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                        // HTTP/2 or HTTP/1.1 (with WebSocket upgrades), as ALPN chose.
                        Ok(Ok(stream)) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => {
                            let connection = hyper::server::conn::http2::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .timer(hyper_util::rt::TokioTimer::new())
                            .serve_connection(TokioIo::new(stream), service);
                            drive(connection, stopping, |c| c.graceful_shutdown()).await;
                        }
                        Ok(Ok(stream)) => {
                            let connection = hyper::server::conn::http1::Builder::new()
                                .timer(hyper_util::rt::TokioTimer::new())
                                .header_read_timeout(handshake)
                                .serve_connection(TokioIo::new(stream), service)
                                .with_upgrades();
                            drive(connection, stopping, |c| c.graceful_shutdown()).await;
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake: {e}"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                    open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                });
            }
        }
    }
    drop(listener);
    app.bridge.stop();
    let _ = stop.send(true);
    // WebSockets and SSE streams see `closed` on their next drain and end. Socket.IO
    // connections are left to drop with the process: a Socket.IO or engine.io close would
    // tell clients that the server meant it, and some (python-socketio) would then not
    // reconnect by themselves once the hub is back.
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
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    hub.shutdown();
    Ok(())
}
