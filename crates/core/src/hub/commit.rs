//! The commit thread of a hub over its own [`Engine`]: it takes every queued write at once,
//! makes the batch durable with one commit (group commit), then publishes it and answers
//! the writers.
//!
//! The rule: nothing is published or acknowledged before the engine says it is durable. A
//! batch the engine refuses is refused with everything queued behind it (diffed against
//! states that never became durable), and the latest states are rolled back to the
//! published ones.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::Shared;
use super::fanout::{publish, write_direct};
use super::write::{Latest, Pending, PendingWhat};
use crate::engine::{Engine, Record};
use crate::error::{ErrorCode, HubError};

/// The hub's threads (the commit thread, and over a shared log the follow thread too):
/// stopped, after what is queued, when the hub shuts down or its last clone goes.
pub(super) struct CommitThread {
    pub(super) shared: Arc<Shared>,
    pub(super) handles: Mutex<Vec<JoinHandle<()>>>,
}

impl CommitThread {
    pub(super) fn stop(&self) {
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
pub(super) fn take_batch(shared: &Shared) -> Option<(Vec<Pending>, bool)> {
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

/// The commit thread over the hub's own engine, until the hub stops.
pub(super) fn commit_loop(shared: &Shared, engine: &dyn Engine) {
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
            let result = engine.commit(&records, last_seq);
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
