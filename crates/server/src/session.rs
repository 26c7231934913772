//! The request side of a connection, whatever carries it: who the client is (its grant),
//! how many of its messages went over the rate limit, and what each request does
//! ([`Session::dispatch`]), answered through the client's outbox. `/ws` and Socket.IO
//! both plug into it; each transport only moves bytes and says in what shape its answers
//! go out ([`ReplyTo`]).
//!
//! Everything for the client, replies included, goes through the hub's outbox, so a
//! `result` always follows the snapshots it announces. A write's `result` is ready once
//! the write is durable: it waits in the transport's [`Ack`]s, in the order the writes
//! were sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesOrdered, StreamExt};
use serde_json::{Value, json};
use statecast_bridge::Command;
use statecast_core::request::Request as ClientRequest;
use statecast_core::{Client, ErrorCode, Frame, HubError, Kind, Outcome, Write, message};
use tokio::time::{Instant, Sleep};

use crate::app::App;
use crate::auth::{Action, Grant};
use crate::listener::Slot;
use crate::metrics::Metrics;

/// A client with more messages refused over the rate limit within this time than it may
/// send in it is closed.
const SUSTAINED_ABUSE: Duration = Duration::from_secs(5);

/// The `result` of a write, ready once the write is durable.
pub(crate) type Ack = Pin<Box<dyn Future<Output = Frame> + Send>>;

/// Who is on the other end. Kept small: it lives in every connection's future (see
/// `a_session_stays_small`).
pub(crate) struct Session {
    /// The connection's place in the connection limits; it knows the peer's address and
    /// holds the connection's message budget.
    slot: Option<Arc<Slot>>,
    /// Made when auth is on or the client first goes over the rate limit.
    state: Option<Box<SessionState>>,
}

#[derive(Default)]
struct SessionState {
    /// `None` until an `auth` message when auth is on and the connection carried no token.
    grant: Option<Box<Grant>>,
    abuse: Abuse,
}

/// A client's messages refused over the rate limit. A client over the rate now and then
/// only gets errors; one that has more refused within `SUSTAINED_ABUSE` than it may send in
/// that time is closed.
#[derive(Default)]
struct Abuse {
    /// The start of the window in which `refused` messages were over the rate limit.
    limited_since: Option<Instant>,
    refused: u32,
}

impl Abuse {
    /// Counts one refused message; `true` when the client is to be closed.
    fn refuse(&mut self, app: &App) -> bool {
        let now = Instant::now();
        match self.limited_since {
            Some(since) if now - since <= SUSTAINED_ABUSE => self.refused += 1,
            _ => {
                self.limited_since = Some(now);
                self.refused = 1;
            }
        }
        let allowance =
            u64::from(app.config.limits.messages_per_second) * SUSTAINED_ABUSE.as_secs();
        u64::from(self.refused) > allowance
    }
}

/// A message refused over the rate limit.
pub(crate) struct OverRate {
    pub error: HubError,
    /// Refused too often: the client is to be closed.
    pub close: bool,
}

/// The grant of every client while auth is off.
static EVERYTHING: std::sync::LazyLock<Grant> = std::sync::LazyLock::new(Grant::everything);

impl Session {
    /// The session of a connection holding `slot`, with the grant its connection request
    /// carried (`None`: it has to send `auth`). With auth off it needs no state at all.
    pub(crate) fn new(app: &App, slot: Option<Arc<Slot>>, grant: Option<Box<Grant>>) -> Session {
        let state = app.config.auth.required().then(|| {
            Box::new(SessionState {
                grant,
                abuse: Abuse::default(),
            })
        });
        Session { slot, state }
    }

    pub(crate) fn peer(&self) -> Option<std::net::SocketAddr> {
        self.slot.as_ref().map(|slot| slot.peer)
    }

    /// The client's grant: everything while auth is off, `None` before it authenticated.
    pub(crate) fn grant(&self) -> Option<&Grant> {
        match &self.state {
            None => Some(&EVERYTHING),
            Some(state) => state.grant.as_deref(),
        }
    }

    /// What the client may read, for its hub clients: `None` (everything) with auth off,
    /// nothing before it authenticated.
    pub(crate) fn scope(&self) -> Option<Vec<statecast_core::Pattern>> {
        match self.grant() {
            Some(grant) => grant.scope(),
            None => Some(Vec::new()),
        }
    }

    fn state(&mut self) -> &mut SessionState {
        self.state.get_or_insert_with(Default::default)
    }

    /// When the connection must have authenticated again: at the end of the auth timeout
    /// while it has no grant, at its token's expiry after (auth on only).
    pub(crate) fn deadline(&self, app: &App) -> Option<Instant> {
        let state = self.state.as_ref()?;
        match &state.grant {
            None => Some(Instant::now() + app.config.auth.auth_timeout),
            Some(grant) => grant.remaining().map(|left| Instant::now() + left),
        }
    }

