//! Transport counters, and the Prometheus text exposition of them and of the hub's.
//!
//! The transports count with relaxed atomics and nothing else: a scrape reads every
//! counter once into a [`Scrape`], and `prometheus-client` writes the text (names, `HELP`
//! and `TYPE` lines, label escaping) from that. Nothing here runs per message.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use statecast_bridge::HealthState;
use statecast_core::Hub;
use statecast_core::stats::{Histogram, LATENCY_BUCKETS_US};

/// Counters kept by the transports.
#[derive(Debug, Default)]
pub struct Metrics {
    pub ws_connections: AtomicU64,
    pub ws_connections_total: AtomicU64,
    pub sse_connections: AtomicU64,
    pub sse_connections_total: AtomicU64,
    pub socketio_connections: AtomicU64,
    pub socketio_connections_total: AtomicU64,
    pub messages_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub socket_writes: AtomicU64,
    /// Connections closed because nothing arrived within 2.5 heartbeats.
    pub dead_connections: AtomicU64,
    pub client_errors: AtomicU64,
    pub http_requests: AtomicU64,
    /// Requests and connections refused for a missing or bad credential.
    pub refused_unauthorized: AtomicU64,
    /// Requests refused for a lack of permission.
    pub refused_forbidden: AtomicU64,
    /// When a refusal was last logged (seconds since start), and how many since.
    pub refusal_logged_at: AtomicU64,
    pub refusals_unlogged: AtomicU64,
    /// Open TCP connections (HTTP and WebSocket).
    pub connections: AtomicU64,
    /// Connections refused over `max_connections` / `max_connections_per_ip`.
    pub refused_connections: AtomicU64,
    /// Messages and requests refused over a rate limit.
    pub rate_limited: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Renders every counter in the Prometheus text format.
    pub fn render(&self, hub: &Hub, sources: &[(String, HealthState)], uptime_s: u64) -> String {
        Scrape::read(self, hub, sources, uptime_s).render()
    }
}

/// `(name, help, value)`; a counter's name ends in `_total`.
type Sample = (&'static str, &'static str, u64);

/// Every value of one scrape, read once.
#[derive(Debug)]
struct Scrape {
    gauges: Vec<Sample>,
    counters: Vec<Sample>,
    histograms: Vec<HistogramSample>,
    sources: Vec<SourceSample>,
    /// In a cluster only.
    cluster: Option<ClusterSample>,
}

#[derive(Debug)]
struct HistogramSample {
    name: &'static str,
    help: &'static str,
    /// `(upper bound in seconds, count in that bucket alone)`, the last one `+Inf`.
    buckets: Vec<(f64, u64)>,
    sum_s: f64,
    count: u64,
}

#[derive(Debug)]
struct SourceSample {
    name: String,
    up: bool,
    errors: u64,
    latency_s: Option<f64>,
}

#[derive(Debug)]
struct ClusterSample {
    /// Whether this hub reaches the cluster's Redis.
    up: bool,
    /// `(node, clients)` of each live hub.
    nodes: Vec<(String, u64)>,
}

