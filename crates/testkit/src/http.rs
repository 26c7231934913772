//! HTTP in tests: a client that never goes through a proxy and gives up after
//! [`TIMEOUT`], and [`Resp`], a whole response read at once.

use serde_json::Value;

use crate::wait::TIMEOUT;

/// A reqwest client that never goes through a proxy.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .build()
        .expect("reqwest client")
}

/// A whole HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub async fn read(result: reqwest::Result<reqwest::Response>) -> Resp {
        let response = result.expect("HTTP request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("HTTP body");
        Resp {
            status,
            headers,
            text,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error code of a JSON error body.
    pub fn error_code(&self) -> String {
        let body = self.json();
        body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error body: {body}"))
            .to_owned()
    }
}

/// A REST state answer (one topic, or a listing's `topics`) without its `"time"`s, each
/// checked to be there and RFC 3339 with milliseconds, for comparing the rest exactly.
pub fn untimed(mut value: Value) -> Value {
    fn strip(topic: &mut Value) {
        let Some(fields) = topic.as_object_mut() else {
            return;
        };
        if !fields.contains_key("state") {
            return;
        }
        let time = fields.remove("time");
        let text = time.as_ref().and_then(Value::as_str).unwrap_or("");
        assert!(
            text.len() == 24 && text.ends_with('Z') && text.as_bytes()[10] == b'T',
            "a state answer without an RFC 3339 time: {topic:?} (time {time:?})"
        );
    }
    match value.get_mut("topics").and_then(Value::as_array_mut) {
        Some(topics) => topics.iter_mut().for_each(strip),
        None => strip(&mut value),
    }
    value
}