    /// Takes one message from the address's and the connection's budgets.
    pub(crate) fn take_message(&mut self, app: &App) -> Result<(), OverRate> {
        let peer = self.peer();
        let Err(error) = app.check_rate(peer.map(|p| p.ip()), self.slot.as_deref()) else {
            return Ok(());
        };
        let close = self.state().abuse.refuse(app);
        if close {
            app.refused(peer, &error);
        }
        Err(OverRate { error, close })
    }

    /// An `auth` request: a fresh token replaces the grant. `Ok(None)` while auth is off;
    /// a refusal is counted and logged (the transport then closes the connection).
    pub(crate) fn authenticate(
        &mut self,
        app: &App,
        token: &str,
    ) -> Result<Option<&Grant>, HubError> {
        if !app.config.auth.required() {
            return Ok(None);
        }
        let grant = app
            .config
            .auth
            .verify(token)
            .inspect_err(|e| app.refused(self.peer(), e))?;
        let state = self.state();
        state.grant = Some(Box::new(grant));
        Ok(state.grant.as_deref())
    }

    /// Carries out a request (every one but `ping` and `auth`, which the transport answers
    /// itself): checks that the grant allows it, then answers at once through `client`'s
    /// outbox, or queues a write in `acks` whose `result` is ready when the write is
    /// durable.
    pub(crate) fn dispatch(
        &self,
        app: &App,
        client: &Client,
        request: ClientRequest,
        reply: ReplyTo,
        acks: &mut Option<FuturesOrdered<Ack>>,
    ) {
        let peer = self.peer();
        let Some(grant) = self.grant() else {
            let e = HubError::new(
                ErrorCode::Unauthorized,
                "authenticate first: send {\"type\":\"auth\",\"token\":...}",
            );
            app.refused(peer, &e);
            client.reply(reply.refused(&e));
            return;
        };
        let needed = match &request {
            ClientRequest::Set { topic, .. }
            | ClientRequest::Patch { topic, .. }
            | ClientRequest::Delete { topic } => Some((Action::Write, topic)),
            ClientRequest::Event { topic, .. } => Some((Action::Event, topic)),
            ClientRequest::Command { target, .. } => Some((Action::Command, target)),
            _ => None,
        };
        if let Some((action, topic)) = needed
            && let Err(e) = app.permit(grant, peer, action, topic)
        {
            client.reply(reply.refused(&e));
            return;
        }
        let write = match request {
            ClientRequest::Ping | ClientRequest::Auth { .. } => return,
            ClientRequest::Subscribe {
                patterns,
                since,
                mode,
            } => {
                let max = app.config.limits.max_subscriptions;
                if client.subscription_count() + patterns.len() > max {
                    let e = HubError::new(
                        ErrorCode::TooLarge,
                        format!("at most {max} subscriptions per connection (max_subscriptions)"),
                    );
                    client.reply(reply.refused(&e));
                    return;
                }
                let topics = client.subscribe(&patterns, &since, mode);
                client.reply(reply.ok(json!({"topics": topics})));
                return;
            }
            ClientRequest::Unsubscribe { patterns } => {
                let removed = client.unsubscribe(&patterns);
                client.reply(reply.ok(json!({"removed": removed})));
                return;
            }
            ClientRequest::Get { patterns } => {
                let topics = client.get(&patterns);
                client.reply(reply.ok(json!({"topics": topics})));
                return;
            }
            ClientRequest::Command { target, name, args } => {
                // Answered on its own task: a slow device holds up neither this
                // connection's other requests nor its pushes.
                let Ok(permit) = Arc::clone(&app.commands_in_flight).try_acquire_owned() else {
                    let e = HubError::new(ErrorCode::RateLimited, "too many commands in flight");
                    client.reply(reply.refused(&e));
                    return;
                };
                let replier = client.replier();
                let bridge = Arc::clone(&app.bridge);
                tokio::spawn(async move {
                    let answer = bridge.command(Command { target, name, args }).await;
                    drop(permit);
                    replier.reply(match answer {
                        Ok(result) => reply.command_result(result),
                        Err(e) => reply.failed(e.to_json()),
                    });
                });
                return;
            }
            ClientRequest::Set { topic, state } => Write::Set {
                topic,
                state,
                if_rev: None,
            },
            ClientRequest::Patch { topic, patch } => Write::Patch {
                topic,
                patch,
                if_rev: None,
            },
            ClientRequest::Delete { topic } => Write::Delete {
                topic,
                if_rev: None,
            },
            ClientRequest::Event { topic, data } => Write::Event { topic, data },
        };
        let is_event = matches!(write, Write::Event { .. });
        match app.hub.submit(write) {
            Err(e) => {
                Metrics::add(&app.metrics.client_errors, 1);
                client.reply(reply.refused(&e));
            }
            Ok(submitted) => {
                let done = submitted.wait();
                let acks = acks.get_or_insert_with(FuturesOrdered::new);
                acks.push_back(Box::pin(async move {
                    match done.await {
                        Ok(outcome) => reply.written(outcome, is_event),
                        Err(e) => reply.refused(&e),
                    }
                }));
            }
        }
    }
}

/// The next write result, in the order the writes were sent.
pub(crate) async fn next_ack(acks: &mut Option<FuturesOrdered<Ack>>) -> Option<Frame> {
    acks.as_mut()?.next().await
}

