//! Prometheus (Debian's `prometheus` package) scraping the lab's components: its configuration
//! written to `DIR/prometheus/prometheus.yml` with the rule files the caller gives, its TSDB in
//! `DIR/prometheus/data`, its web API on a free loopback port. Never the system service: the
//! binary is started directly, as a component of the lab like any other (`down` stops it).
//!
//! What it scrapes is the caller's choice of roles, each mapped to a job name: every component
//! of such a role with a `metrics` URL in cluster.json becomes a target labelled
//! `component="<name>"`. An `https` target is checked against the lab's CA.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::binaries;
use crate::error::{LabError, MissingBinary, Result};
use crate::net::LOOPBACK;
use crate::process::{Component, ProcessSpec};

/// The Prometheus server program and its Debian package (Debian 12 ships 2.42).
pub const PROMETHEUS: MissingBinary = MissingBinary { program: "prometheus", package: "prometheus" };

/// The role (and name) of the Prometheus component.
pub const PROMETHEUS_ROLE: &str = "prometheus";

/// cluster.json's field holding Prometheus's URL (`http://127.0.0.1:<port>`).
pub const PROMETHEUS_URL_FIELD: &str = "prometheus_url";

/// A rule file Prometheus loads: written as `DIR/prometheus/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFile {
    pub name: String,
    pub text: String,
}

/// How the lab's Prometheus runs.
#[derive(Debug, Clone)]
pub struct PrometheusOptions {
    /// `prometheus` to run; found on PATH or in the system directories when `None`.
    pub binary: Option<PathBuf>,
    /// Scrape interval (and timeout) of every target.
    pub scrape_interval: Duration,
    /// How often rule groups without an `interval` of their own are evaluated.
    pub evaluation_interval: Duration,
    /// Roles to scrape, each with its job name: `("api", "resizer-api")`.
    pub jobs: Vec<(String, String)>,
    pub rule_files: Vec<RuleFile>,
    /// Killed with the thread that started it (tests).
    pub die_with_parent: bool,
}

impl Default for PrometheusOptions {
    fn default() -> Self {
        PrometheusOptions {
            binary: None,
            scrape_interval: Duration::from_secs(1),
            evaluation_interval: Duration::from_secs(1),
            jobs: Vec::new(),
            rule_files: Vec::new(),
            die_with_parent: false,
        }
    }
}

/// One scrape target: a component's metrics URL under a job.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    job: String,
    component: String,
    scheme: String,
    /// `host:port`
    address: String,
    path: String,
}

