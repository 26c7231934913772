//! The history over REST (docs/history.md, the contract's "History"):
//! `GET /api/history/{topic}` answers a range of changes (`from`, `to`, `limit`, `fields`)
//! or a field's series (`field`, `step`), and `GET /api/state/{topic}?at=` the state at a
//! past moment. Read like every other read: a caller that may not read a topic may not
//! read its history. The store is asked on a blocking thread, never on the async ones.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use statecast_core::history::{self, At, Start};
use statecast_core::message::rfc3339;
use statecast_core::policy::parse_duration;
use statecast_core::request::parse_topic;
use statecast_core::{ErrorCode, HubError, Topic};

use crate::app::App;
use crate::auth::{Action, Caller};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Fields one `fields` query may ask for.
const MAX_FIELDS: usize = 64;
/// How `next` and `from` write "from this rev on".
const REV_CURSOR: &str = "rev:";

#[derive(Deserialize)]
pub struct HistoryQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    fields: Option<String>,
    field: Option<String>,
    step: Option<String>,
}

pub async fn get_history(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(topic): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    Metrics::add(&app.metrics.http_requests, 1);
    let topic = parse_topic(&topic)?;
    app.check(&caller, Action::Read, &topic)?;
    let now = now_ms();
    let to_ms = match &query.to {
        Some(t) => parse_time("to", t, now)?,
        None => now,
    };
    match (query.field, query.step) {
        (Some(field), Some(step)) => {
            if query.fields.is_some() || query.limit.is_some() {
                return Err(bad(
                    "field and step ask for a series: fields and limit do not apply",
                ));
            }
            let pointer = parse_pointer("field", &field)?;
            let step_ms = parse_step(&step)?;
            let from_ms = match &query.from {
                Some(t) => parse_time("from", t, now)?,
                None => 0,
            };
            check_order(from_ms, to_ms)?;
            series(app, topic, pointer, from_ms, to_ms, step_ms).await
        }
        (Some(_), None) => Err(bad("field needs a step (e.g. step=60s)")),
        (None, Some(_)) => Err(bad(
            "step needs a field (a JSON pointer, e.g. field=/battery)",
        )),
        (None, None) => {
            let start = match &query.from {
                Some(f) => match f.strip_prefix(REV_CURSOR) {
                    Some(rev) => Start::Rev(rev.parse().map_err(|_| {
                        bad(&format!(
                            "from: {f:?} is not a cursor this hub gave (rev:<n>)"
                        ))
                    })?),
                    None => Start::Time(parse_time("from", f, now)?),
                },
                None => Start::Time(0),
            };
            if let Start::Time(from_ms) = start {
                check_order(from_ms, to_ms)?;
            }
            let limit = parse_limit(query.limit.as_deref())?;
            let fields = match &query.fields {
                Some(list) => Some(parse_fields(list)?),
                None => None,
            };
            changes(app, topic, start, to_ms, limit, fields).await
        }
    }
}

async fn changes(
    app: Arc<App>,
    topic: Topic,
    start: Start,
    to_ms: u64,
    limit: usize,
    fields: Option<Vec<String>>,
) -> Result<Response, ApiError> {
    let body = blocking(move || {
        let page = app.hub.history_changes(&topic, start, to_ms, limit)?;
        let mut out = Vec::with_capacity(64 + page.changes.len() * 96);
        out.extend_from_slice(b"{\"topic\":");
        push_json(&mut out, &json!(topic.as_str()));
        out.extend_from_slice(b",\"changes\":[");
        for (i, change) in page.changes.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"rev\":");
            out.extend_from_slice(itoa::Buffer::new().format(change.rev).as_bytes());
            out.extend_from_slice(b",\"time\":\"");
            out.extend_from_slice(rfc3339(change.time_ms).as_bytes());
            out.push(b'"');
            match (&change.state, &fields) {
                (None, _) => out.extend_from_slice(b",\"removed\":true"),
                (Some(state), None) => {
                    out.extend_from_slice(b",\"state\":");
                    out.extend_from_slice(state);
                }
                (Some(state), Some(fields)) => {
                    let value: Value = serde_json::from_slice(state).map_err(|e| {
                        HubError::new(ErrorCode::Internal, format!("a recorded state: {e}"))
                    })?;
                    out.extend_from_slice(b",\"state\":");
                    push_json(&mut out, &history::project(&value, fields));
                }
            }
            out.push(b'}');
        }
        out.push(b']');
        if let Some(rev) = page.next_rev {
            out.extend_from_slice(b",\"next\":\"");
            out.extend_from_slice(REV_CURSOR.as_bytes());
            out.extend_from_slice(itoa::Buffer::new().format(rev).as_bytes());
            out.push(b'"');
        }
        out.push(b'}');
        Ok(out)
    })
    .await?;
    Ok(json_response(StatusCode::OK, body))
}

