//! Fan-out: the published state (each topic's slot and resume buffer, the indexes, the clients)
//! and how a committed change reaches its subscribers.
//!
//! The rule: everything happens under the `published` lock and nothing waits. The shared
//! bytes of each change are pushed into the outbox of every client whose pattern matches
//! (a full outbox conflates), or, when the hub is quiet, a reserved idle client's socket
//! is written once the lock is released ([`write_direct`]). What a new subscription needs
//! to catch up ([`initial_messages`]) is read from the same slots, under the same lock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::client::ClientEntry;
use super::write::{Pending, PendingWhat};
use super::{HubConfig, Mode, Shared, Since, stale};
use crate::index::{PatternIndex, TopicTree};
use crate::message;
use crate::outbox::{DirectWrite, Outbox};
use crate::topic::Topic;

/// What the `published` lock guards.
pub(super) struct Published {
    pub(super) slot_of: HashMap<Topic, u32>,
    pub(super) slots: Vec<Slot>,
    pub(super) tree: TopicTree,
    pub(super) subscriptions: PatternIndex<u32>,
    pub(super) clients: Vec<Option<ClientEntry>>,
    pub(super) free_clients: Vec<u32>,
    /// The sequence number of the last change published.
    pub(super) seq: u64,
    /// Numbers each fan-out, so a change matching several patterns of a client is queued once.
    pub(super) deliveries: u64,
    pub(super) live_topics: usize,
    /// Live topics that are stale now.
    pub(super) stale_topics: usize,
    /// When fresh topics turn stale unless written: (Unix ms, slot), earliest first; at
    /// most one entry per slot (see `stale.rs`).
    pub(super) deadlines: BinaryHeap<Reverse<(u64, u32)>>,
}

/// One topic's published state and resume buffer (removed topics keep theirs: revs never go
/// back). Its index in `Published::slots` is the topic's number in outboxes and indexes.
pub(super) struct Slot {
    pub(super) topic: Topic,
    pub(super) rev: u64,
    pub(super) state: Option<Bytes>,
    pub(super) snapshot: OnceLock<Bytes>,
    pub(super) seq: u64,
    pub(super) resume: VecDeque<ResumeEntry>,
    pub(super) resume_bytes: usize,
    /// The sequence number of the newest change no longer in `resume`.
    pub(super) floor_seq: u64,
    /// When the current rev was made, and when the topic was last written, changed or not
    /// (Unix ms; 0: not known).
    pub(super) changed_ms: u64,
    pub(super) written_ms: u64,
    /// The written time the store holds.
    pub(super) stored_written_ms: u64,
    /// Its policy's `stale_after` in ms (0: none).
    pub(super) stale_after_ms: u64,
    pub(super) stale: bool,
    /// Whether it has an entry in `Published::deadlines`.
    pub(super) armed: bool,
}

/// A change kept for resuming clients: the message that brought the topic to `rev`.
pub(super) struct ResumeEntry {
    rev: u64,
    seq: u64,
    message: Bytes,
}

/// A message the publisher writes to a reserved socket once the hub's lock is released.
pub(super) struct DirectSend {
    outbox: Arc<Outbox>,
    sink: Arc<dyn DirectWrite>,
    bytes: Bytes,
    topic: Option<u32>,
}

impl Slot {
    /// A slot for `topic`, not yet holding anything.
    pub(super) fn new(topic: Topic, stale_after_ms: u64) -> Slot {
        Slot {
            topic,
            rev: 0,
            state: None,
            snapshot: OnceLock::new(),
            seq: 0,
            resume: VecDeque::new(),
            resume_bytes: 0,
            floor_seq: 0,
            changed_ms: 0,
            written_ms: 0,
            stored_written_ms: 0,
            stale_after_ms,
            stale: false,
            armed: false,
        }
    }

    pub(super) fn snapshot(&self) -> Option<&Bytes> {
        let state = self.state.as_ref()?;
        Some(
            self.snapshot
                .get_or_init(|| message::snapshot_of(&self.topic, self.rev, state, self.stale)),
        )
    }

    /// The message that brings a client to this slot's current rev from nothing.
    pub(super) fn current_message(&self) -> Bytes {
        match self.snapshot() {
            Some(s) => s.clone(),
            None => message::removed(&self.topic, self.rev),
        }
    }

    /// Records a change for resuming clients, dropping the oldest beyond the limits.
    pub(super) fn push_resume(&mut self, config: &HubConfig, rev: u64, seq: u64, message: Bytes) {
        self.resume_bytes += message.len();
        self.resume.push_back(ResumeEntry { rev, seq, message });
        while self.resume.len() > config.resume_len
            || (self.resume_bytes > config.resume_bytes && self.resume.len() > 1)
        {
            if let Some(old) = self.resume.pop_front() {
                self.resume_bytes -= old.message.len();
                self.floor_seq = old.seq;
            }
        }
    }

    /// The resume entries after `rev`, if the resume buffer still holds all of them.
    pub(super) fn resume_after_rev(&self, rev: u64) -> Option<impl Iterator<Item = &ResumeEntry>> {
        let first = self.resume.front()?;
        (first.rev <= rev + 1).then(|| self.resume.iter().filter(move |e| e.rev > rev))
    }

    /// The resume entries after sequence number `seq`, if the resume buffer holds all of them.
    pub(super) fn resume_after_seq(&self, seq: u64) -> Option<impl Iterator<Item = &ResumeEntry>> {
        (self.floor_seq <= seq).then(|| self.resume.iter().filter(move |e| e.seq > seq))
    }
}

