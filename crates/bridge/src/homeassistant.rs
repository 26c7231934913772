//! The `homeassistant` source: a Home Assistant instance mirrored entity by entity, and
//! commands carried back to it as service calls, both over Home Assistant's WebSocket API.
//!
//! Each run is one connection (`supervise.rs` makes a new one, with backoff, when it
//! fails): the source answers `auth_required` with its token (`auth_invalid` ends the run
//! with Home Assistant's message, so `_sources/<name>` shows it), subscribes to
//! `state_changed` events, then asks for every state (`get_states`). That answer is a
//! resync: each selected entity is set on `<prefix>/<entity_id>` as
//! `{state, attributes, last_changed, last_updated}`, and every `<prefix>/+` topic whose
//! entity is gone (or no longer selected) is deleted; the source owns those topics. From
//! then on each `state_changed` event is a write, and one without a new state (a removed
//! entity) deletes the topic. Home Assistant sends answers and events in the order it
//! handles them, so no snapshot ever overwrites a newer change.
//!
//! Commands ([`HomeAssistantSource::call_service`]) travel over the same connection: the
//! run numbers each message (Home Assistant wants increasing ids on a connection) and hands
//! the `result` back to the caller waiting for it. An application-level `ping` every
//! `ping_interval_ms` keeps the connection honest; no `pong` before the next one drops it.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use statecast_core::{ErrorCode, Hub, HubError, Outcome, Pattern, Topic, Write};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::command::{Command, CommandError};
use crate::config::HomeAssistantConfig;
use crate::health::Health;

/// Longest wait for the connection, and then for the authentication.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Writes waiting to be durable before the source stops reading Home Assistant: the hub
/// commits them together, so a burst of changes costs few commits.
const MAX_WRITES_IN_FLIGHT: usize = 256;
/// Service calls queued for the connection; more wait (bounded by the command timeout).
const MAX_QUEUED_CALLS: usize = 64;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Written = Pin<Box<dyn Future<Output = (Topic, bool, Result<Outcome, HubError>)> + Send>>;

/// The `homeassistant` source; also the route of commands to its topics.
pub struct HomeAssistantSource {
    hub: Hub,
    health: Arc<Health>,
    name: String,
    url: String,
    token: String,
    prefix: String,
    /// `<prefix>/+`: the topics this source owns.
    topics: Pattern,
    entities: EntityFilter,
    commands: bool,
    command_timeout: Duration,
    ping_every: Duration,
    /// Where service calls go while a connection is authenticated; `None` otherwise.
    link: Mutex<Option<mpsc::Sender<Call>>>,
}

/// A service call for the connection: the message without its id, and who waits for the
/// `result`.
struct Call {
    message: Value,
    answer: oneshot::Sender<Value>,
}

/// What an id sent on the connection is waiting for.
enum Pending {
    Subscribe,
    States,
    Ping(Instant),
    Call(oneshot::Sender<Value>),
}

impl HomeAssistantSource {
    pub fn new(
        hub: Hub,
        health: Arc<Health>,
        name: &str,
        c: HomeAssistantConfig,
    ) -> Result<HomeAssistantSource, String> {
        let url = reqwest::Url::parse(&c.url).map_err(|e| format!("url {:?}: {e}", c.url))?;
        match url.scheme() {
            "ws" => {}
            // Outgoing connections have no TLS yet: refused here rather than failing at
            // every connect.
            "wss" => {
                return Err(format!(
                    "url {:?}: wss:// is not supported yet; connect to Home Assistant's own \
                     port with ws://HOST:8123/api/websocket",
                    c.url
                ));
            }
            _ => {
                return Err(format!(
                    "url {:?}: the scheme must be ws:// (Home Assistant's WebSocket API is \
                     ws://HOST:8123/api/websocket)",
                    c.url
                ));
            }
        }
        if c.token.trim().is_empty() {
            return Err("token: give a Home Assistant access token".into());
        }
        Topic::new(&c.prefix).map_err(|e| format!("prefix {:?}: {e}", c.prefix))?;
        let topics = Pattern::new(&format!("{}/+", c.prefix))
            .map_err(|e| format!("prefix {:?}: {e}", c.prefix))?;
        Ok(HomeAssistantSource {
            hub,
            health,
            name: name.to_string(),
            url: c.url,
            token: c.token,
            topics,
            prefix: c.prefix,
            entities: EntityFilter::new(&c.entities)?,
            commands: c.commands,
            command_timeout: Duration::from_millis(c.command_timeout_ms.max(1)),
            ping_every: Duration::from_millis(c.ping_interval_ms.max(1)),
            link: Mutex::new(None),
        })
    }

