//! The `http_poll` source: polls a device's HTTP API and sets the answer as state. The hub
//! drops writes equal to the current state, so an unchanged device publishes nothing; the
//! interval adapts: `min_interval_ms` right after a change, doubling towards
//! `idle_interval_ms` while nothing changes and, after one quick retry, towards
//! `max_interval_ms` while the device is offline. ETag and Last-Modified are sent back so devices that support them answer 304.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{
    ETAG, HeaderMap, HeaderName, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use serde_json::{Value, json};
use statecast_core::{ErrorCode, Hub, Topic, Write};
use tokio::sync::Notify;

use crate::config::HttpPollConfig;
use crate::health::Health;
use crate::route::error_chain;
use crate::template::Template;
use statecast_core::backoff::jitter;

/// Largest answer read from a device.
const MAX_BODY_BYTES: usize = 4 << 20;

pub struct HttpPoll {
    hub: Hub,
    health: Arc<Health>,
    client: reqwest::Client,
    url: String,
    headers: HeaderMap,
    timeout: Duration,
    pointer: Option<String>,
    topic: Target,
    min: Duration,
    idle: Duration,
    max: Duration,
    /// Wakes the source for an immediate poll (after a command).
    pub repoll: Notify,
    /// The topics the last successful poll wrote.
    pub topics: Mutex<BTreeSet<Topic>>,
}

enum Target {
    One(Topic),
    /// `each`: one topic per element, named by a template over `key` and `item`.
    Each(Template),
}

/// How a poll went.
enum Polled {
    Changed,
    Unchanged,
    /// The device answered, but the hub refused a state it sent (its schema): the device
    /// is online, its topic keeps the last valid state.
    Refused(String),
}

