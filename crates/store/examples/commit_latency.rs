//! Measures `RedbEngine::commit` latency (durable, fsync'd) for batches of 1, 16 and 256
//! records of ~200 bytes of JSON each, in a temporary directory.
//!
//! Run with `cargo run -p statecast-store --release --example commit_latency`.

use std::time::{Duration, Instant};

use statecast_core::engine::{Engine, Record};
use statecast_store::RedbEngine;

/// Distinct topics written to, round-robin, so later commits overwrite earlier ones.
const TOPICS: usize = 1024;
/// Timed commits per batch size (after a few untimed warm-up commits).
const COMMITS: usize = 200;
const WARMUP: usize = 10;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let engine = RedbEngine::open(dir.path())?;
    println!("store: {}", engine.path().display());

    let names: Vec<String> = (0..TOPICS)
        .map(|i| format!("sensors/room-{i:04}"))
        .collect();
    let states: Vec<String> = (0..TOPICS)
        .map(|i| {
            format!(
                r#"{{"id":{i},"temperature":21.5,"humidity":43.25,"status":"ok","tags":["floor-2","east-wing","hvac"],"updated":"2025-01-01T12:00:00Z","note":"{}"}}"#,
                "x".repeat(60)
            )
        })
        .collect();
    let avg_len = states.iter().map(String::len).sum::<usize>() / states.len();
    println!("record state size: ~{avg_len} bytes");

    let mut seq = 0u64;
    let mut next = 0usize;
    for batch in [1usize, 16, 256] {
        let mut latencies = Vec::with_capacity(COMMITS);
        let mut total = Duration::ZERO;
        for i in 0..WARMUP + COMMITS {
            let records: Vec<Record<'_>> = (0..batch)
                .map(|_| {
                    seq += 1;
                    let t = next % TOPICS;
                    next += 1;
                    Record {
                        topic: &names[t],
                        rev: seq,
                        seq,
                        state: Some(states[t].as_bytes()),
                        time_ms: seq,
                        patch: None,
                        keep_ms: 0,
                    }
                })
                .collect();
            let start = Instant::now();
            engine.commit(&records, seq)?;
            let took = start.elapsed();
            if i >= WARMUP {
                latencies.push(took);
                total += took;
            }
        }
        latencies.sort();
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "batch {batch:>3}: p50 {:>8.3} ms  p99 {:>8.3} ms  {:>10.0} records/s  ({COMMITS} commits)",
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            (batch * COMMITS) as f64 / total.as_secs_f64(),
        );
    }
    Ok(())
}
