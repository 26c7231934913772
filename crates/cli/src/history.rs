//! `statecast history`: what a topic was. Its recorded changes (`GET /api/history/{topic}`,
//! every page of the hub's read), a numeric field summed up per step (`?field=&step=`), or
//! its state at a time (`GET /api/state/{topic}?at=`), printed as a table, as CSV or as the
//! hub's JSON answers.

use std::time::{Duration, UNIX_EPOCH};

use clap::Args;
use reqwest::{Method, Url};
use serde_json::Value;

use crate::client::{self, HubUrl};
use crate::output;

/// The most changes one request may ask for (the hub's cap).
const PAGE_MAX: u64 = 100_000;

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The topic, no wildcards (`micboard/SHURE001`)
    #[arg(value_name = "TOPIC")]
    topic: String,
    /// The oldest change to show: RFC 3339 (2026-12-06T21:00:00Z), Unix ms, or a duration
    /// before now (-1h, -90s, -15m, -7d); default: as far back as the hub keeps
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    from: Option<String>,
    /// The newest change to show, in the same forms; default: now
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    to: Option<String>,
    /// Show only these fields of each state: JSON pointers joined by commas (/battery,/rf)
    #[arg(long, value_name = "POINTERS", conflicts_with_all = ["field", "at"])]
    fields: Option<String>,
    /// Sum up this numeric field (a JSON pointer such as /battery) per --step: its min,
    /// max, time-weighted avg and last value, and the writes, in each step; the steps
    /// start at --from (without it, at the oldest change kept)
    #[arg(long, value_name = "POINTER", requires = "step", conflicts_with = "at")]
    field: Option<String>,
    /// The step of --field: a duration such as 60s, 1m, 1h
    #[arg(long, value_name = "DURATION", requires = "field")]
    step: Option<String>,
    /// Show the state as it was at this time (same forms as --from) instead of the changes
    #[arg(long, value_name = "TIME", allow_hyphen_values = true, conflicts_with_all = ["from", "to", "limit"])]
    at: Option<String>,
    /// Show at most this many changes (default: all, read page by page)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "field")]
    limit: Option<u64>,
    /// Print the hub's JSON answers instead, one a line (a long history: one per page)
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV: a header row, then a row per change or step
    #[arg(long)]
    csv: bool,
    #[command(flatten)]
    hub: HubUrl,
}

/// How the answer is printed.
#[derive(Clone, Copy, PartialEq)]
enum Format {
    Table,
    Csv,
    Json,
}

pub async fn run(args: &HistoryArgs) -> Result<(), String> {
    let format = match (args.json, args.csv) {
        (true, _) => Format::Json,
        (_, true) => Format::Csv,
        _ => Format::Table,
    };
    if let Some(at) = &args.at {
        let mut target = args.hub.topic("state", &args.topic);
        target.query_pairs_mut().append_pair("at", at);
        let answer = client::rest(&args.hub, Method::GET, target, None).await?;
        print_state(&answer, format);
        return Ok(());
    }
    if let (Some(field), Some(step)) = (&args.field, &args.step) {
        let target = history_url(
            args,
            args.from.as_deref(),
            &[("field", field), ("step", step)],
        );
        let answer = client::rest(&args.hub, Method::GET, target, None).await?;
        print_series(&args.topic, &answer, format);
        return Ok(());
    }
    let changes = read_changes(args, format).await?;
    let fields: Option<Vec<&str>> = args
        .fields
        .as_deref()
        .map(|f| f.split(',').filter(|p| !p.is_empty()).collect());
    match format {
        Format::Json => {}
        Format::Csv => print_csv(changes_rows(&changes, fields.as_deref(), true)),
        Format::Table if changes.is_empty() => {
            eprintln!("statecast: no changes of {} in that time", args.topic)
        }
        Format::Table => print_table(changes_rows(&changes, fields.as_deref(), false)),
    }
    Ok(())
}

/// `/api/history/{topic}` with `from`, `--to` and `extra`.
fn history_url(args: &HistoryArgs, from: Option<&str>, extra: &[(&str, &str)]) -> Url {
    let mut target = args.hub.topic("history", &args.topic);
    {
        let mut query = target.query_pairs_mut();
        for (key, value) in [("from", from), ("to", args.to.as_deref())] {
            if let Some(value) = value {
                query.append_pair(key, value);
            }
        }
        for (key, value) in extra {
            query.append_pair(key, value);
        }
    }
    target
}

