//! The `[[source]]` and `[[route]]` tables of the TOML configuration, as serde reads them.
//! [`crate::Bridge::new`] checks what serde cannot (templates, patterns, intervals).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::redact::redact;

/// Everything the bridge runs: its sources and its command routes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    #[serde(default)]
    pub source: Vec<SourceConfig>,
    #[serde(default)]
    pub route: Vec<RouteConfig>,
}

/// One `[[source]]`: a name (its health topic is `_sources/<name>`) and what it reads.
#[derive(Debug, Clone, Deserialize)]
pub struct SourceConfig {
    pub name: String,
    #[serde(flatten)]
    pub kind: SourceKind,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceKind {
    HttpPoll(HttpPollConfig),
    Mqtt(MqttConfig),
    Websocket(WebSocketConfig),
    Exec(ExecConfig),
    #[serde(rename = "homeassistant")]
    HomeAssistant(HomeAssistantConfig),
}

/// Polls a device's HTTP API and sets what it answers as state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPollConfig {
    pub url: String,
    /// The topic written; with `each`, a template over `{key}` and `{item.<field>}`.
    pub topic: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// JSON pointer to the part of the answer that is the state.
    pub pointer: Option<String>,
    /// Publish each element (array) or member (object) on its own topic.
    #[serde(default)]
    pub each: bool,
    /// Interval right after a change.
    #[serde(default = "default_min_interval_ms")]
    pub min_interval_ms: u64,
    /// Interval the source slows to while nothing changes.
    #[serde(default = "default_idle_interval_ms")]
    pub idle_interval_ms: u64,
    /// Interval the source slows to while the device is offline.
    #[serde(default = "default_max_interval_ms")]
    pub max_interval_ms: u64,
}

/// Subscribes to an MQTT broker and writes each message to a topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:port`.
    pub broker: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub client_id: Option<String>,
    /// MQTT topic filters (`+` and `#` wildcards).
    pub subscribe: Vec<String>,
    /// Template of the statecast topic over `{topic}` and the MQTT topic's segments `{1}`..
    pub topic: String,
    /// What a message does: `set` (default), `patch` or `event`.
    #[serde(default = "default_mqtt_action")]
    pub action: Action,
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Messages that say a device is gone (its last will), marking its topic stale.
    pub last_will: Option<LastWillConfig>,
}

/// A device's last will on the broker (Tasmota's `tele/<device>/LWT` = `Offline`): when a
/// message on `topic` carries the `offline` payload, `stale_topic` turns stale at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastWillConfig {
    /// MQTT topic filter of the last-will messages (`+` and `#` wildcards); subscribed too.
    pub topic: String,
    /// The payload that means "gone" (other payloads, `Online`, change nothing: the
    /// device's next state makes its topic fresh).
    pub offline: String,
    /// Template of the statecast topic to mark, over the last-will topic's `{topic}` and
    /// segments `{1}`..
    pub stale_topic: String,
}

/// Listens to an upstream WebSocket that sends JSON events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    pub url: String,
    /// Messages sent after each (re)connect, e.g. requests for the current state.
    #[serde(default)]
    pub send_on_open: Vec<Value>,
    /// The topic rules write to unless they name their own.
    pub topic: String,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
    /// The upstream is pinged this often; silent for two periods more, it is dropped and
    /// reconnected.
    #[serde(default = "default_ping_interval_ms")]
    pub ping_interval_ms: u64,
}

/// Runs a long-lived command; each line it prints is a message.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// The program and its arguments, run without a shell.
    pub command: Option<Vec<String>>,
    /// A shell command line, run with `sh -c` (only when asked for).
    pub shell: Option<String>,
    pub topic: String,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
}

/// Mirrors a Home Assistant instance's entities on `<prefix>/<entity_id>` and takes
/// commands for them as service calls (see [`crate::homeassistant`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeAssistantConfig {
    /// Home Assistant's WebSocket API, `ws://host:8123/api/websocket` (no `wss://` yet).
    pub url: String,
    /// A long-lived access token (the user's profile page) or an access token.
    pub token: String,
    /// Which entities are mirrored: glob patterns over entity ids (`*` any run of
    /// characters, `?` one), `light.*` say; one starting with `!` leaves out what it
    /// matches. None (the default) or only `!` patterns: every other entity.
    #[serde(default)]
    pub entities: Vec<String>,
    /// The topics are `<prefix>/<entity_id>`; commands to them are service calls.
    #[serde(default = "default_homeassistant_prefix")]
    pub prefix: String,
    /// Whether commands to `<prefix>/<entity_id>` become service calls.
    #[serde(default = "default_true")]
    pub commands: bool,
    /// How long a service call may take to be answered.
    #[serde(default = "default_timeout_ms")]
    pub command_timeout_ms: u64,
    /// Home Assistant is pinged this often; without a pong before the next ping, the
    /// connection is dropped and made again.
    #[serde(default = "default_ping_interval_ms")]
    pub ping_interval_ms: u64,
}

