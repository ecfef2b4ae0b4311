//! `resizer loadtest` against the real `resizer dev`: the JSON's counts add up (steps, windows,
//! statuses), the tipping point agrees with the per-step p99s, and the HTML report is one
//! self-contained file showing the same numbers.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{ensure, Context};
use common::{png, write, DevServer, TempDir, BIN};
use serde_json::{json, Value};

/// A folder of small PNGs (different sizes, so bodies differ) for `--images`.
fn images(dir: &TempDir) -> std::path::PathBuf {
    let folder = dir.0.join("images");
    std::fs::create_dir_all(&folder).expect("images folder");
    for (index, (width, height)) in [(64, 48), (80, 60), (40, 90)].into_iter().enumerate() {
        write(&folder.join(format!("image {index}.png")), &png(width, height));
    }
    folder
}

/// Runs `resizer loadtest ARGS --json`, returning its JSON; fails with its stderr if it fails.
fn loadtest(args: &[&str]) -> anyhow::Result<Value> {
    let output = Command::new(BIN).arg("loadtest").args(args).arg("--json").output().context("run resizer loadtest")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success(), "loadtest failed: {}\n{stderr}", output.status);
    serde_json::from_slice(&output.stdout).with_context(|| format!("stdout is not JSON; stderr:\n{stderr}"))
}

fn u64_of(value: &Value) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("not a count: {value}"))
}

/// Status counts of a JSON object's `status` field.
fn statuses(value: &Value) -> BTreeMap<String, u64> {
    value["status"].as_object().expect("status object").iter().map(|(k, v)| (k.clone(), u64_of(v))).collect()
}

fn add(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (code, count) in from {
        *into.entry(code).or_default() += count;
    }
}

/// The report is one file that needs nothing else: no scripts, no stylesheets or images fetched.
fn assert_self_contained(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..html.len().min(200)]);
    let lower = html.to_ascii_lowercase();
    for attribute in ["src=", "href=", "xlink:href", "@import", "url("] {
        assert!(!lower.contains(attribute), "the report refers to something outside it: {attribute}");
    }
    assert!(!lower.contains("<script"), "the report has a script");
    assert!(!lower.contains("<link"), "the report links a resource");
    assert!(lower.matches("<svg").count() >= 3, "fewer than three charts");
}

fn ms(value: &Value) -> String {
    format!("{:.3}", value.as_f64().unwrap_or_else(|| panic!("not a number: {value}")))
}

