//! MQTT: the `mqtt` source (broker messages become state or events) and [`MqttLink`], the
//! connection command routes publish on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, Publish, QoS};
use serde_json::{Map, Value, json};
use statecast_core::{Hub, Topic};
use tokio::sync::{broadcast, watch};

use crate::config::{Action, MqttConfig, MqttRouteConfig};
use crate::health::Health;
use crate::redact::redact;
use crate::supervise::AbortOnDrop;
use crate::template::Template;
use statecast_core::backoff::Backoff;

/// Largest MQTT packet taken or sent.
const MAX_PACKET_BYTES: usize = 1 << 20;

/// Connection options from `mqtt://host[:port]`.
fn options(
    broker: &str,
    client_id: &str,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<MqttOptions, String> {
    let url = reqwest::Url::parse(broker).map_err(|e| format!("broker {broker:?}: {e}"))?;
    if !matches!(url.scheme(), "mqtt" | "tcp") {
        return Err(format!("broker {broker:?}: the scheme must be mqtt://"));
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("broker {broker:?}: no host"))?;
    let mut options = MqttOptions::new(client_id, host, url.port().unwrap_or(1883));
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    if let Some(username) = username {
        options.set_credentials(username, password.unwrap_or_default());
    }
    Ok(options)
}

fn qos(level: u8) -> Result<QoS, String> {
    match level {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        n => Err(format!("qos {n}: must be 0, 1 or 2")),
    }
}

fn random_client_id(name: &str) -> String {
    format!("statecast-{name}-{:08x}", rand::random::<u32>())
}

/// The `mqtt` source.
pub struct MqttSource {
    hub: Hub,
    health: Arc<Health>,
    config: MqttConfig,
    options: MqttOptions,
    topic: Template,
    /// The last-will filter's segments and the template of the topic it marks.
    last_will: Option<(Vec<String>, Template)>,
    qos: QoS,
}

impl MqttSource {
    pub fn new(
        hub: Hub,
        health: Arc<Health>,
        name: &str,
        config: MqttConfig,
    ) -> Result<MqttSource, String> {
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| random_client_id(name));
        let options = options(
            &config.broker,
            &client_id,
            config.username.as_deref(),
            config.password.as_deref(),
        )?;
        if config.subscribe.is_empty() {
            return Err("subscribe: name at least one MQTT topic filter".into());
        }
        let last_will = match &config.last_will {
            Some(will) => Some((
                will.topic.split('/').map(str::to_owned).collect(),
                Template::parse(&will.stale_topic)
                    .map_err(|e| format!("last_will.stale_topic: {e}"))?,
            )),
            None => None,
        };
        Ok(MqttSource {
            topic: Template::parse(&config.topic).map_err(|e| format!("topic: {e}"))?,
            last_will,
            qos: qos(config.qos)?,
            hub,
            health,
            options,
            config,
        })
    }

    /// One connection: subscribe, then write every message, until the connection fails.
    pub async fn run(self: Arc<Self>) -> Result<(), String> {
        let (client, mut events) = AsyncClient::new(self.options.clone(), 64);
        loop {
            let event = events
                .poll()
                .await
                .map_err(|e| format!("broker {}: {e}", self.config.broker))?;
            match event {
                Event::Incoming(Packet::ConnAck(_)) => {
                    let will = self.config.last_will.as_ref().map(|w| &w.topic);
                    for filter in self.config.subscribe.iter().chain(will) {
                        client
                            .subscribe(filter, self.qos)
                            .await
                            .map_err(|e| format!("subscribe {filter}: {e}"))?;
                    }
                }
                // Online once the broker confirms: messages published from now on arrive.
                Event::Incoming(Packet::SubAck(_)) => self.health.ok(None).await,
                Event::Incoming(Packet::Publish(message)) => self.write(message).await,
                _ => {}
            }
        }
    }

    async fn write(&self, message: Publish) {
        let mqtt_topic = message.topic.as_str();
        let mut context = Map::new();
        context.insert("topic".into(), json!(mqtt_topic));
        for (i, segment) in mqtt_topic.split('/').enumerate() {
            context.insert((i + 1).to_string(), json!(segment));
        }
        let context = Value::Object(context);
        if let (Some((filter, stale_topic)), Some(will)) = (&self.last_will, &self.config.last_will)
            && filter_matches(filter, mqtt_topic)
        {
            if message.payload.as_ref() == will.offline.as_bytes() {
                match stale_topic.render(&context).map(|name| Topic::new(&name)) {
                    Ok(Ok(topic)) => self.hub.mark_stale(&topic),
                    Ok(Err(e)) => self.health.rejected(&format!("{mqtt_topic}: {e}")).await,
                    Err(e) => self.health.rejected(&format!("{mqtt_topic}: {e}")).await,
                }
            }
            return;
        }
        let name = match self.topic.render(&context) {
            Ok(name) => name,
            Err(e) => return self.health.rejected(&format!("{mqtt_topic}: {e}")).await,
        };
        let topic = match Topic::new(&name) {
            Ok(topic) => topic,
            Err(e) => {
                let error = format!("{mqtt_topic} maps to {name:?}: {e}");
                return self.health.rejected(&error).await;
            }
        };
        let written = if message.payload.is_empty() {
            // An empty (retained) message clears the topic, as it clears MQTT's retained one.
            self.hub.delete(&topic).await.map(|_| ())
        } else {
            let value = payload_value(&message.payload);
            match self.config.action {
                Action::Set => self.hub.set(&topic, value).await.map(|_| ()),
                Action::Patch => self.hub.patch(&topic, value).await.map(|_| ()),
                Action::Delete => self.hub.delete(&topic).await.map(|_| ()),
                Action::Event => self.hub.event(&topic, value).await,
            }
        };
        match written {
            Ok(()) => self.health.ok(None).await,
            Err(e) => self.health.rejected(&format!("{mqtt_topic}: {e}")).await,
        }
    }
}

