//! statecast's bridge to devices. **Sources** poll or listen to what is still pull-based (HTTP
//! device APIs, MQTT, upstream WebSocket streams, local commands) and write what they get
//! through the same [`Hub`] API as every other writer; the hub's change detection means an
//! unchanged device publishes nothing. **Routes** carry commands back: an HTTP request, an
//! MQTT publish, a handler of the embedding application, or a Home Assistant service call.
//!
//! # Layout
//! - [`config`]: the `[[source]]` and `[[route]]` tables.
//! - [`supervise`]: restarts with backoff and jitter; a failing source never reaches the hub.
//! - [`health`]: each source's health, published on `_sources/<name>`; [`HEALTH_TOPICS`],
//!   the topics only the hub writes.
//! - [`redact`]: URLs with their credentials hidden, wherever a URL or an error is shown.
//! - [`http_poll`], [`mqtt`], [`websocket`], [`exec`]: the sources.
//! - [`homeassistant`]: a Home Assistant mirror, which also routes commands to its topics.
//! - [`rules`]: upstream messages to writes; [`template`]: `{placeholder}` templates.
//! - [`command`]: a command and its error, what routes and sources that take commands share.
//! - [`route`]: the routes that carry commands to devices.

pub mod command;
pub mod config;
pub mod exec;
pub mod health;
pub mod homeassistant;
pub mod http_poll;
pub mod mqtt;
pub mod redact;
pub mod route;
pub mod rules;
pub mod supervise;
pub mod template;
pub mod websocket;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use statecast_core::{ErrorCode, Hub};

pub use command::{Command, CommandError, Handler};
pub use config::BridgeConfig;
pub use health::{HEALTH_TOPICS, HealthState};
pub use redact::redact;

use crate::config::SourceKind;
use crate::health::Health;
use crate::homeassistant::HomeAssistantSource;
use crate::http_poll::HttpPoll;
use crate::route::Route;
use crate::supervise::{AbortOnDrop, supervise};
use statecast_core::backoff::Backoff;

/// First and longest wait before a failed source starts again.
const RESTART_MIN: Duration = Duration::from_millis(500);
const RESTART_MAX: Duration = Duration::from_secs(30);

/// Command handlers of the embedding application, by the name routes use.
#[derive(Default, Clone)]
pub struct Handlers(HashMap<String, Handler>);

impl Handlers {
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// Registers `handler` under `name` (`type = "handler"`, `handler = "<name>"`).
    pub fn add<F, Fut>(mut self, name: &str, handler: F) -> Handlers
    where
        F: Fn(Command) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, CommandError>> + Send + 'static,
    {
        self.0
            .insert(name.to_string(), Arc::new(move |c| Box::pin(handler(c))));
        self
    }
}

/// The running sources and the command routes. Dropping it stops every source.
pub struct Bridge {
    health: Vec<Arc<Health>>,
    routes: Vec<Route>,
    pollers: Vec<Arc<HttpPoll>>,
    tasks: std::sync::Mutex<Vec<AbortOnDrop>>,
    forward: std::sync::OnceLock<Arc<dyn Forward>>,
}

/// Where commands go that no route of this bridge takes: in a cluster, the hub whose
/// bridge does.
pub trait Forward: Send + Sync {
    fn forward(&self, command: Command) -> command::CommandFuture;
}

impl Bridge {
    /// A bridge with no sources and no routes: every command is answered `no_route`.
    pub fn empty() -> Bridge {
        Bridge {
            health: Vec::new(),
            routes: Vec::new(),
            pollers: Vec::new(),
            tasks: std::sync::Mutex::new(Vec::new()),
            forward: std::sync::OnceLock::new(),
        }
    }

