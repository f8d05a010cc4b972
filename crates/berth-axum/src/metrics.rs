//! Prometheus metrics: proxied requests by container and status, a latency
//! histogram, launches, evictions, running containers.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use async_trait::async_trait;
use berth_proxy::{ActivityKind, ActivityRecord, ActivitySink};

/// Upper bounds (seconds) of the latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Default)]
struct State {
    requests: BTreeMap<(String, u16), u64>,
    buckets: [u64; LATENCY_BUCKETS.len()],
    latency_sum: f64,
    latency_count: u64,
    launches: u64,
    evictions: u64,
}

/// Counters fed by the proxy's activity (as an [`ActivitySink`]) and by
/// launches; rendered in the Prometheus text format.
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
}

impl Metrics {
    /// Empty counters.
    pub fn new() -> Self {
        Metrics::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a launch and the containers it evicted.
    pub fn launched(&self, evicted: usize) {
        let mut s = self.lock();
        s.launches += 1;
        s.evictions += evicted as u64;
    }

    /// The metrics as Prometheus text, with the current number of running
    /// containers and of activity records dropped under overload.
    pub fn render(&self, running: usize, dropped: u64) -> String {
        let s = self.lock();
        let mut out = String::new();
        out.push_str("# HELP berth_requests_total Proxied HTTP requests by container and status.\n");
        out.push_str("# TYPE berth_requests_total counter\n");
        for ((container, status), n) in &s.requests {
            let _ =
                writeln!(out, "berth_requests_total{{container=\"{}\",status=\"{status}\"}} {n}", escape(container));
        }
        out.push_str(
            "# HELP berth_request_duration_seconds Time from a proxied request's arrival to the end of its response.\n",
        );
        out.push_str("# TYPE berth_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (le, n) in LATENCY_BUCKETS.iter().zip(s.buckets.iter()) {
            cumulative += n;
            let _ = writeln!(out, "berth_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "berth_request_duration_seconds_bucket{{le=\"+Inf\"}} {}", s.latency_count);
        let _ = writeln!(out, "berth_request_duration_seconds_sum {}", s.latency_sum);
        let _ = writeln!(out, "berth_request_duration_seconds_count {}", s.latency_count);
        let _ = writeln!(
            out,
            "# HELP berth_launches_total Containers launched.\n# TYPE berth_launches_total counter\nberth_launches_total {}",
            s.launches
        );
        let _ = writeln!(
            out,
            "# HELP berth_evictions_total Containers evicted to fit the memory budget.\n# TYPE berth_evictions_total counter\nberth_evictions_total {}",
            s.evictions
        );
        let _ = writeln!(
            out,
            "# HELP berth_running_containers Managed containers running now.\n# TYPE berth_running_containers gauge\nberth_running_containers {running}"
        );
        let _ = writeln!(
            out,
            "# HELP berth_activity_dropped_total Activity records dropped under overload.\n# TYPE berth_activity_dropped_total counter\nberth_activity_dropped_total {dropped}"
        );
        out
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[async_trait]
impl ActivitySink for Metrics {
    async fn record(&self, batch: Vec<ActivityRecord>) {
        let mut s = self.lock();
        for r in batch.iter().filter(|r| r.kind == ActivityKind::Http) {
            *s.requests.entry((r.container.clone(), r.status)).or_default() += 1;
            let secs = r.duration.as_secs_f64();
            if let Some(i) = LATENCY_BUCKETS.iter().position(|le| secs <= *le) {
                s.buckets[i] += 1;
            }
            s.latency_sum += secs;
            s.latency_count += 1;
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
        assert!(text.contains("berth_activity_dropped_total 1"), "{text}");
    }
}
