//! The hub over a [`SharedLog`]: several hubs, one engine.
//!
//! The commit thread computes each write against the latest state it knows and appends it
//! to the log only if the topic has not moved on meanwhile (another hub wrote it); if it
//! has, the thread takes the topic's state from the log's answer and computes the write
//! again. Nothing is published on append: the follow thread reads the log, in its order,
//! updates the latest and published states and fans each entry out. A write is answered
//! once its own entry has come back, so its writer's subscribers see it first.
//!
//! This mode's own state, the log and what the two threads share, is a [`LogSide`]; the
//! hub's state is the same as over a local engine.
//!
//! # When the log fails
//! The hub is degraded while either thread fails, each for its own reason: the follow
//! thread's clears when a follow succeeds again, the commit thread's when an append does,
//! or, with no write coming (a balancer took the hub out of rotation), when the log says
//! it takes writes again ([`SharedLog::writable`], asked by the follow thread). A log that
//! is read fine but refuses writes (Redis with a full disk answers `MISCONF`) keeps the
//! hub degraded until it takes them. A write appended but not yet read back when the
//! follow thread loses the log is answered `unavailable` at once: it is stored, but this
//! hub cannot publish it (or say so) before the log is back, which may take long.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::commit::{keep_ms, take_batch};
use super::fanout::{publish, write_direct};
use super::write::{Done, Latest, Pending, PendingWhat, Prepared, UNCHANGED, prepare};
use super::{Outcome, Shared, stale};
use crate::backoff::Backoff;
use crate::engine::{Append, Appended, Entry, EntryKind, Followed, Loaded, Node, SharedLog};
use crate::error::{ErrorCode, HubError};
use crate::topic::Topic;

/// How long one follow call waits for new entries; bounds how late a stopping hub notices.
const FOLLOW_WAIT: Duration = Duration::from_millis(250);
/// Retry delays while the log cannot be read.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How often a hub whose last append failed asks the log whether it takes writes again.
const WRITABLE_EVERY: Duration = Duration::from_secs(1);

/// The hub's side of a shared log: the log, and what the commit and follow threads share.
pub(super) struct LogSide {
    log: Box<dyn SharedLog>,
    /// Why the log cannot be reached or written, while it cannot.
    degraded: Mutex<Degraded>,
    /// Writes appended to the log, answered once followed back (keyed by seq).
    waiting: Mutex<BTreeMap<u64, Vec<Waiter>>>,
    /// The seq of the last entry followed and published.
    followed: AtomicU64,
}

/// A write appended to the log, waiting to be followed back: its answer and when it was
/// queued.
type Waiter = (Done, Outcome, Instant);

/// What failed last, per thread (see the module docs).
#[derive(Default)]
struct Degraded {
    /// The follow thread cannot read the log.
    follow: Option<String>,
    /// The last append failed (and the log has not said since that it takes writes).
    append: Option<String>,
}

impl LogSide {
    /// Over `log`, which has been loaded up to `followed`.
    pub(super) fn new(log: Box<dyn SharedLog>, followed: u64) -> LogSide {
        LogSide {
            log,
            degraded: Mutex::new(Degraded::default()),
            waiting: Mutex::new(BTreeMap::new()),
            followed: AtomicU64::new(followed),
        }
    }

    pub(super) fn degraded(&self) -> Option<String> {
        let degraded = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        degraded.follow.clone().or_else(|| degraded.append.clone())
    }

    fn degraded_mut(&self) -> std::sync::MutexGuard<'_, Degraded> {
        self.degraded.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn nodes(&self) -> Vec<Node> {
        self.log.nodes()
    }

    /// The log, for the history queries (`hub/history.rs`).
    pub(super) fn log(&self) -> &dyn SharedLog {
        self.log.as_ref()
    }
}

/// The commit thread over a shared log, until the hub stops.
pub(super) fn commit_loop(shared: &Shared, side: &LogSide) {
    while let Some((batch, _)) = take_batch(shared) {
        run_batch(shared, side, batch);
    }
}

/// What one pending write came to in this attempt.
enum Attempt {
    Refused(HubError),
    Same(Outcome),
    /// The `usize`-th append of the batch.
    Append(usize, Outcome),
}

/// What is appended for a change: computed here, borrowed by [`Append`].
struct Appending {
    rev: u64,
    json: Option<Bytes>,
    patch: Option<Bytes>,
}