/// Turns an incoming message into a write. The first rule that matches wins; without rules,
/// every message is an event on the source's topic. A rule's `action` defaults to `event`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The message must contain these members (recursively, values equal).
    #[serde(rename = "match")]
    pub matches: Option<Value>,
    /// A text message must match this regex; its named groups become the message's members.
    pub regex: Option<String>,
    #[serde(default)]
    pub action: Action,
    /// JSON pointer to the part of the message written (default: all of it).
    pub select: Option<String>,
    /// JSON pointer under which the selected part is placed (`/state` makes `{"state":..}`).
    pub into: Option<String>,
    /// Topic template over `{msg.<field>}`; default: the source's topic.
    pub topic: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Set,
    Patch,
    #[default]
    Event,
    Delete,
}

/// One `[[route]]`: commands whose target matches `target` go to a device or a handler.
#[derive(Debug, Clone, Deserialize)]
pub struct RouteConfig {
    /// A pattern over command targets (`railhub/+`).
    pub target: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// After a successful command, poll the `http_poll` sources that write the target now.
    #[serde(default)]
    pub repoll: bool,
    #[serde(flatten)]
    pub kind: RouteKind,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RouteKind {
    Http(HttpRouteConfig),
    Mqtt(MqttRouteConfig),
    Handler(HandlerRouteConfig),
}

/// Sends the command as an HTTP request. Templates see `{target}`, its segments `{1}`..,
/// `{name}`, `{args}` and `{args.<field>}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRouteConfig {
    #[serde(default = "default_method")]
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON template of the body; default: `{"name": .., "args": ..}`. A string that is one
    /// placeholder (`"{args.level}"`) keeps the value's JSON type.
    pub body: Option<Value>,
}

/// Publishes the command on MQTT; with `reply_topic`, waits for the device's answer there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttRouteConfig {
    pub broker: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub topic: String,
    /// JSON template of the payload; default: the args. A string result is sent as is.
    pub payload: Option<Value>,
    pub reply_topic: Option<String>,
    #[serde(default = "default_qos")]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
}

/// Calls a handler the embedding application registered under `handler`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerRouteConfig {
    pub handler: String,
}

fn default_timeout_ms() -> u64 {
    5_000
}
fn default_min_interval_ms() -> u64 {
    1_000
}
fn default_idle_interval_ms() -> u64 {
    5_000
}
fn default_max_interval_ms() -> u64 {
    30_000
}
fn default_ping_interval_ms() -> u64 {
    30_000
}
fn default_homeassistant_prefix() -> String {
    "ha".into()
}
fn default_true() -> bool {
    true
}
fn default_mqtt_action() -> Action {
    Action::Set
}
fn default_qos() -> u8 {
    1
}
fn default_method() -> String {
    "POST".into()
}

impl BridgeConfig {
    /// One line per source and per route, for the start-up log: what it reads or where it
    /// sends, each line [`redact`]ed. An `exec` source shows its program only (its arguments may
    /// hold a credential).
    pub fn describe(&self) -> Vec<String> {
        let sources = self.source.iter().map(|s| {
            let (kind, from, into) = match &s.kind {
                SourceKind::HttpPoll(c) => ("http_poll", c.url.clone(), &c.topic),
                SourceKind::Mqtt(c) => (
                    "mqtt",
                    format!("{} {}", c.broker, c.subscribe.join(" ")),
                    &c.topic,
                ),
                SourceKind::Websocket(c) => ("websocket", c.url.clone(), &c.topic),
                SourceKind::Exec(c) => {
                    let program = match (&c.command, &c.shell) {
                        (Some(command), _) => command.first().cloned().unwrap_or_default(),
                        (None, Some(_)) => "a shell command".into(),
                        (None, None) => String::new(),
                    };
                    ("exec", program, &c.topic)
                }
                SourceKind::HomeAssistant(c) => ("homeassistant", c.url.clone(), &c.prefix),
            };
            format!(
                "source {:?} ({kind}): {from} -> {into} (health on _sources/{})",
                s.name, s.name
            )
        });
        let routes = self.route.iter().map(|r| {
            let to = match &r.kind {
                RouteKind::Http(c) => format!("http {} {}", c.method.to_ascii_uppercase(), c.url),
                RouteKind::Mqtt(c) => format!("mqtt {} {}", c.broker, c.topic),
                RouteKind::Handler(c) => format!("handler {:?}", c.handler),
            };
            format!("route {} -> {to}", r.target)
        });
        sources
            .chain(routes)
            .map(|line| redact(&line).into_owned())
            .collect()
    }
}