fn target_of(job: &str, component: &Component) -> Result<Option<Target>> {
    let Some(url) = component.url("metrics") else { return Ok(None) };
    let invalid = || LabError::Invalid(format!("{}: unusable metrics URL {url:?}", component.name));
    let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
    let (address, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    if address.is_empty() || !matches!(scheme, "http" | "https") {
        return Err(invalid());
    }
    Ok(Some(Target {
        job: job.to_owned(),
        component: component.name.clone(),
        scheme: scheme.to_owned(),
        address: address.to_owned(),
        path: path.to_owned(),
    }))
}

/// A YAML string: JSON's double-quoted form is one.
fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

fn seconds(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// prometheus.yml for `components` (those of the roles in `opts.jobs` with a metrics URL), one
/// scrape config per job; `ca_file` is what `https` targets are checked against.
pub fn render_config(components: &[Component], ca_file: Option<&Path>, opts: &PrometheusOptions) -> Result<String> {
    let mut out = String::new();
    out.push_str("# Written by `resizer lab up --prometheus`; the lab's own Prometheus.\n");
    out.push_str("global:\n");
    out.push_str(&format!("  scrape_interval: {}\n", seconds(opts.scrape_interval)));
    out.push_str(&format!("  scrape_timeout: {}\n", seconds(opts.scrape_interval)));
    out.push_str(&format!("  evaluation_interval: {}\n", seconds(opts.evaluation_interval)));
    out.push_str("  external_labels:\n    cluster: resizer-lab\n");
    if !opts.rule_files.is_empty() {
        out.push_str("rule_files:\n");
        for rules in &opts.rule_files {
            out.push_str(&format!("  - {}\n", quoted(&rules.name)));
        }
    }
    out.push_str("scrape_configs:\n");
    for (role, job) in &opts.jobs {
        let targets: Vec<Target> = components
            .iter()
            .filter(|c| &c.role == role)
            .filter_map(|c| target_of(job, c).transpose())
            .collect::<Result<_>>()?;
        let Some(first) = targets.first() else { continue };
        if let Some(other) = targets.iter().find(|t| t.scheme != first.scheme || t.path != first.path) {
            return Err(LabError::Invalid(format!(
                "job {job}: {} and {} serve metrics differently ({}://…{} against {}://…{})",
                first.component, other.component, first.scheme, first.path, other.scheme, other.path
            )));
        }
        out.push_str(&format!("  - job_name: {}\n", quoted(job)));
        out.push_str(&format!("    scheme: {}\n", first.scheme));
        out.push_str(&format!("    metrics_path: {}\n", quoted(&first.path)));
        if first.scheme == "https" {
            let ca = ca_file
                .ok_or_else(|| LabError::Invalid(format!("job {job} is scraped over https but the lab has no CA")))?;
            out.push_str(&format!("    tls_config:\n      ca_file: {}\n", quoted(&ca.display().to_string())));
        }
        out.push_str("    static_configs:\n");
        for t in &targets {
            out.push_str(&format!(
                "      - targets: [{}]\n        labels:\n          component: {}\n",
                quoted(&t.address),
                quoted(&t.component)
            ));
        }
    }
    Ok(out)
}

/// `text` (a Prometheus rule file) with every `for:` and rule group `interval:` divided by
/// `divisor` (rounded down to whole seconds, at least 1 s): the lab scrapes every second where a
/// deployment scrapes every 15, and its alerts fire in proportion. Expressions are untouched.
pub fn scale_rule_durations(text: &str, divisor: u32) -> Result<String> {
    if divisor == 0 {
        return Err(LabError::Invalid("a rule duration divisor of 0".into()));
    }
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let scaled = ["for:", "interval:"].iter().find_map(|key| {
            let value = trimmed.strip_prefix(key)?.trim();
            let seconds = parse_duration(value)?;
            let scaled = (seconds / u64::from(divisor)).max(1);
            Some(format!("{indent}{key} {scaled}s"))
        });
        match scaled {
            Some(line) => out.push_str(&line),
            None if ["for:", "interval:"].iter().any(|k| trimmed.starts_with(k)) => {
                return Err(LabError::Invalid(format!("a rule duration the lab cannot scale: {line:?}")));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    Ok(out)
}

/// A Prometheus duration of one unit (`90s`, `2m`, `1h`) in seconds.
fn parse_duration(value: &str) -> Option<u64> {
    let unit = value.chars().last()?;
    let number: u64 = value[..value.len() - unit.len_utf8()].parse().ok()?;
    match unit {
        's' => Some(number),
        'm' => Some(number * 60),
        'h' => Some(number * 3600),
        'd' => Some(number * 86_400),
        _ => None,
    }
}

/// What [`start`] started: the component and its URL.
#[derive(Debug, Clone)]
pub struct PrometheusStart {
    pub spec: ProcessSpec,
    pub url: String,
}

/// Write DIR/prometheus (config, rule files; the TSDB goes in `data` there) and the process to
/// start, listening on a free loopback port. The caller starts and records it
/// ([`crate::Infrastructure::add_prometheus`]).
pub(crate) fn prepare(
    dir: &Path,
    components: &[Component],
    ca_file: Option<&Path>,
    opts: &PrometheusOptions,
) -> Result<PrometheusStart> {
    let binary = binaries::resolve(PROMETHEUS, opts.binary.as_deref())?;
    let own_dir = dir.join(PROMETHEUS_ROLE);
    let data = own_dir.join("data");
    std::fs::create_dir_all(&data).map_err(|e| LabError::io("create", &data, e))?;
    for rules in &opts.rule_files {
        if rules.name.contains('/') || rules.name.starts_with('.') || rules.name == "prometheus.yml" {
            return Err(LabError::Invalid(format!("unusable rule file name {:?}", rules.name)));
        }
        let path = own_dir.join(&rules.name);
        crate::cluster::write_atomic(&path, rules.text.as_bytes(), 0o644)?;
    }
    let config = own_dir.join("prometheus.yml");
    crate::cluster::write_atomic(&config, render_config(components, ca_file, opts)?.as_bytes(), 0o644)?;
    let port = crate::net::free_port()?;
    let url = format!("http://{LOOPBACK}:{port}");
    let spec = ProcessSpec::new(PROMETHEUS_ROLE, PROMETHEUS_ROLE, &binary)
        .args([
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", data.display()),
            "--storage.tsdb.retention.time=2d".to_owned(),
            format!("--web.listen-address={LOOPBACK}:{port}"),
            "--log.format=json".to_owned(),
        ])
        .cwd(&own_dir)
        .url("http", &url)
        .health(format!("{url}/-/ready"))
        .extra("config", config.display().to_string())
        .die_with_parent(opts.die_with_parent);
    Ok(PrometheusStart { spec, url })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(role: &str, name: &str, metrics: Option<&str>) -> Component {
        let mut spec = ProcessSpec::new(role, name, "/bin/true");
        if let Some(url) = metrics {
            spec = spec.url("metrics", url);
        }
        Component {
            role: spec.role,
            name: spec.name,
            pid: 0,
            start_time: 0,
            urls: spec.urls,
            health: None,
            log: PathBuf::new(),
            program: spec.program,
            args: Vec::new(),
            env: Default::default(),
            cwd: PathBuf::new(),
            extra: Default::default(),
            netns: None,
        }
    }

    #[test]
    fn the_config_has_a_job_per_role_and_a_target_per_component() {
        let components = [
            component("api", "api-0", Some("https://127.0.0.1:1001/metrics")),
            component("api", "api-1", Some("https://10.99.0.3:1002/metrics")),
            component("worker", "worker-0", Some("http://127.0.0.1:1003/metrics")),
            component("nats", "nats-0", None),
        ];
        let opts = PrometheusOptions {
            jobs: vec![
                ("api".into(), "resizer-api".into()),
                ("worker".into(), "resizer-worker".into()),
                ("nats".into(), "nats".into()),
            ],
            rule_files: vec![RuleFile { name: "alerts.yml".into(), text: String::new() }],
            ..Default::default()
        };
        let text = render_config(&components, Some(Path::new("/lab/tls/ca.pem")), &opts).expect("config");
        assert!(text.contains("  scrape_interval: 1000ms\n"), "{text}");
        assert!(text.contains("rule_files:\n  - \"alerts.yml\"\n"), "{text}");
        assert!(text.contains("  - job_name: \"resizer-api\"\n    scheme: https\n"), "{text}");
        assert!(text.contains("tls_config:\n      ca_file: \"/lab/tls/ca.pem\"\n"), "{text}");
        assert!(text.contains("- targets: [\"10.99.0.3:1002\"]\n        labels:\n          component: \"api-1\"\n"));
        assert!(text.contains("  - job_name: \"resizer-worker\"\n    scheme: http\n"), "{text}");
        assert!(!text.contains("job_name: \"nats\""), "no metrics URL, no job: {text}");
        assert_eq!(text.matches("tls_config").count(), 1, "{text}");

        let err = render_config(&components, None, &opts).expect_err("https without a CA");
        assert!(err.to_string().contains("no CA"), "{err}");
    }

    #[test]
    fn rule_durations_are_divided_and_nothing_else_changes() {
        let text = "groups:\n  - name: a\n    interval: 1m\n    rules:\n      - alert: X\n        expr: rate(x[5m]) > 0\n        for: 2m\n      - alert: Y\n        for: 15m\n      - alert: Z\n        for: 10s\n";
        let scaled = scale_rule_durations(text, 15).expect("scaled");
        assert_eq!(
            scaled,
            "groups:\n  - name: a\n    interval: 4s\n    rules:\n      - alert: X\n        expr: rate(x[5m]) > 0\n        for: 8s\n      - alert: Y\n        for: 60s\n      - alert: Z\n        for: 1s\n"
        );
        assert!(scale_rule_durations("    for: 1m30s\n", 15).is_err(), "a compound duration is refused, not kept");
        assert!(scale_rule_durations(text, 0).is_err());
    }

    #[test]
    fn a_missing_prometheus_names_its_debian_package() {
        let text = LabError::MissingBinaries(vec![PROMETHEUS]).to_string();
        assert!(text.contains("`prometheus` (Debian package `prometheus`)"), "{text}");
        assert!(text.ends_with("apt-get install -y prometheus"), "{text}");
    }
}
