//! The api's Prometheus metrics, written in the text exposition format by hand: a handful of
//! labelled counters and histograms do not need a metrics framework. Observations take one
//! short lock per family; gauges (queue depth, workers, cache) are read at scrape time from the
//! components that own them, so they can never drift from the truth.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use dispatch::{DispatchStats, Lane};
use promtext::{counter, gauge, Family};

#[derive(Default)]
pub struct Metrics {
    http: Family,
    queue_wait: Family,
    conversion_wall: Family,
    conversion_cpu: Family,
    publish: Family,
    publish_outcomes: promtext::Counters,
    remote_turnaround: Family,
    results: promtext::Counters,
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    admission_refusals: promtext::Counters,
    /// Resizes refused for the tenant's limits over time: `rate_limited`, or `quota_exceeded`
    /// with the dimension used up.
    tenant_limit_refusals: promtext::Counters,
    usage: Mutex<BTreeMap<&'static str, u64>>,
    /// Signed-URL sources by how they were had: `hit`, `revalidated`, `fetched`, and
    /// `not_modified` for a 304 answered without a conversion.
    sources: promtext::Counters,
    source_bytes_fetched: std::sync::atomic::AtomicU64,
}

/// Why admission refused a request for what this node holds in flight.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    /// The node's budget of request-body bytes in flight was taken (503).
    BodyBudget,
    /// The tenant had its cap of requests in flight here (429).
    TenantInFlight,
}

impl Refusal {
    const ALL: [Refusal; 2] = [Refusal::BodyBudget, Refusal::TenantInFlight];

    fn label(self) -> &'static str {
        match self {
            Refusal::BodyBudget => "body_budget",
            Refusal::TenantInFlight => "tenant_in_flight",
        }
    }
}

/// Values read at scrape time from the components that own them.
pub struct Gauges {
    /// The embedded pool's figures (`None` in cluster mode).
    pub dispatch: Option<DispatchStats>,
    /// Cluster mode: (jobs, bytes) staged for workers now.
    pub staged: Option<(usize, u64)>,
    /// Resize request-body bytes reserved now, and the node's budget of them.
    pub body_bytes_in_flight: (u64, u64),
    /// Tenants with at least one resize request in flight here.
    pub tenants_in_flight: usize,
    /// Cluster mode: the NATS connection.
    pub queue_connected: Option<bool>,
    /// Cluster mode: the api nodes up, which share each tenant's rate limits.
    pub api_nodes: Option<usize>,
    /// Cluster mode, once asked: whether the job stream has a leader.
    pub job_stream_leader: Option<bool>,
    /// Whether the usage spool takes writes (`None` with metering off or no spool).
    pub spool_writable: Option<bool>,
    /// Cluster api node: (watch live, replication lag, since the watch last heard from NATS).
    pub replica: Option<(bool, Duration, Option<Duration>)>,
    /// The usage spool's figures (`None` with metering off).
    pub spool: Option<usage::SpoolStats>,
    /// A cluster api node: batches shipped and not confirmed yet, and batches shipped again.
    pub shipments: Option<(usize, u64)>,
    pub cache_keys: usize,
    pub cache_version: u64,
    /// The source cache's (entries, bytes held), where signed URLs are on.
    pub source_cache: Option<(u64, u64)>,
    pub ready: bool,
}

impl Metrics {
    pub fn http_request(&self, route: &str, status: u16, elapsed: Duration) {
        self.http.observe(&[route, status_label(status)], elapsed);
    }

    pub fn conversion(&self, lane: Lane, queue_wait: Duration, wall: Duration, cpu: Duration) {
        self.queue_wait.observe(&[lane.as_str()], queue_wait);
        self.conversion_wall.observe(&[lane.as_str()], wall);
        self.conversion_cpu.observe(&[lane.as_str()], cpu);
    }

