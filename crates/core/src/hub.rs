//! The [`Hub`]: topic state, revs, history and fan-out, shared by every transport.
//!
//! A write takes this path:
//! 1. [`Hub::submit`] validates it and, under the `writes` lock, diffs it against the latest
//!    state, assigns the next rev and a hub-wide sequence number, serializes the outgoing
//!    message once and queues it for the commit thread. Nothing is visible to readers yet.
//! 2. The commit thread takes every queued write, makes the batch durable through the
//!    [`Engine`] (one group commit), then, under the `published` lock, updates the published
//!    state and history and pushes the shared bytes into the outbox of every client whose
//!    pattern matches (found through the pattern index). Only then are writers answered.
//! 3. Each transport drains its client's outbox ([`Client::drain`]) and writes a batch of
//!    frames at once.
//!
//! Publishing only what is durable keeps the contract's promises across a crash: a rev a
//! client has seen is never reused, and nothing acknowledged is lost.
//!
//! Over an engine that several hubs share, steps 1 to 3 differ: see `hub/shared.rs`.
//!
//! Locks are `std` locks held for short, non-async sections, in the order
//! `writes` → `published` → an outbox.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::{Future, poll_fn};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::engine::{Engine, EntryKind, Record};
use crate::error::{ErrorCode, HubError};
use crate::index::{PatternIndex, TopicTree};
use crate::merge::{self, Diff};
use crate::message::{self, Frame, Kind};
use crate::outbox::{DirectWrite, Item, Outbox, OutboxLimits, Taken};
use crate::stats::Stats;
use crate::topic::{Pattern, Topic};

mod shared;

/// Settings of a hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Changes kept per topic for resuming clients.
    pub history_len: usize,
    /// Bytes of history kept per topic.
    pub history_bytes: usize,
    /// Largest state (or event) accepted, serialized.
    pub max_state_bytes: usize,
    /// Bounds of each client's outbound queue.
    pub outbox: OutboxLimits,
    /// Writes waiting for the store before new ones are refused with `unavailable`.
    pub max_pending: usize,
    /// Topics the hub holds (removed ones count too: their revs are kept); a write that
    /// would create one more is refused with `too_large`.
    pub max_topics: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            history_len: 128,
            history_bytes: 1 << 20,
            max_state_bytes: 256 << 10,
            outbox: OutboxLimits::default(),
            max_pending: 65_536,
            max_topics: 1_000_000,
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

/// One write, as [`Hub::submit`] takes it.
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

/// A write accepted by the hub; [`Submitted::wait`] resolves once it is durable and
/// published.
#[must_use = "a write is acknowledged only once `wait` returns"]
pub struct Submitted(Answer);

enum Answer {
    Now(Outcome),
    Later(oneshot::Receiver<Result<Outcome, HubError>>),
}

/// Where a queued write's answer goes.
type Done = oneshot::Sender<Result<Outcome, HubError>>;

/// A write appended to a shared log, waiting to be followed back: its answer and when it
/// was queued.
type Waiter = (Done, Outcome, Instant);

impl Submitted {
    /// Waits until the write is durable and has been handed to every subscriber.
    pub async fn wait(self) -> Result<Outcome, HubError> {
        match self.0 {
            Answer::Now(outcome) => Ok(outcome),
            Answer::Later(rx) => rx.await.unwrap_or_else(|_| {
                Err(HubError::new(
                    ErrorCode::Unavailable,
                    "the hub is shutting down",
                ))
            }),
        }
    }
}

/// A topic's published state.
#[derive(Debug, Clone)]
pub struct TopicState {
    pub topic: Topic,
    pub rev: u64,
    /// The state as serialized JSON.
    pub state: Bytes,
}

/// What [`Client::drain`] found.
#[derive(Debug, Clone, Copy)]
pub struct Drained {
    /// The client was closed (by [`Hub::shutdown`] or [`Hub::close_clients`]); send nothing
    /// more.
    pub closed: bool,
    /// [`Hub::tick_clients`] was called since the last drain.
    pub ticked: bool,
    /// With [`Client::drain_resumable`]: the stream position the client reached, when it is
    /// a safe point to resume from (nothing older is still queued or awaiting a resync).
    pub cursor: Option<u64>,
}

/// The hub. Cheap to clone; all clones share one state. See the module docs.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
    _commit: Arc<CommitThread>,
}

struct Shared {
    config: HubConfig,
    engine: Box<dyn Engine>,
    writes: Mutex<WriteSide>,
    commit_wanted: Condvar,
    published: RwLock<Published>,
    stats: Stats,
    epoch: String,
    stopped: AtomicBool,
    clients: AtomicU64,
    /// Why the shared engine cannot be reached, while it cannot.
    degraded: Mutex<Option<String>>,
    /// Writes appended to a shared log, answered once followed back (keyed by seq).
    waiting: Mutex<BTreeMap<u64, Vec<Waiter>>>,
    /// The seq of the last shared-log entry followed and published.
    followed: AtomicU64,
}

struct WriteSide {
    topics: HashMap<Topic, Latest>,
    /// The sequence number of the last change queued.
    seq: u64,
    pending: VecDeque<Pending>,
    stopping: bool,
}

/// The newest state of a topic, possibly not yet committed.
#[derive(Clone)]
struct Latest {
    rev: u64,
    state: Option<Arc<Value>>,
    /// Sequence number of the topic's last change.
    seq: u64,
}

struct Pending {
    topic: Topic,
    seq: u64,
    what: PendingWhat,
    /// The answer once durable (for a shared log, decided at commit time).
    outcome: Outcome,
    done: Option<Done>,
    queued: Instant,
}

