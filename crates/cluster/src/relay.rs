//! Commands across hubs: a command sent to any hub reaches the hub whose routes take its
//! target.
//!
//! Each hub advertises the target patterns of its routes in the `:routes` hash and listens
//! on its own channel `{prefix}:cmd:<node>`. A hub with no route for a command finds a live
//! hub that has one, publishes the command there and waits for the answer on its own
//! `{prefix}:reply:<node>` channel. PUB/SUB is enough here: a command is not state, and a
//! lost one is answered `timeout` like a device that does not answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, PubSub};
use serde_json::{Value, json};
use statecast_bridge::command::CommandFuture;
use statecast_bridge::{Bridge, Command, CommandError, Forward};
use statecast_core::backoff::Backoff;
use statecast_core::engine::SharedLog;
use statecast_core::{ErrorCode, Pattern, Topic};
use tokio::sync::oneshot;

use crate::RedisEngine;

/// How long a forwarded command may take; the owner's route applies its own, shorter,
/// timeout first.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);
/// How often each hub advertises its routes again (Redis may have restarted).
const ADVERTISE_EVERY: Duration = Duration::from_secs(5);
/// Delays between attempts to subscribe again after losing the subscription.
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(50);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(2);
/// Forwarded commands waiting for an answer, at most.
const MAX_WAITING: usize = 4096;

/// Sends commands that this hub's routes do not take to the hub whose routes do, and runs
/// the commands other hubs send here. Set it on the bridge with [`Bridge::set_forward`].
pub struct CommandRelay(Arc<Inner>);

struct Inner {
    engine: Arc<RedisEngine>,
    connection: ConnectionManager,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Result<Value, CommandError>>>>,
    next_id: AtomicU64,
}

impl CommandRelay {
    /// Subscribes to this hub's channels and starts advertising `bridge`'s routes.
    pub async fn start(
        engine: Arc<RedisEngine>,
        bridge: &Arc<Bridge>,
    ) -> Result<Arc<CommandRelay>, String> {
        let client = engine.client().clone();
        let url = &engine.config().url;
        // A connection manager reconnects by itself after Redis restarts.
        let connection = ConnectionManager::new(client.clone())
            .await
            .map_err(|e| format!("Redis at {url}: {e}"))?;
        let config = engine.config();
        let channels = [
            command_channel(&config.prefix, &config.node),
            reply_channel(&config.prefix, &config.node),
        ];
        let pubsub = subscribe(&client, &channels)
            .await
            .map_err(|e| format!("Redis at {url}: {e}"))?;
        let relay = Arc::new(Inner {
            engine,
            connection,
            waiting: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        });
        let targets: Vec<String> = bridge
            .targets()
            .iter()
            .map(|p| p.as_str().to_string())
            .collect();
        tokio::spawn(advertise(Arc::downgrade(&relay), targets));
        tokio::spawn(listen(
            Arc::downgrade(&relay),
            Arc::downgrade(bridge),
            client,
            channels,
            pubsub,
        ));
        Ok(Arc::new(CommandRelay(relay)))
    }
}