/// Writes the messages [`publish`] reserved sockets for, while no other write waits: once
/// one does (a burst starting), the rest are queued, so the tasks write them together with
/// the changes that follow.
pub(super) fn write_direct(shared: &Shared, direct: Vec<DirectSend>) {
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

/// A topic's written time that the store should hold (see `stale.rs`).
pub(super) type DueTouch = (Topic, u64);

/// Applies a committed batch to the published state and fans it out: into the outboxes,
/// or with `direct`, to idle clients' sockets once the lock is released. Returns the
/// written times of unchanged writes that are due to be stored.
pub(super) fn publish(
    shared: &Shared,
    batch: &[Pending],
    mut direct: Option<&mut Vec<DirectSend>>,
) -> Vec<DueTouch> {
    let config = &shared.config;
    let stats = &shared.stats;
    let mut touches = Vec::new();
    let mut guard = shared.published_mut();
    let published = &mut *guard;
    for pending in batch {
        let (rev, state, patch, time_ms) = match &pending.what {
            PendingWhat::Change {
                rev,
                state,
                patch,
                time_ms,
            } => (*rev, state, patch, *time_ms),
            PendingWhat::Same {
                written_ms: Some(written_ms),
            } => {
                if let Some(&slot_id) = published.slot_of.get(&pending.topic) {
                    let rev = published.slots[slot_id as usize].rev;
                    stale::written(shared, published, slot_id, *written_ms, rev);
                    let slot = &mut published.slots[slot_id as usize];
                    if stale::touch_due(slot) {
                        slot.stored_written_ms = slot.written_ms;
                        touches.push((slot.topic.clone(), slot.written_ms));
                    }
                }
                continue;
            }
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
            PendingWhat::Same { .. } | PendingWhat::Write { .. } => continue,
        };
        published.seq = published.seq.max(pending.seq);
        let slot_id = match published.slot_of.get(&pending.topic) {
            Some(&id) => id,
            None => {
                let id = published.slots.len() as u32;
                let stale_after = stale::stale_after_ms(config, &pending.topic);
                published
                    .slots
                    .push(Slot::new(pending.topic.clone(), stale_after));
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
        // A shared log's resync may skip revs: the resume buffer cannot bridge that gap.
        let gap = rev != slot.rev + 1;
        if gap {
            slot.resume.clear();
            slot.resume_bytes = 0;
            slot.floor_seq = pending.seq;
        }
        let was_live = slot.state.is_some();
        let rev_before = slot.rev;
        slot.rev = rev;
        slot.state = state.clone();
        slot.snapshot = OnceLock::new();
        slot.seq = pending.seq;
        slot.changed_ms = time_ms;
        slot.stored_written_ms = time_ms;
        let message = match patch {
            Some(patch) if !gap => patch.clone(),
            _ => slot.current_message(),
        };
        if !gap {
            slot.push_resume(config, rev, pending.seq, message.clone());
        }
        match (was_live, state.is_some()) {
            (false, true) => published.live_topics += 1,
            (true, false) => published.live_topics -= 1,
            _ => {}
        }
        let slot = &mut published.slots[slot_id as usize];
        if slot.stale && state.is_none() {
            // A removed topic is neither stale nor fresh: no message, its count goes.
            slot.stale = false;
            published.stale_topics -= 1;
        }
        // Fresh again before the change is sent, and its deadline armed.
        stale::written(shared, published, slot_id, time_ms, rev_before);
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
    touches
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

/// What brings a client from `since` to the slot's current rev. A resuming client is also
/// told whether a topic whose freshness counts is stale now, unless a snapshot (which says
/// so) was sent: it may have turned while the client was away.
pub(super) fn initial_messages(
    slot: &Slot,
    slot_id: u32,
    since: &Since,
    mode: Mode,
    out: &mut Vec<(u32, Bytes)>,
) {
    let live = slot.state.is_some();
    let snapshot = |out: &mut Vec<(u32, Bytes)>| {
        if let Some(snapshot) = slot.snapshot() {
            out.push((slot_id, snapshot.clone()));
        }
    };
    let resumed = match since {
        Since::Now => {
            snapshot(out);
            false
        }
        Since::Revs(revs) => match revs.get(slot.topic.as_str()) {
            None => {
                snapshot(out);
                false
            }
            Some(&rev) if rev == slot.rev => true,
            Some(&rev) => {
                let replay = (rev < slot.rev && mode == Mode::Patch)
                    .then(|| slot.resume_after_rev(rev))
                    .flatten();
                match replay {
                    Some(entries) => {
                        out.extend(entries.map(|e| (slot_id, e.message.clone())));
                        true
                    }
                    None => {
                        out.push((slot_id, slot.current_message()));
                        false
                    }
                }
            }
        },
        Since::Cursor(seq) => {
            let replay = (slot.seq > *seq && mode == Mode::Patch)
                .then(|| slot.resume_after_seq(*seq))
                .flatten();
            match replay {
                _ if slot.seq <= *seq => true,
                Some(entries) => {
                    out.extend(entries.map(|e| (slot_id, e.message.clone())));
                    true
                }
                None if live || *seq > 0 => {
                    out.push((slot_id, slot.current_message()));
                    false
                }
                None => false,
            }
        }
    };
    if resumed && live && (slot.stale_after_ms > 0 || slot.stale) {
        let stale = message::stale(&slot.topic, slot.rev, slot.stale, slot.written_ms);
        out.push((slot_id, stale));
    }
}
