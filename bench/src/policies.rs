//! The `policies` scenario: what topic policies cost.
//!
//! 1. **Schema validation.** The same `--changes` writes (20,000 by default) of a device
//!    state with 20 members, spread over 100 topics and sent by one pipelined WebSocket
//!    publisher, against a hub without policies and against one whose `[[topics]]` gives
//!    those topics a JSON Schema of all 20 members (types, ranges, a pattern, the outputs'
//!    items). It prints writes/s and the server's CPU time per write for each, and the
//!    difference: what validating costs on the write path.
//! 2. **Idle staleness.** 100,000 topics written once, then left alone, on a hub without
//!    policies and on one with `stale_after = "15s"` for all of them: the server's CPU per
//!    second while they are fresh (every deadline pending), as they turn stale, and once
//!    they all are. A hub that scanned its topics would pay per second for as long as they
//!    exist; a deadline queue pays once per topic when it turns.
//!
//! Each hub is started from `--server-cmd` with `--config <file>` added (a file this
//! scenario writes), on its own data directory. Nothing is checked: it prints figures.

use std::time::{Duration, Instant};

use crate::Plan;
use crate::clients::{Finals, WsPublisher};
use crate::server::Server;

/// Topics the validation phase spreads its writes over.
const WRITE_TOPICS: usize = 100;
/// Topics of the idle phase.
const IDLE_TOPICS: usize = 100_000;
/// Their `stale_after`: long enough that writing them all ends before the first turns.
const STALE_AFTER: Duration = Duration::from_secs(15);
/// How long each idle window is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(5);

/// The schema of [`device_state`]: every member typed, ranges and a pattern where a device
/// has them, no other members.
const DEVICE_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["ts", "seq", "name", "online", "uptime", "outputs"],
  "properties": {
    "ts": {"type": "integer", "minimum": 0},
    "seq": {"type": "integer", "minimum": 0},
    "name": {"type": "string", "maxLength": 64},
    "model": {"type": "string", "enum": ["ESP32-WROOM", "ESP32-S3"]},
    "firmware": {"type": "string", "pattern": "^[0-9]+\\.[0-9]+\\.[0-9]+$"},
    "online": {"type": "boolean"},
    "uptime": {"type": "integer", "minimum": 0},
    "rssi": {"type": "integer", "minimum": -120, "maximum": 0},
    "battery": {"type": "integer", "minimum": 0, "maximum": 100},
    "temperature": {"type": "number", "minimum": -40, "maximum": 125},
    "voltage": {"type": "number", "minimum": 0},
    "heap_free": {"type": "integer", "minimum": 0},
    "ip": {"type": "string", "maxLength": 45},
    "mac": {"type": "string", "pattern": "^([0-9a-f]{2}:){5}[0-9a-f]{2}$"},
    "mode": {"type": "string", "enum": ["auto", "manual", "off"]},
    "errors": {"type": "integer", "minimum": 0},
    "last_command": {"type": "string"},
    "interval_ms": {"type": "integer", "minimum": 50, "maximum": 60000},
    "outputs": {"type": "array", "maxItems": 16,
                "items": {"type": "object", "required": ["id", "on"],
                          "properties": {"id": {"type": "integer"}, "on": {"type": "boolean"}}}},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}}
  }
}"#;

