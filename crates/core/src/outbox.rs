//! A client's bounded outbound queue, with the contract's conflation rule.
//!
//! The hub pushes shared message bytes into each subscriber's outbox and never waits: when
//! an outbox is full (by count or bytes), its pending state messages are dropped and each
//! topic they were for gets one resync marker, which the writer turns into a fresh snapshot
//! when it gets there; an event that finds the outbox full is dropped and counted. Until a
//! topic's marker is drained, further changes of it are dropped too: the snapshot will carry
//! them. Replies to
//! the client's own requests are never dropped; the transport bounds those by not reading
//! more requests while the outbox is full.
//!
//! Locking: a `std::sync::Mutex` held only for queue operations, never across `.await`.
//! The writer is woken only when the queue turns non-empty, so one wake-up drains a batch.
//!
//! Direct writes: when the hub is quiet (one change, nothing queued behind it), waking
//! every subscriber's task to write one frame costs more than the write itself. A
//! transport that can write its socket from any thread without blocking gives the hub a
//! [`DirectWrite`]; the publisher then reserves each idle outbox (nothing queued, its task
//! not writing) under the hub's lock and writes the message itself once the lock is
//! released. While reserved, everything else queues and the task waits, so the order of
//! bytes on the socket is the order of the queue.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::message::{Frame, Kind};

/// Bounds of one outbox.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            max_messages: 4096,
            max_bytes: 4 << 20,
        }
    }
}

/// One queued entry. Kept at 40 bytes (see `an_item_stays_small`): every queued message
/// of every client is one.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    /// A state message (`snapshot`, `patch`, `removed`) of `topic`, which conflation may
    /// replace.
    State { bytes: Bytes, topic: u32 },
    /// An event or a reply, never replaced; `tag` is a reply's (see [`Frame::tag`]).
    Message { bytes: Bytes, kind: Kind, tag: u32 },
    /// Send the topic's current snapshot (or `removed`) when this is reached.
    Resync { topic: u32 },
    /// Bytes the transport framed itself (the rest of a partial direct write, a pong):
    /// written as they are, never dropped.
    Raw { bytes: Bytes },
}

/// A transport's way to write one message to the client's socket from the publisher's
/// thread (see the module docs). It frames the message and writes without blocking.
pub trait DirectWrite: Send + Sync {
    fn try_write(&self, message: &[u8]) -> DirectWritten;
}

/// What a [`DirectWrite`] did.
#[derive(Debug)]
pub enum DirectWritten {
    /// The whole frame is in the socket.
    All,
    /// Nothing was written (the socket is full or failed): the message is queued instead.
    Nothing,
    /// Only part of the frame went: these framed bytes must go before anything else.
    Part(Bytes),
}

/// What a push did, for the hub's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// Already delivered this change (another pattern matched) or the topic awaits a resync.
    Skipped,
    /// The outbox was full: the topic's pending messages became a resync marker.
    Conflated,
    /// The outbox was full: an event was dropped.
    DroppedEvent,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Item>,
    /// Bytes and count of the messages in `queue` (resync markers are not counted: they
    /// are bounded by the number of topics).
    bytes: usize,
    messages: u32,
    /// Topics with a resync marker in the queue; boxed, and only made when a client first
    /// falls behind, since every client carries it (a bare `HashSet` is 48 bytes inline).
    #[allow(clippy::box_collection)]
    resync: Option<Box<HashSet<u32>>>,
    lagging: bool,
    /// Events dropped in this lag episode (saturates).
    dropped_events: u32,
    /// The last fan-out pushed, so a change matching several patterns is queued once.
    last_delivery: u64,
    waker: Option<Waker>,
    closed: bool,
    /// A timer of the transport fired (see [`Outbox::tick`]).
    ticked: bool,
    /// The task took messages and has not yet written them ([`Outbox::written`]).
    writing: bool,
    /// A publisher is about to write to the socket directly ([`Outbox::reserve`]).
    reserved: bool,
    /// The transport closes the socket: no more direct writes.
    direct_off: bool,
}

