//! The `history` scenario: what the durable history costs and how fast it answers.
//!
//! 1. **Write path.** `--changes` writes (20,000 by default) of a 300-byte device state in
//!    which one or two fields change per write, over 100 topics, from one pipelined
//!    WebSocket publisher: against a hub that keeps no history (`history = "0"` for `#`)
//!    and one that keeps it (the default, 24 h): writes/s and the server's CPU per write;
//!    the difference is what recording costs.
//! 2. **Queries.** One topic with 1,000,000 recorded changes (its battery level moving with each),
//!    then, over HTTP on loopback, timed from the request to the last byte (5 runs each,
//!    median and worst): the battery's `series` over the whole range at steps giving 10,
//!    1,000 and 100,000 points, a range of 10,000 changes from the middle, and `?at=` in
//!    the middle.
//!
//! Each hub is started from `--server-cmd` with `--config <file>` added. Nothing is
//! checked beyond the answers' status: it prints figures.

use std::time::{Duration, Instant};

use crate::Plan;
use crate::clients::{Finals, WsPublisher};
use crate::server::Server;

const WRITE_TOPICS: usize = 100;
const QUERY_CHANGES: u64 = 1_000_000;
const RUNS: usize = 5;

/// A device's state of about 300 bytes; each `seq` changes `uptime` and, every other one,
/// `rssi`: one or two fields per write, as a device reporting its status does.
fn device_state(seq: u64, battery: u64) -> String {
    format!(
        concat!(
            r#"{{"name":"esp32-{n}","model":"ESP32-S3","firmware":"1.4.2","online":true,"#,
            r#""uptime":{seq},"rssi":-{rssi},"battery":{battery},"temperature":21.5,"#,
            r#""voltage":3.31,"ip":"192.168.1.{n}","mac":"24:6f:28:aa:bb:01","mode":"auto","#,
            r#""errors":0,"interval_ms":500,"outputs":[true,false,true,false,false,true,false,false],"#,
            r#""labels":{{"room":"station","rack":"2"}}}}"#
        ),
        n = seq % WRITE_TOPICS as u64,
        seq = seq,
        rssi = 40 + (seq / 2) % 40,
        battery = battery,
    )
}

