//! Prometheus metrics: requests by route and status, and a latency histogram.
//! Routes are labelled by their pattern (never the raw path), and paths no
//! route matches share one label, so a scanner cannot blow up the series.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use prometheus::{Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

use crate::state::AppState;

const UNMATCHED: &str = "unmatched";

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    pub gc: GcMetrics,
}

/// What garbage collection reclaimed in this process (`filesync_http_gc_*`).
#[derive(Debug, Clone)]
pub struct GcMetrics {
    pub bytes_reclaimed: IntCounter,
    pub objects_reclaimed: IntCounter,
    pub packs_rewritten: IntCounter,
    pub versions_dropped: IntCounter,
    /// Unix time of the last pass that completed (0: none yet).
    pub last_run: Gauge,
}

impl GcMetrics {
    fn new(registry: &Registry) -> Result<GcMetrics, prometheus::Error> {
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let last_run = Gauge::new("gc_last_run_timestamp_seconds", "When the last garbage collection pass completed")?;
        registry.register(Box::new(last_run.clone()))?;
        Ok(GcMetrics {
            bytes_reclaimed: counter(
                "gc_bytes_reclaimed_total",
                "Bytes deleted from the chunk store by garbage collection",
            )?,
            objects_reclaimed: counter(
                "gc_objects_reclaimed_total",
                "Objects deleted from the chunk store by garbage collection",
            )?,
            packs_rewritten: counter("gc_packs_rewritten_total", "Mostly dead packs rewritten by garbage collection")?,
            versions_dropped: counter("gc_versions_dropped_total", "File versions dropped by retention")?,
            last_run,
        })
    }

    /// Adds a completed pass.
    pub fn record(&self, report: &filesync_core::gc::Report) {
        self.bytes_reclaimed.inc_by(report.bytes_reclaimed);
        self.objects_reclaimed.inc_by(report.objects_deleted);
        self.packs_rewritten.inc_by(report.packs_rewritten);
        self.versions_dropped.inc_by(report.versions_dropped);
        self.last_run.set(chrono::Utc::now().timestamp() as f64);
    }
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        // A registry per server, so two servers in one process (tests) keep apart.
        let registry = Registry::new_custom(Some("filesync_http".into()), None)?;
        let requests =
            IntCounterVec::new(Opts::new("requests_total", "HTTP requests served"), &["method", "route", "status"])?;
        let latency = HistogramVec::new(
            HistogramOpts::new("request_duration_seconds", "Time from request to response head"),
            &["method", "route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        let gc = GcMetrics::new(&registry)?;
        Ok(Metrics { registry, requests, latency, gc })
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests.with_label_values(&[method, route, &status.to_string()]).inc();
        self.latency.with_label_values(&[method, route]).observe(seconds);
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// Middleware: times every request, counts it, and writes one access-log line.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let route = req.match_pattern().unwrap_or_else(|| UNMATCHED.to_owned());
    let method = req.method().to_string();
    let peer = req.peer_addr();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let res = next.call(req).await;
    let status = match &res {
        Ok(res) => res.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    let elapsed = start.elapsed();
    if let Some(state) = state {
        state.metrics.observe(&method, &route, status, elapsed.as_secs_f64());
    }
    tracing::info!(
        http.method = %method,
        http.route = %route,
        http.status = status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        peer.addr = ?peer,
        "request"
    );
    res
}