impl Item {
    /// The message's bytes (a resync marker has none yet).
    fn bytes(&self) -> Option<&Bytes> {
        match self {
            Item::State { bytes, .. } | Item::Message { bytes, .. } | Item::Raw { bytes } => {
                Some(bytes)
            }
            Item::Resync { .. } => None,
        }
    }
}

impl Inner {
    /// Whether the writer has something to do.
    fn has_work(&self) -> bool {
        self.closed || self.ticked || !self.queue.is_empty() || self.lagging
    }

    /// Counts a message (or raw bytes) going into the queue against the limits.
    fn count_in(&mut self, item: &Item) {
        if let Some(bytes) = item.bytes() {
            self.bytes += bytes.len();
            self.messages += 1;
        }
    }

    fn in_resync(&self, topic: u32) -> bool {
        self.resync.as_ref().is_some_and(|r| r.contains(&topic))
    }

    /// Marks `topic` as awaiting a resync; `false` if it already was.
    fn start_resync(&mut self, topic: u32) -> bool {
        self.resync.get_or_insert_default().insert(topic)
    }
}

#[derive(Debug)]
pub(crate) struct Outbox {
    inner: Mutex<Inner>,
    /// [`OutboxLimits`], narrowed: every client carries them.
    max_messages: u32,
    max_bytes: u32,
}

/// What the writer took from an outbox.
pub(crate) struct Taken {
    pub closed: bool,
    /// [`Outbox::tick`] was called since the last take.
    pub ticked: bool,
    /// The queue was left empty.
    pub drained_all: bool,
    /// `Some(dropped_events)` when a lag episode ended with this batch.
    pub lag_ended: Option<u64>,
}