/// Resolves at the deadline (never without one).
pub(crate) async fn expired(deadline: &mut Option<Pin<Box<Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Where a request's answer goes and in what shape: its wire `id`, the transport's tag
/// (see [`Frame::tag`]) and the [`Shape`].
pub(crate) struct ReplyTo {
    id: Option<Value>,
    tag: u32,
    shape: Shape,
}

/// How a transport sends answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `/ws`: a `result`; a failure of a request without an `id` is an `error`.
    Message,
    /// A Socket.IO acknowledgement: always a `result`.
    Ack,
    /// A Socket.IO event without acknowledgement: only a failure goes out, as an `error`.
    NoAck,
    /// A `[[socketio.on]]` command's acknowledgement: the command's answer itself, or
    /// `{"error": ...}`, as a Flask-SocketIO handler's return value was.
    Bare,
}

impl ReplyTo {
    /// An answer on `/ws`, echoing the request's `id`.
    pub(crate) fn message(id: Option<Value>) -> ReplyTo {
        ReplyTo::new(id, 0, Shape::Message)
    }

    pub(crate) fn new(id: Option<Value>, tag: u32, shape: Shape) -> ReplyTo {
        ReplyTo { id, tag, shape }
    }

    fn frame(&self, kind: Kind, bytes: bytes::Bytes) -> Frame {
        Frame {
            bytes,
            kind,
            tag: self.tag,
        }
    }

    /// Success, with `fields` in the `result`.
    pub(crate) fn ok(&self, fields: Value) -> Frame {
        self.frame(Kind::Result, message::result(self.id.as_ref(), fields))
    }

    /// Failure; `error` is the error's JSON.
    pub(crate) fn failed(&self, error: Value) -> Frame {
        let id = self.id.as_ref();
        match self.shape {
            Shape::Message if id.is_none() => self.frame(Kind::Error, message::error(id, error)),
            Shape::NoAck => self.frame(Kind::Error, message::error(id, error)),
            Shape::Bare => self.frame(Kind::Failed, message::command_failed(error)),
            Shape::Message | Shape::Ack => self.frame(Kind::Failed, message::failed(id, error)),
        }
    }

    pub(crate) fn refused(&self, e: &HubError) -> Frame {
        self.failed(e.to_json())
    }

    pub(crate) fn pong(&self) -> Frame {
        self.frame(Kind::Pong, message::pong(self.id.as_ref()))
    }

    /// A command's answer.
    fn command_result(&self, result: Value) -> Frame {
        match self.shape {
            Shape::Bare => self.frame(Kind::Result, bytes::Bytes::from(result.to_string())),
            _ => self.ok(json!({ "result": result })),
        }
    }

    /// A durable write's `result`.
    fn written(&self, outcome: Outcome, is_event: bool) -> Frame {
        if is_event {
            self.ok(json!({}))
        } else {
            self.ok(json!({"rev": outcome.rev, "changed": outcome.changed}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_stays_small() {
        // Every connection's future holds one: two pointers, the rest boxed on demand.
        assert_eq!(std::mem::size_of::<Session>(), 16);
    }

    fn parse(frame: &Frame) -> Value {
        serde_json::from_slice(&frame.bytes).unwrap()
    }

    #[test]
    fn a_failure_takes_the_shape_its_transport_sends() {
        let e = HubError::new(ErrorCode::Forbidden, "no");
        let error = e.to_json();
        let id = Some(json!(1));
        let shaped = |id: Option<Value>, shape| ReplyTo::new(id, 9, shape).refused(&e);
        let on_ws = shaped(id.clone(), Shape::Message);
        assert_eq!(on_ws.kind, Kind::Failed);
        assert_eq!(
            parse(&on_ws),
            json!({"type": "result", "ok": false, "error": error, "id": 1})
        );
        let without_id = shaped(None, Shape::Message);
        assert_eq!(without_id.kind, Kind::Error);
        assert_eq!(parse(&without_id), json!({"type": "error", "error": error}));
        assert_eq!(
            parse(&shaped(None, Shape::Ack)),
            json!({"type": "result", "ok": false, "error": error})
        );
        let unacknowledged = shaped(id, Shape::NoAck);
        assert_eq!((unacknowledged.kind, unacknowledged.tag), (Kind::Error, 9));
        assert_eq!(
            parse(&unacknowledged),
            json!({"type": "error", "error": error, "id": 1})
        );
        assert_eq!(parse(&shaped(None, Shape::Bare)), json!({ "error": error }));
    }

    #[test]
    fn a_mapped_command_is_answered_with_its_result_alone() {
        let answer = json!({"on": true});
        let bare = ReplyTo::new(None, 3, Shape::Bare).command_result(answer.clone());
        assert_eq!((bare.kind, parse(&bare)), (Kind::Result, answer.clone()));
        let generic = ReplyTo::message(Some(json!("a"))).command_result(answer.clone());
        assert_eq!(
            parse(&generic),
            json!({"type": "result", "ok": true, "result": answer, "id": "a"})
        );
    }
}
