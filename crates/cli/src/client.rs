//! The client subcommands: `get`, `set`, `patch`, `delete`, `event` and `command` over REST,
//! and `watch`, a live monitor over WebSocket that reconnects and resumes with `since`.

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::time::{Duration, SystemTime};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use statecast_core::backoff::Backoff;
use tokio_tungstenite::tungstenite::Message;

/// Where the hub is.
#[derive(Debug, Args, Clone)]
pub struct HubUrl {
    /// The hub's HTTP base URL
    #[arg(long, env = "STATECAST_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An API key or JWT for a hub with authentication
    #[arg(long, env = "STATECAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl HubUrl {
    fn base(&self) -> &str {
        self.url.trim_end_matches('/')
    }

    /// The WebSocket URL of the hub's `/ws`.
    fn ws(&self) -> Result<String, String> {
        let base = self.base();
        if let Some(rest) = base.strip_prefix("http://") {
            Ok(format!("ws://{rest}/ws"))
        } else if let Some(rest) = base.strip_prefix("https://") {
            Ok(format!("wss://{rest}/ws"))
        } else {
            Err(format!(
                "--url {base:?} must start with http:// or https://"
            ))
        }
    }
}

/// A JSON argument: inline, or `-` for standard input.
fn json_arg(text: &str, what: &str) -> Result<Value, String> {
    let text = if text == "-" {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .map_err(|e| format!("reading {what} from standard input: {e}"))?;
        input
    } else {
        text.to_owned()
    };
    serde_json::from_str(&text).map_err(|e| format!("{what} is not valid JSON: {e}"))
}

/// Runs one REST request and prints the answer; errors come back as readable text.
pub async fn rest(
    url: &HubUrl,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let target = format!("{}{path}", url.base());
    let mut request = client.request(method, &target);
    if let Some(token) = &url.token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|e| unreachable(url, &e))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| unreachable(url, &e))?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status.is_success() {
        return Ok(value);
    }
    match value.get("error") {
        Some(error) => Err(format!(
            "the hub refused: {} ({}): {}",
            error.get("code").and_then(Value::as_str).unwrap_or("error"),
            status.as_u16(),
            error.get("message").and_then(Value::as_str).unwrap_or("")
        )),
        None => Err(format!("the hub answered {status}: {value}")),
    }
}

fn unreachable(url: &HubUrl, e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    format!("cannot reach the hub at {}: {cause}", url.base())
}