impl Outbox {
    pub fn new(limits: OutboxLimits) -> Outbox {
        Outbox {
            inner: Mutex::new(Inner::default()),
            max_messages: u32::try_from(limits.max_messages).unwrap_or(u32::MAX),
            max_bytes: u32::try_from(limits.max_bytes).unwrap_or(u32::MAX),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves a consistent queue; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a state message (`snapshot`, `patch`, `removed`) of `topic`. `delivery`
    /// numbers the fan-out (0: not from a fan-out) so a
    /// change that matches several patterns is queued once. `lag` says whether running out
    /// of room counts as lagging (not for initial snapshots).
    pub fn push_state(&self, topic: u32, bytes: &Bytes, delivery: u64, lag: bool) -> Pushed {
        let mut inner = self.lock();
        if inner.closed || (delivery != 0 && inner.last_delivery == delivery) {
            return Pushed::Skipped;
        }
        if delivery != 0 {
            inner.last_delivery = delivery;
        }
        if inner.in_resync(topic) {
            return Pushed::Skipped;
        }
        if self.is_full(&inner, bytes.len()) {
            Self::conflate(&mut inner);
            inner.lagging |= lag;
            let waker = if inner.start_resync(topic) {
                Self::push(&mut inner, Item::Resync { topic })
            } else {
                None
            };
            drop(inner);
            wake(waker);
            return Pushed::Conflated;
        }
        let waker = Self::push(
            &mut inner,
            Item::State {
                bytes: bytes.clone(),
                topic,
            },
        );
        drop(inner);
        wake(waker);
        Pushed::Queued
    }

    /// Queues an event, or drops it when the outbox is full.
    pub fn push_event(&self, bytes: &Bytes, delivery: u64) -> Pushed {
        let mut inner = self.lock();
        if inner.closed || inner.last_delivery == delivery {
            return Pushed::Skipped;
        }
        inner.last_delivery = delivery;
        if self.is_full(&inner, bytes.len()) {
            inner.lagging = true;
            inner.dropped_events = inner.dropped_events.saturating_add(1);
            return Pushed::DroppedEvent;
        }
        let waker = Self::push(
            &mut inner,
            Item::Message {
                bytes: bytes.clone(),
                kind: Kind::Event,
                tag: 0,
            },
        );
        drop(inner);
        wake(waker);
        Pushed::Queued
    }

    /// Queues a reply to the client's own request; never dropped.
    pub fn push_reply(&self, reply: Frame) {
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        let Frame { bytes, kind, tag } = reply;
        let waker = Self::push(&mut inner, Item::Message { bytes, kind, tag });
        drop(inner);
        wake(waker);
    }

    /// Whether the client should stop sending requests until the writer catches up.
    pub fn is_congested(&self) -> bool {
        let inner = self.lock();
        self.is_full(&inner, 0)
    }

    /// Stops accepting messages and wakes the writer, which then sees `closed`.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        // The rest of a partial direct write stays: the close frame must follow it.
        let tail = match inner.queue.front() {
            Some(Item::Raw { .. }) => inner.queue.pop_front(),
            _ => None,
        };
        inner.queue.clear();
        inner.bytes = 0;
        inner.messages = 0;
        if let Some(tail) = tail {
            inner.count_in(&tail);
            inner.queue.push_back(tail);
        }
        let waker = inner.waker.take();
        drop(inner);
        wake(waker);
    }

    /// Wakes the writer with nothing to send, for the transport's timers (heartbeats): one
    /// timer for all clients instead of one per connection.
    pub fn tick(&self) {
        let mut inner = self.lock();
        inner.ticked = true;
        let waker = inner.waker.take();
        drop(inner);
        wake(waker);
    }

    /// Ready when there is something to take, the outbox is closed or it was ticked.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.lock();
        if !inner.reserved && inner.has_work() {
            return Poll::Ready(());
        }
        match &inner.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inner.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Moves up to `max` items into `out`.
    pub fn take(&self, out: &mut Vec<Item>, max: usize) -> Taken {
        let mut inner = self.lock();
        inner.writing = true;
        if inner.closed {
            // Nothing more is sent; what is left is the rest of a partial direct write,
            // for the close frame ([`Outbox::stop_direct`]).
            return Taken {
                closed: true,
                ticked: false,
                drained_all: true,
                lag_ended: None,
            };
        }
        // Taking everything (the usual case) hands over the queue's buffer: an idle client
        // keeps none, and the items are moved out after the lock is released.
        let mut all = None;
        if inner.queue.len() <= max {
            all = Some(std::mem::take(&mut inner.queue));
            inner.bytes = 0;
            inner.messages = 0;
        } else {
            let (mut bytes, mut messages) = (0, 0);
            for item in inner.queue.drain(..max) {
                if let Some(b) = item.bytes() {
                    bytes += b.len();
                    messages += 1;
                }
                out.push(item);
            }
            inner.bytes -= bytes;
            inner.messages -= messages;
        }
        let lag_ended = if inner.lagging && inner.queue.is_empty() {
            inner.lagging = false;
            Some(u64::from(std::mem::take(&mut inner.dropped_events)))
        } else {
            None
        };
        let ticked = std::mem::take(&mut inner.ticked);
        let closed = inner.closed;
        let drained_all = inner.queue.is_empty();
        drop(inner);
        out.extend(all.into_iter().flatten());
        Taken {
            ticked,
            closed,
            drained_all,
            lag_ended,
        }
    }

    /// The task wrote what it took: direct writes may go again.
    pub fn written(&self) {
        self.lock().writing = false;
    }

    /// Ends direct writes for good: the transport is about to write its close frame.
    /// Returns the rest of a partial direct write, which must go before it.
    pub fn stop_direct(&self) -> Option<Bytes> {
        let mut inner = self.lock();
        inner.direct_off = true;
        match inner.queue.pop_front() {
            Some(Item::Raw { bytes }) => {
                inner.bytes -= bytes.len();
                inner.messages -= 1;
                Some(bytes)
            }
            Some(other) => {
                inner.queue.push_front(other);
                None
            }
            None => None,
        }
    }

    /// Queues bytes the transport framed itself (a pong).
    pub fn push_raw(&self, bytes: Bytes) {
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        let waker = Self::push(&mut inner, Item::Raw { bytes });
        drop(inner);
        wake(waker);
    }

    /// Called by the publisher with the hub's published state locked: reserves the socket
    /// for a direct write of fan-out `delivery` when the client is idle. `false`: push the
    /// message as usual.
    pub fn reserve(&self, delivery: u64) -> bool {
        let mut inner = self.lock();
        let idle = !inner.closed
            && !inner.direct_off
            && !inner.writing
            && !inner.reserved
            && !inner.lagging
            && !inner.ticked
            && inner.queue.is_empty()
            && inner.resync.is_none()
            && inner.last_delivery != delivery;
        if idle {
            inner.reserved = true;
            inner.last_delivery = delivery;
        }
        idle
    }

    /// Writes the message a [`Outbox::reserve`] was for to `sink` (or, without one, queues
    /// it), after the hub's lock is released, and lets the task go on. What the socket did
    /// not take is queued first, since it comes before anything queued meanwhile.
    pub fn write_reserved(
        &self,
        sink: Option<&dyn DirectWrite>,
        bytes: &Bytes,
        topic: Option<u32>,
    ) -> Pushed {
        let mut inner = self.lock();
        inner.reserved = false;
        let pushed = if inner.closed || inner.direct_off {
            Pushed::Skipped
        } else {
            let written = sink.map_or(DirectWritten::Nothing, |sink| sink.try_write(bytes));
            let item = match written {
                DirectWritten::All => None,
                DirectWritten::Nothing => Some(match topic {
                    Some(topic) => Item::State {
                        bytes: bytes.clone(),
                        topic,
                    },
                    None => Item::Message {
                        bytes: bytes.clone(),
                        kind: Kind::Event,
                        tag: 0,
                    },
                }),
                DirectWritten::Part(rest) => Some(Item::Raw { bytes: rest }),
            };
            if let Some(item) = item {
                inner.count_in(&item);
                inner.queue.push_front(item);
            }
            Pushed::Queued
        };
        let waker = if inner.has_work() {
            inner.waker.take()
        } else {
            None
        };
        drop(inner);
        wake(waker);
        pushed
    }

    /// Called with the hub's published state locked: from now on, changes of `topic` queue
    /// normally again.
    pub fn end_resync(&self, topic: u32) {
        let mut inner = self.lock();
        if let Some(resync) = &mut inner.resync {
            resync.remove(&topic);
            if resync.is_empty() {
                inner.resync = None;
            }
        }
    }

    /// Replaces every pending state message by one resync marker per topic, at the place of
    /// the topic's first message. Costs one pass over the queue, which frees it, so the
    /// cost per message stays constant however long a client stalls.
    fn conflate(inner: &mut Inner) {
        let mut queue = std::mem::take(&mut inner.queue);
        let mut kept = VecDeque::with_capacity(queue.len());
        for item in queue.drain(..) {
            match item {
                Item::State { topic, bytes: b } => {
                    inner.bytes -= b.len();
                    inner.messages -= 1;
                    if inner.start_resync(topic) {
                        kept.push_back(Item::Resync { topic });
                    }
                }
                other => kept.push_back(other),
            }
        }
        inner.queue = kept;
    }

    fn is_full(&self, inner: &Inner, extra: usize) -> bool {
        inner.messages >= self.max_messages || inner.bytes + extra > self.max_bytes as usize
    }

    fn push(inner: &mut Inner, item: Item) -> Option<Waker> {
        inner.count_in(&item);
        inner.queue.push_back(item);
        // Only the first message of a batch needs to wake the writer; a reserved socket
        // wakes it when the direct write is done.
        if inner.queue.len() == 1 && !inner.reserved {
            inner.waker.take()
        } else {
            None
        }
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(w) = waker {
        w.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn taken_messages(outbox: &Outbox) -> Vec<String> {
        let mut items = Vec::new();
        outbox.take(&mut items, usize::MAX);
        items
            .into_iter()
            .map(|item| match item {
                Item::State { bytes, .. } | Item::Message { bytes, .. } => {
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                Item::Resync { topic } => format!("resync {topic}"),
                Item::Raw { bytes } => format!("raw {}", String::from_utf8_lossy(&bytes)),
            })
            .collect()
    }

    #[test]
    fn an_outbox_stays_small() {
        // Every client carries one, in an `Arc` (16 more bytes): up to 104 bytes, that is
        // one 128-byte block of glibc's allocator (8 bytes of which are its header).
        assert!(
            std::mem::size_of::<Outbox>() <= 104,
            "{}",
            std::mem::size_of::<Outbox>()
        );
    }

    #[test]
    fn an_item_stays_small() {
        // Every queued message of every client is one: a `Bytes` and 8 bytes beside it.
        assert_eq!(std::mem::size_of::<Item>(), 40);
    }

    fn reply(s: &str) -> Frame {
        Frame::new(Kind::Result, msg(s))
    }

    #[test]
    fn full_outbox_conflates_a_topic_into_one_resync() {
        let outbox = Outbox::new(OutboxLimits {
            max_messages: 3,
            max_bytes: 1 << 20,
        });
        assert_eq!(outbox.push_state(1, &msg("a1"), 1, true), Pushed::Queued);
        assert_eq!(outbox.push_state(2, &msg("b1"), 2, true), Pushed::Queued);
        assert_eq!(outbox.push_state(1, &msg("a2"), 3, true), Pushed::Queued);
        assert_eq!(outbox.push_state(1, &msg("a3"), 4, true), Pushed::Conflated);
        assert_eq!(outbox.push_state(1, &msg("a4"), 5, true), Pushed::Skipped);
        assert_eq!(outbox.push_event(&msg("e"), 6), Pushed::Queued);
        assert_eq!(taken_messages(&outbox), vec!["resync 1", "resync 2", "e"]);
        // The topic stays in resync until the writer ends it.
        assert_eq!(outbox.push_state(1, &msg("a5"), 7, true), Pushed::Skipped);
        outbox.end_resync(1);
        assert_eq!(outbox.push_state(1, &msg("a6"), 8, true), Pushed::Queued);
    }

    #[test]
    fn events_are_dropped_and_counted_once_per_episode() {
        let outbox = Outbox::new(OutboxLimits {
            max_messages: 1,
            max_bytes: 1 << 20,
        });
        outbox.push_event(&msg("e1"), 1);
        assert_eq!(outbox.push_event(&msg("e2"), 2), Pushed::DroppedEvent);
        assert_eq!(outbox.push_event(&msg("e3"), 3), Pushed::DroppedEvent);
        let mut items = Vec::new();
        let taken = outbox.take(&mut items, usize::MAX);
        assert_eq!(taken.lag_ended, Some(2));
        let taken = outbox.take(&mut items, usize::MAX);
        assert_eq!(taken.lag_ended, None);
    }

    #[test]
    fn byte_bound_applies() {
        let outbox = Outbox::new(OutboxLimits {
            max_messages: 100,
            max_bytes: 10,
        });
        assert_eq!(
            outbox.push_state(1, &msg("123456"), 1, true),
            Pushed::Queued
        );
        assert_eq!(
            outbox.push_state(2, &msg("123456"), 2, true),
            Pushed::Conflated
        );
        // Replies always go through.
        outbox.push_reply(reply("result"));
        assert_eq!(
            taken_messages(&outbox),
            vec!["resync 1", "resync 2", "result"]
        );
    }

    #[test]
    fn one_change_is_queued_once() {
        let outbox = Outbox::new(OutboxLimits::default());
        assert_eq!(outbox.push_state(1, &msg("a"), 9, true), Pushed::Queued);
        assert_eq!(outbox.push_state(1, &msg("a"), 9, true), Pushed::Skipped);
    }

    /// A socket that takes `room` more bytes, recording what it took.
    struct Socket {
        room: Mutex<usize>,
        taken: Mutex<Vec<u8>>,
    }

    impl Socket {
        fn with_room(room: usize) -> Socket {
            Socket {
                room: Mutex::new(room),
                taken: Mutex::new(Vec::new()),
            }
        }

        fn taken(&self) -> String {
            String::from_utf8_lossy(&self.taken.lock().unwrap()).into_owned()
        }
    }

    impl DirectWrite for Socket {
        fn try_write(&self, message: &[u8]) -> DirectWritten {
            let mut room = self.room.lock().unwrap();
            let n = message.len().min(*room);
            *room -= n;
            self.taken.lock().unwrap().extend_from_slice(&message[..n]);
            match n {
                0 => DirectWritten::Nothing,
                n if n == message.len() => DirectWritten::All,
                n => DirectWritten::Part(Bytes::copy_from_slice(&message[n..])),
            }
        }
    }

    fn is_ready(outbox: &Outbox) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        outbox.poll_ready(&mut cx).is_ready()
    }

    #[test]
    fn a_direct_write_goes_to_the_socket_and_holds_the_task_meanwhile() {
        let outbox = Outbox::new(OutboxLimits::default());
        let socket = Socket::with_room(100);
        assert!(outbox.reserve(1));
        // The same change through a second pattern is not written twice.
        assert!(!outbox.reserve(1));
        assert_eq!(outbox.push_state(1, &msg("p1"), 1, true), Pushed::Skipped);
        // A reply queued meanwhile waits for the direct write.
        outbox.push_reply(reply("result"));
        assert!(!is_ready(&outbox));
        assert_eq!(
            outbox.write_reserved(Some(&socket), &msg("p1"), Some(1)),
            Pushed::Queued
        );
        assert_eq!(socket.taken(), "p1");
        assert!(is_ready(&outbox));
        assert_eq!(taken_messages(&outbox), vec!["result"]);
    }

    #[test]
    fn what_the_socket_does_not_take_goes_first_in_the_queue() {
        let outbox = Outbox::new(OutboxLimits::default());
        let full = Socket::with_room(0);
        assert!(outbox.reserve(1));
        outbox.push_reply(reply("result"));
        outbox.write_reserved(Some(&full), &msg("p1"), Some(1));
        assert_eq!(taken_messages(&outbox), vec!["p1", "result"]);
        outbox.written();

        let nearly_full = Socket::with_room(2);
        assert!(outbox.reserve(2));
        outbox.push_reply(reply("result"));
        outbox.write_reserved(Some(&nearly_full), &msg("patch"), Some(1));
        assert_eq!(nearly_full.taken(), "pa");
        assert_eq!(taken_messages(&outbox), vec!["raw tch", "result"]);
    }

    #[test]
    fn a_reserved_message_without_a_socket_is_queued_first() {
        let outbox = Outbox::new(OutboxLimits::default());
        assert!(outbox.reserve(1));
        outbox.push_reply(reply("result"));
        assert_eq!(
            outbox.write_reserved(None, &msg("p1"), Some(1)),
            Pushed::Queued
        );
        assert!(is_ready(&outbox));
        assert_eq!(taken_messages(&outbox), vec!["p1", "result"]);
    }

    #[test]
    fn no_direct_write_while_the_task_writes_or_anything_is_queued() {
        let outbox = Outbox::new(OutboxLimits::default());
        outbox.push_reply(reply("result"));
        assert!(!outbox.reserve(1));
        assert_eq!(taken_messages(&outbox), vec!["result"]);
        // Taken, not yet written.
        assert!(!outbox.reserve(2));
        outbox.written();
        assert!(outbox.reserve(3));
    }

    #[test]
    fn the_rest_of_a_partial_write_survives_the_close_and_goes_before_the_close_frame() {
        let outbox = Outbox::new(OutboxLimits::default());
        let nearly_full = Socket::with_room(2);
        assert!(outbox.reserve(1));
        outbox.write_reserved(Some(&nearly_full), &msg("patch"), Some(1));
        outbox.push_reply(reply("result"));
        outbox.close();
        assert!(taken_messages(&outbox).is_empty());
        assert_eq!(outbox.stop_direct(), Some(msg("tch")));
        assert_eq!(outbox.stop_direct(), None);
    }

    #[test]
    fn no_direct_write_after_the_close_frame() {
        let outbox = Outbox::new(OutboxLimits::default());
        let socket = Socket::with_room(100);
        assert!(outbox.reserve(1));
        outbox.stop_direct();
        assert_eq!(
            outbox.write_reserved(Some(&socket), &msg("p1"), Some(1)),
            Pushed::Skipped
        );
        assert_eq!(socket.taken(), "");
        assert!(!outbox.reserve(2));
    }
}