/// Every change from `--from` to `--to` (at most `--limit`), page after page: each answer's
/// `next` is asked for as the following `from`. With `--json` each answer is printed as it
/// comes, and none is kept.
async fn read_changes(args: &HistoryArgs, format: Format) -> Result<Vec<Value>, String> {
    let mut changes = Vec::new();
    let mut taken: u64 = 0;
    let mut from = args.from.clone();
    loop {
        let remaining = args.limit.map(|limit| limit - taken);
        let page_limit = remaining.map(|r| r.min(PAGE_MAX).to_string());
        let mut extra = Vec::new();
        if let Some(fields) = &args.fields {
            extra.push(("fields", fields.as_str()));
        }
        if let Some(limit) = &page_limit {
            extra.push(("limit", limit.as_str()));
        }
        // A later page's `from` is the hub's `next`.
        let target = history_url(args, from.as_deref(), &extra);
        let answer = client::rest(&args.hub, Method::GET, target, None).await?;
        let page = answer
            .get("changes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let count = match remaining {
            Some(r) => (page.len() as u64).min(r),
            None => page.len() as u64,
        };
        taken += count;
        let next = answer
            .get("next")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if format == Format::Json {
            client::print_json(&answer);
        } else {
            changes.extend(page.into_iter().take(count as usize));
        }
        // An empty page with a `next` would never end: stop there.
        let done = next.is_none() || count == 0 || remaining.is_some_and(|r| count >= r);
        if done {
            return Ok(changes);
        }
        from = next;
    }
}

/// One value of a row: what a table and a CSV file show of it differ.
struct Cell;

impl Cell {
    /// A field's value in a table: a string as it is, anything else as JSON, absent as `-`.
    fn table(value: Option<&Value>) -> String {
        match value {
            None | Some(Value::Null) => "-".into(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => number(n),
            Some(other) => other.to_string(),
        }
    }

    /// A field's value in CSV: a string as it is, anything else as JSON, absent empty.
    fn csv(value: Option<&Value>) -> String {
        match value {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        }
    }
}

/// A number for reading: at most 3 decimals, no trailing zeros.
fn number(n: &serde_json::Number) -> String {
    match (n.as_i64(), n.as_u64(), n.as_f64()) {
        (Some(i), _, _) => i.to_string(),
        (_, Some(u), _) => u.to_string(),
        (_, _, Some(f)) => {
            let text = format!("{f:.3}");
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        }
        _ => n.to_string(),
    }
}

/// The header and rows of the changes: time, rev, then the state (or `(removed)`), or with
/// `fields` one column per field (CSV has a `removed` column too).
fn changes_rows(changes: &[Value], fields: Option<&[&str]>, csv: bool) -> Vec<Vec<String>> {
    let cell = if csv { Cell::csv } else { Cell::table };
    let mut header = vec!["time".to_string(), "rev".to_string()];
    if csv {
        header.push("removed".into());
    }
    match fields {
        Some(fields) => header.extend(fields.iter().map(|f| f.to_string())),
        None => header.push("state".into()),
    }
    if !csv {
        for name in header.iter_mut().filter(|h| !h.starts_with('/')) {
            *name = name.to_uppercase();
        }
    }
    let mut rows = vec![header];
    for change in changes {
        let removed = change.get("removed") == Some(&Value::Bool(true));
        let mut row = vec![
            text(change.get("time")),
            change.get("rev").map(Value::to_string).unwrap_or_default(),
        ];
        if csv {
            row.push(removed.to_string());
        }
        let state = change.get("state");
        match fields {
            _ if removed && !csv => row.push("(removed)".into()),
            Some(fields) => row.extend(
                fields
                    .iter()
                    .map(|f| cell(state.and_then(|s| s.get(*f)).filter(|_| !removed))),
            ),
            None if removed => row.push(String::new()),
            None => row.push(state.map(Value::to_string).unwrap_or_default()),
        }
        rows.push(row);
    }
    rows
}

/// A string value as it is (a time), anything else as JSON.
fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// `--at`: the state as it was.
fn print_state(answer: &Value, format: Format) {
    let row = vec![
        text(answer.get("time")),
        answer.get("rev").map(Value::to_string).unwrap_or_default(),
        answer
            .get("state")
            .map(Value::to_string)
            .unwrap_or_default(),
    ];
    match format {
        Format::Json => client::print_json(answer),
        Format::Csv => print_csv(vec![vec!["time".into(), "rev".into(), "state".into()], row]),
        Format::Table => print_table(vec![vec!["TIME".into(), "REV".into(), "STATE".into()], row]),
    }
}

/// `--field --step`: one row per point, `t` as RFC 3339.
fn print_series(topic: &str, answer: &Value, format: Format) {
    if format == Format::Json {
        client::print_json(answer);
        return;
    }
    let points = answer
        .get("points")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if format == Format::Table && points.is_empty() {
        eprintln!("statecast: no values of that field of {topic} in that time");
        return;
    }
    let names = ["t", "min", "max", "avg", "last", "changes"];
    let mut rows = vec![match format {
        Format::Table => names.iter().map(|n| n.to_uppercase()).collect(),
        _ => names.iter().map(|n| n.to_string()).collect(),
    }];
    for point in points {
        let mut row = vec![unix_ms(point.get("t"))];
        for name in &names[1..] {
            row.push(match format {
                Format::Table => Cell::table(point.get(*name)),
                _ => Cell::csv(point.get(*name)),
            });
        }
        rows.push(row);
    }
    match format {
        Format::Table => print_table(rows),
        _ => print_csv(rows),
    }
}

/// Unix milliseconds as RFC 3339 with milliseconds (UTC); anything else as it is.
fn unix_ms(value: Option<&Value>) -> String {
    match value.and_then(Value::as_u64) {
        Some(ms) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        None => text(value),
    }
}

/// Columns padded to their widest cell, two spaces apart; the last one is not padded.
fn print_table(rows: Vec<Vec<String>>) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[c] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        output::line(line.trim_end());
    }
}

