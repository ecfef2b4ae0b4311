//! # promtext
//!
//! Prometheus metrics in the text exposition format, written by hand: every role (api node,
//! worker) has a handful of labelled histograms and counters, which do not need a metrics
//! framework. Observations take one short lock per family; label sets are few and fixed
//! (routes, statuses, lanes, outcomes), so each family's map stays small.
//!
//! It owns only the format. It must not decide what is measured: each role names its metrics.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Latency buckets in seconds: from a sub-millisecond queue hop to the 10 s default deadline.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Histograms keyed by their label values.
#[derive(Default)]
pub struct Family {
    series: Mutex<BTreeMap<Vec<String>, Histogram>>,
}

#[derive(Clone)]
struct Histogram {
    /// Per bucket (not cumulative); the last slot is +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram { counts: vec![0; LATENCY_BUCKETS.len() + 1], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, seconds: f64) {
        let slot = LATENCY_BUCKETS.iter().position(|&le| seconds <= le).unwrap_or(LATENCY_BUCKETS.len());
        self.counts[slot] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

impl Family {
    pub fn observe(&self, labels: &[&str], value: Duration) {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let key: Vec<String> = labels.iter().map(|s| (*s).to_owned()).collect();
        series.entry(key).or_insert_with(Histogram::new).observe(value.as_secs_f64());
    }

    pub fn render(&self, out: &mut String, name: &str, help: &str, label_names: &[&str]) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for (values, h) in series {
            let labels = label_pairs(label_names, &values);
            let mut cumulative = 0;
            for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
                cumulative += h.counts[i];
                let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {cumulative}");
            }
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", h.count);
            let trimmed = labels.trim_end_matches(',');
            let _ = writeln!(out, "{name}_sum{{{trimmed}}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{{trimmed}}} {}", h.count);
        }
    }
}

/// Counters keyed by their label values.
#[derive(Default)]
pub struct Counters {
    series: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl Counters {
    pub fn add(&self, labels: &[&str], n: u64) {
        let key: Vec<String> = labels.iter().map(|s| (*s).to_owned()).collect();
        *self.series.lock().unwrap_or_else(PoisonError::into_inner).entry(key).or_default() += n;
    }

    pub fn get(&self, labels: &[&str]) -> u64 {
        let key: Vec<String> = labels.iter().map(|s| (*s).to_owned()).collect();
        self.series.lock().unwrap_or_else(PoisonError::into_inner).get(&key).copied().unwrap_or(0)
    }

    pub fn render(&self, out: &mut String, name: &str, help: &str, label_names: &[&str]) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (values, n) in self.series.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            let labels = label_pairs(label_names, values);
            let _ = writeln!(out, "{name}{{{}}} {n}", labels.trim_end_matches(','));
        }
    }
}

/// `a="x",b="y",` (the trailing comma lets a histogram append `le`).
fn label_pairs(names: &[&str], values: &[String]) -> String {
    names.iter().zip(values).map(|(n, v)| format!("{n}=\"{}\",", escape(v))).collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

pub fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_counters_labelled() {
        let f = Family::default();
        f.observe(&["a"], Duration::from_millis(3));
        f.observe(&["a"], Duration::from_millis(30));
        let mut out = String::new();
        f.render(&mut out, "t_seconds", "help", &["lane"]);
        assert!(out.contains(r#"t_seconds_bucket{lane="a",le="0.005"} 1"#), "{out}");
        assert!(out.contains(r#"t_seconds_bucket{lane="a",le="0.05"} 2"#), "{out}");
        assert!(out.contains(r#"t_seconds_count{lane="a"} 2"#), "{out}");
        let c = Counters::default();
        c.add(&["x\"y"], 2);
        c.add(&["x\"y"], 1);
        let mut out = String::new();
        c.render(&mut out, "c_total", "help", &["k"]);
        assert!(out.contains(r#"c_total{k="x\"y"} 3"#), "{out}");
        assert_eq!(c.get(&["x\"y"]), 3);
    }
}
