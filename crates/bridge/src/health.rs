//! Each source's health, kept for `/api/health` and `/metrics` and published as state on
//! `_sources/<name>` so dashboards show device connectivity like any other state. Every
//! error a source reports passes [`redact`] here, before it is kept, published or logged;
//! each change between online and offline is logged once.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use statecast_core::{Hub, Topic};

use crate::redact::redact;

/// The health topics, `_sources/<name>`: the hub's own, which no client may write (the
/// server refuses it), so what they say always comes from the source itself.
pub const HEALTH_TOPICS: &str = "_sources/#";

/// The health topic of source `name`.
pub fn health_topic(name: &str) -> String {
    format!("_sources/{name}")
}

/// Latency and `last_ok` alone are republished at most this often; everything else at once.
const QUIET_REFRESH: Duration = Duration::from_secs(10);

/// What a source reports about itself.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HealthState {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `online` while the source delivers usable state, else `offline`.
    pub status: &'static str,
    pub latency_ms: Option<u64>,
    pub error_count: u64,
    pub last_ok: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// The current poll interval (`http_poll` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
}

impl HealthState {
    pub fn is_online(&self) -> bool {
        self.status == "online"
    }
}

/// A source's health and where it is published.
pub struct Health {
    pub name: String,
    topic: Option<Topic>,
    hub: Hub,
    inner: Mutex<Inner>,
}

struct Inner {
    state: HealthState,
    published: Option<(HealthState, Instant)>,
    /// When the source last went offline (or started), and whether that was logged.
    offline_since: Instant,
    offline_logged: bool,
}

impl Health {
    pub fn new(hub: Hub, name: &str, kind: &'static str) -> Health {
        Health {
            name: name.to_string(),
            topic: Topic::new(&health_topic(name)).ok(),
            hub,
            inner: Mutex::new(Inner {
                state: HealthState {
                    kind,
                    status: "offline",
                    latency_ms: None,
                    error_count: 0,
                    last_ok: None,
                    last_error: None,
                    last_error_at: None,
                    interval_ms: None,
                },
                published: None,
                offline_since: Instant::now(),
                offline_logged: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> HealthState {
        self.lock().state.clone()
    }

    /// The source delivered: online, with the time the round trip took (if it has one;
    /// else the last one measured stays).
    pub async fn ok(&self, latency: Option<Duration>) {
        self.update(|inner| {
            let s = &mut inner.state;
            if !s.is_online() {
                let down = inner.offline_since.elapsed();
                if inner.offline_logged {
                    tracing::info!(source = %self.name, "back online after {}", brief(down));
                } else {
                    tracing::info!(source = %self.name, "online");
                }
            }
            s.status = "online";
            if let Some(latency) = latency {
                s.latency_ms = Some(latency.as_millis() as u64);
            }
            s.last_ok = Some(now());
        })
        .await;
    }

    /// The source failed: offline, the error counted and kept. Logged when the source goes
    /// offline; a failure while it is offline already only at debug level.
    pub async fn failed(&self, error: &str) {
        let error = redact(error);
        self.update(|inner| {
            if inner.state.is_online() || !inner.offline_logged {
                tracing::warn!(source = %self.name, "offline: {error}");
                if inner.state.is_online() {
                    inner.offline_since = Instant::now();
                }
                inner.offline_logged = true;
            } else {
                tracing::debug!(source = %self.name, "still offline: {error}");
            }
            let s = &mut inner.state;
            s.status = "offline";
            s.error_count += 1;
            s.last_error = Some(error.into_owned());
            s.last_error_at = Some(now());
        })
        .await;
    }

    /// A message the source could not use; it stays online.
    pub async fn rejected(&self, error: &str) {
        let error = redact(error);
        tracing::warn!(source = %self.name, "{error}");
        self.update(|inner| {
            let s = &mut inner.state;
            s.error_count += 1;
            s.last_error = Some(error.into_owned());
            s.last_error_at = Some(now());
        })
        .await;
    }

    pub async fn interval(&self, interval: Duration) {
        self.update(|inner| inner.state.interval_ms = Some(interval.as_millis() as u64))
            .await;
    }

    async fn update(&self, change: impl FnOnce(&mut Inner)) {
        let state = {
            let mut inner = self.lock();
            change(&mut inner);
            let due = match &inner.published {
                None => true,
                Some((last, at)) => {
                    last.status != inner.state.status
                        || last.error_count != inner.state.error_count
                        || last.interval_ms != inner.state.interval_ms
                        || at.elapsed() >= QUIET_REFRESH
                }
            };
            if !due {
                return;
            }
            inner.published = Some((inner.state.clone(), Instant::now()));
            inner.state.clone()
        };
        let Some(topic) = &self.topic else { return };
        let Ok(value) = serde_json::to_value(&state) else {
            return;
        };
        if let Err(e) = self.hub.set(topic, value).await {
            tracing::warn!(source = %self.name, "health topic: {e}");
        }
    }
}

/// A duration as a person reads it: `850 ms`, `12 s`, `3 min`.
fn brief(d: Duration) -> String {
    match d.as_secs() {
        0 => format!("{} ms", d.as_millis()),
        s @ 1..120 => format!("{s} s"),
        s => format!("{} min", s / 60),
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
