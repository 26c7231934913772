//! A command and its outcome: what a route carries to a device (or a handler), and the
//! error it answers with. The routes (`route.rs`) and the sources that take commands
//! themselves (`homeassistant.rs`) both speak it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use statecast_core::{ErrorCode, Topic};

use crate::redact::redact;

/// A command for a target (a device's topic, usually).
#[derive(Debug, Clone)]
pub struct Command {
    pub target: Topic,
    pub name: String,
    pub args: Value,
}

impl Command {
    /// What templates see: `target`, its segments `1`.., `name` and `args`.
    pub(crate) fn context(&self) -> Value {
        let mut context = Map::new();
        context.insert("target".into(), json!(self.target.as_str()));
        for (i, segment) in self.target.split('/').enumerate() {
            context.insert((i + 1).to_string(), json!(segment));
        }
        context.insert("name".into(), json!(self.name));
        context.insert("args".into(), self.args.clone());
        Value::Object(context)
    }
}

/// Why a command failed: a contract error code, a message, and for `upstream` errors the
/// device's own status and body when it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandError {
    pub code: ErrorCode,
    pub message: String,
    pub status: Option<u16>,
    pub body: Option<Value>,
}

impl CommandError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> CommandError {
        CommandError {
            code,
            message: message.into(),
            status: None,
            body: None,
        }
    }

    /// The `error` object of the wire contract, with `status` and `body` when known; URLs in
    /// the message [`redact`]ed, as it goes to a client.
    pub fn to_json(&self) -> Value {
        let message = redact(&self.message);
        let mut error = json!({"code": self.code.as_str(), "message": message});
        if let Some(status) = self.status {
            error["status"] = json!(status);
        }
        if let Some(body) = &self.body {
            error["body"] = body.clone();
        }
        error
    }
}

pub type CommandFuture = Pin<Box<dyn Future<Output = Result<Value, CommandError>> + Send>>;

/// A command handler registered by an embedding application (see [`crate::Handlers`]).
pub type Handler = Arc<dyn Fn(Command) -> CommandFuture + Send + Sync>;