pub async fn run(
    plan: &Plan,
    command: &str,
    pin: Option<usize>,
    window: usize,
) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("statecast-bench-history-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let off = config(
        &dir,
        "off.toml",
        "[[topics]]\nmatch = \"#\"\nhistory = \"0\"\n",
    )?;
    let on = config(&dir, "on.toml", "")?;

    println!(
        "history: {} writes of a {}-byte state (1-2 fields change per write) over {WRITE_TOPICS} topics, window {window}",
        plan.changes,
        device_state(1, 80).len()
    );
    let mut figures = Vec::new();
    for (name, config) in [("history off", &off), ("history on", &on)] {
        let mut server = start(plan, command, config, pin).await?;
        let (rate, cpu_us) = writes(&server, plan, window).await?;
        println!("  {name:<12} {rate:>9.0} writes/s  {cpu_us:>6.2} µs CPU per write");
        figures.push(cpu_us);
        server.stop(Duration::from_secs(10));
    }
    println!(
        "  recording: {:+.2} µs CPU per write ({:+.1}%)",
        figures[1] - figures[0],
        (figures[1] / figures[0] - 1.0) * 100.0
    );

    println!(
        "history: queries over one topic with {QUERY_CHANGES} recorded changes (ms: median / worst of {RUNS})"
    );
    let mut server = start(plan, command, &on, pin).await?;
    let mut publisher = WsPublisher::connect(
        &server.base_url,
        plan.protocol,
        window,
        Finals::default(),
        None,
    )
    .await?;
    let written = Instant::now();
    for seq in 0..QUERY_CHANGES {
        // The battery's level moves with every write (a series over all 1,000,000).
        let battery = seq % 101;
        publisher
            .publish_state("mics/rx-1", seq, &device_state(seq, battery))
            .await?;
    }
    publisher.finish().await?;
    println!(
        "  written in {:.1} s ({:.0} changes/s)",
        written.elapsed().as_secs_f64(),
        QUERY_CHANGES as f64 / written.elapsed().as_secs_f64()
    );
    let http = reqwest::Client::new();
    let base = format!("{}/api/history/mics/rx-1", server.base_url);
    let first: serde_json::Value = get(&http, &format!("{base}?limit=1")).await?.1;
    let from = first["changes"][0]["time"]
        .as_str()
        .ok_or("no first change")?
        .to_string();
    let from_ms = rfc3339_ms(&from)?;
    let to_ms = now_ms();
    let span = to_ms - from_ms;
    let middle = from_ms + span / 2;
    for points in [10u64, 1000, 100_000] {
        let step = span.div_ceil(points).max(1);
        let url = format!("{base}?field=/battery&step={step}&from={from_ms}&to={to_ms}");
        let (ms, body) = timed(&http, &url).await?;
        let got = body["points"].as_array().map_or(0, Vec::len);
        println!(
            "  series, {points:>6} steps of {step:>6} ms: {:>7.1} / {:>7.1}   ({got} points)",
            ms.0, ms.1
        );
    }
    let url = format!("{base}?from={middle}&limit=10000");
    let (ms, body) = timed(&http, &url).await?;
    let got = body["changes"].as_array().map_or(0, Vec::len);
    println!(
        "  10,000 changes from the middle: {:>7.1} / {:>7.1}   ({got} changes)",
        ms.0, ms.1
    );
    let url = format!("{}/api/state/mics/rx-1?at={middle}", server.base_url);
    let (ms, _) = timed(&http, &url).await?;
    println!(
        "  the state at a moment in the middle: {:>7.1} / {:>7.1}",
        ms.0, ms.1
    );
    let held = history_bytes(&http, &server.base_url).await?;
    println!(
        "  history held: {:.1} MB ({:.0} bytes per change: entries, keys and field points, as the hub counts them)",
        held as f64 / 1e6,
        held as f64 / QUERY_CHANGES as f64
    );
    if let Some(data) = server.data_dir() {
        // The file's length, not what is stored: see docs/history.md for the entry sizes.
        let bytes = dir_bytes(data);
        println!(
            "  store file: {:.1} MB after {QUERY_CHANGES} changes ({:.0} bytes per change, an upper bound: redb grows its file in steps and keeps freed pages)",
            bytes as f64 / 1e6,
            bytes as f64 / QUERY_CHANGES as f64
        );
    }
    server.stop(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Publishes the writes; returns writes/s and the server's CPU µs per write.
async fn writes(server: &Server, plan: &Plan, window: usize) -> Result<(f64, f64), String> {
    let mut publisher = WsPublisher::connect(
        &server.base_url,
        plan.protocol,
        window,
        Finals::default(),
        None,
    )
    .await?;
    for t in 0..WRITE_TOPICS as u64 {
        publisher
            .publish_state(&format!("dev/{t}"), t, &device_state(t, 80))
            .await?;
    }
    publisher.flush().await?;
    let before = server.sample()?;
    let started = Instant::now();
    for seq in WRITE_TOPICS as u64..(WRITE_TOPICS + plan.changes) as u64 {
        let topic = format!("dev/{}", seq % WRITE_TOPICS as u64);
        publisher
            .publish_state(&topic, seq, &device_state(seq, 80))
            .await?;
    }
    publisher.finish().await?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = server.sample()?;
    let cpu_us = (after.cpu_us - before.cpu_us) as f64 / plan.changes as f64;
    Ok((plan.changes as f64 / elapsed, cpu_us))
}

/// Median and worst of [`RUNS`] timed GETs, and the last answer.
async fn timed(
    http: &reqwest::Client,
    url: &str,
) -> Result<((f64, f64), serde_json::Value), String> {
    let mut times = Vec::new();
    let mut last = serde_json::Value::Null;
    for _ in 0..RUNS {
        let (ms, body) = get(http, url).await?;
        times.push(ms);
        last = body;
    }
    times.sort_by(f64::total_cmp);
    Ok(((times[RUNS / 2], times[RUNS - 1]), last))
}

async fn get(http: &reqwest::Client, url: &str) -> Result<(f64, serde_json::Value), String> {
    let started = Instant::now();
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if !status.is_success() {
        return Err(format!(
            "{url}: {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let value = serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))?;
    Ok((ms, value))
}

/// The hub's `statecast_history_bytes` gauge.
async fn history_bytes(http: &reqwest::Client, base: &str) -> Result<u64, String> {
    let url = format!("{base}/metrics");
    let text = http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .text()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("statecast_history_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .ok_or_else(|| format!("{url}: no statecast_history_bytes"))
}

fn rfc3339_ms(text: &str) -> Result<u64, String> {
    let t = humantime::parse_rfc3339(text).map_err(|e| format!("{text}: {e}"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the files in `dir` take (the store file grows in redb's regions).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn config(dir: &std::path::Path, name: &str, text: &str) -> Result<String, String> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path.display().to_string())
}

async fn start(
    plan: &Plan,
    command: &str,
    config: &str,
    pin: Option<usize>,
) -> Result<Server, String> {
    let command = format!("{command} --config {}", shell_words::quote(config));
    Server::spawn(&command, plan.protocol.health_path(), pin).await
}