#[test]
fn a_ramp_reports_each_step_and_its_tipping_point_in_json_and_html() -> anyhow::Result<()> {
    let server = DevServer::start(&["limits.rate_per_sec=1000000", "limits.burst=1000000"])?;
    let images = images(&server.dir);
    let report = server.dir.0.join("ramp.html");
    let url = format!("{}/v1/resize?width=32", server.api_url);
    let json = loadtest(&[
        "--url",
        &url,
        "--key",
        &server.demo_key,
        "--images",
        images.to_str().context("path")?,
        "--ramp",
        "20:60:20",
        "--duration",
        "1s",
        "--warmup",
        "300ms",
        "--concurrency",
        "8",
        "--report",
        report.to_str().context("path")?,
    ])?;

    assert_eq!(json["mode"], "ramp");
    let ramp = &json["ramp"];
    let steps = ramp["steps"].as_array().context("steps")?;
    assert_eq!(steps.iter().map(|s| s["rate"].as_f64()).collect::<Vec<_>>(), [Some(20.0), Some(40.0), Some(60.0)]);
    let requests = u64_of(&json["requests"]);
    // At 20-60 req/s for a second each, every request is answered, all 200.
    assert!(requests >= 100, "{json}");
    assert_eq!(statuses(&json), BTreeMap::from([("200".to_string(), requests)]));
    assert_eq!((u64_of(&json["errors"]), u64_of(&json["failed"])), (0, 0));

    // Steps add up to the whole; each step's windows add up to the step; statuses likewise.
    let windows = json["windows"].as_array().context("windows")?;
    let mut step_statuses = BTreeMap::new();
    let mut window_statuses = BTreeMap::new();
    for (index, step) in steps.iter().enumerate() {
        let step_requests = u64_of(&step["requests"]);
        assert_eq!(statuses(step).values().sum::<u64>(), step_requests);
        let in_windows: Vec<&Value> = windows.iter().filter(|w| w["step"] == json!(index)).collect();
        assert_eq!(in_windows.iter().map(|w| u64_of(&w["requests"])).sum::<u64>(), step_requests, "step {index}");
        // Open loop at rate r for 1 s: about r answers (plus the warm-up's stragglers).
        let rate = step["rate"].as_f64().context("rate")?;
        assert!((step_requests as f64) <= rate * 1.0 + 8.0 && step_requests as f64 >= rate * 0.7, "{step}");
        add(&mut step_statuses, statuses(step));
        for window in in_windows {
            add(&mut window_statuses, statuses(window));
        }
    }
    assert_eq!(step_statuses, statuses(&json));
    assert_eq!(window_statuses, statuses(&json));
    assert_eq!(windows.iter().map(|w| u64_of(&w["requests"])).sum::<u64>(), requests);

    // The tipping point is the last step of the run of steps that held, and they held by their p99.
    let slo = json["slo_ms"].as_f64().context("slo")?;
    assert_eq!(slo, 500.0);
    let held = steps.iter().take_while(|s| s["held"] == json!(true)).count();
    for step in &steps[..held] {
        assert!(step["latency_ms"]["p99"].as_f64().is_some_and(|p99| p99 <= slo), "{step}");
    }
    assert_eq!(held, 3, "tiny images at 60 req/s must hold a 500 ms p99: {json}");
    let tip = &ramp["tipping_point"];
    assert_eq!(tip["rate"], json!(60.0));
    assert_eq!(tip["step"], json!(2));
    assert_eq!(tip["p99_ms"], steps[2]["latency_ms"]["p99"]);

    // The report: self-contained, with the JSON's numbers in the same units.
    let html = std::fs::read_to_string(&report)?;
    assert_self_contained(&html);
    assert!(html.contains("Highest rate holding p99 ≤ 500 ms: <b>60 req/s</b>"), "no tipping point in the report");
    assert!(html.contains(&format!("<td>{requests}</td>")), "total requests {requests} not in the report");
    assert!(html.contains(&format!("<td>{:.1}</td>", json["requests_per_sec"].as_f64().unwrap_or(-1.0))));
    assert!(html.contains(&format!("<tr><td>200</td><td>{requests}</td>")), "status table");
    for (index, step) in steps.iter().enumerate() {
        let row = format!(
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            index + 1,
            step["rate"].as_f64().unwrap_or(-1.0),
            step["requests_per_sec"].as_f64().unwrap_or(-1.0),
            u64_of(&step["requests"]),
            ms(&step["latency_ms"]["p50"]),
            ms(&step["latency_ms"]["p90"]),
            ms(&step["latency_ms"]["p99"]),
            ms(&step["latency_ms"]["max"]),
        );
        assert!(html.contains(&row), "step row {row} not in the report");
    }
    for key in ["p50", "p99", "max"] {
        assert!(html.contains(&ms(&json["latency_ms"][key])), "{key} not in the report");
    }
    assert!(html.contains("p99 latency by offered rate"), "no rate → p99 chart");
    Ok(())
}