impl Scrape {
    fn read(
        metrics: &Metrics,
        hub: &Hub,
        sources: &[(String, HealthState)],
        uptime_s: u64,
    ) -> Scrape {
        let m = metrics;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let stats = hub.stats();
        let gauges = vec![
            (
                "statecast_ws_connections",
                "Open WebSocket connections.",
                get(&m.ws_connections),
            ),
            (
                "statecast_sse_connections",
                "Open Server-Sent Events streams.",
                get(&m.sse_connections),
            ),
            (
                "statecast_socketio_connections",
                "Open Socket.IO connections.",
                get(&m.socketio_connections),
            ),
            (
                "statecast_clients",
                "Connected clients of the hub (WebSocket, SSE and Socket.IO).",
                hub.client_count(),
            ),
            ("statecast_topics", "Live topics.", hub.topic_count() as u64),
            (
                "statecast_stale_topics",
                "Live topics that are stale (not written within their stale_after, or marked by a source).",
                hub.stale_count() as u64,
            ),
            (
                "statecast_history_bytes",
                "Bytes the durable history holds, as counted against history_max_bytes.",
                hub.history_bytes(),
            ),
            (
                "statecast_uptime_seconds",
                "Seconds since the hub started.",
                uptime_s,
            ),
        ];
        let counters = vec![
            (
                "statecast_refused_connections_total",
                "Connections refused over max_connections or max_connections_per_ip.",
                get(&m.refused_connections),
            ),
            (
                "statecast_rate_limited_total",
                "Messages and requests refused over a rate limit.",
                get(&m.rate_limited),
            ),
            (
                "statecast_refused_unauthorized_total",
                "Requests and connections refused for a missing, bad or expired credential.",
                get(&m.refused_unauthorized),
            ),
            (
                "statecast_refused_forbidden_total",
                "Requests refused because the credential does not allow them.",
                get(&m.refused_forbidden),
            ),
            (
                "statecast_ws_connections_total",
                "WebSocket connections accepted.",
                get(&m.ws_connections_total),
            ),
            (
                "statecast_sse_connections_total",
                "SSE streams opened.",
                get(&m.sse_connections_total),
            ),
            (
                "statecast_socketio_connections_total",
                "Socket.IO connections accepted.",
                get(&m.socketio_connections_total),
            ),
            (
                "statecast_messages_in_total",
                "Client messages received over WebSocket and Socket.IO.",
                get(&m.messages_in),
            ),
            (
                "statecast_bytes_in_total",
                "Bytes of client messages received.",
                get(&m.bytes_in),
            ),
            (
                "statecast_messages_out_total",
                "Messages sent to clients.",
                get(&m.messages_out),
            ),
            (
                "statecast_bytes_out_total",
                "Bytes of messages sent to clients.",
                get(&m.bytes_out),
            ),
            (
                "statecast_socket_writes_total",
                "Batched writes to client sockets.",
                get(&m.socket_writes),
            ),
            (
                "statecast_dead_connections_total",
                "Connections reaped after missing heartbeats.",
                get(&m.dead_connections),
            ),
            (
                "statecast_client_errors_total",
                "Client messages refused with an error.",
                get(&m.client_errors),
            ),
            (
                "statecast_http_requests_total",
                "REST requests served.",
                get(&m.http_requests),
            ),
            (
                "statecast_changes_total",
                "State changes published.",
                get(&stats.changes),
            ),
            (
                "statecast_events_total",
                "Events published.",
                get(&stats.events),
            ),
            (
                "statecast_deliveries_queued_total",
                "Messages queued for clients by fan-out.",
                get(&stats.queued),
            ),
            (
                "statecast_queue_conflations_total",
                "Pending patches replaced by a snapshot for a full client queue.",
                get(&stats.conflations),
            ),
            (
                "statecast_queue_dropped_events_total",
                "Events dropped for full client queues.",
                get(&stats.dropped_events),
            ),
            (
                "statecast_store_failures_total",
                "Group commits the store refused.",
                get(&stats.store_failures),
            ),
            (
                "statecast_records_committed_total",
                "Changes made durable.",
                get(&stats.records_committed),
            ),
            (
                "statecast_cluster_conflicts_total",
                "Write batches another hub's writes overtook (computed again and retried).",
                get(&stats.conflicts),
            ),
            (
                "statecast_cluster_resyncs_total",
                "Times the hub started over from the cluster's stored state.",
                get(&stats.resyncs),
            ),
        ];
        let histograms = vec![
            HistogramSample::read(
                "statecast_write_latency_seconds",
                "Time from a write being accepted to it being durable and fanned out.",
                &stats.write_latency,
            ),
            HistogramSample::read(
                "statecast_commit_latency_seconds",
                "Time per group commit to the store.",
                &stats.commit_latency,
            ),
        ];
        let sources = sources
            .iter()
            .map(|(name, health)| SourceSample {
                name: name.clone(),
                up: health.is_online(),
                errors: health.error_count,
                latency_s: health.latency_ms.map(|ms| ms as f64 / 1e3),
            })
            .collect();
        let nodes = hub.nodes();
        let cluster = (!nodes.is_empty()).then(|| ClusterSample {
            up: hub.degraded().is_none(),
            nodes: nodes
                .into_iter()
                .filter(|n| n.alive)
                .map(|n| (n.id, n.clients))
                .collect(),
        });
        Scrape {
            gauges,
            counters,
            histograms,
            sources,
            cluster,
        }
    }

    fn render(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &registry);
        out
    }
}