    /// A job published to the JetStream queue (cluster mode), or refused: `took` is `None` when
    /// it was refused before publishing (by the staging).
    pub fn publish(&self, lane: Lane, took: Option<Duration>, error: Option<&queue::QueueError>) {
        if let Some(took) = took {
            self.publish.observe(&[lane.as_str()], took);
        }
        let outcome = match error {
            None => "stored",
            Some(queue::QueueError::Full) => "full",
            Some(queue::QueueError::StagingFull) => "staging_full",
            Some(queue::QueueError::Unavailable(_) | queue::QueueError::Config(_)) => "unavailable",
        };
        self.publish_outcomes.add(&[lane.as_str(), outcome], 1);
    }

    /// From publishing a job to its result (or failure) arriving back from a worker.
    pub fn remote_turnaround(&self, lane: Lane, took: Duration) {
        self.remote_turnaround.observe(&[lane.as_str()], took);
    }

    /// A result a worker handed back on the internal port: `accepted`, `gone` (answered or
    /// given up already: a duplicate or a late one) or `wrong_token`.
    pub fn result(&self, outcome: &'static str) {
        self.results.add(&[outcome], 1);
    }

    pub fn quota_refused(&self, dimension: &str) {
        self.tenant_limit_refusals.add(&["quota_exceeded", dimension], 1);
    }

