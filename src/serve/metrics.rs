//! Counters, gauges and a latency histogram, written in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct PerEndpoint {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    bytes_in: BTreeMap<String, u64>,
    bytes_out: BTreeMap<String, u64>,
}

/// Server-wide metrics.
#[derive(Default)]
pub(crate) struct Metrics {
    per: Mutex<PerEndpoint>,
    pub in_flight: AtomicU64,
    pub queued: AtomicU64,
    pub rejected_busy: AtomicU64,
    pub rejected_auth: AtomicU64,
    pub rejected_rate: AtomicU64,
    pub timeouts: AtomicU64,
    /// Connections closed at once because `max_connections` were open.
    pub refused_connections: std::sync::Arc<AtomicU64>,
    pub evaluations: AtomicU64,
    pub queries: AtomicU64,
    pub eval_seconds_micros: AtomicU64,
}

/// Key-store figures sampled when the metrics are written.
pub(crate) struct StoreGauges {
    pub resident_bytes: usize,
    pub capacity_bytes: usize,
    pub entries: usize,
    pub evictions: u64,
    pub disk_deletions: u64,
}

impl Metrics {
    pub(crate) fn observe(
        &self,
        endpoint: &str,
        status: u16,
        seconds: f64,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        let mut p = self.per.lock().unwrap_or_else(|e| e.into_inner());
        *p.requests
            .entry((endpoint.to_string(), status))
            .or_default() += 1;
        let h = p.latency.entry(endpoint.to_string()).or_default();
        for (i, &b) in BUCKETS.iter().enumerate() {
            if seconds <= b {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
        *p.bytes_in.entry(endpoint.to_string()).or_default() += bytes_in;
        *p.bytes_out.entry(endpoint.to_string()).or_default() += bytes_out;
    }

    pub(crate) fn render(&self, store: &StoreGauges) -> String {
        let mut s = String::new();
        let p = self.per.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            s,
            "# HELP hepeft_requests_total HTTP requests by endpoint and status."
        );
        let _ = writeln!(s, "# TYPE hepeft_requests_total counter");
        for ((e, st), n) in &p.requests {
            let _ = writeln!(
                s,
                "hepeft_requests_total{{endpoint=\"{e}\",status=\"{st}\"}} {n}"
            );
        }
        let _ = writeln!(
            s,
            "# HELP hepeft_request_duration_seconds Request latency by endpoint."
        );
        let _ = writeln!(s, "# TYPE hepeft_request_duration_seconds histogram");
        for (e, h) in &p.latency {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "hepeft_request_duration_seconds_bucket{{endpoint=\"{e}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                s,
                "hepeft_request_duration_seconds_bucket{{endpoint=\"{e}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                s,
                "hepeft_request_duration_seconds_sum{{endpoint=\"{e}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                s,
                "hepeft_request_duration_seconds_count{{endpoint=\"{e}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(
            s,
            "# HELP hepeft_received_bytes_total Request body bytes by endpoint."
        );
        let _ = writeln!(s, "# TYPE hepeft_received_bytes_total counter");
        for (e, n) in &p.bytes_in {
            let _ = writeln!(s, "hepeft_received_bytes_total{{endpoint=\"{e}\"}} {n}");
        }
        let _ = writeln!(
            s,
            "# HELP hepeft_sent_bytes_total Response body bytes by endpoint."
        );
        let _ = writeln!(s, "# TYPE hepeft_sent_bytes_total counter");
        for (e, n) in &p.bytes_out {
            let _ = writeln!(s, "hepeft_sent_bytes_total{{endpoint=\"{e}\"}} {n}");
        }
        drop(p);
        let gauge = |s: &mut String, name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(s, "# HELP {name} {help}");
            let _ = writeln!(s, "# TYPE {name} {kind}");
            let _ = writeln!(s, "{name} {v}");
        };
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            &mut s,
            "hepeft_evaluations_in_flight",
            "gauge",
            "Evaluations running now.",
            ld(&self.in_flight).to_string(),
        );
        gauge(
            &mut s,
            "hepeft_evaluations_queued",
            "gauge",
            "Requests waiting for an evaluation slot.",
            ld(&self.queued).to_string(),
        );
        gauge(
            &mut s,
            "hepeft_rejected_busy_total",
            "counter",
            "Requests answered 503 because every slot and queue place was taken.",
            ld(&self.rejected_busy).to_string(),
        );
        gauge(
            &mut s,
            "hepeft_rejected_unauthorized_total",
            "counter",
            "Requests answered 401 (missing or invalid access token).",
            ld(&self.rejected_auth).to_string(),
        );
        gauge(
            &mut s,
            "hepeft_rejected_rate_limited_total",
            "counter",
            "Requests answered 429 (per-client rate limit).",
            ld(&self.rejected_rate).to_string(),
        );
        gauge(
            &mut s,
            "hepeft_refused_connections_total",
            "counter",
            "Connections closed at once because the connection limit was reached.",
            ld(&self.refused_connections).to_string(),
        );
        gauge(
            &mut s,
            "hepeft_timeouts_total",
            "counter",
            "Requests answered 504.",
            ld(&self.timeouts).to_string(),
        );
        gauge(
            &mut s,
            "hepeft_evaluations_total",
            "counter",
            "Evaluate requests completed.",
            ld(&self.evaluations).to_string(),
        );
        gauge(
            &mut s,
            "hepeft_queries_total",
            "counter",
            "Queries evaluated (an evaluate request may carry several).",
            ld(&self.queries).to_string(),
        );
        gauge(
            &mut s,
            "hepeft_evaluation_seconds_total",
            "counter",
            "Time spent evaluating (decode, evaluate, encode), summed over requests.",
            format!("{}", ld(&self.eval_seconds_micros) as f64 * 1e-6),
        );
        gauge(
            &mut s,
            "hepeft_key_store_bytes",
            "gauge",
            "Resident bytes of the key store.",
            store.resident_bytes.to_string(),
        );
        gauge(
            &mut s,
            "hepeft_key_store_capacity_bytes",
            "gauge",
            "Memory budget of the key store.",
            store.capacity_bytes.to_string(),
        );
        gauge(
            &mut s,
            "hepeft_key_store_entries",
            "gauge",
            "Key sets resident in memory.",
            store.entries.to_string(),
        );
        gauge(
            &mut s,
            "hepeft_key_store_evictions_total",
            "counter",
            "Key sets dropped from memory (least recently used).",
            store.evictions.to_string(),
        );
        gauge(
            &mut s,
            "hepeft_key_store_disk_deletions_total",
            "counter",
            "Key files deleted from the key directory to keep it within its disk budget.",
            store.disk_deletions.to_string(),
        );
        s
    }
}
