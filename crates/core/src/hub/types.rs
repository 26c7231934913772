//! The hub's public vocabulary: its settings, the writes it takes and what they did, where
//! a subscription starts and how it wants changes, and a topic's published state.
//!
//! Plain data that transports build and read. Nothing here locks, queues or knows how the
//! hub stores what it holds, so a transport depends on these types and the [`Hub`] and
//! [`Client`] methods only.
//!
//! [`Hub`]: super::Hub
//! [`Client`]: super::Client

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::Value;

use crate::outbox::OutboxLimits;
use crate::policy::Policies;
use crate::topic::Topic;

/// Settings of a hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Changes kept per topic for resuming clients.
    pub resume_len: usize,
    /// Bytes of the resume buffer per topic.
    pub resume_bytes: usize,
    /// Largest state (or event) accepted, serialized.
    pub max_state_bytes: usize,
    /// Bounds of each client's outbound queue.
    pub outbox: OutboxLimits,
    /// Writes waiting for the store before new ones are refused with `unavailable`.
    pub max_pending: usize,
    /// Topics the hub holds (removed ones count too: their revs are kept); a write that
    /// would create one more is refused with `too_large`.
    pub max_topics: usize,
    /// The `[[topics]]` policies: schemas, staleness, history per pattern.
    pub policies: Policies,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            resume_len: 128,
            resume_bytes: 1 << 20,
            max_state_bytes: 256 << 10,
            outbox: OutboxLimits::default(),
            max_pending: 65_536,
            max_topics: 1_000_000,
            policies: Policies::default(),
        }
    }
}

/// How a client wants changes: as merge patches, or as whole states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Patch,
    Full,
}

/// Where a subscription starts.
#[derive(Debug, Clone, Default)]
pub enum Since {
    /// From the current state: a snapshot of each matching topic.
    #[default]
    Now,
    /// From the revs the client holds (`since` of the WebSocket `subscribe`).
    Revs(HashMap<String, u64>),
    /// From a stream cursor (`Last-Event-ID` of the SSE stream).
    Cursor(u64),
}

/// One write, as [`Hub::submit`](super::Hub::submit) takes it.
#[derive(Debug, Clone)]
pub enum Write {
    /// Replace the state. `if_rev`: only if the topic exists at this rev.
    Set {
        topic: Topic,
        state: Value,
        if_rev: Option<u64>,
    },
    /// Apply an RFC 7396 merge patch (to `{}` if the topic does not exist).
    Patch {
        topic: Topic,
        patch: Value,
        if_rev: Option<u64>,
    },
    /// Remove the topic (its rev is kept).
    Delete { topic: Topic, if_rev: Option<u64> },
    /// Publish an event to current subscribers; nothing is stored.
    Event { topic: Topic, data: Value },
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The topic's rev after the write (0 for events).
    pub rev: u64,
    /// Whether the state changed (a write equal to the current state is not a change).
    pub changed: bool,
}

/// A topic's published state.
#[derive(Debug, Clone)]
pub struct TopicState {
    pub topic: Topic,
    pub rev: u64,
    /// The state as serialized JSON.
    pub state: Bytes,
    /// When the current rev was made (Unix ms; 0: not known, a store from before times).
    pub changed_ms: u64,
    /// Whether the topic is stale (see [`Hub::mark_stale`](super::Hub::mark_stale)).
    pub stale: bool,
}