fn run_batch(shared: &Shared, side: &LogSide, batch: Vec<Pending>) {
    let mut attempts = Vec::with_capacity(batch.len());
    let mut appending: Vec<(usize, Option<Appending>)> = Vec::new();
    // The latest states before this batch, to restore when the log refuses it.
    let mut before: HashMap<Topic, Option<Latest>> = HashMap::new();
    {
        let mut writes = shared.lock_writes();
        for (i, pending) in batch.iter().enumerate() {
            let attempt = match &pending.what {
                PendingWhat::Write { op, if_rev } => {
                    let prepared = prepare(
                        &writes,
                        &shared.config,
                        pending.topic.clone(),
                        op.clone(),
                        *if_rev,
                    );
                    match prepared {
                        Err(e) => Attempt::Refused(e),
                        Ok(Prepared::Same { outcome, .. }) => Attempt::Same(outcome),
                        Ok(Prepared::Change { topic, change }) => {
                            let previous = writes.topics.get(&topic).cloned();
                            before.entry(topic.clone()).or_insert(previous);
                            let outcome = Outcome {
                                rev: change.rev,
                                changed: true,
                            };
                            writes.topics.insert(
                                topic,
                                Latest {
                                    rev: change.rev,
                                    state: change.value,
                                    seq: 0,
                                },
                            );
                            appending.push((
                                i,
                                Some(Appending {
                                    rev: change.rev,
                                    json: change.json,
                                    patch: change.patch,
                                }),
                            ));
                            Attempt::Append(appending.len() - 1, outcome)
                        }
                    }
                }
                PendingWhat::Event { .. } => {
                    appending.push((i, None));
                    Attempt::Append(appending.len() - 1, UNCHANGED)
                }
                _ => Attempt::Same(UNCHANGED),
            };
            attempts.push(attempt);
        }
    }
    let now_ms = stale::now_ms();
    let keeps_history = side.log.keeps_history();
    let appends: Vec<Append<'_>> = appending
        .iter()
        .map(|(i, change)| {
            let pending = &batch[*i];
            match (change, &pending.what) {
                (Some(c), _) => Append::Change {
                    topic: &pending.topic,
                    rev: c.rev,
                    state: c.json.as_deref(),
                    patch: c.patch.as_deref(),
                    time_ms: now_ms,
                    keep_ms: keep_ms(shared, &pending.topic, keeps_history),
                },
                (None, PendingWhat::Event { message }) => Append::Event {
                    topic: &pending.topic,
                    message,
                },
                (None, _) => Append::Event {
                    topic: &pending.topic,
                    message: &[],
                },
            }
        })
        .collect();
    let result = if appends.is_empty() {
        Ok(Vec::new())
    } else {
        let started = Instant::now();
        let result = side.log.append(&appends);
        let durable = if result.is_ok() { appends.len() } else { 0 };
        shared.stats.observe_commit(started.elapsed(), durable);
        if result.is_ok() {
            side.degraded_mut().append = None;
        }
        result
    };
    drop(appends);
    let results = match result {
        Ok(results) if results.len() == appending.len() => results,
        Ok(results) => {
            let why = format!(
                "the log answered {} of {} appends",
                results.len(),
                appending.len()
            );
            return refuse(shared, side, batch, before, &why);
        }
        Err(e) => return refuse(shared, side, batch, before, &e.to_string()),
    };
    let mut blocked: HashSet<Topic> = HashSet::new();
    let mut retry = Vec::new();
    let mut conflicts = Vec::new();
    let last_stored = results
        .iter()
        .filter_map(|r| match r {
            Appended::Stored { seq } => Some(*seq),
            Appended::Conflict { .. } => None,
        })
        .max();
    let mut unchanged = Vec::new();
    for (pending, attempt) in batch.into_iter().zip(attempts) {
        if blocked.contains(&pending.topic) {
            retry.push(pending);
            continue;
        }
        if let Attempt::Same(_) = attempt {
            unchanged.push(pending.topic.clone());
        }
        let Some(done) = pending.done else {
            continue;
        };
        match attempt {
            Attempt::Refused(e) => {
                let _ = done.send(Err(e));
            }
            // Equal to a state this hub may not have published yet: answer after it.
            Attempt::Same(outcome) => match last_stored {
                Some(seq) => answer_when_followed(shared, side, seq, done, outcome, pending.queued),
                None => {
                    let _ = done.send(Ok(outcome));
                }
            },
            Attempt::Append(k, outcome) => match &results[k] {
                Appended::Stored { seq } => {
                    answer_when_followed(shared, side, *seq, done, outcome, pending.queued);
                }
                Appended::Conflict { rev, state } => {
                    blocked.insert(pending.topic.clone());
                    conflicts.push((pending.topic.clone(), *rev, state.clone()));
                    retry.push(Pending {
                        done: Some(done),
                        ..pending
                    });
                }
            },
        }
    }
    refresh(shared, unchanged);
    if retry.is_empty() {
        return;
    }
    shared.stats.conflicts.fetch_add(1, Ordering::Relaxed);
    let mut writes = shared.lock_writes();
    for (topic, rev, state) in conflicts {
        let state = state
            .as_deref()
            .and_then(|json| serde_json::from_slice(json).ok())
            .map(Arc::new);
        writes.topics.insert(topic, Latest { rev, state, seq: 0 });
    }
    for pending in retry.into_iter().rev() {
        writes.pending.push_front(pending);
    }
}