async fn series(
    app: Arc<App>,
    topic: Topic,
    pointer: String,
    from_ms: u64,
    to_ms: u64,
    step_ms: u64,
) -> Result<Response, ApiError> {
    let body = blocking(move || {
        let steps = app
            .hub
            .history_series(&topic, &pointer, from_ms, to_ms, step_ms)?;
        // Written straight into the answer: a fine series has tens of thousands of points.
        let mut out = Vec::with_capacity(96 + steps.len() * 80);
        out.extend_from_slice(b"{\"topic\":");
        push_json(&mut out, &json!(topic.as_str()));
        out.extend_from_slice(b",\"field\":");
        push_json(&mut out, &json!(pointer));
        out.extend_from_slice(b",\"step_ms\":");
        out.extend_from_slice(itoa::Buffer::new().format(step_ms).as_bytes());
        out.extend_from_slice(b",\"points\":[");
        for (i, step) in steps.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"t\":");
            out.extend_from_slice(itoa::Buffer::new().format(step.t).as_bytes());
            for (name, v) in [
                (&b",\"min\":"[..], step.min),
                (b",\"max\":", step.max),
                (b",\"avg\":", step.avg),
                (b",\"last\":", step.last),
            ] {
                out.extend_from_slice(name);
                push_number(&mut out, v);
            }
            out.extend_from_slice(b",\"changes\":");
            out.extend_from_slice(itoa::Buffer::new().format(step.changes).as_bytes());
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        Ok(out)
    })
    .await?;
    Ok(json_response(StatusCode::OK, body))
}

/// `GET /api/state/{topic}?at=`: the state as it was then.
pub async fn state_at(app: Arc<App>, topic: Topic, at: &str) -> Result<Response, ApiError> {
    let at_ms = parse_time("at", at, now_ms())?;
    let at = blocking(move || {
        let found = app.hub.history_at(&topic, at_ms)?;
        match found {
            At::Found(change) => {
                let mut out = Vec::new();
                out.extend_from_slice(b"{\"topic\":");
                push_json(&mut out, &json!(topic.as_str()));
                out.extend_from_slice(b",\"rev\":");
                out.extend_from_slice(itoa::Buffer::new().format(change.rev).as_bytes());
                out.extend_from_slice(b",\"time\":\"");
                out.extend_from_slice(rfc3339(change.time_ms).as_bytes());
                out.extend_from_slice(b"\",\"state\":");
                out.extend_from_slice(change.state.as_deref().unwrap_or(b"null"));
                out.push(b'}');
                Ok((change.rev, out))
            }
            At::Absent => Err(HubError::new(
                ErrorCode::NotFound,
                format!("{topic} did not exist at {}", rfc3339(at_ms)),
            )),
            At::Gone => Err(HubError::new(
                ErrorCode::Gone,
                format!(
                    "{} is older than the history kept of {topic}",
                    rfc3339(at_ms)
                ),
            )),
        }
    })
    .await?;
    let (rev, body) = at;
    let mut response = json_response(StatusCode::OK, body);
    // The rev of the state answered, as `GET /api/state/{topic}` gives it.
    if let Ok(etag) = format!("\"{rev}\"").parse() {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

/// Runs a store query off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HubError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(ApiError),
        Err(e) => Err(ApiError::new(
            ErrorCode::Internal,
            format!("the history query failed: {e}"),
        )),
    }
}

/// A figure as JSON: whole numbers as integers (a battery at 80 reads `80`, not `80.0`).
fn push_number(out: &mut Vec<u8>, v: f64) {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: every integer below is exact
    if v.fract() == 0.0 && v.abs() < EXACT {
        out.extend_from_slice(itoa::Buffer::new().format(v as i64).as_bytes());
    } else {
        // Finite (the store records only finite numbers); serde_json writes the shortest form.
        push_json(out, &json!(v));
    }
}

fn push_json(out: &mut Vec<u8>, value: &Value) {
    // Writing a `Value` into memory cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response()
}

