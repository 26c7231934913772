//! The routes that carry commands to devices: an HTTP request, an MQTT publish, a handler
//! of the embedding application, or a Home Assistant service call (the route a
//! `homeassistant` source adds for its own topics).

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Value, json};
use statecast_core::{ErrorCode, Pattern};

use crate::command::{Command, CommandError, Handler};
use crate::config::{HttpRouteConfig, MqttRouteConfig, RouteConfig, RouteKind};
use crate::homeassistant::HomeAssistantSource;
use crate::mqtt::MqttLink;
use crate::redact::redact;
use crate::template::{JsonTemplate, Template};

/// Largest device answer read; more is an upstream error, not memory.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// A configured route.
pub(crate) struct Route {
    pub pattern: Pattern,
    pub timeout: Duration,
    pub repoll: bool,
    pub target: RouteTarget,
}

pub(crate) enum RouteTarget {
    Http(HttpRoute),
    Mqtt(MqttRoute),
    Handler(Handler),
    HomeAssistant(Arc<HomeAssistantSource>),
}

pub(crate) struct HttpRoute {
    method: Method,
    url: Template,
    headers: Vec<(HeaderName, Template)>,
    body: Option<JsonTemplate>,
    client: reqwest::Client,
}

pub(crate) struct MqttRoute {
    link: MqttLink,
    topic: Template,
    payload: Option<JsonTemplate>,
    reply_topic: Option<Template>,
    qos: u8,
    retain: bool,
}

impl Route {
    pub fn new(
        config: &RouteConfig,
        handlers: &std::collections::HashMap<String, Handler>,
        client: &reqwest::Client,
        links: &mut Vec<MqttLink>,
    ) -> Result<Route, String> {
        let pattern = Pattern::new(&config.target).map_err(|e| format!("target: {e}"))?;
        let target = match &config.kind {
            RouteKind::Http(c) => RouteTarget::Http(HttpRoute::new(c, client.clone())?),
            RouteKind::Mqtt(c) => RouteTarget::Mqtt(MqttRoute::new(c, links)?),
            RouteKind::Handler(c) => match handlers.get(&c.handler) {
                Some(h) => RouteTarget::Handler(Arc::clone(h)),
                None => return Err(format!("no handler named {:?} is registered", c.handler)),
            },
        };
        Ok(Route {
            pattern,
            timeout: Duration::from_millis(config.timeout_ms.max(1)),
            repoll: config.repoll,
            target,
        })
    }

    /// The route that makes commands to a Home Assistant source's topics service calls,
    /// unless the source takes no commands.
    pub fn home_assistant(source: &Arc<HomeAssistantSource>) -> Option<Route> {
        let (pattern, timeout) = source.command_topics()?;
        Some(Route {
            pattern,
            timeout,
            repoll: false,
            target: RouteTarget::HomeAssistant(Arc::clone(source)),
        })
    }

    /// Carries `command` to the device, bounded by the route's timeout.
    pub async fn send(&self, command: Command) -> Result<Value, CommandError> {
        let timeout = self.timeout;
        let sent = async {
            match &self.target {
                RouteTarget::Http(r) => r.send(&command).await,
                RouteTarget::Mqtt(r) => r.send(&command).await,
                RouteTarget::Handler(h) => h(command.clone()).await,
                RouteTarget::HomeAssistant(source) => source.call_service(&command).await,
            }
        };
        match tokio::time::timeout(timeout, sent).await {
            Ok(answer) => answer,
            Err(_) => Err(CommandError::new(
                ErrorCode::Timeout,
                format!("no answer within {} ms", timeout.as_millis()),
            )),
        }
    }
}

fn template_error(e: String) -> CommandError {
    CommandError::new(ErrorCode::BadRequest, format!("route template: {e}"))
}

