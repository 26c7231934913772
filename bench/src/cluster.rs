//! The cluster scenarios: the same load against one hub on its embedded store and against
//! `--nodes` hubs (3) sharing one Redis (`statecast serve --cluster`), side by side, so the
//! cost of the Redis hop shows.
//!
//! Each setup gets the same subscribers (spread evenly over the hubs: subscriber `i` on hub
//! `i % nodes`) and two measured phases: a paced one for latency and a burst for
//! deliveries/s. Writes go round-robin over the hubs, one pipelined WebSocket publisher per
//! hub. Besides the usual checks, every subscriber folds the `(rev, seq)` of each change it
//! receives into a digest per topic ([`clients::fold`]); at the end every subscriber's digest
//! must equal the one of the acknowledged writes in rev order, so every subscriber on every
//! hub saw the same sequence, and every hub must answer the final state over REST.
//!
//! The cluster uses a key prefix of its own (`statecast-bench-<pid>-<random>`); its keys,
//! `{<prefix>}:*`, are deleted once the hubs have stopped.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::clients::{self, AckLog, Finals, Subscriber, Totals, WsPublisher};
use crate::protocol::{Interest, Protocol};
use crate::redis::Redis;
use crate::report::{ClusterFigures, Measured, RunResult};
use crate::server::{self, Sample, Server};
use crate::{Plan, Publish, RunArgs, Scenario, progress};

/// How long a hub gets to stop on `SIGTERM` before `SIGKILL`.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// At most this many topics are read back from every hub at the end of a phase.
const READ_BACK_TOPICS: usize = 100;

#[derive(Debug, Clone, Copy)]
enum Phase {
    Paced { rate: f64, seconds: f64 },
    Burst { changes: usize },
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Paced { .. } => "paced",
            Phase::Burst { .. } => "burst",
        }
    }
}

/// Runs the single hub (unless this is the smoke variant), then the cluster; one result per
/// setup and phase.
pub async fn run(
    args: &RunArgs,
    plan: &Plan,
    pin: Option<usize>,
) -> Result<Vec<RunResult>, String> {
    if plan.protocol != Protocol::Statecast {
        return Err("the cluster scenarios measure statecast only (--protocol statecast)".into());
    }
    if plan.publish != Publish::Ws {
        return Err("the cluster scenarios publish over WebSocket only (--publish ws)".into());
    }
    if args.server_pid.is_some() {
        return Err(
            "the cluster scenarios start their hubs themselves: give --server-cmd \
                    (or nothing, to use the statecast binary next to the bench)"
                .into(),
        );
    }
    if args.nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    let command = server_command(args)?;
    let mut redis = Redis::connect(&args.redis).map_err(|e| {
        format!("{e} (the cluster scenarios need a Redis they may write to: --redis URL)")
    })?;
    let redis_pid = redis.local_pid();
    let prefix = format!(
        "statecast-bench-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    if !redis.keys_of(&prefix)?.is_empty() {
        return Err(format!("Redis already holds keys {{{prefix}}}:*"));
    }
    drop(redis);
    let base_name = args.name.clone().unwrap_or_else(|| "statecast".into());
    let health = Protocol::Statecast.health_path();
    let mut results = Vec::new();

    if plan.scenario == Scenario::Cluster {
        let mut hub = Vec::new();
        let outcome = async {
            hub.push(Server::spawn(&command, health, pin).await?);
            let name = format!("{base_name}, 1 hub");
            measure(plan, args, &hub, None, false, &name).await
        }
        .await;
        for h in &mut hub {
            h.stop(STOP_GRACE);
        }
        results.extend(outcome?);
    }

    let mut hubs = Vec::new();
    let outcome = async {
        for i in 0..args.nodes {
            let cmd = format!(
                "{command} --cluster {} --cluster-prefix {} --node-id {}",
                shell_words::quote(&args.redis),
                shell_words::quote(&prefix),
                shell_words::quote(&format!("bench-{}", i + 1)),
            );
            hubs.push(Server::spawn(&cmd, health, pin).await?);
        }
        wait_formed(&hubs).await?;
        let name = format!(
            "{base_name}, {} hub{} + Redis",
            args.nodes,
            if args.nodes == 1 { "" } else { "s" }
        );
        measure(plan, args, &hubs, redis_pid, true, &name).await
    }
    .await;
    // Stop every hub by its PID before deleting the keys (a running hub writes its
    // presence back).
    let mut killed = 0;
    for h in &mut hubs {
        killed += usize::from(!h.stop(STOP_GRACE));
    }
    if killed > 0 {
        eprintln!("{killed} hub(s) did not stop on SIGTERM within 10 s and were killed");
    }
    drop(hubs);
    match Redis::connect(&args.redis).and_then(|mut r| r.delete_prefix(&prefix)) {
        Ok(n) if !args.quiet => eprintln!("deleted the run's {n} Redis keys {{{prefix}}}:*"),
        Ok(_) => {}
        Err(e) => eprintln!("could not delete the Redis keys {{{prefix}}}:*: {e}"),
    }
    results.extend(outcome?);
    Ok(results)
}

