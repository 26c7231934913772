//! Results: derived figures, the printed table, JSON lines, CDF plots and the markdown
//! report that compares servers scenario by scenario.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::Plan;

/// Raw measurements of one run.
pub struct Measured<'a> {
    pub published: u64,
    pub refused: u64,
    pub deliveries: u64,
    pub expected_deliveries: u64,
    pub publish_time: Duration,
    pub delivery_window: Duration,
    pub connect_time: Duration,
    pub latency: &'a Histogram<u64>,
    pub cpu_us: u64,
    pub rss_before_kb: u64,
    pub rss_after_kb: u64,
    pub rss_end_kb: u64,
    pub live_snapshots: u64,
    pub lagged: u64,
    pub gaps: u64,
    pub regressions: u64,
    pub wrong_final: u64,
    pub complete: bool,
    pub correct: bool,
    /// `(topics checked, lost)` after `kill -9` and restart.
    pub durable_checked: Option<(u64, u64)>,
}

/// One run, as printed and stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub name: String,
    pub scenario: String,
    pub protocol: String,
    pub publish: String,
    pub subscribers: usize,
    pub stalled: usize,
    pub topics: usize,
    pub published: u64,
    pub refused: u64,
    pub deliveries: u64,
    pub expected_deliveries: u64,
    pub deliveries_per_s: f64,
    pub publishes_per_s: f64,
    pub first_publish_to_last_delivery_ms: f64,
    pub connect_ms_per_100: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub server_cpu_us: u64,
    pub cpu_us_per_delivery: f64,
    pub rss_before_kb: u64,
    pub rss_after_kb: u64,
    pub rss_end_kb: u64,
    pub rss_bytes_per_connection: f64,
    pub live_snapshots: u64,
    pub lagged: u64,
    pub gaps: u64,
    pub regressions: u64,
    pub wrong_final: u64,
    pub complete: bool,
    pub correct: bool,
    pub durable_checked: Option<(u64, u64)>,
    /// `(latency µs, quantile)` points of the latency distribution.
    pub cdf: Vec<(u64, f64)>,
    /// The cluster scenario's extra figures and checks (absent in the others).
    #[serde(default)]
    pub cluster: Option<ClusterFigures>,
}

/// What the cluster scenario adds to a run: the hubs (the server figures above are summed
/// over them), Redis's CPU, and the checks that every hub published the same history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterFigures {
    /// Hubs; the server figures are summed over them.
    pub nodes: usize,
    /// The hubs share Redis (`--cluster`); else one hub on its embedded store.
    #[serde(default)]
    pub shared_redis: bool,
    /// Measured phase: `paced` (latency) or `burst` (deliveries/s).
    pub phase: String,
    /// Redis's utime + stime over the measured phase, when its process could be read.
    pub redis_cpu_us: Option<u64>,
    /// Subscribers (not conflated) whose `(rev, seq)` sequence of a topic differs from the
    /// acknowledged writes in rev order.
    pub sequence_mismatches: u64,
    /// Subscribers whose initial snapshot was not the topic as created.
    pub initial_mismatches: u64,
    /// Revs between the created and final rev that no acknowledgement named, or named
    /// twice.
    pub ack_gaps: u64,
    /// `(hub, topic)` pairs whose state read back over REST was not the final acknowledged
    /// one.
    pub node_state_mismatches: u64,
}

impl ClusterFigures {
    pub fn redis_cpu_us_per_delivery(&self, deliveries: u64) -> Option<f64> {
        self.redis_cpu_us
            .map(|us| us as f64 / deliveries.max(1) as f64)
    }

    pub fn failures(&self) -> u64 {
        self.sequence_mismatches
            + self.initial_mismatches
            + self.ack_gaps
            + self.node_state_mismatches
    }
}