impl Inner {
    /// A reply to one of this hub's forwarded commands.
    fn answered(&self, body: &Value) {
        let Some(id) = body["id"].as_u64() else {
            return;
        };
        let waiter = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(decode_answer(body));
        }
    }

    /// Runs `cmd`, once more if the connection had dropped: the connection manager reports
    /// the failure (Redis restarted, say) and reconnects for the next command. Only for
    /// commands that may run twice.
    async fn retried<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let mut connection = self.connection.clone();
        match cmd.query_async(&mut connection).await {
            Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                cmd.query_async(&mut connection).await
            }
            result => result,
        }
    }

    /// The live hub (not this one) whose routes take `target`.
    async fn owner(&self, target: &Topic) -> Result<Option<String>, redis::RedisError> {
        let routes: HashMap<String, String> = self
            .retried(redis::cmd("HGETALL").arg(self.engine.keys_routes()))
            .await?;
        let nodes: HashMap<String, String> = self
            .retried(redis::cmd("HGETALL").arg(self.engine.keys_nodes()))
            .await?;
        let me = &self.engine.config().node;
        let alive = self.engine.nodes();
        let mut owners: Vec<&String> = routes
            .iter()
            .filter(|(node, _)| *node != me && nodes.contains_key(*node))
            .filter(|(node, _)| alive.iter().any(|n| &n.id == *node && n.alive) || alive.is_empty())
            .filter(|(_, patterns)| {
                serde_json::from_str::<Vec<String>>(patterns)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|p| Pattern::new(p).ok())
                    .any(|p| p.matches(target))
            })
            .map(|(node, _)| node)
            .collect();
        owners.sort();
        Ok(owners.first().map(|n| n.to_string()))
    }

    async fn send(self: Arc<Self>, command: Command) -> Result<Value, CommandError> {
        let unavailable = |e: redis::RedisError| {
            CommandError::new(
                ErrorCode::Unavailable,
                format!("the cluster cannot be reached to forward the command: {e}"),
            )
        };
        let Some(owner) = self.owner(&command.target).await.map_err(unavailable)? else {
            return Err(CommandError::new(
                ErrorCode::NoRoute,
                format!("no route for target {} on any hub", command.target),
            ));
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            if waiting.len() >= MAX_WAITING {
                return Err(CommandError::new(
                    ErrorCode::RateLimited,
                    "too many commands are waiting for other hubs",
                ));
            }
            waiting.insert(id, tx);
        }
        let config = self.engine.config();
        let body = json!({
            "id": id,
            "from": config.node,
            "target": command.target.as_str(),
            "name": command.name,
            "args": command.args,
        });
        // Not retried: a command must not run twice. After a lost connection the caller
        // gets `unavailable` and may send it again.
        let mut connection = self.connection.clone();
        let published: Result<u64, _> = connection
            .publish(command_channel(&config.prefix, &owner), body.to_string())
            .await;
        let forget = || {
            self.waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        };
        match published {
            Ok(0) => {
                forget();
                return Err(CommandError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "hub {owner}, which routes {}, is not listening",
                        command.target
                    ),
                ));
            }
            Ok(_) => {}
            Err(e) => {
                forget();
                return Err(unavailable(e));
            }
        }
        match tokio::time::timeout(FORWARD_TIMEOUT, rx).await {
            Ok(Ok(answer)) => answer,
            _ => {
                forget();
                Err(CommandError::new(
                    ErrorCode::Timeout,
                    format!("hub {owner} did not answer the command in time"),
                ))
            }
        }
    }
}

impl Forward for CommandRelay {
    fn forward(&self, command: Command) -> CommandFuture {
        Box::pin(Arc::clone(&self.0).send(command))
    }
}

async fn subscribe(client: &redis::Client, channels: &[String; 2]) -> redis::RedisResult<PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channels).await?;
    Ok(pubsub)
}

/// Takes commands for this hub and answers to its own, subscribing again (with backoff)
/// whenever the subscription is lost, until the relay is dropped.
async fn listen(
    relay: Weak<Inner>,
    bridge: Weak<Bridge>,
    client: redis::Client,
    channels: [String; 2],
    first: PubSub,
) {
    let [_, reply] = &channels;
    let mut pubsub = Some(first);
    let mut backoff = Backoff::new(RESUBSCRIBE_MIN, RESUBSCRIBE_MAX);
    loop {
        let current = match pubsub.take() {
            Some(p) => p,
            None => match subscribe(&client, &channels).await {
                Ok(p) => {
                    backoff.reset();
                    tracing::info!("the command relay subscribed again");
                    p
                }
                Err(e) => {
                    tracing::debug!("the command relay cannot subscribe: {e}");
                    tokio::time::sleep(backoff.next_wait()).await;
                    continue;
                }
            },
        };
        let mut messages = current.into_on_message();
        while let Some(message) = messages.next().await {
            let Some(relay) = relay.upgrade() else {
                return;
            };
            let Ok(body) = serde_json::from_slice::<Value>(message.get_payload_bytes()) else {
                continue;
            };
            if message.get_channel_name() == reply {
                relay.answered(&body);
            } else {
                tokio::spawn(run_forwarded(relay, bridge.clone(), body));
            }
        }
        if relay.strong_count() == 0 {
            return;
        }
        tracing::warn!("the command relay lost its Redis subscription; subscribing again");
    }
}