    /// A signed URL's source, had from the node's source cache as `outcome` says, with the
    /// bytes this request transferred from the origin.
    pub fn source(&self, outcome: origin::CacheOutcome, fetched_bytes: u64) {
        let label = match outcome {
            origin::CacheOutcome::Hit => "hit",
            origin::CacheOutcome::Revalidated => "revalidated",
            origin::CacheOutcome::Fetched => "fetched",
        };
        self.sources.add(&[label], 1);
        self.source_bytes_fetched.fetch_add(fetched_bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// A signed URL answered 304: its ETag matched, nothing was converted.
    pub fn source_not_modified(&self) {
        self.sources.add(&["not_modified"], 1);
    }

    pub fn rate_limited(&self) {
        self.tenant_limit_refusals.add(&["rate_limited", ""], 1);
    }

    pub fn admission_refused(&self, why: Refusal) {
        self.admission_refusals.add(&[why.label()], 1);
    }

    pub fn auth_failure(&self, reason: &'static str) {
        *self.auth_failures.lock().unwrap_or_else(PoisonError::into_inner).entry(reason).or_default() += 1;
    }

    /// Billing-relevant totals of successful conversions (the per-request records are issue 4's).
    pub fn usage(&self, input_bytes: u64, output_bytes: u64, input_pixels: u64, output_pixels: u64) {
        let mut usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, v) in [
            ("input_bytes", input_bytes),
            ("output_bytes", output_bytes),
            ("input_pixels", input_pixels),
            ("output_pixels", output_pixels),
        ] {
            *usage.entry(name).or_default() += v;
        }
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(16 << 10);
        self.http.render(
            &mut out,
            "resizer_http_request_duration_seconds",
            "Time from request received to response headers, by route and status.",
            &["route", "status"],
        );
        self.queue_wait.render(
            &mut out,
            "resizer_queue_wait_seconds",
            "Time a conversion waited in its lane before a worker started it.",
            &["lane"],
        );
        self.conversion_wall.render(
            &mut out,
            "resizer_conversion_wall_seconds",
            "Wall-clock time of a conversion on a worker.",
            &["lane"],
        );
        self.conversion_cpu.render(
            &mut out,
            "resizer_conversion_cpu_seconds",
            "CPU time of a conversion, measured on the worker thread.",
            &["lane"],
        );

        self.publish.render(
            &mut out,
            "resizer_queue_publish_seconds",
            "Publishing a job to JetStream until it is stored on a quorum (cluster mode), by lane.",
            &["lane"],
        );
        self.publish_outcomes.render(
            &mut out,
            "resizer_queue_publish_total",
            "Jobs for the JetStream queue, by lane and outcome (stored; full; staging_full: refused before publishing; unavailable).",
            &["lane", "outcome"],
        );
        self.remote_turnaround.render(
            &mut out,
            "resizer_remote_turnaround_seconds",
            "From publishing a job to its result arriving from a worker (cluster mode), by lane.",
            &["lane"],
        );
        self.results.render(
            &mut out,
            "resizer_internal_results_total",
            "Results workers handed back, by outcome (accepted; gone: duplicate or too late; wrong_token).",
            &["outcome"],
        );
        let _ = writeln!(out, "# HELP resizer_auth_failures_total Requests refused by authentication, by reason.");
        let _ = writeln!(out, "# TYPE resizer_auth_failures_total counter");
        for reason in [
            "missing",
            "malformed",
            "unknown",
            "revoked",
            "expired",
            "suspended",
            "signing_key",
            "bad_signature",
            "url_expired",
        ] {
            let n = self.auth_failures.lock().unwrap_or_else(PoisonError::into_inner).get(reason).copied();
            let _ = writeln!(out, "resizer_auth_failures_total{{reason=\"{reason}\"}} {}", n.unwrap_or(0));
        }
        let _ = writeln!(
            out,
            "# HELP resizer_admission_refusals_total Resize requests refused for what this node holds in flight, by reason (body_budget: 503; tenant_in_flight: 429)."
        );
        let _ = writeln!(out, "# TYPE resizer_admission_refusals_total counter");
        for why in Refusal::ALL {
            let (reason, n) = (why.label(), self.admission_refusals.get(&[why.label()]));
            let _ = writeln!(out, "resizer_admission_refusals_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP resizer_tenant_limit_refusals_total Resize requests refused (429) for the tenant's rate limit (kind rate_limited) or quota (kind quota_exceeded, with the dimension used up)."
        );
        let _ = writeln!(out, "# TYPE resizer_tenant_limit_refusals_total counter");
        let _ = writeln!(
            out,
            "resizer_tenant_limit_refusals_total{{kind=\"rate_limited\",dimension=\"\"}} {}",
            self.tenant_limit_refusals.get(&["rate_limited", ""])
        );
        for d in crate::quota::Dimension::ALL {
            let n = self.tenant_limit_refusals.get(&["quota_exceeded", d.as_str()]);
            let _ = writeln!(
                out,
                "resizer_tenant_limit_refusals_total{{kind=\"quota_exceeded\",dimension=\"{}\"}} {n}",
                d.as_str()
            );
        }
        let (held, budget) = gauges.body_bytes_in_flight;
        gauge(
            &mut out,
            "resizer_body_bytes_in_flight",
            "Resize request-body bytes reserved now (declared lengths, or bytes arrived), until their answers are done.",
            held as f64,
        );
        gauge(
            &mut out,
            "resizer_body_bytes_budget",
            "Most resize request-body bytes in flight at once (api.max_body_bytes_in_flight).",
            budget as f64,
        );
        gauge(
            &mut out,
            "resizer_tenants_with_requests_in_flight",
            "Tenants with at least one resize request in flight here.",
            gauges.tenants_in_flight as f64,
        );
        let _ = writeln!(out, "# HELP resizer_usage_total Totals of successful conversions, by quantity.");
        let _ = writeln!(out, "# TYPE resizer_usage_total counter");
        for (name, v) in self.usage.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            let _ = writeln!(out, "resizer_usage_total{{quantity=\"{name}\"}} {v}");
        }

        if let Some(d) = &gauges.dispatch {
            gauge_per_lane(&mut out, "resizer_queue_depth", "Jobs waiting in each lane.", |l| {
                d.lanes.get(l).queued as f64
            });
            gauge_per_lane(&mut out, "resizer_queue_capacity", "Most jobs each lane may hold waiting.", |l| {
                d.lanes.get(l).capacity as f64
            });
            gauge_per_lane(
                &mut out,
                "resizer_queue_mean_service_seconds",
                "Moving mean service time per lane (the basis of Retry-After).",
                |l| d.lanes.get(l).mean_service_time.as_secs_f64(),
            );
            gauge(&mut out, "resizer_workers", "Worker threads of the pool.", d.threads as f64);
            gauge(&mut out, "resizer_workers_busy", "Workers running a conversion now.", d.busy_threads as f64);
            counter(&mut out, "resizer_jobs_completed_total", "Jobs a worker ran to the end.", d.completed);
            counter(
                &mut out,
                "resizer_jobs_expired_total",
                "Jobs dropped unprocessed because their deadline passed.",
                d.dropped_expired,
            );
            counter(
                &mut out,
                "resizer_jobs_cancelled_total",
                "Jobs dropped unprocessed because the client went away.",
                d.cancelled,
            );
        }
        if let Some(spool) = gauges.spool {
            counter(
                &mut out,
                "resizer_usage_spool_records_total",
                "Usage records written to the spool.",
                spool.records,
            );
            counter(
                &mut out,
                "resizer_usage_spool_writes_total",
                "write(2) calls that carried them: records answered together share one.",
                spool.writes,
            );
        }
        if let Some((jobs, bytes)) = gauges.staged {
            gauge(&mut out, "resizer_staged_jobs", "Jobs whose source bytes wait here for a worker.", jobs as f64);
            gauge(&mut out, "resizer_staged_bytes", "Source bytes staged here for workers.", bytes as f64);
        }
        if let Some((live, lag, since_contact)) = gauges.replica {
            gauge(
                &mut out,
                "resizer_identity_watch_live",
                "1 while the identity watch is live; 0: serving the last known credentials.",
                f64::from(u8::from(live)),
            );
            gauge(
                &mut out,
                "resizer_identity_replication_lag_seconds",
                "From an identity change's commit to its application here, for the last change.",
                lag.as_secs_f64(),
            );
            gauge(
                &mut out,
                "resizer_identity_since_contact_seconds",
                "Since the identity watch last heard from NATS.",
                since_contact.map_or(f64::NAN, |d| d.as_secs_f64()),
            );
        }
        if let Some(connected) = gauges.queue_connected {
            gauge(
                &mut out,
                "resizer_queue_connected",
                "1 while connected to the NATS job queue.",
                f64::from(u8::from(connected)),
            );
        }
        if let Some(leader) = gauges.job_stream_leader {
            gauge(
                &mut out,
                "resizer_job_stream_leader",
                "1 while the job stream has a leader (asked every 2 s); 0: jobs wait for an election.",
                f64::from(u8::from(leader)),
            );
        }
        if let Some((unconfirmed, again)) = gauges.shipments {
            gauge(
                &mut out,
                "resizer_usage_batches_unconfirmed",
                "Usage batches shipped and kept in the spool until an aggregator confirms them applied.",
                unconfirmed as f64,
            );
            counter(
                &mut out,
                "resizer_usage_batches_shipped_again_total",
                "Usage batches shipped again because no aggregator confirmed them in time (aggregators down, or the stream lost them).",
                again,
            );
        }
        if let Some(writable) = gauges.spool_writable {
            gauge(
                &mut out,
                "resizer_usage_spool_writable",
                "1 while the usage spool takes writes; 0: every request is answered 503 and the node is not ready.",
                f64::from(u8::from(writable)),
            );
        }
        if let Some(nodes) = gauges.api_nodes {
            gauge(
                &mut out,
                "resizer_api_nodes",
                "Api nodes up, as this node counts them: each gets this share of a tenant's rate limits and of queue.max_large_jobs.",
                nodes as f64,
            );
        }
        gauge(&mut out, "resizer_credential_cache_keys", "API keys in the credential cache.", gauges.cache_keys as f64);
        let _ = writeln!(
            out,
            "# HELP resizer_sources_total Signed-URL requests by how their source was had (hit, revalidated, fetched) or answered 304 without a conversion (not_modified)."
        );
        let _ = writeln!(out, "# TYPE resizer_sources_total counter");
        for outcome in ["hit", "revalidated", "fetched", "not_modified"] {
            let _ = writeln!(out, "resizer_sources_total{{outcome=\"{outcome}\"}} {}", self.sources.get(&[outcome]));
        }
        let _ = writeln!(out, "# HELP resizer_source_fetched_bytes_total Source bytes transferred from origins.");
        let _ = writeln!(out, "# TYPE resizer_source_fetched_bytes_total counter");
        let fetched = self.source_bytes_fetched.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(out, "resizer_source_fetched_bytes_total {fetched}");
        if let Some((entries, bytes)) = gauges.source_cache {
            gauge(
                &mut out,
                "resizer_source_cache_entries",
                "Sources held in this node's source cache.",
                entries as f64,
            );
            gauge(
                &mut out,
                "resizer_source_cache_bytes",
                "Bytes of sources held in this node's source cache.",
                bytes as f64,
            );
        }
        gauge(
            &mut out,
            "resizer_credential_cache_version",
            "Identity change version the credential cache has applied.",
            gauges.cache_version as f64,
        );
        gauge(&mut out, "resizer_ready", "1 while the node accepts work.", if gauges.ready { 1.0 } else { 0.0 });
        out
    }
}

fn gauge_per_lane(out: &mut String, name: &str, help: &str, value: impl Fn(Lane) -> f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for lane in Lane::ALL {
        let _ = writeln!(out, "{name}{{lane=\"{lane}\"}} {}", value(lane));
    }
}

/// Status codes as static labels (no allocation per request for the common ones).
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        413 => "413",
        414 => "414",
        415 => "415",
        422 => "422",
        429 => "429",
        431 => "431",
        500 => "500",
        503 => "503",
        504 => "504",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.http_request("resize", 200, Duration::from_millis(3));
        m.http_request("resize", 200, Duration::from_millis(30));
        m.http_request("resize", 429, Duration::from_micros(100));
        let stats = dispatch::Dispatcher::start(dispatch::DispatchConfig::with_threads(1)).stats();
        let text = m.render(&Gauges {
            dispatch: Some(stats),
            staged: None,
            body_bytes_in_flight: (1024, 4096),
            tenants_in_flight: 1,
            queue_connected: None,
            api_nodes: None,
            job_stream_leader: None,
            spool_writable: None,
            shipments: None,
            replica: None,
            spool: Some(usage::SpoolStats { records: 7, writes: 3 }),
            cache_keys: 2,
            source_cache: Some((1, 100)),
            cache_version: 5,
            ready: true,
        });
        assert!(
            text.contains(r#"resizer_http_request_duration_seconds_bucket{route="resize",status="200",le="0.005"} 1"#)
        );
        assert!(
            text.contains(r#"resizer_http_request_duration_seconds_bucket{route="resize",status="200",le="0.05"} 2"#)
        );
        assert!(text.contains(r#"resizer_http_request_duration_seconds_count{route="resize",status="200"} 2"#));
        assert!(text.contains(r#"resizer_http_request_duration_seconds_count{route="resize",status="429"} 1"#));
        assert!(text.contains("resizer_credential_cache_version 5"));
        assert!(text.contains("resizer_usage_spool_writes_total 3"));
        assert!(text.contains(r#"resizer_queue_capacity{lane="small"} 32"#));
        assert!(text.contains("resizer_body_bytes_in_flight 1024"));
        assert!(text.contains(r#"resizer_admission_refusals_total{reason="body_budget"} 0"#));
        m.admission_refused(Refusal::TenantInFlight);
        let text = m.render(&Gauges {
            dispatch: None,
            staged: None,
            body_bytes_in_flight: (0, 4096),
            tenants_in_flight: 0,
            queue_connected: None,
            api_nodes: None,
            job_stream_leader: None,
            spool_writable: None,
            shipments: None,
            replica: None,
            spool: None,
            cache_keys: 0,
            source_cache: None,
            cache_version: 0,
            ready: true,
        });
        assert!(text.contains(r#"resizer_admission_refusals_total{reason="tenant_in_flight"} 1"#));
    }
}