#[test]
fn a_ramp_whose_first_step_misses_the_slo_has_no_tipping_point_and_stops() -> anyhow::Result<()> {
    let server = DevServer::start(&["limits.rate_per_sec=1000000", "limits.burst=1000000"])?;
    let images = images(&server.dir);
    let url = format!("{}/v1/resize?width=32", server.api_url);
    // No resize answers within a microsecond: the first step does not hold.
    let json = loadtest(&[
        "--url",
        &url,
        "--key",
        &server.demo_key,
        "--images",
        images.to_str().context("path")?,
        "--ramp",
        "10:30:10",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--slo",
        "0.001ms",
    ])?;
    let ramp = &json["ramp"];
    assert_eq!(ramp["steps"].as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(ramp["steps"][0]["held"], json!(false));
    assert!(ramp["steps"][0]["verdict"].as_str().is_some_and(|v| v.starts_with("p99 ")), "{json}");
    assert!(ramp["tipping_point"].is_null());
    assert_eq!(ramp["not_run"], json!([20.0, 30.0]));
    Ok(())
}

#[test]
fn refusals_are_counted_by_status_over_time_and_in_the_report() -> anyhow::Result<()> {
    let server = DevServer::start(&[])?;
    // Two requests a second allowed: nearly everything else is a 429.
    let (_, key) = server.tenant_with_key("limited", json!({ "rate_per_sec": 2, "burst": 2 }));
    let images = images(&server.dir);
    let report = server.dir.0.join("closed.html");
    let url = format!("{}/v1/resize?width=32", server.api_url);
    let json = loadtest(&[
        "--url",
        &url,
        "--key",
        &key,
        "--images",
        images.to_str().context("path")?,
        "--concurrency",
        "2",
        "--duration",
        "2",
        "--warmup",
        "0.5",
        "--report",
        report.to_str().context("path")?,
    ])?;
    assert_eq!(json["mode"], "closed");
    let status = statuses(&json);
    let (ok, refused) = (status.get("200").copied().unwrap_or(0), status.get("429").copied().unwrap_or(0));
    assert!((1..=8).contains(&ok), "{json}");
    assert!(refused > 10 * ok, "{json}");
    assert_eq!(ok + refused, u64_of(&json["requests"]), "{json}");
    assert_eq!(u64_of(&json["failed"]), refused);
    let windows = json["windows"].as_array().context("windows")?;
    assert_eq!(windows.len(), 2, "{json}");
    let mut window_statuses = BTreeMap::new();
    for window in windows {
        add(&mut window_statuses, statuses(window));
    }
    assert_eq!(window_statuses, status);

    let html = std::fs::read_to_string(&report)?;
    assert_self_contained(&html);
    assert!(html.contains(&format!("<tr><td>429</td><td>{refused}</td>")), "429 count not in the status table");
    assert!(html.contains("429/s"), "no 429 series in the errors chart");
    assert!(!html.contains("Tipping point"), "a closed-loop run has no ramp");
    Ok(())
}

/// A server that answers before it has read the body and closes (here: 404 for a URL without
/// the path, bodies of 4 MB) makes the next write fail with EPIPE. The load tool counts that
/// as an error and goes on: it used to die of SIGPIPE, silently, with status 141 and no report.
/// When every answer is the same 4xx, the text report says so with a hint.
#[test]
fn a_server_answering_before_the_body_is_read_is_counted_not_fatal() -> anyhow::Result<()> {
    let server = DevServer::start(&[])?;
    let dir = TempDir::new();
    let body = dir.0.join("big.bin");
    // Not an image, and large: the 404 comes long before the body could have been read.
    write(&body, &vec![0x5a; 4 << 20]);
    let body = body.display().to_string();
    for _ in 0..3 {
        let output = Command::new(BIN)
            .args(["loadtest", "--url", &server.api_url, "--body", &body, "--rate", "10", "--duration", "2"])
            .output()
            .context("run resizer loadtest")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(output.status.success(), "loadtest ended with {}:\n{stdout}\n{stderr}", output.status);
        ensure!(stdout.contains("status      404: "), "no report of the 404s:\n{stdout}\n{stderr}");
        ensure!(stdout.contains("every answer was 404") && stdout.contains("/v1/resize?"), "no hint:\n{stdout}");
    }
    Ok(())
}
