//! The write path: [`Hub::submit`] validates a write, then, under the `writes` lock, diffs
//! it against the topic's latest state, gives it the next rev and a hub-wide sequence
//! number, serializes the outgoing message once and queues it for the commit thread.
//!
//! The rule: nothing here is visible to readers. A write changes only the latest states
//! ([`WriteSide`]), ahead of what is published; the commit thread publishes it once it is
//! durable, or rolls the latest states back when the store refuses it. Over a shared log,
//! [`prepare`] runs on the commit thread instead (see `shared.rs`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::oneshot;

use super::{Hub, HubConfig, Outcome, Storage, Write, stale};
use crate::entity;
use crate::error::{ErrorCode, HubError};
use crate::merge::{self, Diff};
use crate::message;
use crate::topic::Topic;

/// A write accepted by the hub; [`Submitted::wait`] resolves once it is durable and
/// published.
#[must_use = "a write is acknowledged only once `wait` returns"]
pub struct Submitted(Answer);

enum Answer {
    Now(Outcome),
    Later(oneshot::Receiver<Result<Outcome, HubError>>),
}

/// Where a queued write's answer goes.
pub(super) type Done = oneshot::Sender<Result<Outcome, HubError>>;

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

/// What the `writes` lock guards: each topic's latest state, ahead of what is published,
/// and the queue of the commit thread.
pub(super) struct WriteSide {
    pub(super) topics: HashMap<Topic, Latest>,
    /// The sequence number of the last change queued.
    pub(super) seq: u64,
    pub(super) pending: VecDeque<Pending>,
    pub(super) stopping: bool,
}

/// The newest state of a topic, possibly not yet committed.
#[derive(Clone)]
pub(super) struct Latest {
    pub(super) rev: u64,
    pub(super) state: Option<Arc<Value>>,
    /// Sequence number of the topic's last change.
    pub(super) seq: u64,
}

/// A write queued for the commit thread (or, over a shared log, an entry to publish).
pub(super) struct Pending {
    pub(super) topic: Topic,
    pub(super) seq: u64,
    pub(super) what: PendingWhat,
    /// The answer once durable (for a shared log, decided at commit time).
    pub(super) outcome: Outcome,
    pub(super) done: Option<Done>,
    pub(super) queued: Instant,
}

/// What a [`Pending`] does once committed.
pub(super) enum PendingWhat {
    Change {
        rev: u64,
        /// Serialized state, `None` for a removal.
        state: Option<Bytes>,
        /// The `patch` message, when a merge patch expresses the change.
        patch: Option<Bytes>,
        /// When it was made (Unix ms).
        time_ms: u64,
    },
    Event {
        message: Bytes,
    },
    /// A write that changed nothing: answers its writer (if it waits) once the changes
    /// before it are durable, and with `written_ms` refreshes its topic (see `stale.rs`).
    Same {
        written_ms: Option<u64>,
    },
    /// A write not yet computed: a shared log's commit thread prepares it.
    Write {
        op: Op,
        if_rev: Option<u64>,
    },
}

impl Hub {
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
                // A whole new state is checked outside the lock; a patch's result, below.
                check_state(&self.shared.config, &topic, &state)?;
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
        if let Storage::Shared(_) = self.shared.storage {
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
                let (durable, refreshes) = {
                    let published = self.published();
                    (seq <= published.seq, stale::refreshes(&published, &topic))
                };
                let pending = Pending {
                    topic,
                    seq,
                    what: PendingWhat::Same {
                        written_ms: refreshes.then(stale::now_ms),
                    },
                    outcome,
                    done: None,
                    queued: Instant::now(),
                };
                // Answer at once unless the change this one equals is not yet durable; a
                // write that refreshes its topic is still queued, in order with the changes.
                if durable {
                    if refreshes {
                        self.queue(writes, pending);
                    }
                    return Ok(Submitted(Answer::Now(outcome)));
                }
                pending
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
                        time_ms: stale::now_ms(),
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
}

/// A write's operation, with what [`Hub::submit`] computed outside the lock.
pub(super) enum Op {
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
pub(super) enum Prepared {
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

/// A change [`prepare`] computed: the next rev and what is stored and sent for it.
pub(super) struct Change {
    pub(super) rev: u64,
    /// The new state, `None` for a removal.
    pub(super) value: Option<Arc<Value>>,
    /// The new state serialized.
    pub(super) json: Option<Bytes>,
    /// The `patch` message, when a merge patch expresses the change.
    pub(super) patch: Option<Bytes>,
}

/// Computes `op` against the topic's latest state: refused, equal, or the next rev.
pub(super) fn prepare(
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
            check_state(config, &topic, &state)?;
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

/// The outcome of an event (it has no rev), and the placeholder of an answer decided later.
pub(super) const UNCHANGED: Outcome = Outcome {
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

/// Refuses a `state` of `topic` that its policy's schema refuses, or that is not a valid
/// entity description when `topic` holds one (`crate::entity`).
fn check_state(config: &HubConfig, topic: &Topic, state: &Value) -> Result<(), HubError> {
    if let Some(schema) = config.policies.schema(topic.as_str()) {
        schema.check(topic.as_str(), state)?;
    }
    if entity::is_entity_topic(topic.as_str()) {
        entity::check(topic.as_str(), state)?;
    }
    Ok(())
}