fn bad(message: &str) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, message)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A time parameter: RFC 3339, Unix milliseconds, or a duration before now (`-1h`).
pub(crate) fn parse_time(name: &str, text: &str, now_ms: u64) -> Result<u64, ApiError> {
    if let Some(ago) = text.strip_prefix('-') {
        let ago = parse_duration(ago).map_err(|e| bad(&format!("{name}: {e}")))?;
        let ago = u64::try_from(ago.as_millis()).unwrap_or(u64::MAX);
        return Ok(now_ms.saturating_sub(ago));
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| {
            bad(&format!(
                "{name}: {text:?} is too large for Unix milliseconds"
            ))
        });
    }
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            bad(&format!(
                "{name}: {text:?} is not a time: give RFC 3339 (2026-12-06T21:00:00Z), Unix \
                 milliseconds, or a duration before now (-1h, -90s)"
            ))
        })?;
    let ms = time.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).map_err(|_| bad(&format!("{name}: {text:?} is before 1970")))
}

fn check_order(from_ms: u64, to_ms: u64) -> Result<(), ApiError> {
    if from_ms > to_ms {
        return Err(bad(&format!(
            "from ({}) is after to ({})",
            rfc3339(from_ms),
            rfc3339(to_ms)
        )));
    }
    Ok(())
}

fn parse_step(text: &str) -> Result<u64, ApiError> {
    let ms = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<u64>().ok()
    } else {
        parse_duration(text)
            .ok()
            .and_then(|d| u64::try_from(d.as_millis()).ok())
    };
    match ms {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(bad(&format!(
            "step: {text:?} is not a positive duration (e.g. 10s, 1m, or milliseconds)"
        ))),
    }
}

fn parse_limit(text: Option<&str>) -> Result<usize, ApiError> {
    let Some(text) = text else {
        return Ok(history::DEFAULT_LIMIT);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=history::MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(bad(&format!(
            "limit: {text:?} is not a number from 1 to {}",
            history::MAX_LIMIT
        ))),
    }
}

/// A JSON pointer (RFC 6901) naming a field: `/battery`, `/rf/level`.
fn parse_pointer(name: &str, text: &str) -> Result<String, ApiError> {
    let valid = text.starts_with('/')
        && text
            .split('~')
            .skip(1)
            .all(|rest| rest.starts_with('0') || rest.starts_with('1'));
    if !valid {
        return Err(bad(&format!(
            "{name}: {text:?} is not a JSON pointer to a field (like /battery or /rf/level)"
        )));
    }
    Ok(text.to_string())
}

fn parse_fields(list: &str) -> Result<Vec<String>, ApiError> {
    let fields: Vec<String> = list
        .split(',')
        .map(|f| parse_pointer("fields", f))
        .collect::<Result<_, _>>()?;
    if fields.len() > MAX_FIELDS {
        return Err(bad(&format!("fields: at most {MAX_FIELDS}")));
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_765_054_800_000; // 2025-12-06T21:00:00Z

    #[test]
    fn times_are_rfc_3339_unix_milliseconds_or_a_duration_before_now() {
        assert_eq!(parse_time("t", "-90s", NOW).unwrap(), NOW - 90_000);
        assert_eq!(parse_time("t", "1765054800120", NOW).unwrap(), NOW + 120);
        assert_eq!(
            parse_time("t", "2025-12-06T21:00:00.120Z", NOW).unwrap(),
            NOW + 120
        );
        assert_eq!(
            parse_time("t", "2025-12-06T22:00:00+01:00", NOW).unwrap(),
            NOW
        );
        for bad in [
            "",
            "yesterday",
            "-1y",
            "1969-01-01T00:00:00Z",
            "99999999999999999999999",
        ] {
            assert!(parse_time("t", bad, NOW).is_err(), "{bad}");
        }
    }

    #[test]
    fn steps_limits_and_pointers_are_checked_not_adjusted() {
        assert_eq!(parse_step("60s").unwrap(), 60_000);
        assert_eq!(parse_step("250").unwrap(), 250);
        assert!(parse_step("0s").is_err() && parse_step("0").is_err());
        assert!(parse_limit(Some("0")).is_err());
        assert!(parse_limit(Some("100001")).is_err());
        assert_eq!(parse_limit(None).unwrap(), history::DEFAULT_LIMIT);
        assert!(parse_pointer("f", "battery").is_err());
        assert!(parse_pointer("f", "/a~2").is_err());
        assert_eq!(parse_pointer("f", "/a~1b").unwrap(), "/a~1b");
    }

    #[test]
    fn whole_figures_are_integers_in_json() {
        let written = |v: f64| {
            let mut out = Vec::new();
            push_number(&mut out, v);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(written(80.0), "80");
        assert_eq!(written(-60.5), "-60.5");
        assert_eq!(written(0.1 + 0.2), "0.30000000000000004");
    }
}