    /// Checks `config` and starts its sources on the current runtime. Errors name the
    /// source or route at fault.
    pub fn start(hub: &Hub, config: BridgeConfig, handlers: Handlers) -> Result<Bridge, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let mut links = Vec::new();
        let mut routes = Vec::new();
        for (i, c) in config.route.iter().enumerate() {
            let route = Route::new(c, &handlers.0, &client, &mut links).map_err(|e| {
                redact(&format!("route {} ({}): {e}", i + 1, c.target)).into_owned()
            })?;
            routes.push(route);
        }
        let mut names = std::collections::HashSet::new();
        let mut prefixes = HashMap::new();
        let mut bridge = Bridge::empty();
        bridge.routes = routes;
        let mut tasks = Vec::new();
        for source in config.source {
            let name = source.name.clone();
            let at = |e: String| redact(&format!("source {name:?}: {e}")).into_owned();
            if !names.insert(name.clone()) {
                return Err(at("the name is used twice".into()));
            }
            statecast_core::Topic::new(&health::health_topic(&name))
                .map_err(|e| at(format!("the name must be a topic segment: {e}")))?;
            let kind = match &source.kind {
                SourceKind::HttpPoll(_) => "http_poll",
                SourceKind::Mqtt(_) => "mqtt",
                SourceKind::Websocket(_) => "websocket",
                SourceKind::Exec(_) => "exec",
                SourceKind::HomeAssistant(_) => "homeassistant",
            };
            let health = Arc::new(Health::new(hub.clone(), &name, kind));
            let hub = hub.clone();
            let h = Arc::clone(&health);
            let backoff = Backoff::new(RESTART_MIN, RESTART_MAX);
            let task = match source.kind {
                SourceKind::HttpPoll(c) => {
                    let poll = Arc::new(HttpPoll::new(hub, h, client.clone(), c).map_err(at)?);
                    bridge.pollers.push(Arc::clone(&poll));
                    tokio::spawn(supervise(health.clone(), backoff, move || {
                        Arc::clone(&poll).run()
                    }))
                }
                SourceKind::Mqtt(c) => {
                    let s = Arc::new(mqtt::MqttSource::new(hub, h, &name, c).map_err(at)?);
                    tokio::spawn(supervise(health.clone(), backoff, move || {
                        Arc::clone(&s).run()
                    }))
                }
                SourceKind::Websocket(c) => {
                    let s = Arc::new(websocket::WebSocketSource::new(hub, h, c).map_err(at)?);
                    tokio::spawn(supervise(health.clone(), backoff, move || {
                        Arc::clone(&s).run()
                    }))
                }
                SourceKind::Exec(c) => {
                    let s = Arc::new(exec::ExecSource::new(hub, h, &name, c).map_err(at)?);
                    tokio::spawn(supervise(health.clone(), backoff, move || {
                        Arc::clone(&s).run()
                    }))
                }
                SourceKind::HomeAssistant(c) => {
                    let s = HomeAssistantSource::new(hub, h, &name, c).map_err(at)?;
                    if let Some(other) = prefixes.insert(s.prefix().to_string(), name.clone()) {
                        return Err(at(format!(
                            "prefix {:?} is mirrored by source {other:?} already",
                            s.prefix()
                        )));
                    }
                    let s = Arc::new(s);
                    // After the [[route]]s: a route of the file can take some of these
                    // targets elsewhere.
                    bridge.routes.extend(Route::home_assistant(&s));
                    tokio::spawn(supervise(health.clone(), backoff, move || {
                        Arc::clone(&s).run()
                    }))
                }
            };
            tasks.push(AbortOnDrop(task.abort_handle()));
            bridge.health.push(health);
        }
        bridge.tasks = std::sync::Mutex::new(tasks);
        Ok(bridge)
    }

    /// Stops every source (their child processes are killed); routes keep working.
    pub fn stop(&self) {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Each source's name and health.
    pub fn health(&self) -> Vec<(String, HealthState)> {
        self.health
            .iter()
            .map(|h| (h.name.clone(), h.snapshot()))
            .collect()
    }

    /// Sends commands that no route takes to `forward` (set once, by a cluster).
    pub fn set_forward(&self, forward: Arc<dyn Forward>) {
        let _ = self.forward.set(forward);
    }

    /// The target patterns of the routes: the commands this bridge takes itself.
    pub fn targets(&self) -> Vec<statecast_core::Pattern> {
        self.routes.iter().map(|r| r.pattern.clone()).collect()
    }

    /// Sends `command` along the first route whose target pattern matches (the `[[route]]`s
    /// in their order, then those of `homeassistant` sources), or, when none does, to the
    /// [`Forward`] if one is set. After a success on a route with `repoll`, the `http_poll`
    /// sources that write the target poll at once.
    pub async fn command(&self, command: Command) -> Result<Value, CommandError> {
        match self.forward.get() {
            Some(forward) if !self.takes(&command) => forward.forward(command).await,
            _ => self.command_here(command).await,
        }
    }

    fn takes(&self, command: &Command) -> bool {
        self.routes
            .iter()
            .any(|r| r.pattern.matches(&command.target))
    }

    /// As [`Bridge::command`], but only along this bridge's own routes (a forwarded
    /// command is never forwarded again).
    pub async fn command_here(&self, command: Command) -> Result<Value, CommandError> {
        let Some(route) = self
            .routes
            .iter()
            .find(|r| r.pattern.matches(&command.target))
        else {
            return Err(CommandError::new(
                ErrorCode::NoRoute,
                format!("no route for target {}", command.target),
            ));
        };
        let target = command.target.clone();
        let answer = route.send(command).await?;
        if route.repoll {
            for poller in &self.pollers {
                let writes_target = poller
                    .topics
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&target);
                if writes_target {
                    poller.repoll.notify_one();
                }
            }
        }
        Ok(answer)
    }
}
