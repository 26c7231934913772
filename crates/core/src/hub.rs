//! The [`Hub`]: topic state, revs, the resume buffer and fan-out, shared by every transport.
//!
//! A write takes this path, one file per step:
//! 1. `hub/write.rs`: [`Hub::submit`] validates it and, under the `writes` lock, diffs it
//!    against the latest state, assigns the next rev and a hub-wide sequence number,
//!    serializes the outgoing message once and queues it for the commit thread. Nothing is
//!    visible to readers yet.
//! 2. `hub/commit.rs`: the commit thread takes every queued write and makes the batch
//!    durable through the [`Engine`] (one group commit).
//! 3. `hub/fanout.rs`: then, under the `published` lock, it updates the published state and
//!    resume buffer and pushes the shared bytes into the outbox of every client whose pattern
//!    matches (found through the pattern index). Only then are writers answered.
//! 4. `hub/client.rs`: each transport drains its client's outbox ([`Client::drain`]) and
//!    writes a batch of frames at once.
//!
//! Publishing only what is durable keeps the contract's promises across a crash: a rev a
//! client has seen is never reused, and nothing acknowledged is lost.
//!
//! How changes become durable is chosen once, when the hub opens (`Storage`):
//! [`Hub::open`] takes the hub's own [`Engine`]; [`Hub::open_shared`] takes a [`SharedLog`]
//! that several hubs share, and then steps 1 to 3 differ: see `hub/shared.rs`, which also
//! holds that mode's state. The hub's own state (`Shared`) is the same in both modes.
//! The public types a transport builds and reads are in `hub/types.rs`; staleness (a
//! deadline queue and its thread) is in `hub/stale.rs`.
//!
//! Locks are `std` locks held for short, non-async sections, in the order
//! `writes` → `published` → an outbox.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;

use bytes::Bytes;
use serde_json::Value;

use crate::engine::{Engine, EngineError, EntryKind, Loaded, Node, SharedLog};
use crate::error::{ErrorCode, HubError};
use crate::index::{PatternIndex, TopicTree};
use crate::message;
use crate::stats::Stats;
use crate::topic::{Pattern, Topic};

mod client;
mod commit;
mod fanout;
mod history;
mod shared;
mod stale;
mod types;
mod write;

pub use client::{Client, Drained, Replier};
pub use types::{HubConfig, Mode, Outcome, Since, TopicState, Write};
pub use write::Submitted;

use commit::{CommitThread, LocalSide};
use fanout::{Published, Slot};
use shared::LogSide;
use stale::StaleTimer;
use write::{Latest, WriteSide};

/// The hub. Cheap to clone; all clones share one state. See the module docs.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
    _commit: Arc<CommitThread>,
}

/// What a hub knows of its store's health. The hub does no I/O: whoever logs reads this,
/// now and then; `spells` tells it of a refusal that began and ended between two looks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStatus {
    /// Why the store refuses writes, while it does (until a write succeeds again).
    pub refusing: Option<String>,
    /// Times the store started refusing writes since the hub opened (the hub's own
    /// engine; always 0 over a shared log, whose `refusing` is all there is).
    pub spells: u64,
    /// Why it refused last, kept after it recovers.
    pub last_refusal: Option<String>,
}

/// The state every clone of a hub, its clients and its threads share.
struct Shared {
    config: HubConfig,
    storage: Storage,
    writes: Mutex<WriteSide>,
    commit_wanted: Condvar,
    published: RwLock<Published>,
    stats: Stats,
    epoch: String,
    stopped: AtomicBool,
    clients: AtomicU64,
    stale_timer: StaleTimer,
}

/// Where the hub's changes become durable, chosen once at open. See [`crate::engine`].
enum Storage {
    /// The hub's own engine: the commit thread commits each batch, then publishes it.
    Local(Arc<LocalSide>),
    /// A log several hubs share: the commit thread appends each batch, and the follow
    /// thread publishes what the log holds, in its order.
    Shared(Arc<LogSide>),
}

impl Hub {
    /// Opens a hub over its own `engine`, loading what it holds.
    ///
    /// ```
    /// use statecast_core::{Hub, HubConfig, MemoryEngine, Topic};
    /// use serde_json::json;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let hub = Hub::open(MemoryEngine, HubConfig::default()).unwrap();
    /// let topic = Topic::new("railhub/esp32-01").unwrap();
    /// let first = hub.set(&topic, json!({"uptime": 1})).await.unwrap();
    /// assert_eq!((first.rev, first.changed), (1, true));
    /// let again = hub.set(&topic, json!({"uptime": 1})).await.unwrap();
    /// assert_eq!((again.rev, again.changed), (1, false));
    /// # });
    /// ```
    pub fn open(engine: impl Engine, config: HubConfig) -> Result<Hub, HubError> {
        let loaded = engine.load().map_err(not_loaded)?;
        let side = LocalSide::new(Box::new(engine));
        Hub::start(Storage::Local(Arc::new(side)), loaded, config)
    }

