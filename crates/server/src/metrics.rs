//! Transport counters and the Prometheus text exposition of them and the hub's.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

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
        let mut out = String::with_capacity(4096);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let stats = hub.stats();
        let gauges: [(&str, &str, u64); 6] = [
            (
                "statecast_ws_connections",
                "Open WebSocket connections.",
                get(&self.ws_connections),
            ),
            (
                "statecast_sse_connections",
                "Open Server-Sent Events streams.",
                get(&self.sse_connections),
            ),
            (
                "statecast_socketio_connections",
                "Open Socket.IO connections.",
                get(&self.socketio_connections),
            ),
            (
                "statecast_clients",
                "Connected clients of the hub (WebSocket, SSE and Socket.IO).",
                hub.client_count(),
            ),
            ("statecast_topics", "Live topics.", hub.topic_count() as u64),
            (
                "statecast_uptime_seconds",
                "Seconds since the hub started.",
                uptime_s,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let counters: [(&str, &str, u64); 24] = [
            (
                "statecast_refused_connections_total",
                "Connections refused over max_connections or max_connections_per_ip.",
                get(&self.refused_connections),
            ),
            (
                "statecast_rate_limited_total",
                "Messages and requests refused over a rate limit.",
                get(&self.rate_limited),
            ),
            (
                "statecast_refused_unauthorized_total",
                "Requests and connections refused for a missing, bad or expired credential.",
                get(&self.refused_unauthorized),
            ),
            (
                "statecast_refused_forbidden_total",
                "Requests refused because the credential does not allow them.",
                get(&self.refused_forbidden),
            ),
            (
                "statecast_ws_connections_total",
                "WebSocket connections accepted.",
                get(&self.ws_connections_total),
            ),
            (
                "statecast_sse_connections_total",
                "SSE streams opened.",
                get(&self.sse_connections_total),
            ),
            (
                "statecast_socketio_connections_total",
                "Socket.IO connections accepted.",
                get(&self.socketio_connections_total),
            ),
            (
                "statecast_messages_in_total",
                "Client messages received over WebSocket and Socket.IO.",
                get(&self.messages_in),
            ),
            (
                "statecast_bytes_in_total",
                "Bytes of client messages received.",
                get(&self.bytes_in),
            ),
            (
                "statecast_messages_out_total",
                "Messages sent to clients.",
                get(&self.messages_out),
            ),
            (
                "statecast_bytes_out_total",
                "Bytes of messages sent to clients.",
                get(&self.bytes_out),
            ),
            (
                "statecast_socket_writes_total",
                "Batched writes to client sockets.",
                get(&self.socket_writes),
            ),
            (
                "statecast_dead_connections_total",
                "Connections reaped after missing heartbeats.",
                get(&self.dead_connections),
            ),
            (
                "statecast_client_errors_total",
                "Client messages refused with an error.",
                get(&self.client_errors),
            ),
            (
                "statecast_http_requests_total",
                "REST requests served.",
                get(&self.http_requests),
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
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        histogram(
            &mut out,
            "statecast_write_latency_seconds",
            "Time from a write being accepted to it being durable and fanned out.",
            &stats.write_latency,
        );
        histogram(
            &mut out,
            "statecast_commit_latency_seconds",
            "Time per group commit to the store.",
            &stats.commit_latency,
        );
        source_metrics(&mut out, sources);
        cluster_metrics(&mut out, hub);
        out
    }
}

/// In a cluster: whether this hub can reach the shared store, and each live hub's clients.
fn cluster_metrics(out: &mut String, hub: &Hub) {
    let nodes = hub.nodes();
    if nodes.is_empty() {
        return;
    }
    let up = u8::from(hub.degraded().is_none());
    let _ = writeln!(
        out,
        "# HELP statecast_cluster_up 1 while this hub reaches the cluster's Redis, else 0.\n\
         # TYPE statecast_cluster_up gauge\nstatecast_cluster_up {up}"
    );
    let _ = writeln!(
        out,
        "# HELP statecast_cluster_node_clients Clients of each live hub of the cluster.\n\
         # TYPE statecast_cluster_node_clients gauge"
    );
    for node in nodes.iter().filter(|n| n.alive) {
        let _ = writeln!(
            out,
            "statecast_cluster_node_clients{{node=\"{}\"}} {}",
            node.id.replace(['\\', '"', '\n'], "_"),
            node.clients
        );
    }
}

/// Per-source gauges and counters, labelled with the source's name.
fn source_metrics(out: &mut String, sources: &[(String, HealthState)]) {
    if sources.is_empty() {
        return;
    }
    type Series = (
        &'static str,
        &'static str,
        &'static str,
        fn(&HealthState) -> Option<f64>,
    );
    let series: [Series; 3] = [
        (
            "statecast_source_up",
            "gauge",
            "1 while the source delivers usable state, else 0.",
            |h| Some(if h.is_online() { 1.0 } else { 0.0 }),
        ),
        (
            "statecast_source_errors_total",
            "counter",
            "Failures of the source (connections, polls, unusable messages).",
            |h| Some(h.error_count as f64),
        ),
        (
            "statecast_source_latency_seconds",
            "gauge",
            "The source's last round trip to its device.",
            |h| h.latency_ms.map(|ms| ms as f64 / 1e3),
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (source, health) in sources {
            if let Some(v) = value(health) {
                let _ = writeln!(out, "{name}{{source=\"{source}\"}} {v}");
            }
        }
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (i, bound) in LATENCY_BUCKETS_US.iter().enumerate() {
        cumulative += h.buckets[i].load(Ordering::Relaxed);
        let le = *bound as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    cumulative += h.buckets[LATENCY_BUCKETS_US.len()].load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let sum = h.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(
        out,
        "{name}_sum {sum}\n{name}_count {}",
        h.count.load(Ordering::Relaxed)
    );
}