/// Writes that changed nothing still refresh their topics (see `stale.rs`), on this hub:
/// the log carries no entry for them.
fn refresh(shared: &Shared, topics: Vec<Topic>) {
    let refreshing: Vec<Topic> = {
        let published = shared.published.read().unwrap_or_else(|e| e.into_inner());
        topics
            .into_iter()
            .filter(|t| stale::refreshes(&published, t))
            .collect()
    };
    if refreshing.is_empty() {
        return;
    }
    let now = stale::now_ms();
    let batch: Vec<Pending> = refreshing
        .into_iter()
        .map(|topic| Pending {
            topic,
            seq: 0,
            what: PendingWhat::Same {
                written_ms: Some(now),
            },
            outcome: UNCHANGED,
            done: None,
            queued: Instant::now(),
        })
        .collect();
    publish(shared, &batch, None);
}

/// The log refused the whole batch: answer it `unavailable` and restore the latest states.
fn refuse(
    shared: &Shared,
    side: &LogSide,
    batch: Vec<Pending>,
    before: HashMap<Topic, Option<Latest>>,
    why: &str,
) {
    side.degraded_mut().append = Some(format!("the shared store did not take a write: {why}"));
    let mut writes = shared.lock_writes();
    for (topic, latest) in before {
        match latest {
            Some(latest) => writes.topics.insert(topic, latest),
            None => writes.topics.remove(&topic),
        };
    }
    drop(writes);
    shared.stats.store_failures.fetch_add(1, Ordering::Relaxed);
    let error = HubError::new(
        ErrorCode::Unavailable,
        format!("the store could not take the write: {why}"),
    );
    for pending in batch {
        if let Some(done) = pending.done {
            let _ = done.send(Err(error.clone()));
        }
    }
}

/// Answers `done` once the log has been followed up to `seq`.
fn answer_when_followed(
    shared: &Shared,
    side: &LogSide,
    seq: u64,
    done: Done,
    outcome: Outcome,
    queued: Instant,
) {
    let mut waiting = side.waiting.lock().unwrap_or_else(|e| e.into_inner());
    if side.followed.load(Ordering::Acquire) >= seq {
        drop(waiting);
        shared.stats.observe_write(queued.elapsed());
        let _ = done.send(Ok(outcome));
        return;
    }
    waiting
        .entry(seq)
        .or_default()
        .push((done, outcome, queued));
}

/// Marks the log followed up to `seq` and answers the writes waiting for it.
fn followed_to(shared: &Shared, side: &LogSide, seq: u64) {
    side.followed.fetch_max(seq, Ordering::AcqRel);
    let mut waiting = side.waiting.lock().unwrap_or_else(|e| e.into_inner());
    let later = waiting.split_off(&(seq + 1));
    let ready = std::mem::replace(&mut *waiting, later);
    drop(waiting);
    let now = Instant::now();
    for (done, outcome, queued) in ready.into_values().flatten() {
        shared.stats.observe_write(now.duration_since(queued));
        let _ = done.send(Ok(outcome));
    }
}

/// The follow thread lost the log: the writes appended but not yet read back are answered
/// `unavailable` now rather than when the log is back (see the module docs).
fn fail_waiting(side: &LogSide, why: &str) {
    let waiting = std::mem::take(&mut *side.waiting.lock().unwrap_or_else(|e| e.into_inner()));
    if waiting.is_empty() {
        return;
    }
    let error = HubError::new(
        ErrorCode::Unavailable,
        format!(
            "the write reached the shared store, but this hub lost the store before reading \
             the write back ({why}); it is published once the hub reconnects, and retrying \
             it is safe"
        ),
    );
    for (done, _, _) in waiting.into_values().flatten() {
        let _ = done.send(Err(error.clone()));
    }
}