/// RFC 4180: a cell with a comma, a quote or a line break is quoted, its quotes doubled.
fn print_csv(rows: Vec<Vec<String>>) {
    for row in rows {
        let cells: Vec<String> = row.iter().map(|cell| csv_cell(cell)).collect();
        output::line(&cells.join(","));
    }
}

fn csv_cell(cell: &str) -> String {
    match cell.contains([',', '"', '\n', '\r']) {
        true => format!("\"{}\"", cell.replace('"', "\"\"")),
        false => cell.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(csv_cell("80"), "80");
        assert_eq!(csv_cell(r#"{"a":1,"b":"x"}"#), r#""{""a"":1,""b"":""x""}""#);
        assert_eq!(csv_cell("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn numbers_read_well_in_a_table() {
        let n = |v: Value| Cell::table(Some(&v));
        assert_eq!(n(json!(80)), "80");
        assert_eq!(n(json!(-60)), "-60");
        assert_eq!(n(json!(81.33333333)), "81.333");
        assert_eq!(n(json!(79.5)), "79.5");
        assert_eq!(n(json!(2.0)), "2");
        assert_eq!(n(json!(null)), "-");
        assert_eq!(n(json!("low")), "low");
        assert_eq!(Cell::csv(Some(&json!(81.33333333))), "81.33333333");
        assert_eq!(Cell::csv(None), "");
    }

    #[test]
    fn a_table_pads_every_column_but_the_last() {
        let rows = changes_rows(
            &[
                json!({"rev": 1, "time": "2026-12-06T21:00:00.120Z", "state": {"/battery": 80}}),
                json!({"rev": 12, "time": "2026-12-06T21:00:01.000Z", "removed": true}),
            ],
            Some(&["/battery", "/rf"]),
            false,
        );
        assert_eq!(
            rows,
            [
                vec!["TIME", "REV", "/battery", "/rf"],
                vec!["2026-12-06T21:00:00.120Z", "1", "80", "-"],
                vec!["2026-12-06T21:00:01.000Z", "12", "(removed)"],
            ]
        );
        assert_eq!(
            unix_ms(Some(&json!(1796590800120u64))),
            "2026-12-06T21:00:00.120Z"
        );
    }
}