/// Whether an MQTT topic matches a filter (given by its segments): `+` is one segment, a
/// final `#` any rest.
fn filter_matches(filter: &[String], topic: &str) -> bool {
    let mut segments = topic.split('/');
    for part in filter {
        match (part.as_str(), segments.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (literal, Some(segment)) if literal == segment => {}
            _ => return false,
        }
    }
    segments.next().is_none()
}

/// A payload as JSON when it parses, else as a string.
fn payload_value(payload: &[u8]) -> Value {
    serde_json::from_slice(payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))
}

/// A connection for command routes, shared by the routes with the same broker and
/// credentials; it reconnects by itself.
#[derive(Clone)]
pub struct MqttLink(Arc<Link>);

struct Link {
    broker: String,
    username: Option<String>,
    password: Option<String>,
    client: AsyncClient,
    state: watch::Receiver<LinkState>,
    events: broadcast::Sender<LinkEvent>,
    /// One publish at a time, so the acknowledgement that follows is ours.
    publishing: tokio::sync::Mutex<()>,
    /// One command at a time per reply topic, from its publish to its reply: replies carry
    /// no correlation, so a reply is for the one command waiting on its topic.
    replying: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    _task: AbortOnDrop,
}

#[derive(Clone, Debug, PartialEq)]
enum LinkState {
    Connecting,
    Connected,
    Failed(String),
}

#[derive(Clone, Debug)]
enum LinkEvent {
    Sent(u16),
    Acked(u16),
    Message(String, Bytes),
}