/// Prints a JSON answer: pretty on a terminal, one line otherwise.
pub fn print_json(value: &Value) {
    let text = if std::io::stdout().is_terminal() {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    println!("{}", text.unwrap_or_default());
}

pub async fn get(url: &HubUrl, topic_or_pattern: &str) -> Result<(), String> {
    let path = if topic_or_pattern.contains(['+', '#']) {
        format!(
            "/api/state?match={}",
            topic_or_pattern.replace('#', "%23").replace('+', "%2B")
        )
    } else {
        format!("/api/state/{topic_or_pattern}")
    };
    print_json(&rest(url, reqwest::Method::GET, &path, None).await?);
    Ok(())
}

pub async fn write(
    url: &HubUrl,
    method: reqwest::Method,
    topic: &str,
    body: &str,
) -> Result<(), String> {
    let body = json_arg(body, "the state")?;
    let path = format!("/api/state/{topic}");
    print_json(&rest(url, method, &path, Some(body)).await?);
    Ok(())
}

pub async fn delete(url: &HubUrl, topic: &str) -> Result<(), String> {
    let path = format!("/api/state/{topic}");
    print_json(&rest(url, reqwest::Method::DELETE, &path, None).await?);
    Ok(())
}

pub async fn event(url: &HubUrl, topic: &str, data: &str) -> Result<(), String> {
    let data = json_arg(data, "the event")?;
    let path = format!("/api/events/{topic}");
    print_json(&rest(url, reqwest::Method::POST, &path, Some(data)).await?);
    Ok(())
}

pub async fn command(
    url: &HubUrl,
    target: &str,
    name: &str,
    args: Option<&str>,
) -> Result<(), String> {
    let args = match args {
        Some(text) => json_arg(text, "the arguments")?,
        None => json!({}),
    };
    let path = format!("/api/commands/{target}");
    let body = json!({"name": name, "args": args});
    print_json(&rest(url, reqwest::Method::POST, &path, Some(body)).await?);
    Ok(())
}

/// How `watch` prints.
struct Printer {
    json: bool,
    color: bool,
}

impl Printer {
    /// One line per message: time, kind, topic, rev and what changed.
    fn line(&self, message: &Value) {
        let kind = message.get("type").and_then(Value::as_str).unwrap_or("");
        if self.json {
            let mut line = message.clone();
            if let Value::Object(map) = &mut line {
                map.insert("time".into(), Value::String(now()));
            }
            println!("{line}");
        } else {
            let topic = message.get("topic").and_then(Value::as_str).unwrap_or("");
            let rev = message
                .get("rev")
                .map(|r| format!(" rev {r}"))
                .unwrap_or_default();
            let body = message
                .get("patch")
                .or_else(|| message.get("state"))
                .or_else(|| message.get("data"))
                .map(Value::to_string)
                .unwrap_or_else(|| match kind {
                    "lagged" => format!("dropped events: {}", message["dropped_events"]),
                    _ => String::new(),
                });
            let (on, off) = match (self.color, kind) {
                (false, _) => ("", ""),
                (true, "snapshot") => ("\x1b[36m", "\x1b[0m"),
                (true, "patch") => ("\x1b[32m", "\x1b[0m"),
                (true, "removed") => ("\x1b[31m", "\x1b[0m"),
                (true, "event") => ("\x1b[35m", "\x1b[0m"),
                (true, _) => ("\x1b[33m", "\x1b[0m"),
            };
            println!("{} {on}{kind:<8}{off} {topic}{rev} {body}", now());
        }
        let _ = std::io::stdout().flush();
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Waits before `watch` reconnects: jittered, so that many watchers of a restarted hub do
/// not all come back at once.
const RECONNECT_MIN: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// Prints every change of topics matching `pattern` until interrupted, reconnecting with
/// backoff and resuming from the revs it has seen, so nothing is missed across a drop.
pub async fn watch(url: &HubUrl, pattern: &str, json_lines: bool) -> Result<(), String> {
    statecast_core::Pattern::new(pattern).map_err(|e| format!("pattern {pattern:?}: {e}"))?;
    let ws_url = url.ws()?;
    let printer = Printer {
        json: json_lines,
        color: !json_lines
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none(),
    };
    let mut revs: HashMap<String, u64> = HashMap::new();
    let mut backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
    let mut ever_connected = false;
    loop {
        let mut connected = false;
        let error = watch_once(
            &ws_url,
            url.token.as_deref(),
            pattern,
            &printer,
            &mut revs,
            &mut connected,
        )
        .await;
        if !ever_connected && !connected {
            // The first attempt failed: say so instead of retrying in silence.
            return Err(format!("cannot reach the hub at {}: {error}", url.base()));
        }
        if connected {
            ever_connected = true;
            backoff.reset();
        }
        // Whole milliseconds, so the message reads `reconnecting in 1.046s`.
        let wait = Duration::from_millis(backoff.next_wait().as_millis() as u64);
        eprintln!("statecast: connection lost ({error}); reconnecting in {wait:?}");
        tokio::time::sleep(wait).await;
    }
}

/// One connection: subscribe (resuming from `revs`), then print until it ends; returns
/// why it ended. `connected` says whether the connection was made.
async fn watch_once(
    ws_url: &str,
    token: Option<&str>,
    pattern: &str,
    printer: &Printer,
    revs: &mut HashMap<String, u64>,
    connected: &mut bool,
) -> String {
    match watch_connection(ws_url, token, pattern, printer, revs, connected).await {
        Ok(()) => "the hub closed the connection".into(),
        Err(e) => e,
    }
}

async fn watch_connection(
    ws_url: &str,
    token: Option<&str>,
    pattern: &str,
    printer: &Printer,
    revs: &mut HashMap<String, u64>,
    connected: &mut bool,
) -> Result<(), String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .map_err(|e| e.to_string())?;
    *connected = true;
    if let Some(token) = token {
        let auth = json!({"type": "auth", "id": 0, "token": token});
        ws.send(Message::text(auth.to_string()))
            .await
            .map_err(|e| e.to_string())?;
    }
    let subscribe = json!({"type": "subscribe", "id": 1, "patterns": [pattern], "since": revs});
    ws.send(Message::text(subscribe.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    while let Some(frame) = ws.next().await {
        let text = match frame.map_err(|e| e.to_string())? {
            Message::Text(text) => text,
            Message::Close(_) => break,
            _ => continue,
        };
        let Ok(message) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        match message.get("type").and_then(Value::as_str) {
            Some("welcome" | "pong") => {}
            Some("result") if message.get("ok") == Some(&Value::Bool(false)) => {
                return Err(format!("the hub refused: {}", message["error"]));
            }
            Some("result") => {}
            Some(_) => {
                if let (Some(topic), Some(rev)) = (
                    message.get("topic").and_then(Value::as_str),
                    message.get("rev").and_then(Value::as_u64),
                ) {
                    revs.insert(topic.to_owned(), rev);
                }
                printer.line(&message);
            }
            None => {}
        }
    }
    Ok(())
}