/// A device's state with 20 members; `seq` changes several of them, as a device's status
/// does between two reports.
fn device_state(seq: u64) -> String {
    let outputs: Vec<String> = (0..8)
        .map(|i| format!(r#"{{"id":{i},"on":{}}}"#, (seq >> i) & 1 == 1))
        .collect();
    format!(
        concat!(
            r#"{{"ts":{ts},"seq":{seq},"name":"esp32-{n}","model":"ESP32-S3","firmware":"1.4.2","#,
            r#""online":true,"uptime":{seq},"rssi":-{rssi},"battery":{battery},"temperature":21.5,"#,
            r#""voltage":3.31,"heap_free":{heap},"ip":"192.168.1.{n}","mac":"24:6f:28:aa:bb:{mac:02x}","#,
            r#""mode":"auto","errors":0,"last_command":"set_output","interval_ms":500,"#,
            r#""outputs":[{outputs}],"labels":{{"room":"station","rack":"2"}}}}"#
        ),
        ts = crate::clients::now_ns(),
        seq = seq,
        n = seq % WRITE_TOPICS as u64,
        rssi = 40 + seq % 40,
        battery = seq % 101,
        heap = 100_000 + seq % 5000,
        mac = seq % 256,
        outputs = outputs.join(","),
    )
}

/// Runs both phases and prints their figures.
pub async fn run(
    plan: &Plan,
    command: &str,
    pin: Option<usize>,
    window: usize,
) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("statecast-bench-policies-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let schema = dir.join("device.json");
    std::fs::write(&schema, DEVICE_SCHEMA).map_err(|e| e.to_string())?;
    let none = config(&dir, "none.toml", "")?;
    let with_schema = config(
        &dir,
        "schema.toml",
        "[[topics]]\nmatch = \"dev/+\"\nschema = \"device.json\"\n",
    )?;
    let stale = config(
        &dir,
        "stale.toml",
        &format!(
            "[[topics]]\nmatch = \"idle/#\"\nstale_after = \"{}ms\"\n",
            STALE_AFTER.as_millis()
        ),
    )?;

    println!(
        "policies: {} writes of a 20-member state over {WRITE_TOPICS} topics, window {window}",
        plan.changes
    );
    let mut per_write = Vec::new();
    for (name, config) in [("no schema", &none), ("with schema", &with_schema)] {
        let mut server = start(plan, command, config, pin).await?;
        let (rate, cpu_us) = writes(&server, plan, window).await?;
        println!("  {name:<12} {rate:>9.0} writes/s  {cpu_us:>6.2} µs CPU per write");
        per_write.push(cpu_us);
        server.stop(Duration::from_secs(10));
    }
    println!(
        "  validation: {:+.2} µs CPU per write",
        per_write[1] - per_write[0]
    );

    println!(
        "policies: {IDLE_TOPICS} topics written once, then idle (server CPU, ms per s, over {} s windows)",
        IDLE_WINDOW.as_secs()
    );
    for (name, config) in [("no policy", &none), ("stale_after 15s", &stale)] {
        let mut server = start(plan, command, config, pin).await?;
        let mut publisher = WsPublisher::connect(
            &server.base_url,
            plan.protocol,
            window,
            Finals::default(),
            None,
        )
        .await?;
        for i in 0..IDLE_TOPICS as u64 {
            publisher
                .publish_state(&format!("idle/{}/{}", i / 1000, i % 1000), i, r#"{"v":1}"#)
                .await?;
        }
        publisher.finish().await?;
        let written = Instant::now();
        let fresh = idle_cpu(&server, IDLE_WINDOW).await?;
        // From then until every deadline has come, and a second more.
        let turning = (written + STALE_AFTER + Duration::from_secs(1))
            .saturating_duration_since(Instant::now());
        let turning = idle_cpu(&server, turning).await?;
        let stale_now = idle_cpu(&server, IDLE_WINDOW).await?;
        println!(
            "  {name:<15} fresh {fresh:>6.2}   turning {turning:>6.2}   afterwards {stale_now:>6.2}"
        );
        server.stop(Duration::from_secs(10));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
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
    // Create the topics first, so the measured writes are all changes of existing topics.
    for t in 0..WRITE_TOPICS as u64 {
        publisher
            .publish_state(&format!("dev/{t}"), t, &device_state(t))
            .await?;
    }
    publisher.flush().await?;
    let before = server.sample()?;
    let started = Instant::now();
    for seq in WRITE_TOPICS as u64..(WRITE_TOPICS + plan.changes) as u64 {
        let topic = format!("dev/{}", seq % WRITE_TOPICS as u64);
        publisher
            .publish_state(&topic, seq, &device_state(seq))
            .await?;
    }
    let refused = std::rc::Rc::clone(&publisher.refused);
    publisher.finish().await?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = server.sample()?;
    if *refused.borrow() > 0 {
        return Err(format!(
            "{} writes were refused: the schema does not fit the state",
            refused.borrow()
        ));
    }
    let cpu_us = (after.cpu_us - before.cpu_us) as f64 / plan.changes as f64;
    Ok((plan.changes as f64 / elapsed, cpu_us))
}

/// The server's CPU time per second (ms/s) over `window`, with nothing sent.
async fn idle_cpu(server: &Server, window: Duration) -> Result<f64, String> {
    if window.is_zero() {
        return Ok(f64::NAN);
    }
    let before = server.sample()?;
    tokio::time::sleep(window).await;
    let after = server.sample()?;
    Ok((after.cpu_us - before.cpu_us) as f64 / 1000.0 / window.as_secs_f64())
}
