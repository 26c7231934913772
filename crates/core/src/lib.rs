//! The statecast hub without I/O: it holds the JSON state of every topic, computes what
//! changed, numbers changes with per-topic revs, keeps a short history for resuming
//! clients, and fans each change out to the bounded queues of the clients that subscribe.
//! Transports (WebSocket, SSE, REST), storage and sources sit around it.
//!
//! # Layout
//! - [`topic`]: topic names and MQTT-style patterns, validated.
//! - [`index`]: the pattern trie that finds a change's subscribers, and the topic trie that
//!   finds a new subscription's topics.
//! - [`merge`]: RFC 7396 merge patches, computed from two states and applied.
//! - [`message`]: every server → client message, and the [`Frame`] (with its [`Kind`])
//!   that carries one to a transport.
//! - [`request`]: the client → server messages, parsed and validated.
//! - [`outbox`]: each client's bounded queue and its conflation rule.
//! - [`hub`]: the [`Hub`]: opening it over its storage, and its shared state and locks
//!   (`hub.rs`), one file per job under `hub/`:
//!   - `types.rs`: the public types ([`HubConfig`], [`Write`], [`Outcome`], [`Since`],
//!     [`Mode`], [`TopicState`]).
//!   - `write.rs`: the write path ([`Hub::submit`]: validate, diff, next rev, queue).
//!   - `commit.rs`: the commit thread (group commit through the [`Engine`], rollback).
//!   - `fanout.rs`: the published state, history and fan-out into outboxes and sockets.
//!   - `client.rs`: the [`Client`] handle (subscribe, scope, drain) and its [`Frame`]s.
//!   - `shared.rs`: the hub over a [`SharedLog`](engine::SharedLog) several hubs share.
//!   - `stale.rs`: staleness: the deadline queue, its thread, `stale` messages.
//! - [`policy`]: topic policies (`[[topics]]`): schema, staleness and history per pattern,
//!   compiled once for lookup.
//! - [`engine`]: the storage boundary: a hub's own [`Engine`] or a log several hubs share;
//!   [`MemoryEngine`] keeps nothing.
//! - [`stats`]: counters for metrics.
//! - [`backoff`]: waits between retries, exponential and jittered.
//!
//! # Example
//! ```
//! use statecast_core::{Hub, HubConfig, MemoryEngine, Pattern, Since, Topic};
//! use serde_json::json;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let hub = Hub::open(MemoryEngine, HubConfig::default()).unwrap();
//! let client = hub.connect();
//! client.subscribe(&[Pattern::new("micboard/#").unwrap()], &Since::Now, None);
//!
//! let mic = Topic::new("micboard/SHURE001").unwrap();
//! hub.set(&mic, json!({"battery": 80, "rf": -60})).await.unwrap();
//! hub.patch(&mic, json!({"battery": 79})).await.unwrap();
//!
//! let mut frames = Vec::new();
//! client.drain(&mut frames, 64);
//! let texts: Vec<&[u8]> = frames.iter().map(|f| &f.bytes[..]).collect();
//! assert_eq!(texts, [
//!     &br#"{"type":"snapshot","topic":"micboard/SHURE001","rev":1,"state":{"battery":80,"rf":-60}}"#[..],
//!     &br#"{"type":"patch","topic":"micboard/SHURE001","rev":2,"patch":{"battery":79}}"#[..],
//! ]);
//! # });
//! ```

pub mod backoff;
pub mod engine;
pub mod entity;
pub mod error;
pub mod history;
pub mod hub;
pub mod index;
pub mod merge;
pub mod message;
mod outbox;
pub mod policy;
pub mod request;
pub mod stats;
pub mod topic;

pub use engine::{Engine, MemoryEngine};
pub use error::{ErrorCode, HubError};
pub use hub::{
    Client, Drained, Hub, HubConfig, Mode, Outcome, Replier, Since, Submitted, TopicState, Write,
};
pub use message::{Frame, Kind};
pub use outbox::{DirectWrite, DirectWritten, OutboxLimits};
pub use policy::{Policies, Schema, TopicPolicy};
pub use topic::{Pattern, Topic};