    /// Opens a hub over a `log` that several hubs share (the cluster engine), loading what
    /// it holds. Every hub over the log then sees one rev sequence per topic.
    pub fn open_shared(log: impl SharedLog, config: HubConfig) -> Result<Hub, HubError> {
        let loaded = log.load().map_err(not_loaded)?;
        let side = LogSide::new(Box::new(log), loaded.seq);
        Hub::start(Storage::Shared(Arc::new(side)), loaded, config)
    }

    /// Builds the state from what the storage loaded and starts the storage's threads.
    fn start(storage: Storage, loaded: Loaded, config: HubConfig) -> Result<Hub, HubError> {
        let mut writes = WriteSide {
            topics: HashMap::with_capacity(loaded.topics.len()),
            seq: loaded.seq,
            pending: VecDeque::new(),
            stopping: false,
        };
        let mut published = Published {
            slot_of: HashMap::with_capacity(loaded.topics.len()),
            slots: Vec::with_capacity(loaded.topics.len()),
            tree: TopicTree::default(),
            subscriptions: PatternIndex::default(),
            clients: Vec::new(),
            free_clients: Vec::new(),
            seq: loaded.seq,
            deliveries: 0,
            live_topics: 0,
            stale_topics: 0,
            deadlines: Default::default(),
        };
        let now = stale::now_ms();
        for stored in loaded.topics {
            let topic = Topic::new(&stored.topic).map_err(|e| {
                HubError::new(
                    ErrorCode::Internal,
                    format!("the store holds an invalid topic {:?}: {e}", stored.topic),
                )
            })?;
            let state = match &stored.state {
                Some(json) => Some(Arc::new(serde_json::from_slice::<Value>(json).map_err(
                    |e| {
                        HubError::new(
                            ErrorCode::Internal,
                            format!("the store holds invalid JSON for {topic}: {e}"),
                        )
                    },
                )?)),
                None => None,
            };
            writes.seq = writes.seq.max(stored.seq);
            writes.topics.insert(
                topic.clone(),
                Latest {
                    rev: stored.rev,
                    state,
                    seq: stored.seq,
                },
            );
            let slot = published.slots.len() as u32;
            published.tree.insert(&topic, slot);
            published.slot_of.insert(topic.clone(), slot);
            published.live_topics += usize::from(stored.state.is_some());
            let stale_after = stale::stale_after_ms(&config, &topic);
            // A topic whose write time the store does not know was written, as far as
            // anyone can tell, when the hub came up.
            let written = match stored.written_ms.max(stored.changed_ms) {
                0 => now,
                ms => ms,
            };
            let stale = stale_after > 0
                && stored.state.is_some()
                && written.saturating_add(stale_after) <= now;
            published.stale_topics += usize::from(stale);
            published.slots.push(Slot {
                rev: stored.rev,
                state: stored.state.map(Bytes::from),
                seq: stored.seq,
                floor_seq: stored.seq,
                changed_ms: stored.changed_ms,
                written_ms: written,
                stored_written_ms: written,
                stale,
                ..Slot::new(topic, stale_after)
            });
        }
        for entry in loaded.recent {
            let EntryKind::Change {
                rev, state, patch, ..
            } = entry.kind
            else {
                continue;
            };
            let Some(&slot_id) = published.slot_of.get(entry.topic.as_str()) else {
                continue;
            };
            let slot = &mut published.slots[slot_id as usize];
            if rev > slot.rev {
                continue;
            }
            let message = match (patch, &state) {
                (Some(patch), _) => Bytes::from(patch),
                (None, Some(state)) => message::snapshot(&slot.topic, rev, state),
                (None, None) => message::removed(&slot.topic, rev),
            };
            if slot.resume.is_empty() {
                slot.floor_seq = entry.seq - 1;
            }
            slot.push_resume(&config, rev, entry.seq, message);
        }
        published.seq = writes.seq;
        let run_stale = config.policies.iter().any(|p| p.stale_after.is_some());
        let shared = Arc::new(Shared {
            config,
            storage,
            writes: Mutex::new(writes),
            commit_wanted: Condvar::new(),
            published: RwLock::new(published),
            stats: Stats::default(),
            epoch: loaded.epoch,
            stopped: AtomicBool::new(false),
            clients: AtomicU64::new(0),
            stale_timer: StaleTimer::default(),
        });
        if run_stale {
            let mut guard = shared.published_mut();
            for slot in 0..guard.slots.len() as u32 {
                stale::arm(&shared, &mut guard, slot);
            }
        }
        let mut handles = match &shared.storage {
            Storage::Local(side) => {
                let (hub, side) = (Arc::clone(&shared), Arc::clone(side));
                vec![spawn("statecast-commit", move || {
                    commit::commit_loop(&hub, &side)
                })?]
            }
            Storage::Shared(side) => {
                let (hub, log) = (Arc::clone(&shared), Arc::clone(side));
                let commit = spawn("statecast-commit", move || shared::commit_loop(&hub, &log))?;
                let (hub, log) = (Arc::clone(&shared), Arc::clone(side));
                let follow = spawn("statecast-follow", move || shared::follow_loop(&hub, &log))?;
                vec![commit, follow]
            }
        };
        if run_stale {
            let hub = Arc::clone(&shared);
            handles.push(spawn("statecast-stale", move || stale::stale_loop(&hub))?);
        }
        Ok(Hub {
            _commit: Arc::new(CommitThread {
                shared: Arc::clone(&shared),
                handles: Mutex::new(handles),
            }),
            shared,
        })
    }

    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }

    /// The hub's counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Identifies the store's history (part of SSE cursors).
    pub fn epoch(&self) -> &str {
        &self.shared.epoch
    }

    /// Number of live topics (removed ones not counted).
    pub fn topic_count(&self) -> usize {
        self.published().live_topics
    }

    /// Number of connected clients.
    pub fn client_count(&self) -> u64 {
        self.shared.clients.load(Ordering::Relaxed)
    }

    /// Why the hub cannot take writes right now (its store refused the last write, or a
    /// shared engine it cannot reach), if so.
    pub fn degraded(&self) -> Option<String> {
        self.store_status().refusing
    }

    /// Whether the store refuses writes, and since the hub opened how often it started to:
    /// for a watcher that logs each time it starts and stops (see [`StoreStatus`]).
    pub fn store_status(&self) -> StoreStatus {
        match &self.shared.storage {
            Storage::Local(side) => side.status(),
            Storage::Shared(side) => StoreStatus {
                refusing: side.degraded(),
                ..StoreStatus::default()
            },
        }
    }

    /// The hubs sharing this hub's engine, as last seen (empty for a single hub).
    pub fn nodes(&self) -> Vec<Node> {
        match &self.shared.storage {
            Storage::Local(_) => Vec::new(),
            Storage::Shared(side) => side.nodes(),
        }
    }

    /// The published state of one topic, `None` if it does not exist (or was removed).
    pub fn get(&self, topic: &str) -> Option<TopicState> {
        let published = self.published();
        let slot = &published.slots[*published.slot_of.get(topic)? as usize];
        Some(TopicState {
            topic: slot.topic.clone(),
            rev: slot.rev,
            state: slot.state.clone()?,
            changed_ms: slot.changed_ms,
            stale: slot.stale,
        })
    }

    /// The published state of every live topic matching `pattern`, sorted by topic.
    pub fn get_matching(&self, pattern: &Pattern) -> Vec<TopicState> {
        let published = self.published();
        let mut found = Vec::new();
        published.tree.for_each_match(pattern, |slot| {
            let slot = &published.slots[slot as usize];
            if let Some(state) = &slot.state {
                found.push(TopicState {
                    topic: slot.topic.clone(),
                    rev: slot.rev,
                    state: state.clone(),
                    changed_ms: slot.changed_ms,
                    stale: slot.stale,
                });
            }
        });
        found.sort_by(|a, b| a.topic.cmp(&b.topic));
        found
    }

    /// Stops taking writes, makes the queued ones durable and closes every client.
    /// Idempotent; called on server shutdown.
    pub fn shutdown(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        self._commit.stop();
        self.close_clients();
    }

    /// Closes every client: their next [`Client::drain`] says `closed`, and nothing more is
    /// queued for them. Transports close their connections then.
    pub fn close_clients(&self) {
        let published = self.published();
        for client in published.clients.iter().flatten() {
            client.outbox.close();
        }
    }

    /// Wakes every client's writer once with [`Drained::ticked`] set: the transports'
    /// heartbeat, one timer for all connections.
    pub fn tick_clients(&self) {
        let published = self.published();
        for client in published.clients.iter().flatten() {
            client.outbox.tick();
        }
    }

    fn lock_writes(&self) -> MutexGuard<'_, WriteSide> {
        self.shared.lock_writes()
    }

    fn published(&self) -> std::sync::RwLockReadGuard<'_, Published> {
        self.shared
            .published
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn published_mut(&self) -> std::sync::RwLockWriteGuard<'_, Published> {
        self.shared.published_mut()
    }
}

impl Shared {
    fn lock_writes(&self) -> MutexGuard<'_, WriteSide> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn published_mut(&self) -> std::sync::RwLockWriteGuard<'_, Published> {
        self.published.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Starts one of the hub's threads.
fn spawn(name: &str, run: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, HubError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(run)
        .map_err(|e| HubError::new(ErrorCode::Internal, format!("starting {name}: {e}")))
}

fn not_loaded(e: EngineError) -> HubError {
    HubError::new(ErrorCode::Unavailable, format!("loading the store: {e}"))
}
