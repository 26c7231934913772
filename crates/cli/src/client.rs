//! The client subcommands: `get`, `set`, `patch`, `delete`, `event` and `command` over REST,
//! and `watch`, a live monitor over WebSocket that reconnects and resumes with `since`.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::time::{Duration, SystemTime};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use serde_json::{Value, json};
use statecast_core::backoff::Backoff;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::output;

/// Where the hub is.
#[derive(Debug, Args, Clone)]
pub struct HubUrl {
    /// The hub: its HTTP URL, its WebSocket URL (ws://HOST:PORT/ws) or HOST:PORT
    #[arg(
        long,
        env = "STATECAST_URL",
        default_value = "http://127.0.0.1:8080",
        value_parser = hub_base
    )]
    pub url: Url,
    /// An API key or JWT for a hub with authentication
    #[arg(long, env = "STATECAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The hub's HTTP base URL from what `--url` gives: `http(s)://HOST:PORT[/PREFIX]`, the
/// WebSocket URL the hub logs (`ws(s)://HOST:PORT/ws`), or a bare `HOST:PORT`.
fn hub_base(given: &str) -> Result<Url, String> {
    let with_scheme = match given.contains("://") {
        true => given.to_string(),
        false => format!("http://{given}"),
    };
    let mut url = Url::parse(&with_scheme).map_err(|e| {
        format!(
            "{given:?} is not a URL ({e}): give http://HOST:PORT, ws://HOST:PORT/ws or HOST:PORT"
        )
    })?;
    let (http, websocket) = match url.scheme() {
        "http" => ("http", false),
        "https" => ("https", false),
        "ws" => ("http", true),
        "wss" => ("https", true),
        other => {
            return Err(format!(
                "{given:?}: {other}:// is not one of http://, https://, ws://, wss://"
            ));
        }
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{given:?} names no host"));
    }
    // ws -> http and wss -> https are both changes between special schemes, which `Url` allows.
    let _ = url.set_scheme(http);
    if websocket && let Some(prefix) = url.path().strip_suffix("/ws").map(str::to_owned) {
        url.set_path(&prefix);
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

impl HubUrl {
    /// The hub as messages name it: `http://127.0.0.1:8080`.
    fn shown(&self) -> &str {
        self.url.as_str().trim_end_matches('/')
    }

    /// The URL of the path `segments` below the hub's, each segment percent-encoded: a `#`
    /// or `?` in a topic stays in the topic instead of ending the path.
    fn at<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> Url {
        let mut url = self.url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// `/api/{kind}/{topic}`, each of the topic's segments a path segment.
    fn topic(&self, kind: &str, topic: &str) -> Url {
        self.at(["api", kind].into_iter().chain(topic.split('/')))
    }

    /// The WebSocket URL of the hub's `/ws`.
    fn ws(&self) -> Url {
        let mut url = self.at(["ws"]);
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        let _ = url.set_scheme(scheme);
        url
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
    target: Url,
    body: Option<Value>,
) -> Result<Value, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = client.request(method, target);
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
    let Some(error) = value.get("error") else {
        return Err(format!("the hub answered {status}: {value}"));
    };
    let mut refused = format!(
        "the hub refused: {} ({}): {}",
        error.get("code").and_then(Value::as_str).unwrap_or("error"),
        status.as_u16(),
        error.get("message").and_then(Value::as_str).unwrap_or("")
    );
    // What a device answered to a command (an `upstream` error) says why it refused.
    match error.get("body") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => refused.push_str(&format!(": {text}")),
        Some(body) => refused.push_str(&format!(": {body}")),
    }
    Err(refused)
}

fn unreachable(url: &HubUrl, e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    format!("cannot reach the hub at {}: {cause}", url.shown())
}

/// Prints a JSON answer: pretty on a terminal, one line otherwise.
pub fn print_json(value: &Value) {
    let text = if std::io::stdout().is_terminal() {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    output::line(&text.unwrap_or_default());
}

pub async fn get(url: &HubUrl, topic_or_pattern: &str) -> Result<(), String> {
    let target = if topic_or_pattern.contains(['+', '#']) {
        let mut target = url.at(["api", "state"]);
        target
            .query_pairs_mut()
            .append_pair("match", topic_or_pattern);
        target
    } else {
        url.topic("state", topic_or_pattern)
    };
    print_json(&rest(url, reqwest::Method::GET, target, None).await?);
    Ok(())
}

pub async fn write(
    url: &HubUrl,
    method: reqwest::Method,
    topic: &str,
    body: &str,
) -> Result<(), String> {
    let body = json_arg(body, "the state")?;
    print_json(&rest(url, method, url.topic("state", topic), Some(body)).await?);
    Ok(())
}

pub async fn delete(url: &HubUrl, topic: &str) -> Result<(), String> {
    let target = url.topic("state", topic);
    print_json(&rest(url, reqwest::Method::DELETE, target, None).await?);
    Ok(())
}

pub async fn event(url: &HubUrl, topic: &str, data: &str) -> Result<(), String> {
    let data = json_arg(data, "the event")?;
    let target = url.topic("events", topic);
    print_json(&rest(url, reqwest::Method::POST, target, Some(data)).await?);
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
    let body = json!({"name": name, "args": args});
    let target = url.topic("commands", target);
    print_json(&rest(url, reqwest::Method::POST, target, Some(body)).await?);
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
            output::line(&line.to_string());
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
            output::line(&format!("{} {on}{kind:<8}{off} {topic}{rev} {body}", now()));
        }
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
/// backoff and resuming from the revs it has seen, so nothing is missed across a drop. A
/// hub that is not up yet is waited for the same way, which it says once.
pub async fn watch(url: &HubUrl, pattern: &str, json_lines: bool) -> Result<(), String> {
    statecast_core::Pattern::new(pattern).map_err(|e| format!("pattern {pattern:?}: {e}"))?;
    let ws_url = url.ws();
    let printer = Printer {
        json: json_lines,
        color: !json_lines
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none(),
    };
    let mut revs: HashMap<String, u64> = HashMap::new();
    let mut backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
    let mut ever_connected = false;
    let mut said_waiting = false;
    loop {
        let mut connected = false;
        let error = match watch_connection(
            &ws_url,
            url.token.as_deref(),
            pattern,
            &printer,
            &mut revs,
            &mut connected,
        )
        .await
        {
            Ok(()) => "the hub closed the connection".to_string(),
            Err(End::Retry(error)) => error,
            Err(End::Refused(error)) => return Err(error),
        };
        if connected {
            ever_connected = true;
            backoff.reset();
        }
        // Whole milliseconds, so the message reads `reconnecting in 1.046s`.
        let wait = Duration::from_millis(backoff.next_wait().as_millis() as u64);
        if ever_connected {
            eprintln!("statecast: connection lost ({error}); reconnecting in {wait:?}");
        } else if !said_waiting {
            eprintln!(
                "statecast: waiting for the hub at {} ({error}); watching once it is up",
                url.shown()
            );
            said_waiting = true;
        }
        tokio::time::sleep(wait).await;
    }
}

/// Why a connection ended without the hub closing it.
enum End {
    /// The hub is not up, or the connection dropped: try again.
    Retry(String),
    /// Something answered and refused the WebSocket (a wrong `--url` path, a proxy that
    /// does not pass WebSockets): another try would get the same.
    Refused(String),
}

/// One connection: subscribe (resuming from `revs`), then print until it ends.
/// `connected` says whether the connection was made.
async fn watch_connection(
    ws_url: &Url,
    token: Option<&str>,
    pattern: &str,
    printer: &Printer,
    revs: &mut HashMap<String, u64>,
    connected: &mut bool,
) -> Result<(), End> {
    let retry = |e: WsError| End::Retry(e.to_string());
    let (mut ws, _) = match tokio_tungstenite::connect_async(ws_url.as_str()).await {
        Ok(connection) => connection,
        Err(WsError::Http(response)) if response.status().is_client_error() => {
            return Err(End::Refused(format!(
                "{ws_url} refused the WebSocket: {}",
                response.status()
            )));
        }
        Err(e) => return Err(retry(e)),
    };
    *connected = true;
    if let Some(token) = token {
        let auth = json!({"type": "auth", "id": 0, "token": token});
        ws.send(Message::text(auth.to_string()))
            .await
            .map_err(retry)?;
    }
    let subscribe = json!({"type": "subscribe", "id": 1, "patterns": [pattern], "since": revs});
    ws.send(Message::text(subscribe.to_string()))
        .await
        .map_err(retry)?;
    while let Some(frame) = ws.next().await {
        let text = match frame.map_err(retry)? {
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
                return Err(End::Retry(format!("the hub refused: {}", message["error"])));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn base(given: &str) -> String {
        hub_base(given)
            .unwrap_or_else(|e| panic!("{given}: {e}"))
            .to_string()
    }

    #[test]
    fn every_form_of_the_hubs_address_gives_its_http_url() {
        for (given, url) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
            ("https://hub.example/", "https://hub.example/"),
            ("ws://127.0.0.1:8080/ws", "http://127.0.0.1:8080/"),
            ("ws://127.0.0.1:8080", "http://127.0.0.1:8080/"),
            (
                "wss://hub.example/statecast/ws",
                "https://hub.example/statecast",
            ),
            ("127.0.0.1:8080", "http://127.0.0.1:8080/"),
            ("localhost:8080", "http://localhost:8080/"),
            ("[::1]:8080", "http://[::1]:8080/"),
        ] {
            assert_eq!(base(given), url, "{given}");
        }
        for refused in ["ftp://h:1", "http://", "not a url"] {
            assert!(hub_base(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn urls_keep_a_path_prefix_and_encode_each_topic_segment() {
        let hub = HubUrl {
            url: hub_base("https://hub.example/statecast/").unwrap(),
            token: None,
        };
        assert_eq!(
            hub.topic("state", "a/b#c/d?e").as_str(),
            "https://hub.example/statecast/api/state/a/b%23c/d%3Fe"
        );
        assert_eq!(hub.ws().as_str(), "wss://hub.example/statecast/ws");
        assert_eq!(hub.shown(), "https://hub.example/statecast");
    }
}