    /// The topic prefix (`ha`): two sources cannot share one.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The topics (`<prefix>/<entity_id>`) whose commands become service calls, and how
    /// long one may take; `None` with `commands = false`.
    pub(crate) fn command_topics(&self) -> Option<(Pattern, Duration)> {
        self.commands
            .then(|| (self.topics.clone(), self.command_timeout))
    }

    /// One connection, until it fails.
    pub async fn run(self: Arc<Self>) -> Result<(), String> {
        let started = Instant::now();
        let failed = |e: &dyn std::fmt::Display| format!("{}: {e}", self.url);
        let connecting = tokio_tungstenite::connect_async(self.url.as_str());
        let (mut socket, _) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| failed(&format_args!("no connection within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| failed(&e))?;
        tokio::time::timeout(CONNECT_TIMEOUT, self.authenticate(&mut socket))
            .await
            .map_err(|_| failed(&"no answer to the authentication"))??;

        let (calls_to_send, mut calls) = mpsc::channel(MAX_QUEUED_CALLS);
        let _online = Linked::new(&self.link, calls_to_send);
        let mut requests = Requests::default();
        // Subscribed first: no change can fall between the states and the first event.
        let subscribe = json!({"type": "subscribe_events", "event_type": "state_changed"});
        let subscription = requests
            .send(&mut socket, subscribe, Pending::Subscribe)
            .await
            .map_err(|e| failed(&e))?;
        let get_states = json!({"type": "get_states"});
        requests
            .send(&mut socket, get_states, Pending::States)
            .await
            .map_err(|e| failed(&e))?;
        let mut session = Session {
            started,
            requests,
            subscription,
            writes: FuturesUnordered::new(),
            unanswered_ping: false,
            synced: false,
        };

        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + self.ping_every,
            self.ping_every,
        );
        loop {
            tokio::select! {
                message = socket.next(), if session.writes.len() < MAX_WRITES_IN_FLIGHT => {
                    let text = match message {
                        None => return Err(failed(&"the connection ended")),
                        Some(Err(e)) => return Err(failed(&e)),
                        Some(Ok(Message::Close(frame))) => return Err(failed(&closed(frame))),
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(_)) => continue,
                    };
                    let Ok(parsed) = serde_json::from_str::<Value>(text.as_str()) else {
                        self.health.rejected(&failed(&"a message that is not JSON")).await;
                        continue;
                    };
                    // One message, or several in an array.
                    let messages = match parsed {
                        Value::Array(messages) => messages,
                        message => vec![message],
                    };
                    for message in messages {
                        self.received(&mut session, message).await.map_err(|e| failed(&e))?;
                    }
                }
                Some(call) = calls.recv() => {
                    // A caller that gave up while the call was queued is not served.
                    if !call.answer.is_closed() {
                        let call_service = Pending::Call(call.answer);
                        session.requests.send(&mut socket, call.message, call_service)
                            .await
                            .map_err(|e| failed(&e))?;
                    }
                }
                _ = ping.tick() => {
                    if session.unanswered_ping {
                        let within = self.ping_every.as_millis();
                        return Err(failed(&format_args!("no answer to a ping within {within} ms")));
                    }
                    // Calls whose callers gave up are not kept until the connection ends.
                    session.requests.forget_abandoned();
                    let ping = Pending::Ping(Instant::now());
                    session.requests.send(&mut socket, json!({"type": "ping"}), ping)
                        .await
                        .map_err(|e| failed(&e))?;
                    session.unanswered_ping = true;
                }
                Some((topic, deleting, written)) = session.writes.next() => {
                    if self.written(&topic, deleting, written).await && session.synced {
                        self.health.ok(None).await;
                    }
                }
            }
        }
    }