/// `--server-cmd`, or the `statecast` binary next to this one.
fn server_command(args: &RunArgs) -> Result<String, String> {
    if let Some(cmd) = &args.server_cmd {
        if cmd.contains("--cluster") || cmd.contains("--node-id") {
            return Err(
                "--server-cmd: give the single-hub command; the bench adds --cluster, \
                        --cluster-prefix and --node-id for the cluster itself"
                    .into(),
            );
        }
        return Ok(cmd.clone());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let statecast = exe.with_file_name("statecast");
    if !statecast.is_file() {
        return Err(format!(
            "no --server-cmd, and no statecast binary at {}: build it (cargo build --release \
             -p statecast) or give --server-cmd",
            statecast.display()
        ));
    }
    Ok(format!(
        "{} serve --listen 127.0.0.1:{{port}} --data-dir {{data}}",
        shell_words::quote(&statecast.display().to_string())
    ))
}

/// Waits until every hub says it is healthy and sees all the others.
async fn wait_formed(hubs: &[Server]) -> Result<(), String> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for hub in hubs {
        let url = format!("{}{}", hub.base_url, Protocol::Statecast.health_path());
        loop {
            let body: Option<serde_json::Value> = match client.get(&url).send().await {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            let formed = body.as_ref().is_some_and(|b| {
                b.get("status").and_then(|s| s.as_str()) == Some("ok")
                    && b.pointer("/cluster/nodes")
                        .and_then(|n| n.as_array())
                        .is_some_and(|n| n.len() == hubs.len())
            });
            if formed {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the cluster did not form within 20 s: {url} answered {}",
                    body.map_or_else(|| "nothing".to_string(), |b| b.to_string())
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// CPU and RSS summed over the hubs.
fn sample_hubs(hubs: &[Server]) -> Result<Sample, String> {
    let mut sum = Sample {
        cpu_us: 0,
        rss_kb: 0,
    };
    for hub in hubs {
        let s = hub.sample()?;
        sum.cpu_us += s.cpu_us;
        sum.rss_kb += s.rss_kb;
    }
    Ok(sum)
}

fn redis_cpu(pid: Option<u32>) -> Option<u64> {
    pid.and_then(|p| server::sample(p).ok()).map(|s| s.cpu_us)
}

/// One setup (one hub, or the cluster): create, connect, then each phase, measured.
async fn measure(
    plan: &Plan,
    args: &RunArgs,
    hubs: &[Server],
    redis_pid: Option<u32>,
    shared_redis: bool,
    name: &str,
) -> Result<Vec<RunResult>, String> {
    let n = hubs.len();
    let bases: Vec<String> = hubs.iter().map(|h| h.base_url.clone()).collect();
    let topics: Vec<String> = if plan.topics == 1 {
        vec!["bench/fanout".to_string()]
    } else {
        (0..plan.topics).map(|i| format!("bench/t{i}")).collect()
    };
    // Every subscriber gets every change: one topic, or `bench/#` over all of them.
    let interest = Interest::Topic(if topics.len() == 1 {
        topics[0].clone()
    } else {
        "bench/#".to_string()
    });
    let payload = "x".repeat(plan.payload_bytes);

    // Create every topic on the first hub, unmeasured, and wait until every hub has it.
    let created: Finals = Rc::default();
    let mut creator = WsPublisher::connect(
        &bases[0],
        Protocol::Statecast,
        args.window,
        Rc::clone(&created),
        None,
    )
    .await?;
    for topic in &topics {
        creator.publish(topic, 0, &payload).await?;
    }
    creator.finish().await?;
    let created = created.borrow().clone();
    if created.len() != topics.len() {
        return Err(format!(
            "only {} of {} topics could be created",
            created.len(),
            topics.len()
        ));
    }
    let http = reqwest::Client::new();
    let last = &topics[topics.len() - 1];
    for base in &bases {
        wait_for_rev(&http, base, last, created[last].0).await?;
    }

    // Connect the subscribers, spread over the hubs.
    let before_connect = sample_hubs(hubs)?;
    let totals = Rc::new(RefCell::new(Totals::new()));
    let subscribers: Vec<Rc<RefCell<Subscriber>>> =
        (0..plan.subscribers).map(|_| Rc::default()).collect();
    let connect_started = Instant::now();
    let bar = progress(args.quiet, plan.subscribers, "connect");
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(128));
    let mut handshakes = Vec::new();
    for (index, sub) in subscribers.iter().enumerate() {
        let permit = std::sync::Arc::clone(&semaphore)
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let base = bases[index % n].clone();
        let interest = interest.clone();
        let (sub, totals, bar) = (Rc::clone(sub), Rc::clone(&totals), bar.clone());
        let count = plan.subscribers;
        handshakes.push(tokio::task::spawn_local(async move {
            let mut ws = clients::connect(&base, Protocol::Statecast, index).await?;
            let mut initial = Subscriber {
                sequence: Some(HashMap::new()),
                ..Subscriber::default()
            };
            clients::subscribe(
                &mut ws,
                Protocol::Statecast,
                &interest,
                index,
                count,
                &mut initial,
            )
            .await?;
            *sub.borrow_mut() = initial;
            drop(permit);
            bar.inc(1);
            Ok::<_, String>(tokio::task::spawn_local(clients::run_subscriber(
                ws,
                Protocol::Statecast,
                sub,
                totals,
            )))
        }));
    }
    let mut readers = Vec::new();
    for handshake in handshakes {
        readers.push(handshake.await.map_err(|e| e.to_string())??);
    }
    bar.finish_and_clear();
    let connect_time = connect_started.elapsed();
    let after_connect = sample_hubs(hubs)?;
    // Every subscriber starts from the topics as created.
    let initial_mismatches = subscribers
        .iter()
        .filter(|sub| {
            let sub = sub.borrow();
            created
                .iter()
                .any(|(topic, (rev, _))| sub.topics.get(topic.as_str()).map(|t| t.0) != Some(*rev))
        })
        .count() as u64;

    let mut phases = Vec::new();
    if let Some((rate, seconds)) = plan.paced
        && rate > 0.0
        && seconds > 0.0
    {
        phases.push(Phase::Paced { rate, seconds });
    }
    if plan.changes > 0 {
        phases.push(Phase::Burst {
            changes: plan.changes,
        });
    }
    let finals: Finals = Rc::default();
    let acks: AckLog = Rc::default();
    let mut seq = 0u64;
    let mut results = Vec::new();
    for phase in phases {
        *totals.borrow_mut() = Totals::new();
        // The same publishers in both setups, one connection per hub of the cluster
        // (`--nodes`), spread over the hubs there are; together they keep `--window`
        // changes in flight at most.
        let connections = args.nodes.max(1);
        let window = (args.window / connections).max(1);
        let mut publishers = Vec::new();
        for j in 0..connections {
            publishers.push(
                WsPublisher::connect(
                    &bases[j % n],
                    Protocol::Statecast,
                    window,
                    Rc::clone(&finals),
                    Some(Rc::clone(&acks)),
                )
                .await?,
            );
        }
        let (total, tick) = match phase {
            Phase::Paced { rate, seconds } => (
                (rate * seconds).round() as usize,
                Some(Duration::from_secs_f64(1.0 / rate)),
            ),
            Phase::Burst { changes } => (changes, None),
        };
        let start = sample_hubs(hubs)?;
        let redis_start = redis_cpu(redis_pid);
        totals.borrow_mut().measuring = true;
        let bar = progress(args.quiet, total, phase.name());
        let started = Instant::now();
        let mut next_send = started;
        for k in 0..total {
            let topic = if topics.len() == 1 {
                &topics[0]
            } else {
                &topics[rand::random_range(0..topics.len())]
            };
            seq += 1;
            let publisher = &mut publishers[k % connections];
            if let Some(tick) = tick {
                next_send += tick;
                tokio::time::sleep_until(next_send.into()).await;
                publisher.publish(topic, seq, &payload).await?;
                publisher.flush().await?;
            } else {
                publisher.publish(topic, seq, &payload).await?;
            }
            if k % 100 == 0 {
                bar.set_position(k as u64);
            }
        }
        let mut refused = 0;
        for publisher in publishers {
            let r = Rc::clone(&publisher.refused);
            publisher.finish().await?;
            refused += *r.borrow();
        }
        bar.finish_and_clear();
        let publish_time = started.elapsed();

        let finals_now = finals.borrow().clone();
        let complete =
            crate::clients::caught_up(&subscribers, &finals_now, &totals, |_, _| true).await;
        let end = sample_hubs(hubs)?;
        let redis_end = redis_cpu(redis_pid);
        totals.borrow_mut().measuring = false;

        // Checks, over everything published so far.
        let (expected_digests, ack_gaps) = expected_digests(&created, &acks.borrow());
        let (mut wrong_final, mut gaps, mut regressions, mut live_snapshots) = (0, 0, 0, 0);
        let (mut lagged, mut closed, mut sequence_mismatches) = (0, 0, 0);
        for sub in &subscribers {
            let sub = sub.borrow();
            gaps += sub.gaps;
            regressions += sub.regressions;
            live_snapshots += sub.live_snapshots;
            lagged += sub.lagged;
            closed += u64::from(sub.closed.is_some());
            for (topic, held) in &finals_now {
                if sub.topics.get(topic.as_str()) != Some(held) {
                    wrong_final += 1;
                }
            }
            // A conflated subscriber skipped revs on purpose: only its final state counts.
            if sub.live_snapshots == 0 {
                let digests = sub.sequence.as_ref();
                let differs = expected_digests.iter().any(|(topic, digest)| {
                    digests
                        .and_then(|d| d.get(topic.as_str()))
                        .copied()
                        .unwrap_or(0)
                        != *digest
                });
                sequence_mismatches += u64::from(differs);
            }
        }
        let node_state_mismatches = read_back(&http, &bases, &created, &finals_now).await;
        let figures = ClusterFigures {
            nodes: n,
            shared_redis,
            phase: phase.name().to_string(),
            redis_cpu_us: redis_start.zip(redis_end).map(|(a, b)| b.saturating_sub(a)),
            sequence_mismatches,
            initial_mismatches,
            ack_gaps,
            node_state_mismatches,
        };
        let correct = complete
            && wrong_final == 0
            && regressions == 0
            && gaps == 0
            && refused == 0
            && closed == 0
            && figures.failures() == 0;
        let totals = totals.borrow();
        let published = total as u64;
        let mut phase_plan = plan.clone();
        phase_plan.name = name.to_string();
        (phase_plan.paced, phase_plan.changes) = match phase {
            Phase::Paced { rate, seconds } => (Some((rate, seconds)), 0),
            Phase::Burst { changes } => (None, changes),
        };
        let mut result = RunResult::new(
            &phase_plan,
            Measured {
                published,
                refused,
                deliveries: totals.deliveries,
                expected_deliveries: published * plan.subscribers as u64,
                publish_time,
                delivery_window: match totals.last_delivery {
                    Some(last) => last.duration_since(started),
                    None => publish_time,
                },
                connect_time,
                latency: &totals.latency_us,
                cpu_us: end.cpu_us.saturating_sub(start.cpu_us),
                rss_before_kb: before_connect.rss_kb,
                rss_after_kb: after_connect.rss_kb,
                rss_end_kb: end.rss_kb,
                live_snapshots,
                lagged,
                gaps,
                regressions,
                wrong_final,
                complete,
                correct,
                durable_checked: None,
            },
        );
        let scenario = match plan.scenario {
            Scenario::ClusterSmoke => "cluster-smoke",
            _ => "cluster",
        };
        result.scenario = format!("{scenario}-{}", phase.name());
        result.cluster = Some(figures);
        results.push(result);
    }
    for reader in readers {
        reader.abort();
    }
    Ok(results)
}

/// Waits until `base` holds `topic` at `rev` at least.
async fn wait_for_rev(
    client: &reqwest::Client,
    base: &str,
    topic: &str,
    rev: u64,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((held, _)) = read_state(client, base, topic).await
            && held >= rev
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{base} did not get {topic} at rev {rev} within 30 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A topic's rev and `seq` as a hub answers them over REST.
async fn read_state(client: &reqwest::Client, base: &str, topic: &str) -> Option<(u64, u64)> {
    let url = format!("{base}{}", crate::protocol::rest_path(topic));
    let body: serde_json::Value = client.get(url).send().await.ok()?.json().await.ok()?;
    Some((
        body.get("rev")?.as_u64()?,
        body.pointer("/state/seq")?.as_u64()?,
    ))
}

/// Per topic, the digest of the acknowledged writes in rev order, as a subscriber that saw
/// every change since the topic was created holds it; and how many revs no acknowledgement
/// named (or two did).
fn expected_digests(
    created: &HashMap<String, (u64, u64)>,
    acks: &[(Box<str>, u64, u64)],
) -> (HashMap<String, u64>, u64) {
    let mut by_topic: HashMap<&str, BTreeMap<u64, u64>> = HashMap::new();
    let mut gaps = 0;
    for (topic, rev, seq) in acks {
        if by_topic
            .entry(topic)
            .or_default()
            .insert(*rev, *seq)
            .is_some()
        {
            gaps += 1;
        }
    }
    let mut digests = HashMap::new();
    for (topic, (created_rev, _)) in created {
        let mut digest = 0;
        if let Some(revs) = by_topic.get(topic.as_str()) {
            let mut expected = created_rev + 1;
            for (&rev, &seq) in revs {
                gaps += u64::from(rev != expected);
                digest = clients::fold(digest, rev, seq);
                expected = rev + 1;
            }
        }
        digests.insert(topic.clone(), digest);
    }
    (digests, gaps)
}

/// Reads topics back from every hub over REST; counts `(hub, topic)` pairs not at the
/// final acknowledged rev and seq.
async fn read_back(
    client: &reqwest::Client,
    bases: &[String],
    created: &HashMap<String, (u64, u64)>,
    finals: &HashMap<String, (u64, u64)>,
) -> u64 {
    let mut topics: Vec<&String> = created.keys().collect();
    topics.sort();
    topics.truncate(READ_BACK_TOPICS);
    let mut wrong = 0;
    for base in bases {
        for topic in &topics {
            let expected = finals.get(*topic).or(created.get(*topic)).copied();
            if read_state(client, base, topic).await != expected {
                wrong += 1;
            }
        }
    }
    wrong
}

/// Prints the runs side by side: one hub against the cluster, phase by phase.
pub fn print_summary(results: &[RunResult]) {
    let Some(first) = results.first() else {
        return;
    };
    println!(
        "{} subscribers spread over the hubs, {} topic(s); CPU per delivery: hubs summed, \
         Redis apart",
        first.subscribers, first.topics
    );
    let w = results.iter().map(|r| r.name.len()).max().unwrap_or(5);
    println!(
        "{:<6} {:<w$} {:>9} {:>13} {:>8} {:>8} {:>8} {:>9} {:>8} {:>9} {:>10}  checks",
        "phase",
        "setup",
        "writes/s",
        "deliveries/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "hubs µs",
        "Redis µs"
    );
    let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
    for r in results {
        let c = r.cluster.clone().unwrap_or_default();
        println!(
            "{:<6} {:<w$} {:>9.0} {:>13.0} {:>8} {:>8} {:>8} {:>9} {:>8} {:>9.3} {:>10}  {}",
            c.phase,
            r.name,
            r.publishes_per_s,
            r.deliveries_per_s,
            ms(r.p50_us),
            ms(r.p90_us),
            ms(r.p99_us),
            ms(r.p999_us),
            ms(r.max_us),
            r.cpu_us_per_delivery,
            match c.redis_cpu_us_per_delivery(r.deliveries) {
                Some(us) if c.shared_redis => format!("{us:.3}"),
                _ => "-".to_string(),
            },
            if r.correct { "ok" } else { "FAILED" },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_digest_follows_rev_order_and_counts_gaps() {
        let created = HashMap::from([("t".to_string(), (1, 0))]);
        // Acks arrive in any order (one publisher per hub); the digest is in rev order.
        let acks: Vec<(Box<str>, u64, u64)> = vec![
            ("t".into(), 3, 20),
            ("t".into(), 2, 10),
            ("t".into(), 4, 30),
        ];
        let (digests, gaps) = expected_digests(&created, &acks);
        let seen = [(2, 10), (3, 20), (4, 30)]
            .iter()
            .fold(0, |d, &(rev, seq)| clients::fold(d, rev, seq));
        assert_eq!((digests["t"], gaps), (seen, 0));
        // Another order, or another seq at a rev, is another history.
        let swapped = [(3, 20), (2, 10), (4, 30)]
            .iter()
            .fold(0, |d, &(rev, seq)| clients::fold(d, rev, seq));
        assert_ne!(swapped, seen);
        assert_ne!(clients::fold(0, 2, 11), clients::fold(0, 2, 10));
        // A rev nobody acknowledged, and one acknowledged twice.
        let acks: Vec<(Box<str>, u64, u64)> = vec![
            ("t".into(), 2, 10),
            ("t".into(), 4, 30),
            ("t".into(), 4, 31),
        ];
        assert_eq!(expected_digests(&created, &acks).1, 2);
    }
}
