//! The accept loop: one task per TCP connection, HTTP/1.1 or (over TLS, as ALPN chose)
//! HTTP/2 served by hyper directly, each connection counted in a [`Slot`] that also holds
//! its message budget; over the limits, a connection gets 503. A request has
//! `handshake_timeout_ms` for its headers (hyper's timer, which also ends an idle
//! keep-alive connection) and as long again for its body (`deadline.rs`); every request
//! head of an HTTP/1.1 connection is checked before hyper parses it (`head.rs`). [`serve`] also runs the
//! heartbeat and, at shutdown, closes what is open.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use statecast_bridge::Bridge;
use statecast_core::{ErrorCode, Hub, HubError};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
use crate::config::ServerConfig;
use crate::head::{HeadCheck, Refusals};
use crate::metrics::Metrics;
use crate::tls::Tls;
use crate::{deadline, routes, socketio};

/// The peer's address and its connection's slot, in every request's extensions from the
/// accept loop.
#[derive(Clone)]
pub struct Peer(pub std::net::SocketAddr, pub Arc<Slot>);

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
    pub(crate) fn take(app: &Arc<App>, peer: std::net::SocketAddr) -> Option<Slot> {
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
    pub(crate) fn take_message(&self, app: &App) -> bool {
        let now = u64::try_from(app.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        take_from_budget(
            &self.paid_off_at,
            app.config.limits.messages_per_second,
            now,
        )
    }
}

/// The generic cell rate algorithm over `paid_off_at` (see [`Slot`]): takes one of
/// `per_second` messages at `now` (ns), with bursts of up to one second's worth.
fn take_from_budget(paid_off_at: &AtomicU64, per_second: u32, now: u64) -> bool {
    let per_second = u64::from(per_second.max(1));
    let cost = 1_000_000_000 / per_second;
    // A full burst (one second's worth) may be outstanding at once.
    let tolerance = cost * per_second;
    let paid_off_at_next = paid_off_at.load(Ordering::Relaxed).max(now) + cost;
    if paid_off_at_next - now > tolerance {
        return false;
    }
    paid_off_at.store(paid_off_at_next, Ordering::Relaxed);
    true
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

/// The heartbeat: one timer wakes every connection (see `ws/mod.rs`); it also lets
/// addresses quiet for a while drop their rate state.
async fn heartbeat(app: Arc<App>) {
    let period = Duration::from_millis(app.config.heartbeat_ms.max(1));
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        app.hub.tick_clients();
        app.per_ip_rate.retain_recent();
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

/// How every HTTP/1.1 connection is served: `handshake` for each request's head (which also
/// ends an idle keep-alive connection). The stream it is given is a `HeadCheck`, so that
/// every head hyper parses was checked first (`head.rs`).
fn http1(handshake: Duration) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(handshake);
    builder
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
    let app = Arc::new(App::new(hub.clone(), bridge, config, stopped));
    let ticker = tokio::spawn(heartbeat(Arc::clone(&app)));
    let reloader = app
        .config
        .tls
        .clone()
        .map(|tls| tokio::spawn(reload_on_sighup(tls)));
    let socketio = app.config.socketio.enabled.then(|| socketio::layer(&app));
    let router = routes::router(Arc::clone(&app), socketio);
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
        let body_limit = Duration::from_millis(app.config.limits.handshake_timeout_ms);
        // What the connection's `HeadCheck` (HTTP/1.1) refused, answered in order here.
        let refusals = Arc::new(Refusals::default());
        let refused = Arc::clone(&refusals);
        let service = hyper_util::service::TowerToHyperService::new(tower::service_fn(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                let refusal = refused.answer();
                request.extensions_mut().insert(peer.clone());
                let (request, timed_out) = deadline::limit(request, body_limit);
                // A router is always ready: no `poll_ready` needed before `call`.
                let response = tower::Service::call(&mut routes.clone(), request);
                async move {
                    if let Some(refusal) = refusal {
                        return Ok(refusal);
                    }
                    Ok::<_, std::convert::Infallible>(deadline::answer(response.await?, &timed_out))
                }
            },
        ));
        let open = Arc::clone(&open_connections);
        open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stopping = app.shutdown.clone();
        let handshake = Duration::from_millis(app.config.limits.handshake_timeout_ms);
        match &app.config.tls {
            None => {
                let connection = http1(handshake)
                    .serve_connection(TokioIo::new(HeadCheck::new(tcp, refusals)), service)
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
                            let stream = TokioIo::new(HeadCheck::new(stream, refusals));
                            let connection = http1(handshake)
                                .serve_connection(stream, service)
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

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_connection_may_send_a_second_worth_at_once_then_at_the_rate() {
        let budget = AtomicU64::new(0);
        let start = 5 * SECOND;
        for _ in 0..10 {
            assert!(take_from_budget(&budget, 10, start));
        }
        assert!(!take_from_budget(&budget, 10, start));
        // A refused message takes nothing: one tenth of a second pays for one more.
        assert!(!take_from_budget(&budget, 10, start + SECOND / 20));
        assert!(take_from_budget(&budget, 10, start + SECOND / 10));
        assert!(!take_from_budget(&budget, 10, start + SECOND / 10));
        // Quiet for long: a full burst again, no more.
        let later = start + 60 * SECOND;
        assert_eq!(
            (0..20)
                .filter(|_| take_from_budget(&budget, 10, later))
                .count(),
            10
        );
    }

    #[test]
    fn a_rate_of_zero_still_lets_one_message_a_second_through() {
        let budget = AtomicU64::new(0);
        assert!(take_from_budget(&budget, 0, SECOND));
        assert!(!take_from_budget(&budget, 0, SECOND));
        assert!(take_from_budget(&budget, 0, 2 * SECOND));
    }
}