    /// Takes one message from Home Assistant: an event, a pong or a result.
    async fn received(&self, session: &mut Session, message: Value) -> Result<(), String> {
        let id = message["id"].as_u64();
        match message["type"].as_str() {
            Some("event") if id == Some(session.subscription) => {
                self.changed(&message["event"]["data"], &mut session.writes)
                    .await;
            }
            Some("pong") => {
                if let Some(Pending::Ping(at)) = session.requests.answered(id) {
                    session.unanswered_ping = false;
                    if session.synced {
                        self.health.ok(Some(at.elapsed())).await;
                    }
                }
            }
            Some("result") => match session.requests.answered(id) {
                Some(Pending::Call(answer)) => {
                    let _ = answer.send(message);
                }
                Some(Pending::States) => {
                    let Some(states) = message["result"].as_array() else {
                        return Err(refused("get_states", &message));
                    };
                    self.resync(states).await;
                    // Online once the mirror is whole.
                    session.synced = true;
                    self.health.ok(Some(session.started.elapsed())).await;
                }
                Some(Pending::Subscribe) if message["success"] != true => {
                    return Err(refused("subscribe_events", &message));
                }
                _ => {}
            },
            _ => {}
        }
        Ok(())
    }

    /// Answers `auth_required` with the token; fails with Home Assistant's reason if it
    /// refuses it.
    async fn authenticate(&self, socket: &mut Socket) -> Result<(), String> {
        let hello = next_json(socket)
            .await
            .map_err(|e| format!("{}: {e}", self.url))?;
        if hello["type"] != "auth_required" {
            return Err(format!(
                "{}: expected Home Assistant's auth_required, got {}",
                self.url,
                brief(&hello)
            ));
        }
        let auth = json!({"type": "auth", "access_token": self.token});
        socket
            .send(Message::text(auth.to_string()))
            .await
            .map_err(|e| format!("{}: {e}", self.url))?;
        let answer = next_json(socket)
            .await
            .map_err(|e| format!("{}: {e}", self.url))?;
        match answer["type"].as_str() {
            Some("auth_ok") => Ok(()),
            Some("auth_invalid") => Err(format!(
                "{}: authentication failed: {}",
                self.url,
                answer["message"]
                    .as_str()
                    .unwrap_or("the token was refused")
            )),
            _ => Err(format!(
                "{}: expected auth_ok or auth_invalid, got {}",
                self.url,
                brief(&answer)
            )),
        }
    }

    /// The topic of an entity, if this source mirrors it.
    fn topic_of(&self, entity_id: &str) -> Option<Result<Topic, String>> {
        if !self.entities.matches(entity_id) {
            return None;
        }
        let name = format!("{}/{entity_id}", self.prefix);
        Some(
            Topic::new(&name)
                .map_err(|e| format!("entity {entity_id:?} cannot be the topic {name:?}: {e}")),
        )
    }

    /// Queues the write of a `state_changed` event's data.
    async fn changed(&self, data: &Value, writes: &mut FuturesUnordered<Written>) {
        let Some(entity_id) = data["entity_id"].as_str() else {
            return;
        };
        let topic = match self.topic_of(entity_id) {
            None => return,
            Some(Ok(topic)) => topic,
            Some(Err(e)) => return self.health.rejected(&e).await,
        };
        let write = match &data["new_state"] {
            Value::Null => Write::Delete {
                topic,
                if_rev: None,
            },
            state => Write::Set {
                topic,
                state: mirrored(state),
                if_rev: None,
            },
        };
        self.submit(write, writes).await;
    }

    /// Makes the mirror equal to `states`: every selected entity set, every other topic
    /// under the prefix deleted. Returns once all of it is durable.
    async fn resync(&self, states: &[Value]) {
        let mut writes = FuturesUnordered::new();
        let mut present = HashSet::new();
        for state in states {
            let Some(entity_id) = state["entity_id"].as_str() else {
                continue;
            };
            let topic = match self.topic_of(entity_id) {
                None => continue,
                Some(Ok(topic)) => topic,
                Some(Err(e)) => {
                    self.health.rejected(&e).await;
                    continue;
                }
            };
            present.insert(topic.as_str().to_string());
            let write = Write::Set {
                topic,
                state: mirrored(state),
                if_rev: None,
            };
            self.submit(write, &mut writes).await;
        }
        for old in self.hub.get_matching(&self.topics) {
            if !present.contains(old.topic.as_str()) {
                let write = Write::Delete {
                    topic: old.topic,
                    if_rev: None,
                };
                self.submit(write, &mut writes).await;
            }
        }
        while let Some((topic, deleting, written)) = writes.next().await {
            self.written(&topic, deleting, written).await;
        }
    }

