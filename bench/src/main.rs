//! `statecast-bench`: opens N WebSocket subscribers against statecast or a peer server,
//! publishes changes over REST or WebSocket, and measures delivery latency, throughput, the
//! server's CPU time per delivery and its memory per connection, checking every delivery
//! while it measures.
//!
//! - [`protocol`]: the adapters for statecast, plain WebSocket peers and Socket.IO peers.
//! - [`clients`]: subscribers and publishers (one thread, no locks).
//! - [`server`]: starting the server pinned to its own CPU, `/proc` sampling.
//! - [`cluster`]: one hub against several sharing Redis, side by side.
//! - [`redis`]: the little Redis client the cluster scenarios clean up with.
//! - [`report`]: the table, JSON lines, CDF plots and the markdown report.
//! - [`policies`]: what schemas and `stale_after` cost.
//! - [`spike`]: whether the server gives memory back after a spike of stalled clients.

mod clients;
mod cluster;
mod history;
mod policies;
mod protocol;
mod redis;
mod report;
mod server;
mod spike;

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::clients::{Finals, RestPublisher, Subscriber, Totals, WsPublisher};
use crate::protocol::{Interest, Protocol};
use crate::report::RunResult;
use crate::server::Server;

#[derive(Parser)]
#[command(
    version,
    about = "Measures push servers: latency, deliveries/s, CPU and memory per connection"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario against one server.
    Run(Box<RunArgs>),
    /// Render JSON lines of results as a markdown report (and CDF plots next to it).
    Report {
        /// The results file (JSON lines) written by `run --results`.
        results: PathBuf,
        /// Where to write the markdown.
        #[arg(long)]
        out: PathBuf,
        /// A line describing the machine and the command, put at the top.
        #[arg(long, default_value = "")]
        header: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// 1,000 subscribers, 2 changes/s for 30 s: latency.
    Light,
    /// 1,000 subscribers, 2,000 changes as fast as accepted: deliveries/s, CPU per delivery.
    Burst,
    /// 10,000 idle subscribers: memory per connection, then light load on top.
    Scale,
    /// 100,000 topics, one `dev/<i>/#` pattern per subscriber, changes spread over all.
    ManyTopics,
    /// 10 stalled + 990 normal subscribers under light load.
    Slow,
    /// Acknowledged REST writes/s from 64 writers, then `kill -9` and a check.
    Durable,
    /// CI: 100 subscribers, a few hundred changes, every delivery checked, no timing.
    Smoke,
    /// 999 subscribers spread over 3 hubs sharing Redis (`--cluster`), writes round-robin
    /// over the hubs: 10 changes/s for 10 s (latency), then 2,000 as fast as accepted
    /// (deliveries/s); the same against 1 hub on its embedded store first.
    Cluster,
    /// CI: 3 hubs sharing Redis, 60 subscribers, 20 paced + 200 burst changes, every
    /// delivery checked, no timing, no single-hub run.
    ClusterSmoke,
    /// 5,000 subscribers that never read while 5,000 small states are published (their
    /// queues fill), then close: the server's RSS before, at the peak and each second after.
    Spike,
    /// Topic policies: writes/s and CPU per write of a 20-field device state with its
    /// schema against none, and the idle CPU of 100,000 topics under `stale_after`.
    Policies,
    /// What the durable history costs on the write path and on disk, and how fast a
    /// `series`, a range of changes and `?at=` answer over 1,000,000 recorded changes.
    History,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Publish {
    Rest,
    Ws,
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// The server's protocol.
    #[arg(long, value_enum, default_value = "statecast")]
    protocol: Protocol,
    /// A name for the server in the results (default: the protocol).
    #[arg(long)]
    name: Option<String>,
    /// Start the server with this command; `{port}` and `{data}` are replaced.
    #[arg(long, conflicts_with = "server_pid")]
    server_cmd: Option<String>,
    /// Measure a server that is already running (with --url).
    #[arg(long, requires = "url")]
    server_pid: Option<u32>,
    /// The server's base URL when it is already running.
    #[arg(long)]
    url: Option<String>,
    /// Subscribers that read normally.
    #[arg(long)]
    subscribers: Option<usize>,
    /// Subscribers that subscribe and then never read.
    #[arg(long)]
    stalled: Option<usize>,
    /// Paced publishing: changes per second (with --duration).
    #[arg(long)]
    rate: Option<f64>,
    /// Paced publishing: seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Burst publishing: number of changes.
    #[arg(long)]
    changes: Option<usize>,
    /// Topics (partitioned over the subscribers when more than 1).
    #[arg(long)]
    topics: Option<usize>,
    #[arg(long, value_enum)]
    publish: Option<Publish>,
    /// Padding in each published state, in bytes.
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Unacknowledged WebSocket publishes allowed at once.
    #[arg(long, default_value_t = 1000)]
    window: usize,
    /// Concurrent REST writers (durable scenario) or requests (REST publishing).
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// CPU for the server, when the bench starts it.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU for the load generator.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// Append the result as a JSON line to this file.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Draw the latency CDF to this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// The Redis the cluster scenarios' hubs share (keys `{statecast-bench-<pid>-<random>}:*`,
    /// deleted at the end).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Hubs in the cluster scenarios.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Spike: seconds to follow the RSS after the subscribers close.
    #[arg(long, default_value_t = 20.0)]
    settle: f64,
    /// Spike: how many times to fill and close.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

/// Settings after the scenario's presets are applied.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub scenario: Scenario,
    pub name: String,
    pub protocol: Protocol,
    pub subscribers: usize,
    pub stalled: usize,
    pub topics: usize,
    pub publish: Publish,
    /// `Some((rate, seconds))` for paced publishing, else a burst of `changes`.
    pub paced: Option<(f64, f64)>,
    pub changes: usize,
    pub payload_bytes: usize,
}

fn plan(args: &RunArgs) -> Plan {
    use Scenario::*;
    let (subscribers, stalled, topics, paced, changes) = match args.scenario {
        Light => (1000, 0, 1, Some((2.0, 30.0)), 0),
        Burst => (1000, 0, 1, None, 2000),
        Scale => (10_000, 0, 1, Some((2.0, 10.0)), 0),
        ManyTopics => (1000, 0, 100_000, Some((1000.0, 10.0)), 0),
        Slow => (990, 10, 1, Some((2.0, 30.0)), 0),
        Durable => (0, 0, 64, Some((0.0, 10.0)), 0),
        Smoke => (100, 2, 1, None, 300),
        Cluster => (999, 0, 1, Some((10.0, 10.0)), 2000),
        ClusterSmoke => (60, 0, 1, Some((20.0, 1.0)), 200),
        Spike => (0, 5000, 1, None, 5000),
        Policies => (0, 0, 1, None, 20_000),
        History => (0, 0, 1, None, 20_000),
    };
    let paced = match (args.rate, args.duration, args.changes) {
        // The cluster scenarios have both phases; `--duration 0` or `--changes 0` skips one.
        _ if matches!(args.scenario, Cluster | ClusterSmoke) => {
            let (rate, seconds) = paced.unwrap_or((10.0, 10.0));
            Some((args.rate.unwrap_or(rate), args.duration.unwrap_or(seconds)))
        }
        (_, _, Some(_)) => None,
        (Some(r), Some(d), None) => Some((r, d)),
        (Some(r), None, None) => Some((r, paced.map_or(10.0, |p| p.1))),
        (None, Some(d), None) => Some((paced.map_or(2.0, |p| p.0), d)),
        (None, None, None) => paced,
    };
    Plan {
        scenario: args.scenario,
        name: args
            .name
            .clone()
            .unwrap_or_else(|| format!("{:?}", args.protocol).to_lowercase()),
        protocol: args.protocol,
        subscribers: args.subscribers.unwrap_or(subscribers),
        stalled: args.stalled.unwrap_or(stalled),
        topics: args.topics.unwrap_or(topics).max(1),
        publish: args
            .publish
            .unwrap_or(if args.scenario == Scenario::Durable {
                Publish::Rest
            } else {
                Publish::Ws
            }),
        paced,
        changes: args.changes.unwrap_or(changes),
        payload_bytes: args.payload_bytes,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run_command(*args),
        Command::Report {
            results,
            out,
            header,
        } => report::markdown(&results, &out, &header),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("statecast-bench: correctness checks failed (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("statecast-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_command(args: RunArgs) -> Result<bool, String> {
    let plan = plan(&args);
    let needed = (plan.subscribers + plan.stalled + 64) as u64;
    let limit = rlimit::increase_nofile_limit(u64::MAX).map_err(|e| e.to_string())?;
    if needed > limit {
        return Err(format!(
            "{} connections need about {needed} open files, but this process may open only \
             {limit} (the hard RLIMIT_NOFILE); lower --subscribers or raise the hard limit",
            plan.subscribers + plan.stalled
        ));
    }
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    let pin_server = (cpus.len() >= 2).then_some(args.server_cpu);
    if cpus.len() >= 2
        && let Some(core) = cpus.iter().find(|c| c.id == args.client_cpu)
    {
        core_affinity::set_for_current(*core);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    let clustered = matches!(plan.scenario, Scenario::Cluster | Scenario::ClusterSmoke);
    let results = local.block_on(&runtime, async {
        if clustered {
            return cluster::run(&args, &plan, pin_server).await;
        }
        let mut server = match (&args.server_cmd, args.server_pid, &args.url) {
            (Some(cmd), _, _) => {
                Server::spawn(cmd, plan.protocol.health_path(), pin_server).await?
            }
            (None, Some(pid), Some(url)) => Server::attach(pid, url.clone()),
            _ => return Err("give --server-cmd, or --server-pid with --url".to_string()),
        };
        if plan.scenario == Scenario::Spike {
            spike::run(&plan, &server, args.window, args.rounds, args.settle).await?;
            return Ok(Vec::new());
        }
        if plan.scenario == Scenario::History {
            drop(server);
            let cmd = args
                .server_cmd
                .as_deref()
                .ok_or("history needs --server-cmd")?;
            history::run(&plan, cmd, pin_server, args.window).await?;
            return Ok(Vec::new());
        }
        if plan.scenario == Scenario::Policies {
            drop(server);
            let cmd = args
                .server_cmd
                .as_deref()
                .ok_or("policies needs --server-cmd")?;
            policies::run(&plan, cmd, pin_server, args.window).await?;
            return Ok(Vec::new());
        }
        let result = if plan.scenario == Scenario::Durable {
            durable(&plan, &mut server, args.writers).await
        } else {
            fan_out(&plan, &server, &args).await
        };
        result.map(|r| vec![r])
    })?;
    for (i, result) in results.iter().enumerate() {
        if i > 0 {
            println!();
        }
        report::print(result);
    }
    if clustered {
        println!();
        cluster::print_summary(&results);
    }
    if let Some(path) = &args.results {
        for result in &results {
            report::append_json(path, result)?;
        }
    }
    if let Some(path) = &args.plot {
        // One curve per run: name the phase when there are several.
        let mut curves = results.clone();
        if clustered {
            for r in &mut curves {
                r.name = format!("{} ({})", r.name, r.scenario);
            }
        }
        report::plot(path, &curves)?;
    }
    // The spike and policies scenarios print their own figures and check nothing.
    Ok(matches!(
        plan.scenario,
        Scenario::Spike | Scenario::Policies | Scenario::History
    ) || (!results.is_empty() && results.iter().all(|r| r.correct)))
}

fn progress(quiet: bool, len: usize, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Topic `i` of a partitioned run belongs to subscriber `i % subscribers`.
fn topic_names(plan: &Plan) -> Vec<String> {
    if plan.topics == 1 {
        return vec!["bench/fanout".to_string()];
    }
    let subs = plan.subscribers.max(1);
    (0..plan.topics)
        .map(|i| format!("dev/{}/{}", i % subs, i / subs))
        .collect()
}

async fn fan_out(plan: &Plan, server: &Server, args: &RunArgs) -> Result<RunResult, String> {
    let base = server.base_url.clone();
    let topics = topic_names(plan);
    let interest = if topics.len() == 1 {
        Interest::Topic(topics[0].clone())
    } else {
        Interest::Partition {
            topics: topics.clone(),
        }
    };
    let payload = "x".repeat(plan.payload_bytes);
    let finals: Finals = Rc::default();

    // Create every topic first, unmeasured, so subscribers start from a snapshot.
    let bar = progress(args.quiet, topics.len(), "topics");
    // Only changes made while measuring are checked at the end: the peers send nothing on
    // subscribe, so their subscribers know only the topics that changed since.
    let created: Finals = Rc::default();
    let mut creator =
        WsPublisher::connect(&base, plan.protocol, args.window, created, None).await?;
    for (i, topic) in topics.iter().enumerate() {
        creator.publish(topic, 0, &payload).await?;
        if i % 1000 == 0 {
            bar.set_position(i as u64);
        }
    }
    creator.finish().await?;
    bar.finish_and_clear();

    let before_connect = server.sample()?;
    let totals = Rc::new(RefCell::new(Totals::new()));
    let subscribers: Vec<Rc<RefCell<Subscriber>>> =
        (0..plan.subscribers).map(|_| Rc::default()).collect();
    let connect_started = Instant::now();
    let bar = progress(args.quiet, plan.subscribers + plan.stalled, "connect");
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(128));
    let mut handshakes = Vec::new();
    let n = plan.subscribers;
    for index in 0..n + plan.stalled {
        let permit = std::sync::Arc::clone(&semaphore)
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let base = base.clone();
        let interest = interest.clone();
        let protocol = plan.protocol;
        let sub = subscribers.get(index).cloned();
        let totals = Rc::clone(&totals);
        let bar = bar.clone();
        handshakes.push(tokio::task::spawn_local(async move {
            let mut ws = clients::connect(&base, protocol, index).await?;
            let mut initial = Subscriber::default();
            clients::subscribe(
                &mut ws,
                protocol,
                &interest,
                index % n.max(1),
                n.max(1),
                &mut initial,
            )
            .await?;
            if let Some(sub) = &sub {
                *sub.borrow_mut() = initial;
            }
            drop(permit);
            bar.inc(1);
            match sub {
                Some(sub) => {
                    tokio::task::spawn_local(clients::run_subscriber(ws, protocol, sub, totals));
                    Ok::<Option<clients::Ws>, String>(None)
                }
                // A stalled subscriber: kept open, never read again.
                None => Ok(Some(ws)),
            }
        }));
    }
    let mut stalled = Vec::new();
    for handshake in handshakes {
        if let Some(ws) = handshake.await.map_err(|e| e.to_string())?? {
            stalled.push(ws);
        }
    }
    bar.finish_and_clear();
    let connect_time = connect_started.elapsed();
    let after_connect = server.sample()?;

    // Publish, measured.
    let start = server.sample()?;
    totals.borrow_mut().measuring = true;
    let publish_started = Instant::now();
    let mut published = 0u64;
    let mut ws_publisher = None;
    let mut rest_publisher = None;
    match plan.publish {
        Publish::Ws => {
            ws_publisher = Some(
                WsPublisher::connect(&base, plan.protocol, args.window, Rc::clone(&finals), None)
                    .await?,
            )
        }
        Publish::Rest => {
            rest_publisher = Some(RestPublisher::new(&base, args.writers, Rc::clone(&finals)))
        }
    }
    let total = match plan.paced {
        Some((rate, secs)) => (rate * secs).round() as usize,
        None => plan.changes,
    };
    let bar = progress(args.quiet, total, "publish");
    let tick = plan
        .paced
        .map(|(rate, _)| Duration::from_secs_f64(1.0 / rate.max(0.001)));
    let mut next_send = Instant::now();
    for k in 0..total {
        let topic = if topics.len() == 1 {
            &topics[0]
        } else {
            &topics[rand::random_range(0..topics.len())]
        };
        let seq = k as u64 + 1;
        if let Some(tick) = tick {
            next_send += tick;
            tokio::time::sleep_until(next_send.into()).await;
        }
        if let Some(p) = ws_publisher.as_mut() {
            p.publish(topic, seq, &payload).await?;
            if tick.is_some() {
                p.flush().await?;
            }
        }
        if let Some(p) = rest_publisher.as_mut() {
            p.publish(topic, seq, &payload).await?;
        }
        published += 1;
        if k % 100 == 0 {
            bar.set_position(k as u64);
        }
    }
    let mut refused = 0;
    if let Some(p) = ws_publisher {
        let r = Rc::clone(&p.refused);
        p.finish().await?;
        refused += *r.borrow();
    }
    if let Some(p) = rest_publisher {
        let r = Rc::clone(&p.refused);
        p.finish().await?;
        refused += *r.borrow();
    }
    bar.finish_and_clear();
    let publish_time = publish_started.elapsed();

    // Wait until every subscriber holds the final rev of each of its topics.
    let finals = finals.borrow().clone();
    let owner = |topic: &str| -> Option<usize> {
        topic.strip_prefix("dev/")?.split('/').next()?.parse().ok()
    };
    let complete = clients::caught_up(&subscribers, &finals, &totals, |i, topic| {
        topics.len() <= 1 || owner(topic) == Some(i)
    })
    .await;
    let end = server.sample()?;
    totals.borrow_mut().measuring = false;
    drop(stalled);

    // Check what every subscriber holds.
    let mut wrong_final = 0;
    let (mut gaps, mut regressions, mut live_snapshots, mut lagged, mut closed) = (0, 0, 0, 0, 0);
    for (i, sub) in subscribers.iter().enumerate() {
        let sub = sub.borrow();
        gaps += sub.gaps;
        regressions += sub.regressions;
        live_snapshots += sub.live_snapshots;
        lagged += sub.lagged;
        closed += u64::from(sub.closed.is_some());
        for (topic, (rev, seq)) in &finals {
            if topics.len() > 1 && owner(topic) != Some(i) {
                continue;
            }
            if sub.topics.get(topic.as_str()) != Some(&(*rev, *seq)) {
                wrong_final += 1;
            }
        }
    }
    let totals = totals.borrow();
    let expected = if topics.len() == 1 {
        published * plan.subscribers as u64
    } else {
        published
    };
    let delivery_window = match (totals.last_delivery, totals.first_delivery) {
        (Some(last), Some(_)) => last.duration_since(publish_started),
        _ => publish_time,
    };
    let correct = complete
        && wrong_final == 0
        && regressions == 0
        && refused == 0
        && closed == 0
        && (plan.protocol != Protocol::Statecast || gaps == 0);
    Ok(RunResult::new(
        plan,
        report::Measured {
            published,
            refused,
            deliveries: totals.deliveries,
            expected_deliveries: expected,
            publish_time,
            delivery_window,
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
    ))
}

/// Acknowledged REST writes from concurrent writers, then `kill -9`, restart and a check
/// that every acknowledged write survived.
async fn durable(plan: &Plan, server: &mut Server, writers: usize) -> Result<RunResult, String> {
    let seconds = plan.paced.map_or(10.0, |p| p.1);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(writers)
        .build()
        .map_err(|e| e.to_string())?;
    let base = server.base_url.clone();
    let payload = Rc::new("x".repeat(plan.payload_bytes));
    let finals: Finals = Rc::default();
    let latency = Rc::new(RefCell::new(Totals::new()));
    let refused = Rc::new(RefCell::new(0u64));
    let start = server.sample()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (client, base, payload) = (client.clone(), base.clone(), Rc::clone(&payload));
        let (finals, latency, refused) =
            (Rc::clone(&finals), Rc::clone(&latency), Rc::clone(&refused));
        tasks.push(tokio::task::spawn_local(async move {
            let topic = format!("durable/w{w}");
            let mut seq = 0;
            while Instant::now() < deadline {
                seq += 1;
                let sent = Instant::now();
                let result = client
                    .put(format!("{base}{}", protocol::rest_path(&topic)))
                    .header("content-type", "application/json")
                    .body(clients::state_json(seq, &payload))
                    .send()
                    .await;
                let rev = match result {
                    Ok(r) if r.status().is_success() => r
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|b| b.get("rev").and_then(serde_json::Value::as_u64)),
                    _ => None,
                };
                match rev {
                    Some(rev) => {
                        let us = sent.elapsed().as_micros() as u64;
                        let mut l = latency.borrow_mut();
                        let _ = l.latency_us.record(us.max(1));
                        l.deliveries += 1;
                        finals.borrow_mut().insert(topic.clone(), (rev, seq));
                    }
                    None => *refused.borrow_mut() += 1,
                }
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed();
    let end = server.sample()?;
    let acked = latency.borrow().deliveries;

    // kill -9, restart on the same store, and read every topic back.
    let mut checked = None;
    if server.can_restart() && plan.protocol == Protocol::Statecast {
        server.kill_and_restart(plan.protocol.health_path()).await?;
        let mut lost = 0u64;
        let acknowledged = finals.borrow().clone();
        for (topic, (rev, seq)) in &acknowledged {
            let body: Option<serde_json::Value> = match client
                .get(format!("{}{}", server.base_url, protocol::rest_path(topic)))
                .send()
                .await
            {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            let ok = body.is_some_and(|b| {
                b.get("rev").and_then(serde_json::Value::as_u64) == Some(*rev)
                    && b.pointer("/state/seq").and_then(serde_json::Value::as_u64) == Some(*seq)
            });
            lost += u64::from(!ok);
        }
        checked = Some(lost);
    }
    let refused = *refused.borrow();
    let latency = latency.borrow();
    let correct = refused == 0 && checked.is_none_or(|lost| lost == 0);
    Ok(RunResult::new(
        plan,
        report::Measured {
            published: acked + refused,
            refused,
            deliveries: acked,
            expected_deliveries: acked,
            publish_time: elapsed,
            delivery_window: elapsed,
            connect_time: Duration::ZERO,
            latency: &latency.latency_us,
            cpu_us: end.cpu_us.saturating_sub(start.cpu_us),
            rss_before_kb: start.rss_kb,
            rss_after_kb: start.rss_kb,
            rss_end_kb: end.rss_kb,
            live_snapshots: 0,
            lagged: 0,
            gaps: 0,
            regressions: 0,
            wrong_final: checked.unwrap_or(0),
            complete: true,
            correct,
            durable_checked: checked.map(|lost| (finals.borrow().len() as u64, lost)),
        },
    ))
}