impl HttpRoute {
    fn new(c: &HttpRouteConfig, client: reqwest::Client) -> Result<HttpRoute, String> {
        let method = Method::from_bytes(c.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("method: {:?} is not an HTTP method", c.method))?;
        let headers = c
            .headers
            .iter()
            .map(|(k, v)| {
                let name = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("header name {k:?} is not valid"))?;
                Ok((name, Template::parse(v)?))
            })
            .collect::<Result<_, String>>()?;
        Ok(HttpRoute {
            method,
            url: Template::parse(&c.url).map_err(|e| format!("url: {e}"))?,
            headers,
            body: c
                .body
                .as_ref()
                .map(JsonTemplate::parse)
                .transpose()
                .map_err(|e| format!("body: {e}"))?,
            client,
        })
    }

    async fn send(&self, command: &Command) -> Result<Value, CommandError> {
        let context = command.context();
        let url = self.url.render_url(&context).map_err(template_error)?;
        let mut request = self.client.request(self.method.clone(), &url);
        for (name, value) in &self.headers {
            let value = value.render(&context).map_err(template_error)?;
            let value = HeaderValue::from_str(&value).map_err(|_| {
                CommandError::new(
                    ErrorCode::BadRequest,
                    format!("header {name}: {value:?} is not a valid header value"),
                )
            })?;
            request = request.header(name, value);
        }
        if self.method != Method::GET && self.method != Method::HEAD {
            let body = match &self.body {
                Some(t) => t.render(&context).map_err(template_error)?,
                None => json!({"name": command.name, "args": command.args}),
            };
            request = request.json(&body);
        }
        let unreachable = |e: reqwest::Error| {
            CommandError::new(
                ErrorCode::Upstream,
                format!("device unreachable: {}", error_chain(&e)),
            )
        };
        let mut response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(CommandError::new(
                    ErrorCode::Upstream,
                    format!("the device's answer exceeds {MAX_ANSWER_BYTES} bytes"),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        let body = answer_body(&bytes);
        if status.is_success() {
            Ok(json!({"status": status.as_u16(), "body": body}))
        } else {
            Err(CommandError {
                code: ErrorCode::Upstream,
                message: format!("the device answered {status}"),
                status: Some(status.as_u16()),
                body: Some(body),
            })
        }
    }
}

impl MqttRoute {
    fn new(c: &MqttRouteConfig, links: &mut Vec<MqttLink>) -> Result<MqttRoute, String> {
        let link = match links.iter().find(|l| l.serves(c)) {
            Some(link) => link.clone(),
            None => {
                let link = MqttLink::connect(c)?;
                links.push(link.clone());
                link
            }
        };
        Ok(MqttRoute {
            link,
            topic: Template::parse(&c.topic).map_err(|e| format!("topic: {e}"))?,
            payload: c
                .payload
                .as_ref()
                .map(JsonTemplate::parse)
                .transpose()
                .map_err(|e| format!("payload: {e}"))?,
            reply_topic: c
                .reply_topic
                .as_deref()
                .map(Template::parse)
                .transpose()
                .map_err(|e| format!("reply_topic: {e}"))?,
            qos: c.qos,
            retain: c.retain,
        })
    }

    async fn send(&self, command: &Command) -> Result<Value, CommandError> {
        let context = command.context();
        let topic = self.topic.render(&context).map_err(template_error)?;
        let payload = match &self.payload {
            Some(t) => t.render(&context).map_err(template_error)?,
            None => command.args.clone(),
        };
        let payload = match payload {
            Value::String(s) => s.into_bytes(),
            other => other.to_string().into_bytes(),
        };
        let reply_topic = match &self.reply_topic {
            Some(t) => Some(t.render(&context).map_err(template_error)?),
            None => None,
        };
        let reply = self
            .link
            .publish(
                &topic,
                self.qos,
                self.retain,
                payload,
                reply_topic.as_deref(),
            )
            .await
            .map_err(|e| CommandError::new(ErrorCode::Upstream, e))?;
        Ok(match reply {
            Some(bytes) => json!({"topic": topic, "reply": answer_body(&bytes)}),
            None => json!({"topic": topic, "published": true}),
        })
    }
}

/// A device's answer: JSON when it parses, else text (empty answers are `null`).
fn answer_body(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// An error with its causes (reqwest's own message rarely says what happened), the URL
/// reqwest quotes [`redact`]ed.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    redact(&text).into_owned()
}
