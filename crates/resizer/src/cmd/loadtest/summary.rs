//! The numbers of a run, computed once: `--json` prints this, the text summary and the HTML report
//! are drawn from it, so the three can never disagree.

use std::collections::BTreeMap;

use serde::Serialize;

use super::histogram::LatencyHistogram;
use super::series::TimeSeries;
use super::{LoadConfig, LoadReport, Pacing, Tally};

/// Latency percentiles of a whole run or step, in milliseconds (None without answers).
#[derive(Debug, Clone, Serialize)]
pub struct LatencyMs {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

impl LatencyMs {
    fn of(histogram: &LatencyHistogram) -> LatencyMs {
        let percentile = |p: f64| histogram.percentile(p).map(ms);
        LatencyMs {
            p50: percentile(50.0),
            p90: percentile(90.0),
            p99: percentile(99.0),
            p999: percentile(99.9),
            max: histogram.max_us().map(ms),
            mean: histogram.mean_us().map(|us| us / 1000.0),
        }
    }
}

/// One time window of the run (per second unless a long run widened them).
#[derive(Debug, Clone, Serialize)]
pub struct WindowSummary {
    /// Seconds from the start of the measurement (ramp: of the first step, steps back to back).
    pub start_s: f64,
    pub seconds: f64,
    /// Ramp: the index of the step the window belongs to.
    pub step: Option<usize>,
    pub requests: u64,
    pub requests_per_sec: f64,
    pub status: BTreeMap<u16, u64>,
    pub errors: u64,
    pub latency_ms: WindowLatencyMs,
}

#[derive(Debug, Clone, Serialize)]
pub struct WindowLatencyMs {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

/// The windows of one run, placed `offset_s` after the start of the whole measurement.
pub fn windows_of(series: &TimeSeries, measured_s: f64, offset_s: f64, step: Option<usize>) -> Vec<WindowSummary> {
    let width = series.width().as_secs_f64();
    series
        .windows()
        .iter()
        .enumerate()
        .map(|(index, window)| {
            let start = index as f64 * width;
            // The last window ends with the run; a window of (almost) no time is given its width
            // rather than a rate divided by zero.
            let seconds = match (measured_s - start).min(width) {
                s if s > 0.001 => s,
                _ => width,
            };
            let percentile = |p: f64| window.latency.percentile(p).map(ms);
            let requests = window.responses();
            WindowSummary {
                start_s: offset_s + start,
                seconds,
                step,
                requests,
                requests_per_sec: requests as f64 / seconds,
                status: window.status.clone(),
                errors: window.errors,
                latency_ms: WindowLatencyMs {
                    p50: percentile(50.0),
                    p90: percentile(90.0),
                    p99: percentile(99.0),
                    max: window.latency.max_us().map(ms),
                },
            }
        })
        .collect()
}

/// A run's measured counts, as the JSON shows them for the whole run and for each ramp step.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_sec: f64,
    /// Answers by HTTP status.
    pub status: BTreeMap<u16, u64>,
    /// Connect and request failures: no status at all.
    pub errors: u64,
    pub connect_errors: u64,
    pub request_errors: u64,
    /// Answers that are not 2xx, plus `errors`.
    pub failed: u64,
    pub first_error: Option<String>,
    pub latency_ms: LatencyMs,
    pub bytes_received: u64,
    /// Open loop: due requests that no connection was free to send before the end.
    pub unsent: Option<u64>,
}

impl Totals {
    pub fn of(counts: &Tally, seconds: f64, unsent: Option<u64>) -> Totals {
        let requests = counts.requests();
        let not_2xx: u64 = counts.status.iter().filter(|(code, _)| !(200..300).contains(*code)).map(|(_, n)| n).sum();
        Totals {
            requests,
            seconds,
            requests_per_sec: if seconds > 0.0 { requests as f64 / seconds } else { 0.0 },
            status: counts.status.clone(),
            errors: counts.errors(),
            connect_errors: counts.connect_errors,
            request_errors: counts.request_errors,
            failed: not_2xx + counts.errors(),
            first_error: counts.first_error.clone(),
            latency_ms: LatencyMs::of(&counts.latency),
            bytes_received: counts.bytes_received,
            unsent,
        }
    }

    /// Failed share of everything attempted (answers and failures).
    pub fn failed_ratio(&self) -> f64 {
        let attempts = self.requests + self.errors;
        if attempts == 0 {
            0.0
        } else {
            self.failed as f64 / attempts as f64
        }
    }
}

/// What decides whether a ramp step held: the latency objective and the failures tolerated.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Objective {
    pub slo_ms: f64,
    /// The largest share of failed requests (non-2xx or no answer) a step may have and still hold.
    pub max_failed_ratio: f64,
}

