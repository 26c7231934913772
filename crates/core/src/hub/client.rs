//! [`Client`]: one subscriber's handle. Requests (subscribe, scope, get, replies) go in
//! through its methods; everything for the client comes out of [`Client::drain`], in order,
//! as [`Frame`]s.
//!
//! The rule: a subscription's first messages are queued and its patterns registered under
//! one `published` lock, so no change can fall between the snapshot and the first patch;
//! and a client registers only patterns narrowed to its read scope, so the fan-out never
//! finds it for a topic it may not read.

use std::collections::HashSet;
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::fanout::{Published, initial_messages};
use super::{Hub, Mode, Since};
use crate::index::TopicTree;
use crate::message::{self, Frame, Kind};
use crate::outbox::{DirectWrite, Item, Outbox, Taken};
use crate::topic::{Pattern, Topic};

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

/// The hub's record of one client, in `Published::clients` at the client's key.
pub(super) struct ClientEntry {
    pub(super) outbox: Arc<Outbox>,
    /// What the client may read, when it may not read everything (boxed: most clients
    /// never have one and pay a pointer for it).
    scoped: Option<Box<Scoped>>,
    /// The patterns registered in the index: what the client subscribed to, or with a
    /// scope, that narrowed to it.
    patterns: Vec<Pattern>,
    pub(super) mode: Mode,
    /// How the publisher writes to this client's socket itself (see [`DirectWrite`]).
    pub(super) direct: Option<Arc<dyn DirectWrite>>,
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

/// The slots of the topics matching any of `patterns`, each once, in slot order.
fn matching_slots<'a>(
    tree: &TopicTree,
    patterns: impl IntoIterator<Item = &'a Pattern>,
) -> Vec<u32> {
    let mut slots = Vec::new();
    let mut seen = HashSet::new();
    for pattern in patterns {
        tree.for_each_match(pattern, |slot| {
            if seen.insert(slot) {
                slots.push(slot);
            }
        });
    }
    slots.sort_unstable();
    slots
}

impl Hub {
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
        let slots = matching_slots(&published.tree, added.iter().copied());
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
        let slots = matching_slots(&published.tree, &patterns);
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
            out.push(frame_of(item, |topic| {
                self.resync(&self.hub.published(), topic)
            }));
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
            out.push(frame_of(item, |topic| self.resync(&published, topic)));
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

/// The frame a queued item goes out as; `resync` gives a resync marker's snapshot.
fn frame_of(item: Item, resync: impl FnOnce(u32) -> Frame) -> Frame {
    match item {
        Item::State { bytes, .. } => Frame::state(bytes),
        Item::Message { bytes, kind, tag } => Frame { bytes, kind, tag },
        Item::Raw { bytes } => Frame::new(Kind::Framed, bytes),
        Item::Resync { topic } => resync(topic),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_stays_small() {
        // Every connection holds one (a Socket.IO connection two): the hub's two handles,
        // the client's key and its outbox.
        let size = std::mem::size_of::<Client>();
        assert!(size <= 32, "{size}");
    }

    #[test]
    fn a_client_entry_stays_small() {
        // The hub's table holds one per client, and every fan-out reads the entries of the
        // subscribers it finds: one cache line each.
        let size = std::mem::size_of::<Option<ClientEntry>>();
        assert!(size <= 64, "{size}");
    }
}