    /// Hands `write` to the hub (which orders it) and queues the wait for it to be durable.
    async fn submit(&self, write: Write, writes: &mut FuturesUnordered<Written>) {
        let (topic, deleting) = match &write {
            Write::Set { topic, .. } | Write::Patch { topic, .. } | Write::Event { topic, .. } => {
                (topic.clone(), false)
            }
            Write::Delete { topic, .. } => (topic.clone(), true),
        };
        // An entity Home Assistant cannot reach: its topic is stale once the state lands.
        let unavailable =
            matches!(&write, Write::Set { state, .. } if state["state"] == "unavailable");
        match self.hub.submit(write) {
            Ok(submitted) => {
                let wait = submitted.wait();
                let hub = self.hub.clone();
                writes.push(Box::pin(async move {
                    let written = wait.await;
                    if unavailable && written.is_ok() {
                        hub.mark_stale(&topic);
                    }
                    (topic, deleting, written)
                }));
            }
            Err(e) => {
                self.written(&topic, deleting, Err(e)).await;
            }
        }
    }

    /// Reports a write the hub refused; says whether it went through.
    async fn written(
        &self,
        topic: &Topic,
        deleting: bool,
        written: Result<Outcome, HubError>,
    ) -> bool {
        match written {
            Ok(_) => true,
            // Already gone: what a delete wanted.
            Err(e) if deleting && e.code == ErrorCode::NotFound => true,
            Err(e) => {
                let error = format!("{}: {e}", topic.as_str());
                self.health.rejected(&error).await;
                false
            }
        }
    }

    /// Sends a command to `<prefix>/<entity_id>` as the service call its name names
    /// (`light.turn_on`), with the entity as the target and the args as service data, and
    /// returns Home Assistant's `result` (`{"context": ...}`). Home Assistant's refusal is
    /// `upstream` with its error (`code`, `message`) as the body; a source that is not
    /// connected is `upstream` too, naming its last error.
    pub async fn call_service(&self, command: &Command) -> Result<Value, CommandError> {
        let entity_id = command
            .target
            .as_str()
            .strip_prefix(&self.prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|rest| !rest.contains('/'))
            .ok_or_else(|| {
                CommandError::new(
                    ErrorCode::NoRoute,
                    format!("no route for target {}", command.target),
                )
            })?;
        if !self.entities.matches(entity_id) {
            return Err(CommandError::new(
                ErrorCode::NoRoute,
                format!(
                    "source {:?} does not mirror {entity_id} (see its `entities`)",
                    self.name
                ),
            ));
        }
        let Some((domain, service)) = split_service(&command.name) else {
            return Err(CommandError::new(
                ErrorCode::BadRequest,
                format!(
                    "{:?} is not a Home Assistant service: name one as domain.service \
                     (light.turn_on, input_boolean.toggle)",
                    command.name
                ),
            ));
        };
        let service_data = match &command.args {
            Value::Null => json!({}),
            Value::Object(_) => command.args.clone(),
            _ => {
                return Err(CommandError::new(
                    ErrorCode::BadRequest,
                    "the args of a service call are its service data: a JSON object",
                ));
            }
        };
        let message = json!({
            "type": "call_service",
            "domain": domain,
            "service": service,
            "target": {"entity_id": entity_id},
            "service_data": service_data,
        });
        let link = lock(&self.link).clone();
        let Some(link) = link else {
            return Err(self.offline());
        };
        let (answer, answered) = oneshot::channel();
        link.send(Call { message, answer })
            .await
            .map_err(|_| self.offline())?;
        let result = answered.await.map_err(|_| {
            CommandError::new(
                ErrorCode::Upstream,
                format!(
                    "the connection to Home Assistant ({}) ended before it answered",
                    self.url
                ),
            )
        })?;
        if result["success"] == true {
            return Ok(result["result"].clone());
        }
        let error = &result["error"];
        Err(CommandError {
            code: ErrorCode::Upstream,
            message: format!(
                "Home Assistant refused {}: {}: {}",
                command.name,
                error["code"].as_str().unwrap_or("unknown_error"),
                error["message"].as_str().unwrap_or("no message")
            ),
            status: None,
            body: Some(error.clone()),
        })
    }