/// One rate of a ramp.
#[derive(Debug, Clone, Serialize)]
pub struct StepSummary {
    pub rate: f64,
    #[serde(flatten)]
    pub totals: Totals,
    /// p99 within the SLO, failures within the tolerance, and every due request sent.
    pub held: bool,
    /// Why it did not hold, or "held".
    pub verdict: String,
}

impl StepSummary {
    pub fn judge(rate: f64, totals: Totals, objective: Objective) -> StepSummary {
        let verdict = match totals.latency_ms.p99 {
            _ if totals.requests == 0 => "no answers".to_string(),
            Some(p99) if p99 > objective.slo_ms => format!("p99 {p99:.3} ms over the {} ms SLO", objective.slo_ms),
            _ if totals.failed_ratio() > objective.max_failed_ratio => {
                format!("{:.2} % failed", 100.0 * totals.failed_ratio())
            }
            _ if totals.unsent.unwrap_or(0) > 0 => {
                format!("{} due requests unsent (raise --concurrency)", totals.unsent.unwrap_or(0))
            }
            _ => "held".to_string(),
        };
        StepSummary { rate, held: verdict == "held", verdict, totals }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RampSummary {
    pub from: f64,
    pub to: f64,
    pub step: f64,
    pub slo_ms: f64,
    pub max_failed_ratio: f64,
    pub steps: Vec<StepSummary>,
    /// The highest rate such that it and every rate below it held; None if the first did not.
    pub tipping_point: Option<TippingPoint>,
    /// Rates of the plan not run: the ramp stops at the first step that does not hold.
    pub not_run: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TippingPoint {
    pub step: usize,
    pub rate: f64,
    pub requests_per_sec: f64,
    pub p99_ms: Option<f64>,
}

impl RampSummary {
    pub fn new(plan: &[f64], step: f64, objective: Objective, steps: Vec<StepSummary>) -> RampSummary {
        let held = steps.iter().take_while(|s| s.held).count();
        let tipping_point = held.checked_sub(1).map(|index| TippingPoint {
            step: index,
            rate: steps[index].rate,
            requests_per_sec: steps[index].totals.requests_per_sec,
            p99_ms: steps[index].totals.latency_ms.p99,
        });
        RampSummary {
            from: plan.first().copied().unwrap_or(0.0),
            to: plan.last().copied().unwrap_or(0.0),
            step,
            slo_ms: objective.slo_ms,
            max_failed_ratio: objective.max_failed_ratio,
            not_run: plan[steps.len().min(plan.len())..].to_vec(),
            steps,
            tipping_point,
        }
    }
}

/// Everything `--json` prints. The fields of the old flat summary (requests, requests_per_sec,
/// status, errors, latency_ms, rate, unsent, ...) keep their names and meanings for the scripts.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// "closed", "open" or "ramp".
    pub mode: &'static str,
    pub method: String,
    pub url: String,
    pub concurrency: usize,
    pub warmup_s: f64,
    pub slo_ms: f64,
    /// The whole measurement; in ramp mode all steps together.
    #[serde(flatten)]
    pub totals: Totals,
    /// Open loop: the rate asked for.
    pub rate: Option<f64>,
    pub windows: Vec<WindowSummary>,
    pub ramp: Option<RampSummary>,
}

impl Summary {
    /// A run at one pacing.
    pub fn single(config: &LoadConfig, report: &LoadReport, slo_ms: f64) -> Summary {
        let (mode, rate) = match config.pacing {
            Pacing::ClosedLoop => ("closed", None),
            Pacing::OpenLoop { requests_per_sec } => ("open", Some(requests_per_sec)),
        };
        Summary {
            mode,
            method: config.method.to_string(),
            url: config.target.url(),
            concurrency: config.concurrency,
            warmup_s: config.warmup.as_secs_f64(),
            slo_ms,
            totals: Totals::of(&report.counts, report.seconds, report.unsent),
            rate,
            windows: windows_of(&report.series, report.seconds, 0.0, None),
            ramp: None,
        }
    }

    /// A ramp: `all` is every step's counts merged, `windows` theirs back to back.
    pub fn ramp(config: &LoadConfig, all: &Tally, windows: Vec<WindowSummary>, ramp: RampSummary) -> Summary {
        let seconds = ramp.steps.iter().map(|s| s.totals.seconds).sum();
        let unsent = ramp.steps.iter().map(|s| s.totals.unsent.unwrap_or(0)).sum();
        Summary {
            mode: "ramp",
            method: config.method.to_string(),
            url: config.target.url(),
            concurrency: config.concurrency,
            warmup_s: config.warmup.as_secs_f64(),
            slo_ms: ramp.slo_ms,
            totals: Totals::of(all, seconds, Some(unsent)),
            rate: None,
            windows,
            ramp: Some(ramp),
        }
    }

    pub fn text(&self) -> String {
        let totals = &self.totals;
        let mode = match (self.mode, self.rate) {
            ("closed", _) => format!("closed loop, {} connections", self.concurrency),
            (_, Some(rate)) => format!("open loop, {rate} req/s, up to {} in flight", self.concurrency),
            _ => format!("ramp, open loop, up to {} in flight", self.concurrency),
        };
        let mut text = format!("{} {}\n", self.method, self.url);
        text += &format!("mode        {mode}, {:.1} s warm-up\n", self.warmup_s);
        if let Some(ramp) = &self.ramp {
            text += &format!(
                "step        {:>9} {:>10} {:>9} {:>9} {:>9} {:>7}  verdict\n",
                "rate", "req/s", "p50 ms", "p99 ms", "max ms", "failed"
            );
            let show = |ms: Option<f64>| ms.map_or("-".to_string(), |ms| format!("{ms:.3}"));
            for (index, step) in ramp.steps.iter().enumerate() {
                let t = &step.totals;
                text += &format!(
                    "{:<11} {:>9} {:>10.1} {:>9} {:>9} {:>9} {:>7}  {}\n",
                    index + 1,
                    step.rate,
                    t.requests_per_sec,
                    show(t.latency_ms.p50),
                    show(t.latency_ms.p99),
                    show(t.latency_ms.max),
                    t.failed,
                    step.verdict
                );
            }
            text += &match &ramp.tipping_point {
                Some(tip) => format!(
                    "tipping     {} req/s offered ({:.1} answered/s, p99 {} ms) is the highest rate with p99 under {} ms\n",
                    tip.rate,
                    tip.requests_per_sec,
                    show(tip.p99_ms),
                    ramp.slo_ms
                ),
                None => format!("tipping     none: the first rate did not hold p99 under {} ms\n", ramp.slo_ms),
            };
            text += "all steps\n";
        }
        text += &format!(
            "requests    {} in {:.2} s = {:.1} req/s\n",
            totals.requests, totals.seconds, totals.requests_per_sec
        );
        let status: Vec<String> = totals.status.iter().map(|(code, count)| format!("{code}: {count}")).collect();
        text += &format!("status      {}\n", if status.is_empty() { "-".to_string() } else { status.join(", ") });
        text += &format!(
            "errors      {} (connect {}, request {})\n",
            totals.errors, totals.connect_errors, totals.request_errors
        );
        if let Some(error) = &totals.first_error {
            text += &format!("first error {error}\n");
        }
        if let Some(hint) = same_refusal_hint(totals) {
            text += &format!("note        {hint}\n");
        }
        let latency = &totals.latency_ms;
        let show = |ms: Option<f64>| ms.map_or("-".to_string(), |ms| format!("{ms:.3}"));
        text += &format!(
            "latency ms  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}\n",
            show(latency.p50),
            show(latency.p90),
            show(latency.p99),
            show(latency.p999),
            show(latency.max),
            show(latency.mean),
        );
        let mib = totals.bytes_received as f64 / (1024.0 * 1024.0);
        text += &format!("received    {} body bytes ({mib:.1} MiB)\n", totals.bytes_received);
        if let Some(unsent) = totals.unsent.filter(|&unsent| unsent > 0) {
            text += &format!("unsent      {unsent} due requests found no free connection: raise --concurrency\n");
        }
        text
    }
}

pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// When every answer of a run is one and the same 4xx, the run measured nothing but that
/// refusal: said at the end, with the usual cause.
fn same_refusal_hint(totals: &Totals) -> Option<String> {
    let mut codes = totals.status.iter().filter(|(_, &count)| count > 0);
    let (&code, _) = codes.next()?;
    if codes.next().is_some() || !(400..500).contains(&code) {
        return None;
    }
    let cause = match code {
        404 => "the URL probably lacks the path, e.g. http://HOST:PORT/v1/resize?width=512",
        401 => "no API key, or an unknown one: give --key",
        403 => "the key is revoked or its tenant suspended",
        405 => "the method does not fit the route: resizing is --method POST",
        413 => "the bodies are over the tenant's byte limit",
        415 | 422 => "the bodies are not images the service reads",
        429 => "the tenant's rate limit: lower --rate or raise the tenant's limit",
        _ => "every request was refused; see the first answers' problem details",
    };
    Some(format!("every answer was {code}: {cause}"))
}
