//! The `spike` scenario: does the server give memory back after a spike of stalled clients?
//!
//! `--stalled` subscribers (5,000 by default) subscribe to one topic and never read again;
//! `--changes` states of `--payload-bytes` padding each (5,000 of 100 bytes by default) are
//! published, so every stalled connection's queue fills up to its count limit (the messages'
//! bytes are shared; each queued entry is the client's own); then the subscribers close and
//! the server's RSS is followed for `--settle` seconds (20 by default). It prints RSS
//! before the subscribers connected, at the peak (`VmHWM`), when they close, and once a
//! second after; a second `--rounds` shows whether a new spike reuses what the first left.
//!
//! The subscribers' receive buffers are small (4 KiB) so that what the server cannot send
//! piles up in the server's memory, not in the kernel's socket buffers.

use std::time::{Duration, Instant};

use crate::Plan;
use crate::clients::{self, Finals, Subscriber, WsPublisher};
use crate::protocol::Interest;
use crate::server::{self, Server};

/// What a stalled subscriber's kernel receive buffer may hold.
const STALLED_RECV_BUFFER: u32 = 4096;

/// Runs the scenario and prints its figures; `Err` when a connection or publish fails.
pub async fn run(
    plan: &Plan,
    server: &Server,
    window: usize,
    rounds: usize,
    settle: f64,
) -> Result<(), String> {
    let base = server.base_url.clone();
    let topic = "bench/spike".to_string();
    let payload = "x".repeat(plan.payload_bytes);
    let mut creator =
        WsPublisher::connect(&base, plan.protocol, window, Finals::default(), None).await?;
    creator.publish(&topic, 0, &payload).await?;
    creator.finish().await?;
    println!(
        "spike: {} stalled subscribers, {} changes of {} bytes, {settle} s to settle",
        plan.stalled, plan.changes, plan.payload_bytes
    );
    for round in 1..=rounds {
        let before = rss_kib(server)?;
        let stalled = connect_stalled(plan, &base, &topic).await?;
        let mut publisher =
            WsPublisher::connect(&base, plan.protocol, window, Finals::default(), None).await?;
        for seq in 1..=plan.changes as u64 {
            publisher.publish(&topic, seq, &payload).await?;
        }
        publisher.finish().await?;
        let loaded = until_flat(server).await?;
        let peak = peak_kib(server.pid)?;
        drop(stalled);
        let closed = Instant::now();
        let mut after = Vec::new();
        while closed.elapsed().as_secs_f64() < settle {
            tokio::time::sleep(Duration::from_secs(1)).await;
            after.push(rss_kib(server)?);
        }
        let trail: Vec<String> = after.iter().map(|kib| mib(*kib)).collect();
        println!(
            "round {round}: RSS before {}, loaded {}, peak {} (VmHWM), after close (each second) {}",
            mib(before),
            mib(loaded),
            mib(peak),
            trail.join(" ")
        );
        println!(
            "round {round}: after {settle} s: {} ({}% of what the spike added is given back)",
            mib(after.last().copied().unwrap_or(loaded)),
            given_back(before, loaded, after.last().copied().unwrap_or(loaded))
        );
    }
    Ok(())
}

/// Opens the stalled subscribers, 128 handshakes at a time.
async fn connect_stalled(plan: &Plan, base: &str, topic: &str) -> Result<Vec<clients::Ws>, String> {
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(128));
    let interest = Interest::Topic(topic.to_string());
    let mut handshakes = Vec::with_capacity(plan.stalled);
    for index in 0..plan.stalled {
        let permit = std::sync::Arc::clone(&semaphore)
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (base, interest, protocol) = (base.to_string(), interest.clone(), plan.protocol);
        handshakes.push(tokio::task::spawn_local(async move {
            let mut ws =
                clients::connect_small_buffer(&base, protocol, index, STALLED_RECV_BUFFER).await?;
            let mut ignored = Subscriber::default();
            clients::subscribe(&mut ws, protocol, &interest, 0, 1, &mut ignored).await?;
            drop(permit);
            Ok::<clients::Ws, String>(ws)
        }));
    }
    let mut stalled = Vec::with_capacity(handshakes.len());
    for handshake in handshakes {
        stalled.push(handshake.await.map_err(|e| e.to_string())??);
    }
    Ok(stalled)
}

/// Waits until the server's RSS has not grown for two seconds (its writers have filled
/// what they can), at most 60 s; returns it.
async fn until_flat(server: &Server) -> Result<u64, String> {
    let started = Instant::now();
    let mut last = rss_kib(server)?;
    let mut flat = 0;
    while flat < 4 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = rss_kib(server)?;
        flat = if now <= last { flat + 1 } else { 0 };
        last = last.max(now);
    }
    Ok(last)
}

fn rss_kib(server: &Server) -> Result<u64, String> {
    Ok(server.sample()?.rss_kb)
}

/// The process's peak RSS so far.
fn peak_kib(pid: u32) -> Result<u64, String> {
    server::status_kib(pid, "VmHWM:")
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn given_back(before: u64, loaded: u64, after: u64) -> u64 {
    let added = loaded.saturating_sub(before).max(1);
    loaded.saturating_sub(after).min(added) * 100 / added
}