enum PendingWhat {
    Change {
        rev: u64,
        /// Serialized state, `None` for a removal.
        state: Option<Bytes>,
        /// The `patch` message, when a merge patch expresses the change.
        patch: Option<Bytes>,
    },
    Event {
        message: Bytes,
    },
    /// Answers a write that changed nothing once the changes before it are durable.
    Barrier,
    /// A write not yet computed: a shared log's commit thread prepares it.
    Write {
        op: Op,
        if_rev: Option<u64>,
    },
}

struct Published {
    slot_of: HashMap<Topic, u32>,
    slots: Vec<Slot>,
    tree: TopicTree,
    subscriptions: PatternIndex<u32>,
    clients: Vec<Option<ClientEntry>>,
    free_clients: Vec<u32>,
    /// The sequence number of the last change published.
    seq: u64,
    /// Numbers each fan-out, so a change matching several patterns of a client is queued once.
    deliveries: u64,
    live_topics: usize,
}

struct Slot {
    topic: Topic,
    rev: u64,
    state: Option<Bytes>,
    snapshot: OnceLock<Bytes>,
    seq: u64,
    history: VecDeque<HistoryEntry>,
    history_bytes: usize,
    /// The sequence number of the newest change no longer in `history`.
    floor_seq: u64,
}

struct HistoryEntry {
    rev: u64,
    seq: u64,
    message: Bytes,
}

struct ClientEntry {
    outbox: Arc<Outbox>,
    /// What the client may read, when it may not read everything (boxed: most clients
    /// never have one and pay a pointer for it).
    scoped: Option<Box<Scoped>>,
    /// The patterns registered in the index: what the client subscribed to, or with a
    /// scope, that narrowed to it.
    patterns: Vec<Pattern>,
    mode: Mode,
    /// How the publisher writes to this client's socket itself (see [`DirectWrite`]).
    direct: Option<Arc<dyn DirectWrite>>,
}

/// A message the publisher writes to a reserved socket once the hub's lock is released.
struct DirectSend {
    outbox: Arc<Outbox>,
    sink: Arc<dyn DirectWrite>,
    bytes: Bytes,
    topic: Option<u32>,
}

/// A client's read scope and the patterns it subscribed to (before narrowing).
struct Scoped {
    read: Vec<Pattern>,
    requested: Vec<Pattern>,
}

impl ClientEntry {
    fn scope(&self) -> Option<&[Pattern]> {
        self.scoped.as_deref().map(|s| &s.read[..])
    }
}

/// `patterns` narrowed to `scope`: each intersected with each scope pattern, without
/// repeats.
fn narrow(scope: Option<&[Pattern]>, patterns: &[Pattern]) -> Vec<Pattern> {
    let mut out: Vec<Pattern> = Vec::with_capacity(patterns.len());
    let mut add = |p: Pattern| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    match scope {
        None => patterns.iter().cloned().for_each(&mut add),
        Some(scope) => {
            for pattern in patterns {
                scope
                    .iter()
                    .filter_map(|allowed| pattern.intersect(allowed))
                    .for_each(&mut add);
            }
        }
    }
    out
}

