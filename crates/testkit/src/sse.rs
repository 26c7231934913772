//! A Server-Sent Events client of `/api/stream`: a small parser over a streaming reqwest
//! response that keeps the last event id as a browser does.

use serde_json::Value;

use crate::hub::Server;
use crate::wait::within;

/// One dispatched SSE event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
    /// The `id:` field carried by this event, if any.
    pub id: Option<String>,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {}", self.data))
    }
}

/// A small SSE parser over a streaming reqwest response.
pub struct Sse {
    response: reqwest::Response,
    buffer: Vec<u8>,
    event: String,
    data: Vec<String>,
    id: Option<String>,
    /// The last `id:` seen, like a browser's `lastEventId`.
    pub last_id: Option<String>,
}

impl Sse {
    /// `GET /api/stream?match=<patterns..>`, with `Last-Event-ID` when given.
    pub async fn open(server: &Server, patterns: &[&str], last_event_id: Option<&str>) -> Sse {
        let query: Vec<(&str, &str)> = patterns.iter().map(|p| ("match", *p)).collect();
        // No overall timeout: the stream stays open; each read below is bounded.
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let mut request = client
            .get(server.url("/api/stream"))
            .query(&query)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = within("the SSE response", request.send())
            .await
            .expect("SSE request");
        Sse::from_response(response, last_event_id)
    }

    /// The stream of a `GET /api/stream` answered 200.
    pub fn from_response(response: reqwest::Response, last_event_id: Option<&str>) -> Sse {
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Sse {
            response,
            buffer: Vec::new(),
            event: String::new(),
            data: Vec::new(),
            id: None,
            last_id: last_event_id.map(str::to_owned),
        }
    }

    /// The next event with data (comments and id-only blocks are consumed on the way).
    pub async fn next(&mut self) -> SseEvent {
        loop {
            while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                let line = String::from_utf8(line).expect("SSE is UTF-8");
                if let Some(event) = self.line(&line) {
                    return event;
                }
            }
            let chunk = within("an SSE chunk", self.response.chunk())
                .await
                .expect("SSE read")
                .expect("the SSE stream ended");
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// Reads until the server ends the stream; returns the events still received, or the
    /// error if the stream broke off instead of ending cleanly.
    pub async fn until_end(&mut self) -> Result<Vec<SseEvent>, reqwest::Error> {
        let mut events = Vec::new();
        loop {
            match within("the end of the SSE stream", self.response.chunk()).await? {
                None => return Ok(events),
                Some(chunk) => {
                    self.buffer.extend_from_slice(&chunk);
                    while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                        let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                        line.pop();
                        let line = String::from_utf8(line).expect("SSE is UTF-8");
                        events.extend(self.line(line.trim_end_matches('\r')));
                    }
                }
            }
        }
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            let id = self.id.take();
            if id.is_some() {
                self.last_id = id.clone();
            }
            if data.is_empty() {
                return None;
            }
            return Some(SseEvent {
                event: if event.is_empty() {
                    "message".into()
                } else {
                    event
                },
                data: data.join("\n"),
                id,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => self.data.push(value.to_owned()),
            "id" => self.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}