impl HttpPoll {
    pub fn new(
        hub: Hub,
        health: Arc<Health>,
        client: reqwest::Client,
        c: HttpPollConfig,
    ) -> Result<HttpPoll, String> {
        reqwest::Url::parse(&c.url).map_err(|e| format!("url {:?}: {e}", c.url))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &c.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("header name {name:?} is not valid"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("header {name} has a value that is not valid"))?;
            headers.insert(name, value);
        }
        if let Some(p) = &c.pointer
            && !p.is_empty()
            && !p.starts_with('/')
        {
            return Err(format!("pointer {p:?} must start with `/`"));
        }
        let topic = if c.each {
            Target::Each(Template::parse(&c.topic).map_err(|e| format!("topic: {e}"))?)
        } else {
            Target::One(Topic::new(&c.topic).map_err(|e| format!("topic: {e}"))?)
        };
        if !(c.min_interval_ms >= 1
            && c.min_interval_ms <= c.idle_interval_ms
            && c.idle_interval_ms <= c.max_interval_ms)
        {
            return Err(
                "intervals must be 1 <= min_interval_ms <= idle_interval_ms <= max_interval_ms"
                    .into(),
            );
        }
        Ok(HttpPoll {
            hub,
            health,
            client,
            url: c.url,
            headers,
            timeout: Duration::from_millis(c.timeout_ms.max(1)),
            pointer: c.pointer,
            topic,
            min: Duration::from_millis(c.min_interval_ms),
            idle: Duration::from_millis(c.idle_interval_ms),
            max: Duration::from_millis(c.max_interval_ms),
            repoll: Notify::new(),
            topics: Mutex::new(BTreeSet::new()),
        })
    }

    /// Polls forever; failures are part of the loop (the device is offline), not its end.
    pub async fn run(self: Arc<Self>) -> Result<(), String> {
        let mut validators = Validators::default();
        let mut interval = self.min;
        let mut was_ok = true;
        loop {
            let started = Instant::now();
            match self.poll(&mut validators).await {
                Ok(polled) => {
                    was_ok = true;
                    self.health.ok(Some(started.elapsed())).await;
                    interval = match polled {
                        Polled::Changed => self.min,
                        Polled::Unchanged => (interval * 2).clamp(self.min, self.idle),
                        Polled::Refused(error) => {
                            self.health.rejected(&error).await;
                            (interval * 2).clamp(self.min, self.idle)
                        }
                    };
                }
                Err(e) => {
                    self.health.failed(&e).await;
                    // The device is gone: what it last said is no longer current.
                    self.mark_stale();
                    // One quick retry (a blip, or a device starting just after the hub),
                    // then offline: never faster than idle, slowing to max.
                    interval = if std::mem::take(&mut was_ok) {
                        self.min
                    } else {
                        (interval.max(self.idle) * 2).min(self.max)
                    };
                    validators = Validators::default();
                }
            }
            self.health.interval(interval).await;
            tokio::select! {
                _ = tokio::time::sleep(jitter(interval)) => {}
                _ = self.repoll.notified() => {}
            }
        }
    }

    async fn poll(&self, validators: &mut Validators) -> Result<Polled, String> {
        let mut request = self
            .client
            .get(&self.url)
            .headers(self.headers.clone())
            .timeout(self.timeout);
        if let Some(etag) = &validators.etag {
            request = request.header(IF_NONE_MATCH, etag.clone());
        }
        if let Some(modified) = &validators.last_modified {
            request = request.header(IF_MODIFIED_SINCE, modified.clone());
        }
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                format!("no answer within {} ms", self.timeout.as_millis())
            } else {
                error_chain(&e)
            }
        };
        let mut response = request.send().await.map_err(failed)?;
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED {
            // The device answered: its topics are as current as if it had sent them again.
            self.refresh().await;
            return Ok(Polled::Unchanged);
        }
        if !status.is_success() {
            return Err(format!("the device answered {status}"));
        }
        let etag = response.headers().get(ETAG).cloned();
        let last_modified = response.headers().get(LAST_MODIFIED).cloned();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(format!("the answer exceeds {MAX_BODY_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let value: Value =
            serde_json::from_slice(&body).map_err(|e| format!("the answer is not JSON: {e}"))?;
        let value = match &self.pointer {
            Some(pointer) => value
                .pointer(pointer)
                .cloned()
                .ok_or_else(|| format!("the answer has nothing at {pointer}"))?,
            None => value,
        };
        let (changed, refused) = self.write(value).await?;
        if let Some(refused) = refused {
            return Ok(Polled::Refused(refused));
        }
        // Only a poll that was fully used may be skipped next time.
        *validators = Validators {
            etag,
            last_modified,
        };
        Ok(if changed {
            Polled::Changed
        } else {
            Polled::Unchanged
        })
    }

    /// Writes each topic this source holds its current state again (a write that changes
    /// nothing keeps a topic fresh), after a 304: the device is alive though it sent
    /// nothing. Only at the rev it holds, so a write from elsewhere meanwhile is kept.
    async fn refresh(&self) {
        let topics: Vec<Topic> = match &self.topic {
            Target::One(topic) => vec![topic.clone()],
            Target::Each(_) => {
                let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
                topics.iter().cloned().collect()
            }
        };
        for topic in topics {
            let Some(current) = self.hub.get(topic.as_str()) else {
                continue;
            };
            let Ok(state) = serde_json::from_slice::<Value>(&current.state) else {
                continue;
            };
            let write = Write::Set {
                topic,
                state,
                if_rev: Some(current.rev),
            };
            // A conflict means another write just freshened it; a store that refuses
            // shows in the hub's own health.
            if let Ok(submitted) = self.hub.submit(write) {
                let _ = submitted.wait().await;
            }
        }
    }

    /// Marks every topic this source writes stale (until its next write).
    fn mark_stale(&self) {
        match &self.topic {
            Target::One(topic) => self.hub.mark_stale(topic),
            Target::Each(_) => {
                let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
                for topic in topics.iter() {
                    self.hub.mark_stale(topic);
                }
            }
        }
    }

    /// Writes the state: whether any topic changed, and why the hub refused one (its
    /// schema). With `each`, topics the device no longer lists are deleted.
    async fn write(&self, value: Value) -> Result<(bool, Option<String>), String> {
        let writes: Vec<(Topic, Value)> = match &self.topic {
            Target::One(topic) => vec![(topic.clone(), value)],
            Target::Each(template) => {
                let items: Vec<(Value, Value)> = match value {
                    Value::Array(items) => items
                        .into_iter()
                        .enumerate()
                        .map(|(i, item)| (json!(i), item))
                        .collect(),
                    Value::Object(members) => members
                        .into_iter()
                        .map(|(k, item)| (json!(k), item))
                        .collect(),
                    _ => return Err("`each` needs an array or object".into()),
                };
                let mut writes = Vec::with_capacity(items.len());
                for (key, item) in items {
                    let name = template.render(&json!({"key": key, "item": &item}))?;
                    let topic = Topic::new(&name).map_err(|e| format!("topic {name:?}: {e}"))?;
                    writes.push((topic, item));
                }
                writes
            }
        };
        let mut changed = false;
        let mut refused = None;
        let mut written = BTreeSet::new();
        for (topic, state) in writes {
            match self.hub.set(&topic, state).await {
                Ok(outcome) => changed |= outcome.changed,
                // The topic keeps its last valid state, and is not gone.
                Err(e) if e.code == ErrorCode::InvalidState => {
                    refused.get_or_insert_with(|| format!("{topic}: {e}"));
                }
                Err(e) => return Err(format!("{topic}: {e}")),
            }
            written.insert(topic);
        }
        let gone: Vec<Topic> = {
            let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
            let gone = topics.difference(&written).cloned().collect();
            *topics = written;
            gone
        };
        for topic in gone {
            changed |= self
                .hub
                .delete(&topic)
                .await
                .map_err(|e| format!("{topic}: {e}"))?
                .changed;
        }
        Ok((changed, refused))
    }
}

#[derive(Default)]
struct Validators {
    etag: Option<HeaderValue>,
    last_modified: Option<HeaderValue>,
}
