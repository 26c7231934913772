//! [`App`], the state every handler shares, and its checks: who the caller is, whether
//! it may do what it asks, whether it is over the rate, whether its page may call us. A
//! refusal is counted and logged here, at most once a second.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use statecast_bridge::Bridge;
use statecast_core::{ErrorCode, Hub, HubError};
use tokio::sync::{Semaphore, watch};

use crate::auth::{Action, Caller, Grant};
use crate::config::ServerConfig;
use crate::listener::Slot;
use crate::metrics::Metrics;

/// Commands awaiting a device's answer, across all connections; more are refused.
const MAX_COMMANDS_IN_FLIGHT: usize = 1024;

/// What every handler shares: the hub, the settings, the counters and the limits' state.
pub struct App {
    pub(crate) hub: Hub,
    /// Sources' health and the command routes.
    pub(crate) bridge: Arc<Bridge>,
    pub(crate) commands_in_flight: Arc<Semaphore>,
    /// Messages and requests per IP address.
    pub(crate) per_ip_rate: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    /// Open connections per IP address.
    pub(crate) connections: Mutex<HashMap<std::net::IpAddr, usize>>,
    pub(crate) config: ServerConfig,
    pub(crate) metrics: Metrics,
    pub(crate) started: Instant,
    /// Turns `true` when the server shuts down.
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl App {
    /// The shared state of a server that stops when `shutdown` turns `true`.
    pub(crate) fn new(
        hub: Hub,
        bridge: Arc<Bridge>,
        config: ServerConfig,
        shutdown: watch::Receiver<bool>,
    ) -> App {
        let per_ip_rate = governor::RateLimiter::keyed(governor::Quota::per_second(
            std::num::NonZeroU32::new(config.limits.messages_per_second_per_ip)
                .unwrap_or(std::num::NonZeroU32::MIN),
        ));
        App {
            per_ip_rate,
            connections: Mutex::new(HashMap::new()),
            hub,
            bridge,
            commands_in_flight: Arc::new(Semaphore::new(MAX_COMMANDS_IN_FLIGHT)),
            config,
            metrics: Metrics::default(),
            started: Instant::now(),
            shutdown,
        }
    }

    /// The caller's grant: its token (a bearer header, or `query` where a transport allows
    /// `?token=`), checked; everything while authentication is off. A refusal is counted and
    /// logged.
    pub(crate) fn caller(
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
    pub(crate) fn check_rate(
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
    pub(crate) fn check(
        &self,
        caller: &Caller,
        action: Action,
        topic: &str,
    ) -> Result<(), HubError> {
        self.permit(&caller.grant, caller.peer, action, topic)
    }

    /// The one gate of every client request on a topic (REST here, WebSocket and Socket.IO
    /// in `Session::dispatch`): a write or event on one of the hub's own topics
    /// (`reserved`) is refused whatever the grant, as only the hub writes them (through
    /// [`Hub`] directly, never through this gate); else `grant` decides. A refusal is
    /// `forbidden`, counted and logged.
    pub(crate) fn permit(
        &self,
        grant: &Grant,
        peer: Option<std::net::SocketAddr>,
        action: Action,
        topic: &str,
    ) -> Result<(), HubError> {
        let writes = matches!(action, Action::Write | Action::Event);
        let reserved = writes
            .then(|| self.config.reserved.iter().find(|p| p.matches(topic)))
            .flatten();
        let allowed = match reserved {
            Some(pattern) => Err(HubError::new(
                ErrorCode::Forbidden,
                format!(
                    "{topic} is the hub's own topic ({pattern}): only the hub itself writes it"
                ),
            )),
            None => grant.check(action, topic),
        };
        allowed.inspect_err(|e| self.refused(peer, e))
    }

    /// Counts a refused attempt and logs it, at most once a second (with how many were not
    /// logged), so a flood of bad requests cannot flood the log.
    pub(crate) fn refused(&self, peer: Option<std::net::SocketAddr>, e: &HubError) {
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

    /// Whether a request's `Origin` may open sockets and streams and write: `None` when it
    /// has none (clients that are not browsers), else the origin and the verdict. Allowed
    /// are the hub's own pages (same host) and the origins listed in `allowed_origins`.
    pub(crate) fn origin_verdict<'h>(
        &self,
        headers: &'h axum::http::HeaderMap,
    ) -> Option<(&'h str, bool)> {
        let origin = headers
            .get(axum::http::header::ORIGIN)
            .and_then(|v| v.to_str().ok())?;
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok());
        let same_site = origin
            .split_once("://")
            .is_some_and(|(_, rest)| Some(rest) == host);
        let listed = self
            .config
            .allowed_origins
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/') == origin);
        Some((origin, same_site || listed))
    }

    /// Refuses a browser page from another site (cross-site WebSocket hijacking): see
    /// [`App::origin_verdict`]. Clients that are not browsers send no `Origin` and pass.
    pub(crate) fn check_origin(
        &self,
        headers: &axum::http::HeaderMap,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<(), HubError> {
        let Some((origin, false)) = self.origin_verdict(headers) else {
            return Ok(());
        };
        let e = HubError::new(
            ErrorCode::Forbidden,
            format!("origin {origin} is not allowed (allowed_origins)"),
        );
        self.refused(peer, &e);
        Err(e)
    }
}