impl RunResult {
    pub fn new(plan: &Plan, m: Measured<'_>) -> RunResult {
        let secs = |d: Duration| d.as_secs_f64().max(1e-9);
        let connections = (plan.subscribers + plan.stalled).max(1) as f64;
        let h = m.latency;
        let cdf = [
            0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0,
        ]
        .iter()
        .map(|&q| (h.value_at_quantile(q), q))
        .collect();
        RunResult {
            name: plan.name.clone(),
            scenario: format!("{:?}", plan.scenario).to_lowercase(),
            protocol: format!("{:?}", plan.protocol).to_lowercase(),
            publish: format!("{:?}", plan.publish).to_lowercase(),
            subscribers: plan.subscribers,
            stalled: plan.stalled,
            topics: plan.topics,
            published: m.published,
            refused: m.refused,
            deliveries: m.deliveries,
            expected_deliveries: m.expected_deliveries,
            deliveries_per_s: m.deliveries as f64 / secs(m.delivery_window),
            publishes_per_s: m.published as f64 / secs(m.publish_time),
            first_publish_to_last_delivery_ms: m.delivery_window.as_secs_f64() * 1e3,
            connect_ms_per_100: m.connect_time.as_secs_f64() * 1e3 * 100.0 / connections,
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            server_cpu_us: m.cpu_us,
            cpu_us_per_delivery: m.cpu_us as f64 / (m.deliveries.max(1) as f64),
            rss_before_kb: m.rss_before_kb,
            rss_after_kb: m.rss_after_kb,
            rss_end_kb: m.rss_end_kb,
            rss_bytes_per_connection: (m.rss_after_kb.saturating_sub(m.rss_before_kb) as f64
                * 1024.0)
                / connections,
            live_snapshots: m.live_snapshots,
            lagged: m.lagged,
            gaps: m.gaps,
            regressions: m.regressions,
            wrong_final: m.wrong_final,
            complete: m.complete,
            correct: m.correct,
            durable_checked: m.durable_checked,
            cdf,
            cluster: None,
        }
    }
}

/// Prints one run as a two-column table.
pub fn print(r: &RunResult) {
    let rows: Vec<(&str, String)> = vec![
        ("server", r.name.clone()),
        (
            "scenario",
            format!("{} ({} publish)", r.scenario, r.publish),
        ),
        (
            "subscribers",
            format!(
                "{} (+{} stalled), {} topic(s)",
                r.subscribers, r.stalled, r.topics
            ),
        ),
        (
            "changes published",
            format!("{} ({} refused)", r.published, r.refused),
        ),
        (
            "deliveries",
            format!("{} of {} expected", r.deliveries, r.expected_deliveries),
        ),
        ("deliveries/s", format!("{:.0}", r.deliveries_per_s)),
        ("publishes/s", format!("{:.0}", r.publishes_per_s)),
        (
            "first publish -> last delivery",
            format!("{:.1} ms", r.first_publish_to_last_delivery_ms),
        ),
        (
            "latency p50/p90/p99/p99.9/max",
            format!(
                "{} / {} / {} / {} / {} us",
                r.p50_us, r.p90_us, r.p99_us, r.p999_us, r.max_us
            ),
        ),
        (
            "server CPU",
            format!(
                "{} ms, {:.3} us per delivery",
                r.server_cpu_us / 1000,
                r.cpu_us_per_delivery
            ),
        ),
        (
            "server RSS",
            format!(
                "{} KB idle, {} KB connected, {} KB at end; {:.0} B per connection",
                r.rss_before_kb, r.rss_after_kb, r.rss_end_kb, r.rss_bytes_per_connection
            ),
        ),
        (
            "connect time",
            format!("{:.1} ms per 100 connections", r.connect_ms_per_100),
        ),
        (
            "checks",
            format!(
                "{}: all caught up {}, wrong final {}, rev regressions {}, gaps {}, \
                 snapshots after sync {}, lagged notices {}{}",
                if r.correct { "ok" } else { "FAILED" },
                r.complete,
                r.wrong_final,
                r.regressions,
                r.gaps,
                r.live_snapshots,
                r.lagged,
                match r.durable_checked {
                    Some((n, lost)) => format!(", after kill -9: {lost} of {n} topics lost"),
                    None => String::new(),
                }
            ),
        ),
    ];
    let mut rows = rows;
    if let Some(c) = &r.cluster {
        let at = rows.len() - 1;
        rows.insert(
            at,
            (
                "hubs",
                if c.shared_redis {
                    format!(
                        "{} sharing Redis (server figures summed over them)",
                        c.nodes
                    )
                } else {
                    format!("{}, embedded store", c.nodes)
                },
            ),
        );
        if let Some(us) = c.redis_cpu_us {
            rows.insert(
                at + 1,
                (
                    "Redis CPU",
                    format!(
                        "{} ms, {:.3} us per delivery",
                        us / 1000,
                        c.redis_cpu_us_per_delivery(r.deliveries).unwrap_or(0.0)
                    ),
                ),
            );
        }
        rows.push((
            "cluster checks",
            format!(
                "sequence mismatches {}, initial snapshot mismatches {}, ack gaps {}, \
                 hub states not final {}",
                c.sequence_mismatches, c.initial_mismatches, c.ack_gaps, c.node_state_mismatches
            ),
        ));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        println!("{key:>width$}  {value}");
    }
}

pub fn append_json(path: &Path, r: &RunResult) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let line = serde_json::to_string(r).map_err(|e| e.to_string())?;
    writeln!(file, "{line}").map_err(|e| format!("{}: {e}", path.display()))
}

