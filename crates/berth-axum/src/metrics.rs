//! Prometheus metrics: proxied requests by container and status, a latency
//! histogram, launches, evictions, running containers.

use async_trait::async_trait;
use berth_proxy::{ActivityKind, ActivityRecord, ActivitySink};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds (seconds) of the latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of the request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    container: String,
    status: u16,
}

/// Counters fed by the proxy's activity (as an [`ActivitySink`]) and by
/// launches, in a `prometheus-client` registry, rendered in the
/// OpenMetrics text format (which Prometheus scrapes).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    launches: Counter,
    evictions: Counter,
    running: Gauge,
    dropped: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty counters.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("berth_requests", "Proxied HTTP requests by container and status", requests.clone());
        let latency = Histogram::new(LATENCY_BUCKETS);
        registry.register_with_unit(
            "berth_request_duration",
            "Time from a proxied request's arrival to the end of its response",
            Unit::Seconds,
            latency.clone(),
        );
        let launches = Counter::default();
        registry.register("berth_launches", "Containers launched", launches.clone());
        let evictions = Counter::default();
        registry.register("berth_evictions", "Containers evicted to fit the memory budget", evictions.clone());
        let running = Gauge::default();
        registry.register("berth_running_containers", "Managed containers running now", running.clone());
        let dropped = Gauge::default();
        registry.register(
            "berth_activity_dropped",
            "Activity records dropped under overload, since start",
            dropped.clone(),
        );
        Metrics { registry, requests, latency, launches, evictions, running, dropped }
    }

    /// Counts a launch and the containers it evicted.
    pub fn launched(&self, evicted: usize) {
        self.launches.inc();
        self.evictions.inc_by(evicted as u64);
    }

    /// The metrics in the OpenMetrics text format ([`CONTENT_TYPE`]), with
    /// the current number of running containers and of activity records
    /// dropped under overload.
    pub fn render(&self, running: usize, dropped: u64) -> String {
        self.running.set(i64::try_from(running).unwrap_or(i64::MAX));
        self.dropped.set(i64::try_from(dropped).unwrap_or(i64::MAX));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[async_trait]
impl ActivitySink for Metrics {
    async fn record(&self, batch: Vec<ActivityRecord>) {
        for r in batch.iter().filter(|r| r.kind == ActivityKind::Http) {
            self.requests.get_or_create(&RequestLabels { container: r.container.clone(), status: r.status }).inc();
            self.latency.observe(r.duration.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[tokio::test]
    async fn renders_prometheus_text() {
        let m = Metrics::new();
        let rec = |status, ms| ActivityRecord {
            container: "viz".into(),
            time: SystemTime::now(),
            path: "/".into(),
            status,
            bytes: 1,
            kind: ActivityKind::Http,
            duration: Duration::from_millis(ms),
        };
        m.record(vec![rec(200, 3), rec(200, 30), rec(404, 2000)]).await;
        m.launched(2);
        let text = m.render(4, 1);
        assert!(text.contains("berth_requests_total{container=\"viz\",status=\"200\"} 2"), "{text}");
        assert!(text.contains("berth_request_duration_seconds_bucket{le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("berth_request_duration_seconds_bucket{le=\"0.05\"} 2"), "{text}");
        assert!(text.contains("berth_request_duration_seconds_bucket{le=\"+Inf\"} 3"), "{text}");
        assert!(text.contains("berth_evictions_total 2") && text.contains("berth_running_containers 4"), "{text}");
        assert!(text.contains("berth_activity_dropped 1"), "{text}");
        assert!(text.contains("berth_launches_total 1") && text.ends_with("# EOF\n"), "{text}");
        // Label values are escaped by the library.
        m.record(vec![ActivityRecord { container: "a\"b\nc".into(), ..rec(200, 1) }]).await;
        assert!(m.render(0, 0).contains(r#"container="a\"b\nc""#));
    }
}