impl MqttLink {
    /// Starts connecting (on the current runtime) and returns at once.
    pub fn connect(c: &MqttRouteConfig) -> Result<MqttLink, String> {
        qos(c.qos)?;
        let options = options(
            &c.broker,
            &random_client_id("commands"),
            c.username.as_deref(),
            c.password.as_deref(),
        )?;
        let (client, mut event_loop) = AsyncClient::new(options, 64);
        let (events, _) = broadcast::channel(256);
        let (set_state, state) = watch::channel(LinkState::Connecting);
        let task = {
            let events = events.clone();
            let broker = c.broker.clone();
            tokio::spawn(async move {
                let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
                loop {
                    let event = match event_loop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            backoff.reset();
                            let _ = set_state.send(LinkState::Connected);
                            continue;
                        }
                        Ok(Event::Outgoing(Outgoing::Publish(pkid))) => LinkEvent::Sent(pkid),
                        Ok(Event::Incoming(Packet::PubAck(ack))) => LinkEvent::Acked(ack.pkid),
                        Ok(Event::Incoming(Packet::PubComp(ack))) => LinkEvent::Acked(ack.pkid),
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            LinkEvent::Message(p.topic, p.payload)
                        }
                        Ok(_) => continue,
                        Err(e) => {
                            tracing::warn!("command broker {}: {e}", redact(&broker));
                            let _ = set_state.send(LinkState::Failed(e.to_string()));
                            tokio::time::sleep(backoff.next_wait()).await;
                            continue;
                        }
                    };
                    let _ = events.send(event);
                }
            })
        };
        Ok(MqttLink(Arc::new(Link {
            broker: c.broker.clone(),
            username: c.username.clone(),
            password: c.password.clone(),
            client,
            state,
            events,
            publishing: tokio::sync::Mutex::new(()),
            replying: Mutex::new(HashMap::new()),
            _task: AbortOnDrop(task.abort_handle()),
        })))
    }

    pub fn serves(&self, c: &MqttRouteConfig) -> bool {
        self.0.broker == c.broker && self.0.username == c.username && self.0.password == c.password
    }

    /// Publishes and waits until the broker has it (for QoS 1 and 2); with `reply_topic`,
    /// then waits for the first message there and returns it. Commands sharing a reply
    /// topic take turns, so each gets the reply to its own message.
    pub async fn publish(
        &self,
        topic: &str,
        level: u8,
        retain: bool,
        payload: Vec<u8>,
        reply_topic: Option<&str>,
    ) -> Result<Option<Bytes>, String> {
        let link = &*self.0;
        // Connecting for the first time: wait (the route's timeout bounds it) until that
        // attempt succeeds or fails.
        let mut state = link.state.clone();
        let ready = state
            .wait_for(|s| *s != LinkState::Connecting)
            .await
            .map(|s| s.clone());
        if let Ok(LinkState::Failed(e)) = ready {
            return Err(format!("broker {} not connected: {e}", link.broker));
        }
        let level = qos(level)?;
        let replying = reply_topic.map(|t| {
            let mut replying = lock(&link.replying);
            replying.retain(|_, l| Arc::strong_count(l) > 1);
            Arc::clone(replying.entry(t.to_string()).or_default())
        });
        let _one_per_reply_topic = match &replying {
            Some(l) => Some(l.lock().await),
            None => None,
        };
        let mut events = link.events.subscribe();
        let failed = |e: rumqttc::ClientError| format!("broker {}: {e}", redact(&link.broker));
        let mut _unsubscribe = None;
        {
            let _one_at_a_time = link.publishing.lock().await;
            if let Some(reply_topic) = reply_topic {
                link.client
                    .subscribe(reply_topic, QoS::AtLeastOnce)
                    .await
                    .map_err(failed)?;
                // Also when the route's timeout drops this future: no late reply may
                // answer the next command.
                _unsubscribe = Some(Unsubscribe(&link.client, reply_topic));
            }
            link.client
                .publish(topic, level, retain, payload)
                .await
                .map_err(failed)?;
            let mut sent = None;
            loop {
                match events.recv().await {
                    Ok(LinkEvent::Sent(pkid)) if sent.is_none() => {
                        if level == QoS::AtMostOnce {
                            break;
                        }
                        sent = Some(pkid);
                    }
                    Ok(LinkEvent::Acked(pkid)) if sent == Some(pkid) => break,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err("the command connection ended".into());
                    }
                }
            }
        }
        let Some(reply_topic) = reply_topic else {
            return Ok(None);
        };
        let reply = loop {
            match events.recv().await {
                Ok(LinkEvent::Message(t, payload)) if t == reply_topic => break payload,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    return Err("the command connection ended".into());
                }
            }
        };
        Ok(Some(reply))
    }
}

/// Unsubscribes from a reply topic when dropped.
struct Unsubscribe<'a>(&'a AsyncClient, &'a str);

impl Drop for Unsubscribe<'_> {
    fn drop(&mut self) {
        let _ = self.0.try_unsubscribe(self.1);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