/// After a failed append, asks the log (at most every [`WRITABLE_EVERY`]) whether it takes
/// writes again, so that a hub no write reaches does not stay degraded.
fn check_writable(side: &LogSide, asked: &mut Option<Instant>) {
    if side.degraded_mut().append.is_none() || asked.is_some_and(|at| at.elapsed() < WRITABLE_EVERY)
    {
        return;
    }
    *asked = Some(Instant::now());
    if side.log.writable().is_ok() {
        side.degraded_mut().append = None;
    }
}

/// The follow thread: publishes what the log holds, until the hub stops and nothing waits.
pub(super) fn follow_loop(shared: &Shared, side: &LogSide) {
    let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
    let mut writable_asked = None;
    loop {
        let stopping = shared.lock_writes().stopping;
        let nothing_waits = side
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        if stopping && (nothing_waits || backoff.retrying()) {
            return;
        }
        let clients = shared.clients.load(Ordering::Relaxed);
        match side.log.follow(FOLLOW_WAIT, clients) {
            Ok(followed) => {
                if backoff.retrying() {
                    side.degraded_mut().follow = None;
                    backoff.reset();
                }
                match followed {
                    Followed::Entries(entries) => apply(shared, side, entries),
                    Followed::Resync(loaded) => resync(shared, side, loaded),
                }
                check_writable(side, &mut writable_asked);
            }
            Err(e) => {
                let why = e.to_string();
                side.degraded_mut().follow =
                    Some(format!("the shared store is unreachable: {why}"));
                fail_waiting(side, &why);
                std::thread::sleep(backoff.next_wait());
            }
        }
    }
}

/// Publishes followed entries in the log's order, after bringing the latest states up to
/// them.
fn apply(shared: &Shared, side: &LogSide, entries: Vec<Entry>) {
    let Some(last) = entries.last().map(|e| e.seq) else {
        return;
    };
    let now = Instant::now();
    let mut batch = Vec::with_capacity(entries.len());
    {
        let mut writes = shared.lock_writes();
        for entry in entries {
            // Another hub's writer cannot put an invalid topic in the log; skip if it did.
            let Ok(topic) = Topic::new(&entry.topic) else {
                continue;
            };
            let what = match entry.kind {
                EntryKind::Change {
                    rev,
                    state,
                    patch,
                    time_ms,
                } => {
                    let newer = writes.topics.get(&topic).is_none_or(|l| rev > l.rev);
                    if newer {
                        let value = state
                            .as_deref()
                            .and_then(|json| serde_json::from_slice(json).ok())
                            .map(Arc::new);
                        writes.topics.insert(
                            topic.clone(),
                            Latest {
                                rev,
                                state: value,
                                seq: entry.seq,
                            },
                        );
                    }
                    PendingWhat::Change {
                        rev,
                        state: state.map(Bytes::from),
                        patch: patch.map(Bytes::from),
                        // An entry from before times: when this hub learnt of it.
                        time_ms: if time_ms > 0 {
                            time_ms
                        } else {
                            stale::now_ms()
                        },
                    }
                }
                EntryKind::Event { message } => PendingWhat::Event {
                    message: Bytes::from(message),
                },
            };
            batch.push(Pending {
                topic,
                seq: entry.seq,
                what,
                outcome: UNCHANGED,
                done: None,
                queued: now,
            });
        }
        writes.seq = writes.seq.max(last);
    }
    // One entry read: the log is quiet, so it may go straight to idle sockets.
    let mut direct = (batch.len() == 1).then(Vec::new);
    publish(shared, &batch, direct.as_mut());
    followed_to(shared, side, last);
    write_direct(shared, direct.unwrap_or_default());
}

/// Starts over from everything the log holds: each topic that moved on is published as a
/// fresh snapshot (or removal), since no patch can bridge what was missed.
fn resync(shared: &Shared, side: &LogSide, loaded: Loaded) {
    shared.stats.resyncs.fetch_add(1, Ordering::Relaxed);
    let mut topics = loaded.topics;
    topics.sort_by_key(|t| t.seq);
    let entries = topics
        .into_iter()
        .map(|t| Entry {
            seq: t.seq,
            topic: t.topic,
            kind: EntryKind::Change {
                rev: t.rev,
                state: t.state,
                patch: None,
                time_ms: t.changed_ms,
            },
        })
        .collect();
    apply(shared, side, entries);
    {
        let mut published = shared.published_mut();
        published.seq = published.seq.max(loaded.seq);
    }
    followed_to(shared, side, loaded.seq);
}
