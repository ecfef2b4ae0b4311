//! The HTML report: one self-contained file (inline CSS and SVG, no script, nothing fetched), drawn
//! only from the `Summary` that `--json` prints, with the same numbers in the same units: ms to
//! three decimals, requests/s to one, seconds to two.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::summary::{LatencyMs, Summary, Totals};
use super::svg::{escape, line_chart, Chart, Series};

const P50: &str = "#1f77b4";
const P90: &str = "#2ca02c";
const P99: &str = "#d62728";
const MAX: &str = "#7f7f7f";
const THROUGHPUT: &str = "#1f77b4";
/// One colour per error status, in turn.
const ERROR_COLOURS: [&str; 6] = ["#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:960px}\
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th{background:#f2f2f2}td.text,th.text{text-align:left}.held{color:#070}.over{color:#b00}\
.tip{font-size:1.2em;padding:8px 12px;background:#eef6ee;border-left:4px solid #070}\
.none{font-size:1.2em;padding:8px 12px;background:#fbeeee;border-left:4px solid #b00}\
figure{margin:12px 0}code{background:#f4f4f4;padding:1px 4px}";

fn ms(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |ms| format!("{ms:.3}"))
}

pub fn html(summary: &Summary) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>resizer loadtest: {}</title><style>{STYLE}</style></head><body>",
        escape(&summary.url)
    );
    let _ = write!(
        page,
        "<h1>resizer loadtest</h1><p><code>{} {}</code></p>",
        escape(&summary.method),
        escape(&summary.url)
    );
    let mode = match (summary.mode, summary.rate) {
        ("closed", _) => format!("closed loop, {} connections", summary.concurrency),
        (_, Some(rate)) => format!("open loop at {rate} req/s, up to {} in flight", summary.concurrency),
        _ => format!("ramp of open-loop rates, up to {} in flight", summary.concurrency),
    };
    let _ = write!(
        page,
        "<p>{mode}; {:.2} s warm-up{} not counted; latency objective p99 ≤ {} ms.</p>",
        summary.warmup_s,
        if summary.ramp.is_some() { " before each step" } else { "" },
        summary.slo_ms
    );

    if let Some(ramp) = &summary.ramp {
        page += "<h2>Tipping point</h2>";
        match &ramp.tipping_point {
            Some(tip) => {
                let _ = write!(
                    page,
                    "<p class=\"tip\" id=\"tipping-point\">Highest rate holding p99 ≤ {} ms: <b>{} req/s</b> offered, \
                     {:.1} answered/s, p99 {} ms.</p>",
                    ramp.slo_ms,
                    tip.rate,
                    tip.requests_per_sec,
                    ms(tip.p99_ms)
                );
            }
            None => {
                let _ = write!(
                    page,
                    "<p class=\"none\" id=\"tipping-point\">None: the first rate, {} req/s, did not hold p99 ≤ {} ms.</p>",
                    ramp.from, ramp.slo_ms
                );
            }
        }
        let _ = write!(
            page,
            "<p>Plan {}:{}:{} req/s; a step holds with p99 ≤ {} ms, at most {} % failed and every due request sent. \
             The ramp stops after the first step that does not hold{}.</p>",
            ramp.from,
            ramp.to,
            ramp.step,
            ramp.slo_ms,
            ramp.max_failed_ratio * 100.0,
            if ramp.not_run.is_empty() {
                String::new()
            } else {
                format!(" (not run: {})", ramp.not_run.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "))
            }
        );
        page += "<table id=\"steps\"><tr><th>step</th><th>offered req/s</th><th>answered req/s</th><th>requests</th>\
                 <th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>max ms</th><th>failed</th><th>unsent</th><th class=\"text\">verdict</th></tr>";
        for (index, step) in ramp.steps.iter().enumerate() {
            let t = &step.totals;
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"text {}\">{}</td></tr>",
                index + 1,
                step.rate,
                t.requests_per_sec,
                t.requests,
                ms(t.latency_ms.p50),
                ms(t.latency_ms.p90),
                ms(t.latency_ms.p99),
                ms(t.latency_ms.max),
                t.failed,
                t.unsent.unwrap_or(0),
                if step.held { "held" } else { "over" },
                escape(&step.verdict)
            );
        }
        page += "</table>";
        let rates = |value: &dyn Fn(&Totals) -> Option<f64>| -> Vec<(f64, Option<f64>)> {
            ramp.steps.iter().map(|s| (s.rate, value(&s.totals))).collect()
        };
        let tip_marks = || -> Vec<(f64, String)> {
            ramp.tipping_point.iter().map(|tip| (tip.rate, format!("tipping point {} req/s", tip.rate))).collect()
        };
        figure(
            &mut page,
            &Chart {
                title: "p99 latency by offered rate".into(),
                x_label: "offered requests/s".into(),
                y_label: "ms".into(),
                series: vec![
                    Series { name: "p99".into(), colour: P99, points: rates(&|t| t.latency_ms.p99), dots: true },
                    Series { name: "p50".into(), colour: P50, points: rates(&|t| t.latency_ms.p50), dots: true },
                ],
                log_y: true,
                levels: vec![(ramp.slo_ms, format!("SLO {} ms", ramp.slo_ms))],
                marks: tip_marks(),
            },
        );
        figure(
            &mut page,
            &Chart {
                title: "Answered by offered rate".into(),
                x_label: "offered requests/s".into(),
                y_label: "answered requests/s".into(),
                series: vec![
                    Series {
                        name: "answered".into(),
                        colour: THROUGHPUT,
                        points: rates(&|t| Some(t.requests_per_sec)),
                        dots: true,
                    },
                    Series {
                        name: "offered".into(),
                        colour: MAX,
                        points: ramp.steps.iter().map(|s| (s.rate, Some(s.rate))).collect(),
                        dots: false,
                    },
                ],
                log_y: false,
                levels: vec![],
                marks: tip_marks(),
            },
        );
    }

    page += "<h2>Summary</h2>";
    summary_table(&mut page, &summary.totals, summary.ramp.is_some());

    page += "<h2>Over time</h2>";
    let width = summary.windows.first().map_or(1.0, |w| w.seconds);
    let _ = write!(
        page,
        "<p>Per window of {} s of measured time (by when each answer finished){}.</p>",
        trim(width),
        if summary.ramp.is_some() { "; steps back to back, warm-ups left out" } else { "" }
    );
    let marks: Vec<(f64, String)> = match &summary.ramp {
        Some(ramp) => ramp
            .steps
            .iter()
            .enumerate()
            .filter_map(|(index, step)| {
                summary.windows.iter().find(|w| w.step == Some(index)).map(|w| (w.start_s, format!("{}/s", step.rate)))
            })
            .collect(),
        None => vec![],
    };
    let over_time = |value: &dyn Fn(&super::summary::WindowSummary) -> Option<f64>| -> Vec<(f64, Option<f64>)> {
        summary.windows.iter().map(|w| (w.start_s + w.seconds / 2.0, value(w))).collect()
    };
    let mut throughput = vec![Series {
        name: "answered/s".into(),
        colour: THROUGHPUT,
        points: over_time(&|w| Some(w.requests_per_sec)),
        dots: false,
    }];
    if let Some(rate) = summary.rate {
        throughput.push(Series {
            name: "offered/s".into(),
            colour: MAX,
            points: over_time(&|_| Some(rate)),
            dots: false,
        });
    }
    figure(
        &mut page,
        &Chart {
            title: "Throughput".into(),
            x_label: "seconds".into(),
            y_label: "requests/s".into(),
            series: throughput,
            log_y: false,
            levels: vec![],
            marks: marks.clone(),
        },
    );
    figure(
        &mut page,
        &Chart {
            title: "Latency".into(),
            x_label: "seconds".into(),
            y_label: "ms (log scale)".into(),
            series: vec![
                Series { name: "p50".into(), colour: P50, points: over_time(&|w| w.latency_ms.p50), dots: false },
                Series { name: "p90".into(), colour: P90, points: over_time(&|w| w.latency_ms.p90), dots: false },
                Series { name: "p99".into(), colour: P99, points: over_time(&|w| w.latency_ms.p99), dots: false },
                Series { name: "max".into(), colour: MAX, points: over_time(&|w| w.latency_ms.max), dots: false },
            ],
            log_y: true,
            levels: vec![(summary.slo_ms, format!("SLO {} ms", summary.slo_ms))],
            marks: marks.clone(),
        },
    );

    // Errors: every status that is not 2xx, and failures without an answer.
    let error_statuses: BTreeSet<u16> = summary
        .windows
        .iter()
        .flat_map(|w| w.status.keys().copied())
        .chain(summary.totals.status.keys().copied())
        .filter(|code| !(200..300).contains(code))
        .collect();
    let mut errors: Vec<Series> = error_statuses
        .iter()
        .enumerate()
        .map(|(index, &code)| Series {
            name: format!("{code}/s"),
            colour: ERROR_COLOURS[index % ERROR_COLOURS.len()],
            points: over_time(&|w| Some(w.status.get(&code).copied().unwrap_or(0) as f64 / w.seconds)),
            dots: false,
        })
        .collect();
    errors.push(Series {
        name: "no answer/s".into(),
        colour: "#000",
        points: over_time(&|w| Some(w.errors as f64 / w.seconds)),
        dots: false,
    });
    figure(
        &mut page,
        &Chart {
            title: "Errors by status".into(),
            x_label: "seconds".into(),
            y_label: "per second".into(),
            series: errors,
            log_y: false,
            levels: vec![],
            marks,
        },
    );

    page += "<h2>Answers by status</h2><table id=\"status\"><tr><th>status</th><th>count</th><th>share</th></tr>";
    let attempts = summary.totals.requests + summary.totals.errors;
    let share = |count: u64| if attempts == 0 { 0.0 } else { 100.0 * count as f64 / attempts as f64 };
    for (code, &count) in &summary.totals.status {
        let _ = write!(page, "<tr><td>{code}</td><td>{count}</td><td>{:.2} %</td></tr>", share(count));
    }
    let _ = write!(
        page,
        "<tr><td>no answer (connect {}, request {})</td><td>{}</td><td>{:.2} %</td></tr></table>",
        summary.totals.connect_errors,
        summary.totals.request_errors,
        summary.totals.errors,
        share(summary.totals.errors)
    );
    if let Some(error) = &summary.totals.first_error {
        let _ = write!(page, "<p>First failure: <code>{}</code></p>", escape(error));
    }

    page += "<details><summary>Every window</summary><table id=\"windows\"><tr><th>start s</th><th>seconds</th>\
             <th>requests</th><th>req/s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>max ms</th><th>not 2xx</th><th>no answer</th></tr>";
    for w in &summary.windows {
        let not_2xx: u64 = w.status.iter().filter(|(code, _)| !(200..300).contains(*code)).map(|(_, n)| n).sum();
        let _ = write!(
            page,
            "<tr><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            w.start_s,
            w.seconds,
            w.requests,
            w.requests_per_sec,
            ms(w.latency_ms.p50),
            ms(w.latency_ms.p90),
            ms(w.latency_ms.p99),
            ms(w.latency_ms.max),
            not_2xx,
            w.errors
        );
    }
    page += "</table></details></body></html>\n";
    page
}

