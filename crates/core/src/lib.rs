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
//! - [`message`]: the server → client messages, serialized once per change.
//! - [`request`]: the client → server messages, parsed and validated.
//! - [`outbox`]: each client's bounded queue and its conflation rule.
//! - [`hub`]: the [`Hub`] (writes, revs, history, fan-out) and the [`Client`] handle.
//! - [`engine`]: the boundary to durable storage; [`MemoryEngine`] keeps nothing.
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
pub mod error;
pub mod hub;
pub mod index;
pub mod merge;
pub mod message;
mod outbox;
pub mod request;
pub mod stats;
pub mod topic;

pub use engine::{Engine, MemoryEngine};
pub use error::{ErrorCode, HubError};
pub use hub::{
    Client, Drained, Frame, Hub, HubConfig, Mode, Outcome, Replier, Since, Submitted, TopicState,
    Write,
};
pub use outbox::{DirectWrite, DirectWritten, OutboxLimits};
pub use topic::{Pattern, Topic};
