//! Prometheus metrics of one node, served at `/metrics` on the admin address.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub connections_active: IntGauge,
    pub connections_total: IntCounter,
    pub connections_refused_busy: IntCounter,
    pub handshake_failures: IntCounterVec,
    pub request_errors: IntCounterVec,
    pub frames_in: IntCounter,
    pub frames_out: IntCounter,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    pub commits: IntCounterVec,
    pub edit_transactions: IntCounter,
    pub conflicts: IntCounter,
    pub chunks_received: IntCounter,
    pub chunk_bytes_received: IntCounter,
    pub chunks_sent: IntCounter,
    pub chunk_bytes_sent: IntCounter,
    pub chunks_stored: IntCounter,
    pub chunk_store_bytes_written: IntCounter,
    pub subscriptions_active: IntGauge,
    pub events_forwarded: IntCounter,
    pub slow_consumers_dropped: IntCounter,
    pub bus_lag: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(format!("filesync_tcp_{name}"), help).expect("valid metric name");
    registry.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(format!("filesync_tcp_{name}"), help).expect("valid metric name");
    registry.register(Box::new(g.clone())).expect("metric registered once");
    g
}

fn counter_vec(registry: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(format!("filesync_tcp_{name}"), help), &[label]).expect("valid metric name");
    registry.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str) -> Histogram {
    let buckets = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
    let h = Histogram::with_opts(HistogramOpts::new(format!("filesync_tcp_{name}"), help).buckets(buckets))
        .expect("valid metric name");
    registry.register(Box::new(h.clone())).expect("metric registered once");
    h
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        Metrics {
            connections_active: gauge(&r, "connections_active", "Connections past the handshake, now"),
            connections_total: counter(&r, "connections_total", "Connections accepted"),
            connections_refused_busy: counter(&r, "connections_refused_busy_total", "Connections refused at the cap"),
            handshake_failures: counter_vec(&r, "handshake_failures_total", "Failed handshakes by error code", "code"),
            request_errors: counter_vec(&r, "request_errors_total", "Error frames sent, by code", "code"),
            frames_in: counter(&r, "frames_in_total", "Frames received"),
            frames_out: counter(&r, "frames_out_total", "Frames sent"),
            bytes_in: counter(&r, "bytes_in_total", "Bytes read from client sockets (TLS included)"),
            bytes_out: counter(&r, "bytes_out_total", "Bytes written to client sockets (TLS included)"),
            commits: counter_vec(&r, "commits_total", "Changes committed, by operation", "op"),
            edit_transactions: counter(
                &r,
                "edit_transactions_total",
                "Transactions that committed deletes, moves and directories (pipelined ones share one)",
            ),
            conflicts: counter(&r, "conflict_copies_total", "Uploads committed as conflict copies"),
            chunks_received: counter(&r, "chunks_received_total", "Chunks received and verified"),
            chunk_bytes_received: counter(&r, "chunk_bytes_received_total", "Chunk bytes received and verified"),
            chunks_sent: counter(&r, "chunks_sent_total", "Chunks sent to clients"),
            chunk_bytes_sent: counter(
                &r,
                "chunk_bytes_sent_total",
                "Chunk payload bytes sent to clients (as stored: compressed when that paid)",
            ),
            chunks_stored: counter(&r, "chunk_store_chunks_written_total", "New chunks written to the chunk store"),
            chunk_store_bytes_written: counter(
                &r,
                "chunk_store_bytes_written_total",
                "Bytes written to the chunk store (at rest, after compression)",
            ),
            subscriptions_active: gauge(&r, "subscriptions_active", "Workspace subscriptions, now"),
            events_forwarded: counter(&r, "events_forwarded_total", "Change frames queued to subscribers"),
            slow_consumers_dropped: counter(&r, "slow_consumers_dropped_total", "Connections closed for a full queue"),
            bus_lag: histogram(
                &r,
                "bus_lag_seconds",
                "From a commit on another node to its forwarding here (across node clocks)",
            ),
            registry: r,
        }
    }

    /// The registry, for collectors shared with others (the bus's counters).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