fn figure(page: &mut String, chart: &Chart) {
    *page += "<figure>";
    *page += &line_chart(chart);
    *page += "</figure>";
}

fn summary_table(page: &mut String, totals: &Totals, all_steps: bool) {
    let LatencyMs { p50, p90, p99, p999, max, mean } = &totals.latency_ms;
    let _ = write!(
        page,
        "<table id=\"summary\"><tr><th class=\"text\">{}</th><th>value</th></tr>\
         <tr><td class=\"text\">requests answered</td><td>{}</td></tr>\
         <tr><td class=\"text\">measured seconds</td><td>{:.2}</td></tr>\
         <tr><td class=\"text\">requests/s</td><td>{:.1}</td></tr>\
         <tr><td class=\"text\">failed (not 2xx or no answer)</td><td>{}</td></tr>\
         <tr><td class=\"text\">no answer</td><td>{}</td></tr>\
         <tr><td class=\"text\">unsent (no free connection)</td><td>{}</td></tr>\
         <tr><td class=\"text\">latency p50 ms</td><td>{}</td></tr>\
         <tr><td class=\"text\">latency p90 ms</td><td>{}</td></tr>\
         <tr><td class=\"text\">latency p99 ms</td><td>{}</td></tr>\
         <tr><td class=\"text\">latency p99.9 ms</td><td>{}</td></tr>\
         <tr><td class=\"text\">latency max ms</td><td>{}</td></tr>\
         <tr><td class=\"text\">latency mean ms</td><td>{}</td></tr>\
         <tr><td class=\"text\">response body bytes</td><td>{}</td></tr></table>",
        if all_steps { "all steps together" } else { "measured" },
        totals.requests,
        totals.seconds,
        totals.requests_per_sec,
        totals.failed,
        totals.errors,
        totals.unsent.map_or("-".to_string(), |u| u.to_string()),
        ms(*p50),
        ms(*p90),
        ms(*p99),
        ms(*p999),
        ms(*max),
        ms(*mean),
        totals.bytes_received
    );
}

fn trim(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}