/// The commit thread (and, for a shared log, the thread following it).
struct CommitThread {
    shared: Arc<Shared>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Slot {
    fn snapshot(&self) -> Option<&Bytes> {
        let state = self.state.as_ref()?;
        Some(
            self.snapshot
                .get_or_init(|| message::snapshot(&self.topic, self.rev, state)),
        )
    }

    /// The message that brings a client to this slot's current rev from nothing.
    fn current_message(&self) -> Bytes {
        match self.snapshot() {
            Some(s) => s.clone(),
            None => message::removed(&self.topic, self.rev),
        }
    }

    /// Records a change for resuming clients, dropping the oldest beyond the limits.
    fn push_history(&mut self, config: &HubConfig, rev: u64, seq: u64, message: Bytes) {
        self.history_bytes += message.len();
        self.history.push_back(HistoryEntry { rev, seq, message });
        while self.history.len() > config.history_len
            || (self.history_bytes > config.history_bytes && self.history.len() > 1)
        {
            if let Some(old) = self.history.pop_front() {
                self.history_bytes -= old.message.len();
                self.floor_seq = old.seq;
            }
        }
    }

    /// The history entries after `rev`, if history still holds all of them.
    fn history_after_rev(&self, rev: u64) -> Option<impl Iterator<Item = &HistoryEntry>> {
        let first = self.history.front()?;
        (first.rev <= rev + 1).then(|| self.history.iter().filter(move |e| e.rev > rev))
    }

    /// The history entries after sequence number `seq`, if history holds all of them.
    fn history_after_seq(&self, seq: u64) -> Option<impl Iterator<Item = &HistoryEntry>> {
        (self.floor_seq <= seq).then(|| self.history.iter().filter(move |e| e.seq > seq))
    }
}

impl Hub {
    /// Opens a hub over `engine`, loading what it holds.
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
        let loaded = engine.load().map_err(|e| {
            HubError::new(ErrorCode::Unavailable, format!("loading the store: {e}"))
        })?;
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
        };
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
            published.slots.push(Slot {
                topic,
                rev: stored.rev,
                state: stored.state.map(Bytes::from),
                snapshot: OnceLock::new(),
                seq: stored.seq,
                history: VecDeque::new(),
                history_bytes: 0,
                floor_seq: stored.seq,
            });
        }
        for entry in loaded.history {
            let EntryKind::Change { rev, state, patch } = entry.kind else {
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
            if slot.history.is_empty() {
                slot.floor_seq = entry.seq - 1;
            }
            slot.push_history(&config, rev, entry.seq, message);
        }
        published.seq = writes.seq;
        let shared = Arc::new(Shared {
            config,
            engine: Box::new(engine),
            writes: Mutex::new(writes),
            commit_wanted: Condvar::new(),
            published: RwLock::new(published),
            stats: Stats::default(),
            epoch: loaded.epoch,
            stopped: AtomicBool::new(false),
            clients: AtomicU64::new(0),
            degraded: Mutex::new(None),
            waiting: Mutex::new(BTreeMap::new()),
            followed: AtomicU64::new(loaded.seq),
        });
        let spawn = |name: &str, run: fn(&Shared)| {
            let thread_shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || run(&thread_shared))
                .map_err(|e| HubError::new(ErrorCode::Internal, format!("starting {name}: {e}")))
        };
        let mut handles = Vec::new();
        if shared.engine.shared().is_some() {
            handles.push(spawn("statecast-commit", shared::commit_loop)?);
            handles.push(spawn("statecast-follow", shared::follow_loop)?);
        } else {
            handles.push(spawn("statecast-commit", commit_loop)?);
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

    /// Replaces a topic's state.
    pub async fn set(&self, topic: &Topic, state: Value) -> Result<Outcome, HubError> {
        let write = Write::Set {
            topic: topic.clone(),
            state,
            if_rev: None,
        };
        self.submit(write)?.wait().await
    }

    /// Applies a merge patch to a topic's state.
    pub async fn patch(&self, topic: &Topic, patch: Value) -> Result<Outcome, HubError> {
        let write = Write::Patch {
            topic: topic.clone(),
            patch,
            if_rev: None,
        };
        self.submit(write)?.wait().await
    }

    /// Removes a topic; `not_found` if it does not exist.
    pub async fn delete(&self, topic: &Topic) -> Result<Outcome, HubError> {
        let write = Write::Delete {
            topic: topic.clone(),
            if_rev: None,
        };
        self.submit(write)?.wait().await
    }

    /// Publishes an event to the topic's current subscribers.
    pub async fn event(&self, topic: &Topic, data: Value) -> Result<(), HubError> {
        let write = Write::Event {
            topic: topic.clone(),
            data,
        };
        self.submit(write)?.wait().await.map(|_| ())
    }

    /// Validates and queues a write; see the module docs. Fails at once with the reason a
    /// write is refused; a refused write changes nothing.
    pub fn submit(&self, write: Write) -> Result<Submitted, HubError> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(HubError::new(
                ErrorCode::Unavailable,
                "the hub is shutting down",
            ));
        }
        let max = self.shared.config.max_state_bytes;
        // Serialize outside the lock what does not depend on the current state.
        let (topic, op, if_rev) = match write {
            Write::Set {
                topic,
                state,
                if_rev,
            } => {
                if state.is_null() {
                    return Err(null_state());
                }
                let json = to_json(&state);
                check_size(json.len(), max, "state")?;
                (topic, Op::Set(state, json), if_rev)
            }
            Write::Patch {
                topic,
                patch,
                if_rev,
            } => (topic, Op::Patch(patch), if_rev),
            Write::Delete { topic, if_rev } => (topic, Op::Delete, if_rev),
            Write::Event { topic, data } => {
                let json = to_json(&data);
                check_size(json.len(), max, "event")?;
                let message = message::event(&topic, &json);
                return self.enqueue_event(topic, message);
            }
        };
        let mut writes = self.lock_writes();
        if writes.pending.len() >= self.shared.config.max_pending {
            return Err(behind());
        }
        if self.shared.engine.shared().is_some() {
            // A shared log decides at commit time, against what every hub wrote.
            let (done, rx) = oneshot::channel();
            let pending = Pending {
                topic,
                seq: 0,
                what: PendingWhat::Write { op, if_rev },
                outcome: UNCHANGED,
                done: Some(done),
                queued: Instant::now(),
            };
            self.queue(writes, pending);
            return Ok(Submitted(Answer::Later(rx)));
        }
        let pending = match prepare(&writes, &self.shared.config, topic, op, if_rev)? {
            Prepared::Same {
                topic,
                outcome,
                seq,
            } => {
                // Answer at once unless the change this one equals is not yet durable.
                if seq <= self.published().seq {
                    return Ok(Submitted(Answer::Now(outcome)));
                }
                Pending {
                    topic,
                    seq,
                    what: PendingWhat::Barrier,
                    outcome,
                    done: None,
                    queued: Instant::now(),
                }
            }
            Prepared::Change { topic, change } => {
                writes.seq += 1;
                let seq = writes.seq;
                let rev = change.rev;
                writes.topics.insert(
                    topic.clone(),
                    Latest {
                        rev,
                        state: change.value,
                        seq,
                    },
                );
                Pending {
                    topic,
                    seq,
                    what: PendingWhat::Change {
                        rev,
                        state: change.json,
                        patch: change.patch,
                    },
                    outcome: Outcome { rev, changed: true },
                    done: None,
                    queued: Instant::now(),
                }
            }
        };
        let (done, rx) = oneshot::channel();
        self.queue(
            writes,
            Pending {
                done: Some(done),
                ..pending
            },
        );
        Ok(Submitted(Answer::Later(rx)))
    }

    fn enqueue_event(&self, topic: Topic, message: Bytes) -> Result<Submitted, HubError> {
        let writes = self.lock_writes();
        if writes.pending.len() >= self.shared.config.max_pending {
            return Err(behind());
        }
        let (done, rx) = oneshot::channel();
        let pending = Pending {
            topic,
            seq: writes.seq,
            what: PendingWhat::Event { message },
            outcome: UNCHANGED,
            done: Some(done),
            queued: Instant::now(),
        };
        self.queue(writes, pending);
        Ok(Submitted(Answer::Later(rx)))
    }

    fn queue(&self, mut writes: MutexGuard<'_, WriteSide>, pending: Pending) {
        let was_empty = writes.pending.is_empty();
        writes.pending.push_back(pending);
        drop(writes);
        if was_empty {
            self.shared.commit_wanted.notify_one();
        }
    }

    /// Why the hub cannot take writes right now (a shared engine it cannot reach), if so.
    pub fn degraded(&self) -> Option<String> {
        self.shared
            .degraded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The hubs sharing this hub's engine, as last seen (empty for a single hub).
    pub fn nodes(&self) -> Vec<crate::engine::Node> {
        self.shared
            .engine
            .shared()
            .map(|log| log.nodes())
            .unwrap_or_default()
    }

    /// The published state of one topic, `None` if it does not exist (or was removed).
    pub fn get(&self, topic: &str) -> Option<TopicState> {
        let published = self.published();
        let slot = &published.slots[*published.slot_of.get(topic)? as usize];
        Some(TopicState {
            topic: slot.topic.clone(),
            rev: slot.rev,
            state: slot.state.clone()?,
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
                });
            }
        });
        found.sort_by(|a, b| a.topic.cmp(&b.topic));
        found
    }

    /// Registers a client with its own outbox. Dropping the [`Client`] unregisters it.
    pub fn connect(&self) -> Client {
        let outbox = Arc::new(Outbox::new(self.shared.config.outbox));
        let mut published = self.published_mut();
        let entry = ClientEntry {
            outbox: Arc::clone(&outbox),
            scoped: None,
            patterns: Vec::new(),
            mode: Mode::Patch,
            direct: None,
        };
        let key = match published.free_clients.pop() {
            Some(key) => {
                published.clients[key as usize] = Some(entry);
                key
            }
            None => {
                published.clients.push(Some(entry));
                (published.clients.len() - 1) as u32
            }
        };
        drop(published);
        self.shared.clients.fetch_add(1, Ordering::Relaxed);
        Client {
            hub: self.clone(),
            key,
            outbox,
        }
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

enum Op {
    Set(Value, Vec<u8>),
    Patch(Value),
    Delete,
}

impl Clone for Op {
    fn clone(&self) -> Op {
        match self {
            Op::Set(value, json) => Op::Set(value.clone(), json.clone()),
            Op::Patch(patch) => Op::Patch(patch.clone()),
            Op::Delete => Op::Delete,
        }
    }
}

/// A write computed against the latest state, not yet queued.
enum Prepared {
    /// Equal to the current state: nothing to store. `seq`: the change it equals.
    Same {
        topic: Topic,
        outcome: Outcome,
        seq: u64,
    },
    Change {
        topic: Topic,
        change: Change,
    },
}

struct Change {
    rev: u64,
    /// The new state, `None` for a removal.
    value: Option<Arc<Value>>,
    /// The new state serialized.
    json: Option<Bytes>,
    /// The `patch` message, when a merge patch expresses the change.
    patch: Option<Bytes>,
}

/// Computes `op` against the topic's latest state: refused, equal, or the next rev.
fn prepare(
    writes: &WriteSide,
    config: &HubConfig,
    topic: Topic,
    op: Op,
    if_rev: Option<u64>,
) -> Result<Prepared, HubError> {
    let max = config.max_state_bytes;
    let latest = writes.topics.get(&topic);
    let max_topics = config.max_topics;
    if latest.is_none() && writes.topics.len() >= max_topics {
        return Err(HubError::new(
            ErrorCode::TooLarge,
            format!("the hub holds its limit of {max_topics} topics (max_topics)"),
        ));
    }
    let current_rev = latest.map_or(0, |l| l.rev);
    let current = latest.and_then(|l| l.state.clone());
    if let Some(expected) = if_rev
        && (current.is_none() || current_rev != expected)
    {
        return Err(HubError::new(
            ErrorCode::Conflict,
            match current {
                None => format!("{topic} does not exist (expected rev {expected})"),
                Some(_) => format!("{topic} is at rev {current_rev}, not {expected}"),
            },
        ));
    }
    let (new_state, json, diff) = match op {
        Op::Set(state, json) => {
            let diff = match &current {
                Some(old) => merge::diff(old, &state),
                None => Diff::Replace,
            };
            (Some(state), Some(json), diff)
        }
        Op::Patch(patch) => {
            let mut state = current
                .as_deref()
                .cloned()
                .unwrap_or_else(|| Value::Object(Default::default()));
            merge::apply(&mut state, &patch);
            if state.is_null() {
                return Err(null_state());
            }
            let diff = match &current {
                Some(old) => merge::diff(old, &state),
                None => Diff::Replace,
            };
            if diff == Diff::Same {
                (Some(state), None, diff)
            } else {
                let json = to_json(&state);
                check_size(json.len(), max, "state")?;
                (Some(state), Some(json), diff)
            }
        }
        Op::Delete => {
            if current.is_none() {
                return Err(HubError::new(
                    ErrorCode::NotFound,
                    format!("{topic} does not exist"),
                ));
            }
            (None, None, Diff::Replace)
        }
    };
    if diff == Diff::Same {
        return Ok(Prepared::Same {
            outcome: Outcome {
                rev: current_rev,
                changed: false,
            },
            seq: latest.map_or(0, |l| l.seq),
            topic,
        });
    }
    let rev = current_rev + 1;
    let patch = match diff {
        Diff::Patch(p) => Some(message::patch(&topic, rev, &p)),
        _ => None,
    };
    Ok(Prepared::Change {
        topic,
        change: Change {
            rev,
            value: new_state.map(Arc::new),
            json: json.map(Bytes::from),
            patch,
        },
    })
}

const UNCHANGED: Outcome = Outcome {
    rev: 0,
    changed: false,
};

fn behind() -> HubError {
    HubError::new(
        ErrorCode::Unavailable,
        "the store is behind; try again shortly",
    )
}

fn null_state() -> HubError {
    HubError::new(
        ErrorCode::BadRequest,
        "a state cannot be null; delete the topic to remove it",
    )
}

fn to_json(value: &Value) -> Vec<u8> {
    // Serializing a `Value` into memory cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn check_size(len: usize, max: usize, what: &str) -> Result<(), HubError> {
    if len > max {
        return Err(HubError::new(
            ErrorCode::TooLarge,
            format!("the {what} is {len} bytes serialized, at most {max} allowed"),
        ));
    }
    Ok(())
}

impl CommitThread {
    fn stop(&self) {
        self.shared.lock_writes().stopping = true;
        self.shared.commit_wanted.notify_one();
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        for handle in handles {
            let _ = handle.join();
        }
    }
}

impl Drop for CommitThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Most writes one group commit takes.
const MAX_BATCH: usize = 4096;

/// Waits for queued writes and takes up to [`MAX_BATCH`] of them; `None` once the hub stops
/// and nothing is left.
/// Also says whether the hub is quiet: one write, nothing queued behind it.
fn take_batch(shared: &Shared) -> Option<(Vec<Pending>, bool)> {
    let mut writes = shared.lock_writes();
    while writes.pending.is_empty() && !writes.stopping {
        writes = shared
            .commit_wanted
            .wait(writes)
            .unwrap_or_else(|e| e.into_inner());
    }
    let quiet = writes.pending.len() == 1;
    let n = writes.pending.len().min(MAX_BATCH);
    (n > 0).then(|| (writes.pending.drain(..n).collect(), quiet))
}

fn commit_loop(shared: &Shared) {
    while let Some((batch, quiet)) = take_batch(shared) {
        let records: Vec<Record<'_>> = batch
            .iter()
            .filter_map(|p| match &p.what {
                PendingWhat::Change { rev, state, .. } => Some(Record {
                    topic: &p.topic,
                    rev: *rev,
                    seq: p.seq,
                    state: state.as_deref(),
                }),
                _ => None,
            })
            .collect();
        let result = if records.is_empty() {
            Ok(())
        } else {
            let last_seq = records.last().map_or(0, |r| r.seq);
            let started = Instant::now();
            let result = shared.engine.commit(&records, last_seq);
            shared
                .stats
                .observe_commit(started.elapsed(), records.len());
            result
        };
        drop(records);
        match result {
            Ok(()) => {
                // A lone change goes straight to idle sockets; in a busy hub the tasks
                // batch several messages per write instead.
                let mut direct = quiet.then(Vec::new);
                publish(shared, &batch, direct.as_mut());
                let now = Instant::now();
                for pending in batch {
                    shared
                        .stats
                        .observe_write(now.duration_since(pending.queued));
                    if let Some(done) = pending.done {
                        let _ = done.send(Ok(pending.outcome));
                    }
                }
                // After the answers, which need not wait for the whole fan-out: a writer
                // that subscribes still sees its own change first, as its reserved socket
                // holds the result back until the change is written.
                write_direct(shared, direct.unwrap_or_default());
            }
            Err(e) => fail(shared, batch, &e.to_string()),
        }
    }
}

/// The store refused a batch: refuse it and everything queued after it (it was diffed
/// against states that never became durable) and roll the latest states back.
fn fail(shared: &Shared, batch: Vec<Pending>, why: &str) {
    let error = HubError::new(
        ErrorCode::Unavailable,
        format!("the store could not take the write: {why}"),
    );
    let mut writes = shared.lock_writes();
    let queued: Vec<Pending> = writes.pending.drain(..).collect();
    let published = shared.published.read().unwrap_or_else(|e| e.into_inner());
    let mut touched = HashSet::new();
    for pending in batch.iter().chain(&queued) {
        touched.insert(pending.topic.clone());
    }
    for topic in touched {
        let restored = published.slot_of.get(&topic).map(|&s| {
            let slot = &published.slots[s as usize];
            Latest {
                rev: slot.rev,
                state: slot
                    .state
                    .as_ref()
                    .and_then(|json| serde_json::from_slice(json).ok())
                    .map(Arc::new),
                seq: slot.seq,
            }
        });
        match restored {
            Some(latest) => writes.topics.insert(topic, latest),
            None => writes.topics.remove(&topic),
        };
    }
    drop(published);
    drop(writes);
    shared.stats.store_failures.fetch_add(1, Ordering::Relaxed);
    for pending in batch.into_iter().chain(queued) {
        if let Some(done) = pending.done {
            let _ = done.send(Err(error.clone()));
        }
    }
}

/// Writes the messages [`publish`] reserved sockets for, while no other write waits: once
/// one does (a burst starting), the rest are queued, so the tasks write them together with
/// the changes that follow.
fn write_direct(shared: &Shared, direct: Vec<DirectSend>) {
    let mut quiet = true;
    for (i, send) in direct.into_iter().enumerate() {
        if quiet && i % 64 == 0 {
            quiet = shared.lock_writes().pending.is_empty();
        }
        let sink = quiet.then_some(&*send.sink);
        let pushed = send.outbox.write_reserved(sink, &send.bytes, send.topic);
        shared.stats.count(pushed);
    }
}

/// Applies a committed batch to the published state and fans it out: into the outboxes,
/// or with `direct`, to idle clients' sockets once the lock is released.
fn publish(shared: &Shared, batch: &[Pending], mut direct: Option<&mut Vec<DirectSend>>) {
    let config = &shared.config;
    let stats = &shared.stats;
    let mut guard = shared.published_mut();
    let published = &mut *guard;
    for pending in batch {
        let (rev, state, patch) = match &pending.what {
            PendingWhat::Change { rev, state, patch } => (*rev, state, patch),
            PendingWhat::Event { message } => {
                published.seq = published.seq.max(pending.seq);
                published.deliveries += 1;
                let delivery = published.deliveries;
                let clients = &published.clients;
                stats.events.fetch_add(1, Ordering::Relaxed);
                published
                    .subscriptions
                    .for_each_match(&pending.topic, |key| {
                        if let Some(client) = &clients[key as usize]
                            && !reserve(client, delivery, message, None, &mut direct)
                        {
                            stats.count(client.outbox.push_event(message, delivery));
                        }
                    });
                continue;
            }
            PendingWhat::Barrier | PendingWhat::Write { .. } => continue,
        };
        published.seq = published.seq.max(pending.seq);
        let slot_id = match published.slot_of.get(&pending.topic) {
            Some(&id) => id,
            None => {
                let id = published.slots.len() as u32;
                published.slots.push(Slot {
                    topic: pending.topic.clone(),
                    rev: 0,
                    state: None,
                    snapshot: OnceLock::new(),
                    seq: 0,
                    history: VecDeque::new(),
                    history_bytes: 0,
                    floor_seq: 0,
                });
                published.slot_of.insert(pending.topic.clone(), id);
                published.tree.insert(&pending.topic, id);
                id
            }
        };
        let slot = &mut published.slots[slot_id as usize];
        if rev <= slot.rev {
            // Already published (a shared log's entry seen again after a resync).
            continue;
        }
        // A shared log's resync may skip revs: the history cannot bridge that gap.
        let gap = rev != slot.rev + 1;
        if gap {
            slot.history.clear();
            slot.history_bytes = 0;
            slot.floor_seq = pending.seq;
        }
        let was_live = slot.state.is_some();
        slot.rev = rev;
        slot.state = state.clone();
        slot.snapshot = OnceLock::new();
        slot.seq = pending.seq;
        let message = match patch {
            Some(patch) if !gap => patch.clone(),
            _ => slot.current_message(),
        };
        if !gap {
            slot.push_history(config, rev, pending.seq, message.clone());
        }
        match (was_live, state.is_some()) {
            (false, true) => published.live_topics += 1,
            (true, false) => published.live_topics -= 1,
            _ => {}
        }
        published.deliveries += 1;
        let delivery = published.deliveries;
        stats.changes.fetch_add(1, Ordering::Relaxed);
        let slot = &published.slots[slot_id as usize];
        let clients = &published.clients;
        published
            .subscriptions
            .for_each_match(&pending.topic, |key| {
                let Some(client) = &clients[key as usize] else {
                    return;
                };
                let bytes = match (client.mode, slot.snapshot()) {
                    (Mode::Full, Some(snapshot)) => snapshot,
                    _ => &message,
                };
                if !reserve(client, delivery, bytes, Some(slot_id), &mut direct) {
                    stats.count(client.outbox.push_state(slot_id, bytes, delivery, true));
                }
            });
    }
}

/// Most direct writes per change. The commit thread writes them one after the other; the
/// subscribers past this are woken at once instead, so on a machine with more cores their
/// tasks write in parallel meanwhile.
const MAX_DIRECT_WRITES: usize = 1024;

/// Reserves `client`'s socket for a direct write of `bytes` when direct writes are on and
/// the client is idle.
fn reserve(
    client: &ClientEntry,
    delivery: u64,
    bytes: &Bytes,
    topic: Option<u32>,
    direct: &mut Option<&mut Vec<DirectSend>>,
) -> bool {
    let (Some(direct), Some(sink)) = (direct, &client.direct) else {
        return false;
    };
    if direct.len() >= MAX_DIRECT_WRITES || !client.outbox.reserve(delivery) {
        return false;
    }
    direct.push(DirectSend {
        outbox: Arc::clone(&client.outbox),
        sink: Arc::clone(sink),
        bytes: bytes.clone(),
        topic,
    });
    true
}

/// Queues replies for a [`Client`] from any task; see [`Client::replier`].
#[derive(Clone)]
pub struct Replier(Arc<Outbox>);

impl Replier {
    pub fn reply(&self, reply: Frame) {
        self.0.push_reply(reply);
    }
}

/// One subscriber: a WebSocket or SSE connection, or an in-process consumer.
///
/// Requests go in through its methods; everything for the client (snapshots, patches,
/// events, replies) comes out of [`Client::drain`], in order.
pub struct Client {
    hub: Hub,
    key: u32,
    outbox: Arc<Outbox>,
}

impl Client {
    /// Adds subscriptions and queues what brings the client in sync (see the contract's
    /// delivery rules). `mode`, when given, applies to all of the client's subscriptions.
    /// Returns the number of topics for which something was queued.
    pub fn subscribe(&self, patterns: &[Pattern], since: &Since, mode: Option<Mode>) -> usize {
        let mut guard = self.hub.published_mut();
        let published = &mut *guard;
        let Some(entry) = published.clients[self.key as usize].as_mut() else {
            return 0;
        };
        if let Some(scoped) = entry.scoped.as_mut() {
            for pattern in patterns {
                if !scoped.requested.contains(pattern) {
                    scoped.requested.push(pattern.clone());
                }
            }
        }
        let narrowed = narrow(entry.scope(), patterns);
        self.register(published, &narrowed, since, mode)
    }

    /// How many patterns the client subscribed to (as it gave them).
    pub fn subscription_count(&self) -> usize {
        let published = self.hub.published();
        published.clients[self.key as usize]
            .as_ref()
            .map_or(0, |entry| match &entry.scoped {
                None => entry.patterns.len(),
                Some(scoped) => scoped.requested.len(),
            })
    }

    /// Narrows what the client may read to `scope` (`None`: everything), now and for
    /// later subscriptions: patterns outside it are dropped, and topics it newly allows
    /// are sent as snapshots. Returns the number of topics sent.
    pub fn set_scope(&self, scope: Option<Vec<Pattern>>) -> usize {
        let mut guard = self.hub.published_mut();
        let published = &mut *guard;
        let Some(entry) = published.clients[self.key as usize].as_mut() else {
            return 0;
        };
        let requested = match entry.scoped.take() {
            Some(scoped) => scoped.requested,
            None => entry.patterns.clone(),
        };
        let keep = narrow(scope.as_deref(), &requested);
        entry.scoped = scope.map(|read| Box::new(Scoped { read, requested }));
        let added: Vec<Pattern> = keep
            .iter()
            .filter(|p| !entry.patterns.contains(p))
            .cloned()
            .collect();
        // Added first: topics the dropped patterns covered are not sent again.
        let sent = self.register(published, &added, &Since::Now, None);
        self.unregister_all_but(published, &keep);
        sent
    }

    /// Removes the client's registered patterns that are not in `keep`.
    fn unregister_all_but(&self, published: &mut Published, keep: &[Pattern]) {
        let Some(entry) = published.clients[self.key as usize].as_mut() else {
            return;
        };
        let mut dropped = Vec::new();
        entry.patterns.retain(|p| {
            let kept = keep.contains(p);
            if !kept {
                dropped.push(p.clone());
            }
            kept
        });
        for pattern in &dropped {
            published.subscriptions.remove(pattern, self.key);
        }
    }

    /// Registers `patterns` (already narrowed) and queues what brings the client in sync.
    fn register(
        &self,
        published: &mut Published,
        patterns: &[Pattern],
        since: &Since,
        mode: Option<Mode>,
    ) -> usize {
        let Some(entry) = published.clients[self.key as usize].as_mut() else {
            return 0;
        };
        if let Some(mode) = mode {
            entry.mode = mode;
        }
        let mode = entry.mode;
        let held: Vec<Pattern> = entry.patterns.clone();
        let mut added: Vec<&Pattern> = Vec::new();
        for pattern in patterns {
            if !held.contains(pattern) && !added.contains(&pattern) {
                added.push(pattern);
            }
        }
        let mut slots = Vec::new();
        let mut seen = HashSet::new();
        for pattern in &added {
            published.tree.for_each_match(pattern, |slot| {
                if seen.insert(slot) {
                    slots.push(slot);
                }
            });
        }
        slots.sort_unstable();
        let mut items: Vec<(u32, Bytes)> = Vec::new();
        let mut topics_sent = 0;
        for &slot_id in &slots {
            let slot = &published.slots[slot_id as usize];
            if held.iter().any(|p| p.matches(&slot.topic)) {
                continue;
            }
            let before = items.len();
            initial_messages(slot, slot_id, since, mode, &mut items);
            topics_sent += usize::from(items.len() > before);
        }
        // A `since` naming a matching topic the hub never held: it is gone.
        let mut replies = Vec::new();
        if let Since::Revs(revs) = since {
            for name in revs.keys() {
                if !published.slot_of.contains_key(name.as_str())
                    && added.iter().any(|p| p.matches(name))
                    && Topic::new(name).is_ok()
                {
                    replies.push(message::removed(name, 0));
                }
            }
        }
        for (slot, bytes) in items {
            self.hub
                .shared
                .stats
                .count(self.outbox.push_state(slot, &bytes, 0, false));
        }
        for reply in replies {
            self.outbox.push_reply(Frame::new(Kind::Removed, reply));
        }
        for pattern in added {
            published.subscriptions.insert(pattern, self.key);
            if let Some(entry) = published.clients[self.key as usize].as_mut() {
                entry.patterns.push(pattern.clone());
            }
        }
        topics_sent
    }

    /// Removes subscriptions; returns how many of them the client held.
    pub fn unsubscribe(&self, patterns: &[Pattern]) -> usize {
        let mut guard = self.hub.published_mut();
        let published = &mut *guard;
        let Some(entry) = published.clients[self.key as usize].as_mut() else {
            return 0;
        };
        let mut removed = 0;
        let Some(scoped) = entry.scoped.as_mut() else {
            for pattern in patterns {
                if let Some(i) = entry.patterns.iter().position(|p| p == pattern) {
                    entry.patterns.swap_remove(i);
                    published.subscriptions.remove(pattern, self.key);
                    removed += 1;
                }
            }
            return removed;
        };
        for pattern in patterns {
            if let Some(i) = scoped.requested.iter().position(|p| p == pattern) {
                scoped.requested.swap_remove(i);
                removed += 1;
            }
        }
        // What the remaining subscriptions still need stays registered.
        let keep = narrow(Some(&scoped.read), &scoped.requested);
        self.unregister_all_but(published, &keep);
        removed
    }

    /// Queues a snapshot of every live topic matching `patterns` (each once); returns how
    /// many.
    pub fn get(&self, patterns: &[Pattern]) -> usize {
        let published = self.hub.published();
        let Some(entry) = published.clients[self.key as usize].as_ref() else {
            return 0;
        };
        let patterns = narrow(entry.scope(), patterns);
        let mut slots = Vec::new();
        let mut seen = HashSet::new();
        for pattern in &patterns {
            published.tree.for_each_match(pattern, |slot| {
                if seen.insert(slot) {
                    slots.push(slot);
                }
            });
        }
        slots.sort_unstable();
        let mut count = 0;
        for slot_id in slots {
            let slot = &published.slots[slot_id as usize];
            if let Some(snapshot) = slot.snapshot() {
                self.hub
                    .shared
                    .stats
                    .count(self.outbox.push_state(slot_id, snapshot, 0, false));
                count += 1;
            }
        }
        count
    }

    /// Queues a reply to one of the client's requests, after everything queued before it.
    pub fn reply(&self, reply: Frame) {
        self.outbox.push_reply(reply);
    }

    /// Queues bytes the transport framed itself (a pong): drained as a [`Kind::Framed`]
    /// [`Frame`].
    pub fn reply_raw(&self, bytes: Bytes) {
        self.outbox.push_raw(bytes);
    }

    /// Lets the hub write fan-out messages to the client's socket itself while the client
    /// is idle and the hub quiet (see [`DirectWrite`]). The transport then writes only
    /// what it drains, calls [`Client::written`] after each batch, and
    /// [`Client::stop_direct`] before its close frame.
    pub fn write_directly(&self, sink: Arc<dyn DirectWrite>) {
        if let Some(entry) = self.hub.published_mut().clients[self.key as usize].as_mut() {
            entry.direct = Some(sink);
        }
    }

    /// The batch drained last is written (or failed): direct writes may go again.
    pub fn written(&self) {
        self.outbox.written();
    }

    /// No direct writes from now on (they would follow the close frame). Returns the rest
    /// of a partial direct write, which the transport writes before its close frame.
    pub fn stop_direct(&self) -> Option<Bytes> {
        self.outbox.stop_direct()
    }

    /// A handle that queues replies from elsewhere (a command answered later, on another
    /// task); replies after the client is gone are dropped.
    pub fn replier(&self) -> Replier {
        Replier(Arc::clone(&self.outbox))
    }

    /// Whether the client's outbox is full: a transport stops reading requests until the
    /// writer has caught up.
    pub fn is_congested(&self) -> bool {
        self.outbox.is_congested()
    }

    /// Resolves when [`Client::drain`] has something to return.
    pub fn ready(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| self.outbox.poll_ready(cx))
    }

    /// Moves what is queued for the client into `out` (at most about `max` frames),
    /// turning resync markers into fresh snapshots.
    pub fn drain(&self, out: &mut Vec<Frame>, max: usize) -> Drained {
        let mut items = Vec::new();
        let taken = self.outbox.take(&mut items, max);
        for item in items {
            match item {
                Item::State { bytes, .. } => out.push(Frame::state(bytes)),
                Item::Message { bytes, kind, tag } => out.push(Frame { bytes, kind, tag }),
                Item::Raw { bytes } => out.push(Frame::new(Kind::Framed, bytes)),
                Item::Resync { topic } => {
                    let published = self.hub.published();
                    out.push(self.resync(&published, topic));
                }
            }
        }
        self.finish_drain(out, &taken, None)
    }

    /// As [`Client::drain`], and also says where a stream can resume from: when the queue
    /// is left empty, the client holds every change up to the hub's current sequence
    /// number. The published state stays locked meanwhile, so no change can fall between
    /// the take and that number; only the SSE stream pays for it.
    pub fn drain_resumable(&self, out: &mut Vec<Frame>, max: usize) -> Drained {
        let mut items = Vec::new();
        let published = self.hub.published();
        let taken = self.outbox.take(&mut items, max);
        for item in items {
            match item {
                Item::State { bytes, .. } => out.push(Frame::state(bytes)),
                Item::Message { bytes, kind, tag } => out.push(Frame { bytes, kind, tag }),
                Item::Raw { bytes } => out.push(Frame::new(Kind::Framed, bytes)),
                Item::Resync { topic } => out.push(self.resync(&published, topic)),
            }
        }
        let cursor = taken.drained_all.then_some(published.seq);
        drop(published);
        self.finish_drain(out, &taken, cursor)
    }

    /// The snapshot that replaces a conflated topic's patches. Reading it and reopening the
    /// topic happen under the `published` lock, so the next change queued is the one after
    /// this snapshot.
    fn resync(&self, published: &Published, topic: u32) -> Frame {
        let slot = &published.slots[topic as usize];
        self.outbox.end_resync(topic);
        Frame::state(slot.current_message())
    }

    fn finish_drain(&self, out: &mut Vec<Frame>, taken: &Taken, cursor: Option<u64>) -> Drained {
        if let Some(dropped) = taken.lag_ended {
            out.push(Frame::new(Kind::Lagged, message::lagged(dropped)));
        }
        Drained {
            closed: taken.closed,
            ticked: taken.ticked,
            cursor,
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let mut guard = self.hub.published_mut();
        let published = &mut *guard;
        if let Some(entry) = published.clients[self.key as usize].take() {
            for pattern in &entry.patterns {
                published.subscriptions.remove(pattern, self.key);
            }
            published.free_clients.push(self.key);
        }
        drop(guard);
        self.outbox.close();
        self.hub.shared.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What brings a client from `since` to the slot's current rev.
fn initial_messages(
    slot: &Slot,
    slot_id: u32,
    since: &Since,
    mode: Mode,
    out: &mut Vec<(u32, Bytes)>,
) {
    let live = slot.state.is_some();
    match since {
        Since::Now => {
            if let Some(snapshot) = slot.snapshot() {
                out.push((slot_id, snapshot.clone()));
            }
        }
        Since::Revs(revs) => match revs.get(slot.topic.as_str()) {
            None => {
                if let Some(snapshot) = slot.snapshot() {
                    out.push((slot_id, snapshot.clone()));
                }
            }
            Some(&rev) if rev == slot.rev => {}
            Some(&rev) => {
                let replay = (rev < slot.rev && mode == Mode::Patch)
                    .then(|| slot.history_after_rev(rev))
                    .flatten();
                match replay {
                    Some(entries) => out.extend(entries.map(|e| (slot_id, e.message.clone()))),
                    None => out.push((slot_id, slot.current_message())),
                }
            }
        },
        Since::Cursor(seq) => {
            if slot.seq <= *seq {
                return;
            }
            let replay = (mode == Mode::Patch)
                .then(|| slot.history_after_seq(*seq))
                .flatten();
            match replay {
                Some(entries) => out.extend(entries.map(|e| (slot_id, e.message.clone()))),
                None if live || *seq > 0 => out.push((slot_id, slot.current_message())),
                None => {}
            }
        }
    }
}