fn command_channel(prefix: &str, node: &str) -> String {
    format!("{{{prefix}}}:cmd:{node}")
}

fn reply_channel(prefix: &str, node: &str) -> String {
    format!("{{{prefix}}}:reply:{node}")
}

/// Runs a command another hub forwarded and publishes the answer to it.
async fn run_forwarded(relay: Arc<Inner>, bridge: Weak<Bridge>, body: Value) {
    let (Some(id), Some(from)) = (body["id"].as_u64(), body["from"].as_str()) else {
        return;
    };
    let answer = match (bridge.upgrade(), parse_command(&body)) {
        (Some(bridge), Ok(command)) => bridge.command_here(command).await,
        (None, _) => Err(CommandError::new(
            ErrorCode::Unavailable,
            "the hub is stopping",
        )),
        (_, Err(e)) => Err(e),
    };
    let reply = match answer {
        Ok(value) => json!({"id": id, "ok": value}),
        Err(e) => json!({"id": id, "error": e.to_json()}),
    };
    // An answer may go out twice (the second is ignored): retried if Redis restarted.
    let channel = reply_channel(&relay.engine.config().prefix, from);
    let result: Result<u64, _> = relay
        .retried(redis::cmd("PUBLISH").arg(channel).arg(reply.to_string()))
        .await;
    if let Err(e) = result {
        tracing::warn!("cannot answer a forwarded command: {e}");
    }
}

fn parse_command(body: &Value) -> Result<Command, CommandError> {
    let bad = |what: &str| CommandError::new(ErrorCode::BadRequest, what.to_string());
    let target = body["target"]
        .as_str()
        .and_then(|t| Topic::new(t).ok())
        .ok_or_else(|| bad("a forwarded command without a valid target"))?;
    let name = body["name"]
        .as_str()
        .ok_or_else(|| bad("a forwarded command without a name"))?
        .to_string();
    Ok(Command {
        target,
        name,
        args: body["args"].clone(),
    })
}

fn decode_answer(body: &Value) -> Result<Value, CommandError> {
    if let Some(value) = body.get("ok") {
        return Ok(value.clone());
    }
    let error = &body["error"];
    let code = error["code"]
        .as_str()
        .and_then(ErrorCode::parse)
        .unwrap_or(ErrorCode::Internal);
    Err(CommandError {
        code,
        message: error["message"].as_str().unwrap_or("").to_string(),
        status: error["status"].as_u64().and_then(|s| u16::try_from(s).ok()),
        body: error.get("body").cloned(),
    })
}

/// Keeps this hub's route targets in the `:routes` hash while the relay lives.
async fn advertise(relay: Weak<Inner>, targets: Vec<String>) {
    let targets = json!(targets).to_string();
    loop {
        let Some(relay) = relay.upgrade() else {
            return;
        };
        let mut connection = relay.connection.clone();
        let result: Result<(), _> = connection
            .hset(
                relay.engine.keys_routes(),
                &relay.engine.config().node,
                &targets,
            )
            .await;
        if let Err(e) = result {
            tracing::debug!("cannot advertise this hub's routes: {e}");
        }
        drop(relay);
        tokio::time::sleep(ADVERTISE_EVERY).await;
    }
}