/// Draws the latency CDFs of `runs` into one SVG.
pub fn plot(path: &Path, runs: &[RunResult]) -> Result<(), String> {
    use plotters::prelude::*;
    let max_us = runs
        .iter()
        .flat_map(|r| r.cdf.iter().map(|p| p.0))
        .max()
        .unwrap_or(1)
        .max(10) as f64;
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let title = runs
        .first()
        .map(|r| format!("delivery latency, {} scenario", r.scenario))
        .unwrap_or_default();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((1f64..max_us * 1.2).log_scale(), 0f64..1f64)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("latency (µs, log scale)")
        .y_desc("fraction of deliveries")
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, run) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = run
            .cdf
            .iter()
            .map(|&(us, q)| (us.max(1) as f64, q))
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(run.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Writes a markdown report of every run in `results`, one table per scenario, with a CDF
/// plot per scenario next to it.
pub fn markdown(results: &Path, out: &Path, header: &str) -> Result<bool, String> {
    let text =
        std::fs::read_to_string(results).map_err(|e| format!("{}: {e}", results.display()))?;
    let runs: Vec<RunResult> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", results.display()))?;
    // The CDF plots go next to the markdown, so its directory must exist first.
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut md = String::new();
    md.push_str("# statecast-bench results\n\n");
    if !header.is_empty() {
        md.push_str(header);
        md.push_str("\n\n");
    }
    let mut scenarios: Vec<String> = Vec::new();
    for r in &runs {
        let key = scenario_key(r);
        if !scenarios.contains(&key) {
            scenarios.push(key);
        }
    }
    let stem = out
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("results");
    for scenario in scenarios {
        let group: Vec<RunResult> = runs
            .iter()
            .filter(|r| scenario_key(r) == scenario)
            .cloned()
            .collect();
        md.push_str(&format!("## {scenario}\n\n"));
        md.push_str("| server | subs | deliveries/s | p50 µs | p99 µs | p99.9 µs | max µs | CPU µs/delivery | RSS B/conn | RSS end KB | writes/s | checks |\n");
        md.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &group {
            md.push_str(&format!(
                "| {} | {}{} | {:.0} | {} | {} | {} | {} | {} | {:.0} | {} | {:.0} | {} |\n",
                r.name,
                r.subscribers,
                if r.stalled > 0 {
                    format!("+{}", r.stalled)
                } else {
                    String::new()
                },
                r.deliveries_per_s,
                r.p50_us,
                r.p99_us,
                r.p999_us,
                r.max_us,
                cpu_text(r),
                r.rss_bytes_per_connection,
                r.rss_end_kb,
                r.publishes_per_s,
                check_text(r),
            ));
        }
        if group.iter().any(|r| r.deliveries > 0) {
            let slug: String = scenario
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect::<String>()
                .split('-')
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join("-");
            let svg = format!("{stem}-{slug}.svg");
            let path = out.with_file_name(&svg);
            plot(&path, &group)?;
            md.push_str(&format!("\n![latency CDF]({svg})\n"));
        }
        md.push('\n');
    }
    std::fs::write(out, md).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(true)
}

fn scenario_key(r: &RunResult) -> String {
    if r.scenario == "manytopics" || r.topics > 1 {
        format!(
            "{} ({} topics, {} publish)",
            r.scenario, r.topics, r.publish
        )
    } else {
        format!("{} ({} publish)", r.scenario, r.publish)
    }
}

fn cpu_text(r: &RunResult) -> String {
    match r
        .cluster
        .as_ref()
        .and_then(|c| c.redis_cpu_us_per_delivery(r.deliveries))
    {
        Some(redis) if r.cluster.as_ref().is_some_and(|c| c.shared_redis) => {
            format!("{:.2} (+{redis:.2} Redis)", r.cpu_us_per_delivery)
        }
        _ => format!("{:.2}", r.cpu_us_per_delivery),
    }
}

fn check_text(r: &RunResult) -> String {
    let mut text = if r.correct {
        "ok".to_string()
    } else {
        "FAILED".to_string()
    };
    if r.live_snapshots > 0 && r.protocol == "statecast" {
        text.push_str(&format!(", {} conflated", r.live_snapshots));
    }
    if let Some((n, lost)) = r.durable_checked {
        text.push_str(&format!(", kill -9: {lost}/{n} lost"));
    }
    if let Some(c) = &r.cluster
        && c.shared_redis
    {
        text.push_str(&format!(
            ", same history on {} hubs: {}",
            c.nodes,
            if c.failures() == 0 { "yes" } else { "NO" }
        ));
    }
    text
}