    fn offline(&self) -> CommandError {
        let why = self
            .health
            .snapshot()
            .last_error
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        CommandError::new(
            ErrorCode::Upstream,
            format!(
                "Home Assistant is not connected: source {:?} is offline{why}",
                self.name
            ),
        )
    }
}

/// What one connection keeps besides its socket.
struct Session {
    started: Instant,
    requests: Requests,
    /// The id of the `state_changed` subscription, which its events carry.
    subscription: u64,
    /// Writes handed to the hub, waiting to be durable.
    writes: FuturesUnordered<Written>,
    /// A ping was sent and its pong has not come yet.
    unanswered_ping: bool,
    /// Whether the answer to `get_states` is written: the source is online from then on.
    synced: bool,
}

/// The messages sent on one connection that wait for an answer, by id.
#[derive(Default)]
struct Requests {
    last_id: u64,
    pending: HashMap<u64, Pending>,
}

impl Requests {
    /// Sends `message` (an object) with the next id; returns the id.
    async fn send(
        &mut self,
        socket: &mut Socket,
        mut message: Value,
        pending: Pending,
    ) -> Result<u64, tokio_tungstenite::tungstenite::Error> {
        self.last_id += 1;
        if let Some(fields) = message.as_object_mut() {
            fields.insert("id".into(), json!(self.last_id));
        }
        self.pending.insert(self.last_id, pending);
        socket.send(Message::text(message.to_string())).await?;
        Ok(self.last_id)
    }

    fn answered(&mut self, id: Option<u64>) -> Option<Pending> {
        self.pending.remove(&id?)
    }

    /// Drops the calls whose callers gave up (their timeout passed).
    fn forget_abandoned(&mut self) {
        self.pending
            .retain(|_, p| !matches!(p, Pending::Call(answer) if answer.is_closed()));
    }
}

/// Publishes a connection's call queue while it lives: calls go to it from now on, and
/// are refused again (the source is offline) once the connection is gone.
struct Linked<'a> {
    link: &'a Mutex<Option<mpsc::Sender<Call>>>,
    sender: mpsc::Sender<Call>,
}

impl<'a> Linked<'a> {
    fn new(link: &'a Mutex<Option<mpsc::Sender<Call>>>, sender: mpsc::Sender<Call>) -> Self {
        *lock(link) = Some(sender.clone());
        Linked { link, sender }
    }
}

impl Drop for Linked<'_> {
    fn drop(&mut self) {
        let mut link = lock(self.link);
        if link.as_ref().is_some_and(|s| s.same_channel(&self.sender)) {
            *link = None;
        }
    }
}

/// An entity's state as the topic holds it.
fn mirrored(state: &Value) -> Value {
    json!({
        "state": state["state"],
        "attributes": state["attributes"],
        "last_changed": state["last_changed"],
        "last_updated": state["last_updated"],
    })
}

/// `domain.service`, each made of lowercase letters, digits and `_`.
fn split_service(name: &str) -> Option<(&str, &str)> {
    let (domain, service) = name.split_once('.')?;
    let word = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    (word(domain) && word(service)).then_some((domain, service))
}

/// The next text message, as JSON.
async fn next_json(socket: &mut Socket) -> Result<Value, String> {
    loop {
        match socket.next().await {
            None => return Err("the connection ended".into()),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(Message::Close(frame))) => return Err(closed(frame)),
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str())
                    .map_err(|e| format!("a message that is not JSON: {e}"));
            }
            Some(Ok(_)) => {}
        }
    }
}

