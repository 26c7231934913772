//! The client subcommands: `get`, `set`, `patch`, `delete`, `event` and `command` over REST,
//! and `watch`, a live monitor over WebSocket that reconnects and resumes with `since`.

use std::collections::{HashMap, HashSet};
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
    pub(crate) fn topic(&self, kind: &str, topic: &str) -> Url {
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
    let answer = rest(url, reqwest::Method::GET, target, None).await?;
    print_json(&answer);
    // Standard output stays the hub's JSON, for scripts; a person is told on stderr.
    let listed = match answer.get("topics").and_then(Value::as_array) {
        Some(topics) => topics.iter().collect(),
        None => vec![&answer],
    };
    for topic in listed
        .into_iter()
        .filter(|t| t.get("stale") == Some(&Value::Bool(true)))
    {
        eprintln!("statecast: {}", stale_notice(topic));
    }
    Ok(())
}

/// What `get` says of a stale topic, from the REST answer: its `time` is that of its last
/// change (a write that changed nothing since is not in it).
fn stale_notice(topic: &Value) -> String {
    let name = topic
        .get("topic")
        .and_then(Value::as_str)
        .unwrap_or("the topic");
    match topic.get("time").and_then(Value::as_str) {
        Some(time) => format!(
            "{name} is stale (not written within its stale_after, or its device is gone); its state last changed at {time}"
        ),
        None => {
            format!("{name} is stale (not written within its stale_after, or its device is gone)")
        }
    }
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
    /// One line per message: time, kind, topic, rev and what changed. A `stale` message
    /// reads `stale` (with the time of the topic's last write) or `fresh`; a snapshot of a
    /// stale topic ends with `(stale)`.
    fn line(&self, message: &Value) {
        let kind = match message.get("type").and_then(Value::as_str).unwrap_or("") {
            "stale" if message.get("stale") == Some(&Value::Bool(false)) => "fresh",
            kind => kind,
        };
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
                    "stale" => match message.get("since").and_then(Value::as_str) {
                        Some(since) => format!("since {since}"),
                        None => String::new(),
                    },
                    _ => String::new(),
                });
            let marked =
                match kind == "snapshot" && message.get("stale") == Some(&Value::Bool(true)) {
                    true => " (stale)",
                    false => "",
                };
            let (on, off) = match (self.color, kind) {
                (false, _) => ("", ""),
                (true, "snapshot") => ("\x1b[36m", "\x1b[0m"),
                (true, "patch") => ("\x1b[32m", "\x1b[0m"),
                (true, "removed") => ("\x1b[31m", "\x1b[0m"),
                (true, "event") => ("\x1b[35m", "\x1b[0m"),
                (true, "fresh") => ("\x1b[32m", "\x1b[0m"),
                (true, _) => ("\x1b[33m", "\x1b[0m"),
            };
            let line = format!("{} {on}{kind:<8}{off} {topic}{rev} {body}{marked}", now());
            output::line(line.trim_end());
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
    let mut seen = Seen::default();
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
            &mut seen,
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

/// What `watch` knows of each topic it printed, across reconnections.
#[derive(Default)]
struct Seen {
    /// The rev of each topic, to resume from.
    revs: HashMap<String, u64>,
    /// The topics that are stale now.
    stale: HashSet<String>,
}

impl Seen {
    /// Takes in a message of the hub; false for one that tells nothing new, not printed:
    /// the `stale` message a resume brings for each topic under a `stale_after` policy
    /// repeats what the watch knows unless the topic turned meanwhile.
    fn take(&mut self, message: &Value) -> bool {
        let Some(topic) = message.get("topic").and_then(Value::as_str) else {
            return true;
        };
        let kind = message.get("type").and_then(Value::as_str);
        // Not a `stale` message's rev: the one freshening a topic comes before the patch
        // of the write, with that write's rev; resuming from it would skip the patch.
        if let Some(rev) = message.get("rev").and_then(Value::as_u64)
            && kind != Some("stale")
        {
            self.revs.insert(topic.to_owned(), rev);
        }
        let stale = message.get("stale") == Some(&Value::Bool(true));
        match kind {
            Some("stale") if stale => self.stale.insert(topic.to_owned()),
            Some("stale") => self.stale.remove(topic),
            Some("snapshot") if stale => {
                self.stale.insert(topic.to_owned());
                true
            }
            Some("snapshot" | "patch" | "removed") => {
                self.stale.remove(topic);
                true
            }
            _ => true,
        }
    }
}

/// One connection: subscribe (resuming from the revs seen), then print until it ends.
/// `connected` says whether the connection was made.
async fn watch_connection(
    ws_url: &Url,
    token: Option<&str>,
    pattern: &str,
    printer: &Printer,
    seen: &mut Seen,
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
    let subscribe =
        json!({"type": "subscribe", "id": 1, "patterns": [pattern], "since": seen.revs});
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
            // What tells nothing new (see `Seen::take`) is not printed.
            Some(_) if seen.take(&message) => printer.line(&message),
            Some(_) | None => {}
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
    fn watch_prints_a_turn_to_stale_or_fresh_once_not_what_a_resume_repeats() {
        let mut seen = Seen::default();
        let stale = |topic: &str, stale: bool| json!({"type": "stale", "topic": topic, "rev": 1, "stale": stale});
        assert!(seen.take(&json!({"type": "snapshot", "topic": "a", "rev": 1, "state": {}})));
        // A resume's word on a fresh topic repeats what the watch knows.
        assert!(!seen.take(&stale("a", false)));
        assert!(seen.take(&stale("a", true)));
        assert!(!seen.take(&stale("a", true)), "a resume repeating it");
        assert!(seen.take(&json!({"type": "stale", "topic": "a", "rev": 2, "stale": false})));
        // A snapshot of a stale topic is printed (marked), and its resume is not news.
        assert!(
            seen.take(
                &json!({"type": "snapshot", "topic": "b", "rev": 3, "stale": true, "state": 1})
            )
        );
        assert!(!seen.take(&stale("b", true)));
        // A removal forgets the topic's staleness.
        assert!(seen.take(&json!({"type": "removed", "topic": "b", "rev": 4})));
        assert!(!seen.take(&stale("b", false)));
        assert_eq!(
            seen.revs,
            HashMap::from([("a".to_owned(), 1), ("b".to_owned(), 4)])
        );
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