impl HistogramSample {
    fn read(name: &'static str, help: &'static str, h: &Histogram) -> HistogramSample {
        let bounds = LATENCY_BUCKETS_US
            .iter()
            .map(|us| *us as f64 / 1e6)
            .chain([f64::INFINITY]);
        HistogramSample {
            name,
            help,
            buckets: bounds
                .zip(&h.buckets)
                .map(|(bound, n)| (bound, n.load(Ordering::Relaxed)))
                .collect(),
            sum_s: h.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            count: h.count.load(Ordering::Relaxed),
        }
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value) in &self.gauges {
            encoder
                .encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_gauge(value)?;
        }
        for (name, help, value) in &self.counters {
            // The encoder adds `_total` itself.
            let name = name.strip_suffix("_total").unwrap_or(name);
            encoder
                .encode_descriptor(name, help, None, MetricType::Counter)?
                .encode_counter::<NoLabelSet, _, u64>(value, None)?;
        }
        for h in &self.histograms {
            encoder
                .encode_descriptor(h.name, h.help, None, MetricType::Histogram)?
                .encode_histogram::<NoLabelSet>(h.sum_s, h.count, &h.buckets, None)?;
        }
        if !self.sources.is_empty() {
            let mut up = encoder.encode_descriptor(
                "statecast_source_up",
                "1 while the source delivers usable state, else 0.",
                None,
                MetricType::Gauge,
            )?;
            for s in &self.sources {
                up.encode_family(&[("source", &s.name)])?
                    .encode_gauge(&i64::from(s.up))?;
            }
            let mut errors = encoder.encode_descriptor(
                "statecast_source_errors",
                "Failures of the source (connections, polls, unusable messages).",
                None,
                MetricType::Counter,
            )?;
            for s in &self.sources {
                errors
                    .encode_family(&[("source", &s.name)])?
                    .encode_counter::<NoLabelSet, _, u64>(&s.errors, None)?;
            }
            let mut latency = encoder.encode_descriptor(
                "statecast_source_latency_seconds",
                "The source's last round trip to its device.",
                None,
                MetricType::Gauge,
            )?;
            for s in &self.sources {
                if let Some(seconds) = s.latency_s {
                    latency
                        .encode_family(&[("source", &s.name)])?
                        .encode_gauge(&seconds)?;
                }
            }
        }
        if let Some(cluster) = &self.cluster {
            encoder
                .encode_descriptor(
                    "statecast_cluster_up",
                    "1 while this hub reaches the cluster's Redis, else 0.",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&i64::from(cluster.up))?;
            let mut clients = encoder.encode_descriptor(
                "statecast_cluster_node_clients",
                "Clients of each live hub of the cluster.",
                None,
                MetricType::Gauge,
            )?;
            for (node, n) in &cluster.nodes {
                clients.encode_family(&[("node", node)])?.encode_gauge(n)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape_with(source: &str, node: &str) -> String {
        Scrape {
            gauges: vec![("statecast_topics", "Live topics.", 3)],
            counters: vec![("statecast_events_total", "Events published.", 4)],
            histograms: Vec::new(),
            sources: vec![SourceSample {
                name: source.into(),
                up: true,
                errors: 2,
                latency_s: Some(0.25),
            }],
            cluster: Some(ClusterSample {
                up: true,
                nodes: vec![(node.into(), 5)],
            }),
        }
        .render()
    }

    #[test]
    fn label_values_with_quotes_backslashes_and_newlines_are_escaped() {
        let text = scrape_with("a\"b\\c\nd", "n\"1\\\n");
        for line in [
            r#"statecast_source_up{source="a\"b\\c\nd"} 1"#,
            r#"statecast_source_errors_total{source="a\"b\\c\nd"} 2"#,
            r#"statecast_cluster_node_clients{node="n\"1\\\n"} 5"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        // Every line is a comment or one sample: no raw newline split a label.
        for line in text.lines() {
            assert!(
                line.starts_with("# ") || line.starts_with("statecast_"),
                "{line}"
            );
        }
    }

    #[test]
    fn names_types_and_help_are_written_as_before() {
        let text = scrape_with("esp32", "n0");
        for line in [
            "# HELP statecast_topics Live topics.",
            "# TYPE statecast_topics gauge",
            "statecast_topics 3",
            "# HELP statecast_events_total Events published.",
            "# TYPE statecast_events_total counter",
            "statecast_events_total 4",
            "# TYPE statecast_source_errors_total counter",
            "statecast_source_latency_seconds{source=\"esp32\"} 0.25",
            "# TYPE statecast_cluster_up gauge",
            "statecast_cluster_up 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_inf() {
        let h = Histogram::default();
        h.buckets[0].store(2, Ordering::Relaxed);
        h.buckets[LATENCY_BUCKETS_US.len()].store(1, Ordering::Relaxed);
        h.count.store(3, Ordering::Relaxed);
        h.sum_us.store(2_000_000, Ordering::Relaxed);
        let text = Scrape {
            gauges: Vec::new(),
            counters: Vec::new(),
            histograms: vec![HistogramSample::read("statecast_x_seconds", "X.", &h)],
            sources: Vec::new(),
            cluster: None,
        }
        .render();
        for line in [
            "# TYPE statecast_x_seconds histogram",
            "statecast_x_seconds_bucket{le=\"1\"} 2",
            "statecast_x_seconds_bucket{le=\"+Inf\"} 3",
            "statecast_x_seconds_sum 2.0",
            "statecast_x_seconds_count 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }
}