fn closed(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> String {
    let why = frame
        .map(|f| format!(" ({} {})", f.code, f.reason))
        .unwrap_or_default();
    format!("Home Assistant closed the connection{why}")
}

/// Home Assistant's refusal of a request of the source's own.
fn refused(what: &str, result: &Value) -> String {
    format!(
        "Home Assistant refused {what}: {}: {}",
        result["error"]["code"].as_str().unwrap_or("unknown_error"),
        result["error"]["message"].as_str().unwrap_or("no message")
    )
}

/// A message, shortened for an error.
fn brief(message: &Value) -> String {
    let text = message.to_string();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which entities a source mirrors (`entities`): glob patterns over entity ids, `*` for
/// any run of characters and `?` for one; a pattern starting with `!` leaves out what it
/// matches. An entity is mirrored if it matches an including pattern (or there is none)
/// and no excluding one: `["light.*", "switch.*", "!light.hallway_*"]`.
#[derive(Debug, Clone, Default)]
pub struct EntityFilter {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl EntityFilter {
    pub fn new(patterns: &[String]) -> Result<EntityFilter, String> {
        let mut filter = EntityFilter::default();
        for pattern in patterns {
            let (list, glob) = match pattern.strip_prefix('!') {
                Some(glob) => (&mut filter.exclude, glob),
                None => (&mut filter.include, pattern.as_str()),
            };
            if glob.is_empty() || glob.contains(|c: char| c == '/' || c.is_whitespace()) {
                return Err(format!(
                    "entities: {pattern:?} is not a pattern over entity ids (light.*, \
                     sensor.kitchen_?, !light.hallway)"
                ));
            }
            list.push(glob.to_string());
        }
        Ok(filter)
    }

    pub fn matches(&self, entity_id: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|g| glob(g, entity_id)))
            && !self.exclude.iter().any(|g| glob(g, entity_id))
    }
}

/// Whether `text` matches the glob `pattern` (`*` any run of characters, `?` one).
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // The last `*` seen and the text position it is tried from.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((star_pi, star_ti)) = star {
            // Let the `*` take one more character and try again.
            pi = star_pi + 1;
            ti = star_ti + 1;
            star = Some((star_pi, star_ti + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(patterns: &[&str]) -> EntityFilter {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        EntityFilter::new(&patterns).expect("valid patterns")
    }

    #[test]
    fn globs_match_whole_entity_ids() {
        assert!(glob("light.*", "light.kitchen"));
        assert!(glob("light.*", "light."));
        assert!(!glob("light.*", "switch.light_kitchen"));
        assert!(glob("*.kitchen_*", "sensor.kitchen_temperature"));
        assert!(!glob("*.kitchen_*", "sensor.kitchen"));
        assert!(glob("sensor.t?", "sensor.t1"));
        assert!(!glob("sensor.t?", "sensor.t12"));
        assert!(glob("sensor.exact", "sensor.exact"));
        assert!(!glob("sensor.exact", "sensor.exact_not"));
        assert!(glob("*a*b*c", "xaybzzc"));
        assert!(!glob("*a*b*c", "xaybzzcd"));
        assert!(glob("**", ""));
        assert!(glob("*", "anything.at_all"));
    }

    #[test]
    fn a_filter_includes_then_excludes() {
        let all = filter(&[]);
        assert!(all.matches("light.kitchen") && all.matches("sun.sun"));

        let lights = filter(&["light.*", "switch.porch", "!light.hallway_*"]);
        assert!(lights.matches("light.kitchen"));
        assert!(lights.matches("switch.porch"));
        assert!(!lights.matches("light.hallway_1"));
        assert!(!lights.matches("switch.garage"));

        let all_but = filter(&["!sensor.*_power"]);
        assert!(all_but.matches("sensor.kitchen_temperature"));
        assert!(!all_but.matches("sensor.fridge_power"));

        for bad in ["", "!", "light/x", "light .x"] {
            assert!(EntityFilter::new(&[bad.to_string()]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn service_names_are_domain_dot_service() {
        assert_eq!(split_service("light.turn_on"), Some(("light", "turn_on")));
        assert_eq!(
            split_service("input_boolean.toggle"),
            Some(("input_boolean", "toggle"))
        );
        for bad in [
            "toggle",
            ".toggle",
            "light.",
            "Light.turn_on",
            "light.turn on",
            "a.b.c",
        ] {
            assert_eq!(split_service(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_mirror_keeps_state_attributes_and_times() {
        let state = json!({
            "entity_id": "light.kitchen",
            "state": "on",
            "attributes": {"brightness": 200},
            "last_changed": "2024-01-01T00:00:00+00:00",
            "last_updated": "2024-01-01T00:00:01+00:00",
            "context": {"id": "x"},
        });
        assert_eq!(
            mirrored(&state),
            json!({
                "state": "on",
                "attributes": {"brightness": 200},
                "last_changed": "2024-01-01T00:00:00+00:00",
                "last_updated": "2024-01-01T00:00:01+00:00",
            })
        );
    }
}
