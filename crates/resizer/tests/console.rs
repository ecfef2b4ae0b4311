//! The web consoles (crates/console, docs/console.md) in a real browser: `resizer dev` and
//! headless Chromium (Debian's `chromium`) driven by WebDriver (Debian's `chromedriver`, package
//! `chromium-driver`) over HTTP. The tenant console must chart exactly what `GET /v1/usage`
//! answers for traffic the test sent, and its "try it" panel must get an image decoded at the
//! width asked; the operator console must create a key that works and revoke it so that the API
//! refuses it. A wrong key or token must be told in words. Each page's screenshot goes to
//! docs/images/console-*.png with `RESIZER_WRITE_SCREENSHOT=1`, else to the temporary directory.
//! Both consoles must work by keyboard alone and pass axe-core (npm, installed by
//! scripts/test.sh into target/axe) with no serious or critical violation. In a lab (`resizer
//! lab up`), the operator console at the identity service must show every api node's health.
//!
//! chromedriver runs on a free loopback port in its own process group, with Chromium's profile
//! in the test's temporary directory; the group is killed when the test ends, also on failure.

mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{png, DevServer, TempDir};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WINDOW: (u32, u32) = (1280, 1000);
/// WebDriver's key for an element reference in its answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Fails (never skips) without Chromium or its driver, saying what to install.
fn browser_programs() {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "this test needs {path}: install the Debian package `{package}` (apt-get install -y chromium chromium-driver)"
        );
    }
}

/// A chromedriver with one Chromium session. Dropping it ends the session and kills the
/// driver's process group (Chromium with it).
struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    dir: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closes Chromium cleanly when the driver still answers; the kill below does otherwise.
        let _ = self.agent.delete(format!("{}/session/{}", self.base, self.session)).call();
        let group = self.driver.id() as libc::pid_t;
        // SAFETY: kill(2) on the process group this test created has no memory-safety preconditions.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port()
}

impl Browser {
    fn start(dir: &Path, name: &str) -> Browser {
        browser_programs();
        let port = free_port();
        let log = dir.join(format!("chromedriver-{name}.log"));
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            agent,
            dir: dir.into(),
        };
        let started = Instant::now();
        loop {
            let ready = browser
                .agent
                .get(format!("{}/status", browser.base))
                .call()
                .ok()
                .and_then(|mut r| serde_json::from_slice::<Value>(&r.body_mut().read_to_vec().ok()?).ok());
            if ready.as_ref().is_some_and(|v| v["value"]["ready"] == true) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "chromedriver did not get ready within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = dir.join(format!("chromium-profile-{name}"));
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            // A lab's https uses the lab's own CA, which this profile does not know.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    "--disable-background-networking", "--disable-component-update",
                    "--hide-scrollbars", "--force-device-scale-factor=1",
                    format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let session = browser.command("POST", "/session", Some(capabilities));
        browser.session = session["sessionId"].as_str().expect("a session id").to_owned();
        browser
    }

    /// One WebDriver command; its `value`, or a failure with the driver's message.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let result = match method {
            "GET" => self.agent.get(&url).call(),
            "POST" => self
                .agent
                .post(&url)
                .content_type("application/json")
                .send(body.unwrap_or_else(|| json!({})).to_string()),
            other => panic!("no WebDriver helper for {other}"),
        };
        let mut response = result.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = response.status().as_u16();
        let bytes = response.body_mut().with_config().limit(64 << 20).read_to_vec().expect("WebDriver's answer");
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(status, 200, "WebDriver {method} {path}: {answer}");
        answer["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
    }

    fn script(&self, script: &str) -> Value {
        self.command("POST", "/execute/sync", Some(json!({ "script": script, "args": [] })))
    }

    fn find(&self, css: &str) -> String {
        let found = self.command("POST", "/element", Some(json!({ "using": "css selector", "value": css })));
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {found}")).to_owned()
    }

    fn click(&self, css: &str) {
        let element = self.find(css);
        self.command("POST", &format!("/element/{element}/click"), None);
    }

    /// Replaces a field's text with `text`, as typed.
    fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.command("POST", &format!("/element/{element}/clear"), None);
        self.command("POST", &format!("/element/{element}/value"), Some(json!({ "text": text })));
    }

    /// Waits (up to 30 s) until the JavaScript expression `condition` is true, failing with
    /// what the page shows.
    fn wait_for(&self, condition: &str, what: &str) {
        let started = Instant::now();
        loop {
            if self.script(&format!("return Boolean({condition});")) == Value::Bool(true) {
                return;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let state = self.script(
                    "return { data: Object.assign({}, document.body.dataset), error: document.getElementById('error').textContent, hash: location.hash };",
                );
                panic!("waited 30 s for {what} ({condition}); the page: {state}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Presses `keys` (WebDriver key codes: `\u{E004}` Tab, `\u{E007}` Enter, or characters)
    /// on whatever has the focus, as a keyboard would.
    fn press(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|k| {
                [
                    json!({ "type": "keyDown", "value": k.to_string() }),
                    json!({ "type": "keyUp", "value": k.to_string() }),
                ]
            })
            .collect();
        self.command(
            "POST",
            "/actions",
            Some(json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] })),
        );
    }

    /// Tabs through the page until the element `css` has the focus (at most 40 presses), failing
    /// with where the focus went: reachable by keyboard, in the page's tab order.
    fn tab_to(&self, css: &str) {
        let mut visited = Vec::new();
        for _ in 0..40 {
            let focused = self.script(&format!(
                "const a = document.activeElement; return a && a.matches({css:?}) ? true : (a ? a.outerHTML.slice(0, 80) : null);"
            ));
            if focused == Value::Bool(true) {
                return;
            }
            visited.push(focused);
            self.press(TAB);
        }
        panic!("{css} never got the focus by Tab; the focus went to: {visited:?}");
    }

    /// axe-core's serious and critical violations on the page as it is now.
    fn axe_violations(&self, axe: &str) -> Vec<Value> {
        let script = format!(
            "{axe}\n;const done = arguments[arguments.length - 1];\
             axe.run(document, {{ resultTypes: ['violations'] }}).then(r => done(r.violations\
               .filter(v => v.impact === 'serious' || v.impact === 'critical')\
               .map(v => ({{ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ')) }}))))\
             .catch(e => done([{{ error: String(e) }}]));"
        );
        let found = self.command("POST", "/execute/async", Some(json!({ "script": script, "args": [] })));
        found.as_array().cloned().unwrap_or_else(|| panic!("axe's answer: {found}"))
    }

    fn text(&self, css: &str) -> String {
        // "" for an element not (yet) on the page: callers check what it says.
        self.script(&format!("return document.querySelector({css:?})?.textContent ?? '';"))
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// The viewport as PNG, saved as docs/images/console-{name}.png when asked, else in the
    /// temporary directory.
    fn screenshot(&self, name: &str) {
        // The whole page: the window grown to the page's height (bounded), then put back.
        let height = self.script("return document.documentElement.scrollHeight;").as_u64().unwrap_or(0);
        let height = height.clamp(u64::from(WINDOW.1), 2400);
        self.command("POST", "/window/rect", Some(json!({ "width": WINDOW.0, "height": height })));
        let encoded = self.command("GET", "/screenshot", None);
        self.command("POST", "/window/rect", Some(json!({ "width": WINDOW.0, "height": WINDOW.1 })));
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("a base64 screenshot"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
        let path = if std::env::var_os("RESIZER_WRITE_SCREENSHOT").is_some_and(|v| v == "1") {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../docs/images/console-{name}.png"))
        } else {
            self.dir.join(format!("console-{name}.png"))
        };
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// Waits until the tenant's usage counts `requests` requests in the last day.
fn wait_for_usage(server: &DevServer, key: &str, requests: u64) -> Value {
    let started = Instant::now();
    loop {
        let usage = server.get_with_key("/v1/usage", key);
        assert_eq!(usage.status, 200, "{}", String::from_utf8_lossy(&usage.body));
        let json = usage.json();
        if json["total"]["requests"].as_u64() == Some(requests) {
            return json;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "usage did not reach {requests} requests: {json}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

/// What the usage view drew (totals, every bar, the status legend), against what `GET /v1/usage`
/// answers for the very query the page asked.
fn check_usage_drawn(browser: &Browser, server: &DevServer, key: &str, granularity: &str) {
    let drawn = browser.script(
        r#"const view = document.getElementById('usage-view');
           const charts = {};
           for (const f of view.querySelectorAll('figure[data-metric]')) {
             charts[f.dataset.metric] = {
               total: Number(f.dataset.total),
               slots: [...f.querySelectorAll('g.slot')].filter((g) => Number(g.dataset.value) > 0)
                 .map((g) => ({ start: g.dataset.start, value: Number(g.dataset.value),
                   statuses: Object.fromEntries([...g.querySelectorAll('rect[data-status]')].map((r) => [r.dataset.status, Number(r.dataset.value)])) })),
             };
           }
           const cards = Object.fromEntries([...view.querySelectorAll('[data-total][data-value]')].map((c) => [c.dataset.total, Number(c.dataset.value)]));
           const legend = Object.fromEntries([...view.querySelectorAll('.legend li')].map((li) => [li.dataset.status, Number(li.dataset.requests)]));
           return { query: view.dataset.query, charts, cards, legend };"#,
    );
    let query = drawn["query"].as_str().expect("the page's query");
    assert!(query.contains(&format!("granularity={granularity}")), "{query}");
    let usage = server.get_with_key(&format!("/v1/usage?{query}"), key);
    assert_eq!(usage.status, 200, "{}", String::from_utf8_lossy(&usage.body));
    let usage = usage.json();
    assert_eq!(usage["total"]["requests"].as_u64(), Some(7), "{usage}");
    let charts = &drawn["charts"];
    for metric in ["requests", "input_bytes", "output_bytes", "input_megapixels", "output_megapixels", "cpu_ms"] {
        let want = usage["total"][metric].as_f64().expect("a total");
        let got = charts[metric]["total"].as_f64().unwrap_or(f64::NAN);
        assert!(close(got, want), "{metric}: the chart totals {got}, the API {want}");
        // Bucket by bucket: every bucket with traffic is a bar of its value at its start.
        let buckets = usage["buckets"].as_array().expect("buckets");
        let slots = charts[metric]["slots"].as_array().expect("slots");
        let nonzero: Vec<&Value> = buckets.iter().filter(|b| b[metric].as_f64().unwrap_or(0.0) > 0.0).collect();
        assert_eq!(slots.len(), nonzero.len(), "{metric}: bars {slots:?}, buckets {nonzero:?}");
        for (slot, bucket) in slots.iter().zip(&nonzero) {
            let start_ms = |s: &str| s.replace(".000Z", "Z");
            assert_eq!(
                start_ms(slot["start"].as_str().unwrap_or("")),
                start_ms(bucket["start"].as_str().unwrap_or(""))
            );
            assert!(
                close(slot["value"].as_f64().unwrap_or(f64::NAN), bucket[metric].as_f64().unwrap_or(0.0)),
                "{metric}"
            );
        }
    }
    for (metric, card) in [("requests", "requests"), ("input_bytes", "input_bytes"), ("cpu_ms", "cpu_ms")] {
        assert!(close(
            drawn["cards"][card].as_f64().unwrap_or(f64::NAN),
            usage["total"][metric].as_f64().unwrap_or(0.0)
        ));
    }
    assert_eq!(drawn["cards"]["billable_requests"].as_u64(), usage["billable"]["requests"].as_u64());
    // By status: the legend and the stacked bars count what the API counts.
    let mut by_status = serde_json::Map::new();
    for bucket in usage["buckets"].as_array().expect("buckets") {
        for (status, totals) in bucket["by_status"].as_object().expect("by_status") {
            let n =
                by_status.get(status).and_then(Value::as_u64).unwrap_or(0) + totals["requests"].as_u64().unwrap_or(0);
            by_status.insert(status.clone(), n.into());
        }
    }
    assert_eq!(Value::Object(by_status.clone()), json!({ "200": 4, "400": 2, "415": 1 }));
    assert_eq!(drawn["legend"], Value::Object(by_status));
    let stacked: u64 = charts["requests"]["slots"]
        .as_array()
        .expect("slots")
        .iter()
        .flat_map(|s| s["statuses"].as_object().into_iter().flat_map(|m| m.values().filter_map(Value::as_u64)))
        .sum();
    assert_eq!(stacked, 7);
}

#[test]
fn the_tenant_console_charts_what_the_usage_api_answers_and_resizes_in_try_it() {
    browser_programs();
    let dir = TempDir::new();
    let server = DevServer::start(&["usage.batch_max_age_ms=100"]).expect("resizer dev");
    let (_tenant, key) =
        server.tenant_with_key("console-tenant", json!({ "quota": { "period": "month", "requests": 1000 } }));

    // Traffic first: 4 resized, 2 refused for their parameters, 1 not an image.
    let image = png(120, 80);
    for _ in 0..4 {
        assert_eq!(server.resize("width=40", Some(&key), &image, &[]).status, 200);
    }
    for _ in 0..2 {
        assert_eq!(server.resize("width=0", Some(&key), &image, &[]).status, 400);
    }
    assert_eq!(server.resize("width=10", Some(&key), b"not an image", &[]).status, 415);
    wait_for_usage(&server, &key, 7);

    // The page and its headers, over HTTP.
    let page = server.get("/console/");
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").is_some_and(|t| t.starts_with("text/html")));
    let csp = page.header("content-security-policy").expect("a Content-Security-Policy").to_owned();
    for directive in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "style-src 'self'"] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert_eq!(server.get("/console/common.js").status, 200);
    assert_eq!(server.get("/console/operator.js").status, 404, "the operator's script is not on the public port");

    let browser = Browser::start(&dir.0, "tenant");
    browser.goto(&format!("{}/console/", server.api_url));

    // A wrong key is told in words, and nothing is kept.
    browser.type_into("#key", "rsz_not_a_real_key");
    browser.click("#sign-in-form button[type=submit]");
    browser.wait_for("document.body.dataset.signIn === 'refused'", "the wrong key refused");
    let message = browser.text("#error");
    // The API's own words (problem+json title and detail), with what to do.
    assert!(
        message.contains("That API key was not accepted (Unknown API key: malformed API key")
            && message.contains("pasted the whole key"),
        "{message}"
    );
    assert_eq!(browser.script("return sessionStorage.length;"), json!(0));
    browser.screenshot("tenant-sign-in");

    // The right key: usage by hour.
    browser.type_into("#key", &key);
    browser.click("#sign-in-form button[type=submit]");
    browser.wait_for("document.body.dataset.usage === 'ready'", "the usage charts");
    assert_eq!(browser.script("return document.getElementById('error').hidden;"), json!(true));
    assert_eq!(browser.script("return sessionStorage.getItem('resizer.console.apiKey');"), json!(key));
    assert_eq!(browser.script("return localStorage.length;"), json!(0), "the key is kept in the tab only");

    // What the page drew, against what the API answers for the very query it asked.
    check_usage_drawn(&browser, &server, &key, "hour");
    // The recent requests: each record of GET /v1/audit, by request id and status.
    browser.wait_for("document.body.dataset.audit === 'ready'", "the recent requests");
    let audit = server.get_with_key("/v1/audit?limit=1000", &key).json();
    let records = audit["records"].as_array().expect("records").clone();
    assert_eq!(records.len(), 7, "{audit}");
    let rows = browser.script(
        "return [...document.querySelectorAll('#audit-table tr[data-request]')].map(r => [r.dataset.request, r.cells[1].textContent]);",
    );
    let mut drawn: Vec<(String, String)> = serde_json::from_value(rows).expect("rows");
    let mut expected: Vec<(String, String)> =
        records.iter().map(|r| (r["request_id"].as_str().unwrap_or("").to_owned(), r["status"].to_string())).collect();
    drawn.iter_mut().for_each(|(_, status)| status.truncate(3));
    drawn.sort();
    expected.sort();
    assert_eq!(drawn, expected, "the audit table against GET /v1/audit");
    browser.screenshot("tenant-usage");
    // By day: the same checks on the last 30 days.
    browser.click("label[for=by-day]");
    browser.wait_for(
        "document.body.dataset.usage === 'ready' && document.getElementById('usage-view').dataset.query.includes('granularity=day')",
        "the usage by day",
    );
    check_usage_drawn(&browser, &server, &key, "day");
    browser.click("label[for=by-hour]");
    browser.wait_for(
        "document.body.dataset.usage === 'ready' && document.getElementById('usage-view').dataset.query.includes('granularity=hour')",
        "the usage by hour again",
    );
    // The console's own files are counted under a route label of their own.
    let metrics = String::from_utf8_lossy(&server.get("/metrics").body).into_owned();
    assert!(metrics.contains(r#"resizer_http_request_duration_seconds_count{route="console",status="200"}"#));

    // Limits: the tenant's limits and rate limit (GET /v1/limits), and the quota report the
    // usage answer carries.
    browser.goto(&format!("{}/console/#limits", server.api_url));
    browser.wait_for(
        "document.body.dataset.usage === 'ready' && document.body.dataset.limits === 'ready' && !document.getElementById('limits').hidden",
        "limits",
    );
    let limits = server.get_with_key("/v1/limits", &key).json();
    assert_eq!(limits["limits"]["burst"], 200, "the deployment's default burst: {limits}");
    assert!(browser.text("#limits-view tr[data-limit=burst]").contains("200"));
    let rate = browser.text("#limits-view tr[data-limit=rate_per_sec]");
    assert!(rate.contains("100"), "the default 100 requests/s: {rate}");
    let available = browser.script("return Number(document.getElementById('rate-now').dataset.available);");
    // 7 requests taken from a full bucket of 200 (a few tokens back since), and a page read.
    assert!(available.as_u64().is_some_and(|a| (193..=200).contains(&a)), "{available}");
    let quota_row = browser.text("#quota-view tr[data-dimension=requests]");
    assert!(quota_row.contains("1,000"), "the quota's limit: {quota_row}");
    let quota = server.get_with_key("/v1/usage", &key).json()["quota"]["dimensions"]["requests"].clone();
    let (used, remaining) = (quota["used"].as_u64().expect("used"), quota["remaining"].as_u64().expect("remaining"));
    assert!(
        quota_row.contains(&format!("{used}")) && quota_row.contains(&format!("{remaining}")),
        "{quota_row} vs {quota}"
    );
    assert_eq!(
        browser.script("return document.querySelector('#quota-view [data-quota-state]').dataset.quotaState;"),
        json!("ok")
    );
    browser.screenshot("tenant-limits");

    // Try it: a 640 x 480 PNG resized to 200 wide WebP, shown decoded beside the original.
    let upload = dir.0.join("upload.png");
    std::fs::write(&upload, png(640, 480)).expect("write the upload");
    browser.goto(&format!("{}/console/#try", server.api_url));
    browser.wait_for("!document.getElementById('try').hidden", "the try-it panel");
    let file_input = browser.find("#try-file");
    browser.command(
        "POST",
        &format!("/element/{file_input}/value"),
        Some(json!({ "text": upload.to_str().expect("a UTF-8 path") })),
    );
    browser.wait_for("document.getElementById('try-original-img').naturalWidth === 640", "the original shown");
    browser.type_into("#try-width", "200");
    browser.script("document.getElementById('try-format').value = 'webp'; return true;");
    browser.click("#try-submit");
    browser.wait_for("document.body.dataset.try === 'done'", "the resized image");
    let result = browser.script(
        r#"const img = document.getElementById('try-result-img');
           const fact = (k) => document.querySelector(`[data-fact="${k}"]`).textContent;
           return { complete: img.complete, w: img.naturalWidth, h: img.naturalHeight,
                    type: fact('content-type'), dims: fact('dimensions'), timing: fact('server-timing'),
                    bytes: fact('bytes') };"#,
    );
    assert_eq!(
        (result["complete"].clone(), result["w"].as_u64(), result["h"].as_u64()),
        (json!(true), Some(200), Some(150)),
        "{result}"
    );
    assert_eq!(result["type"], "image/webp", "{result}");
    assert_eq!(result["dims"], "200 × 150 px", "{result}");
    assert!(result["timing"].as_str().is_some_and(|t| t.contains("convert")), "{result}");
    browser.screenshot("tenant-try");

    // A key the API stops accepting signs the tab out with the API's words.
    browser.script("sessionStorage.setItem('resizer.console.apiKey', 'rsz_gone'); return true;");
    browser.goto(&format!("{}/console/#usage", server.api_url));
    browser.wait_for(
        "document.body.dataset.signedIn === 'false' && !document.getElementById('error').hidden",
        "signed out with a message",
    );
    assert!(browser.text("#error").contains("That API key was not accepted"));
    assert_eq!(browser.script("return sessionStorage.length;"), json!(0));
}

#[test]
fn the_operator_console_creates_a_key_that_works_and_revokes_it_so_the_api_refuses_it() {
    browser_programs();
    let dir = TempDir::new();
    let server = DevServer::start(&["usage.batch_max_age_ms=100"]).expect("resizer dev");
    let (tenant, first_key) = server.tenant_with_key("console-operator", json!({ "rate_per_sec": 50, "burst": 100 }));
    let image = png(120, 80);
    for _ in 0..3 {
        assert_eq!(server.resize("width=40", Some(&first_key), &image, &[]).status, 200);
    }
    wait_for_usage(&server, &first_key, 3);

    let page = ureq::get(format!("{}/console/", server.admin_url)).call().expect("the operator console");
    assert_eq!(page.status(), 200, "the operator console on the admin port");
    let csp = page.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(server.get("/console/operator.js").status, 404, "not on the public port");

    let browser = Browser::start(&dir.0, "operator");
    browser.goto(&format!("{}/console/", server.admin_url));

    // A wrong token is told in words.
    browser.type_into("#token", "not-the-admin-token-but-long-enough-to-look-real");
    browser.click("#sign-in-form button[type=submit]");
    browser.wait_for("document.body.dataset.signIn === 'refused'", "the wrong token refused");
    let message = browser.text("#error");
    assert!(message.contains("That operator token was not accepted (Admin token required"), "{message}");
    browser.screenshot("operator-sign-in");

    // By keyboard: the token, then Enter in the field.
    browser.type_into("#token", &format!("{}\u{E007}", server.admin_token));
    browser.wait_for("document.body.dataset.tenants === 'ready'", "the tenants");
    let row = browser.text(&format!("#tenant-table tr[data-tenant=\"{tenant}\"]"));
    assert!(row.contains("console-operator") && row.contains("active") && row.contains("50"), "{row}");
    browser.screenshot("operator-tenants");

    // The tenant: create a key; it works.
    browser.click(&format!("#tenant-table tr[data-tenant=\"{tenant}\"] a"));
    browser.wait_for("document.body.dataset.tenant === 'ready'", "the tenant's page");
    browser.wait_for("document.querySelector('#usage-view figure[data-metric=requests]')", "the tenant's usage");
    assert_eq!(
        browser
            .script("return Number(document.querySelector('#usage-view figure[data-metric=requests]').dataset.total);"),
        json!(3)
    );
    browser.wait_for("document.querySelectorAll('#audit-table tr[data-request]').length === 3", "the audit");
    browser.type_into("#new-key-label", "made-in-console");
    browser.click("#new-key-form button[type=submit]");
    browser.wait_for("!document.getElementById('new-key').hidden", "the new key shown once");
    let created = browser
        .script("const f = document.getElementById('new-key-value'); return { key: f.value, id: f.dataset.keyId };");
    let (new_key, key_id) =
        (created["key"].as_str().expect("key").to_owned(), created["id"].as_str().expect("id").to_owned());
    assert!(new_key.starts_with("rsz_"), "{new_key}");
    browser.wait_for(&format!("document.querySelector('#key-table tr[data-key=\"{key_id}\"]')"), "the key listed");
    assert_eq!(server.resize("width=40", Some(&new_key), &image, &[]).status, 200, "the new key works");
    browser.screenshot("operator-tenant");

    // Revoke it: the API refuses it at once (this node's cache is fed before the admin answers).
    browser.click(&format!("button[data-revoke=\"{key_id}\"]"));
    browser.wait_for("!document.getElementById('revoke-confirm').hidden", "the confirmation");
    browser.click("#revoke-yes");
    browser.wait_for(&format!("document.body.dataset.revoked === {key_id:?}"), "the key revoked");
    browser.wait_for(
        &format!("document.querySelector('#key-table tr[data-key=\"{key_id}\"]').dataset.state === 'revoked'"),
        "the key shown revoked",
    );
    let refused = server.resize("width=40", Some(&new_key), &image, &[]);
    assert_eq!((refused.status, refused.problem_type().as_str()), (403, "revoked-key"), "the revoked key is refused");
    assert_eq!(server.resize("width=40", Some(&first_key), &image, &[]).status, 200, "the other key still works");

    // Suspend and activate the tenant.
    browser.click("#toggle-status");
    browser.wait_for("document.getElementById('tenant-status').dataset.status === 'suspended'", "suspended");
    let suspended = server.resize("width=40", Some(&first_key), &image, &[]);
    assert_eq!((suspended.status, suspended.problem_type().as_str()), (403, "tenant-suspended"));
    browser.click("#toggle-status");
    browser.wait_for("document.getElementById('tenant-status').dataset.status === 'active'", "active again");
    assert_eq!(server.resize("width=40", Some(&first_key), &image, &[]).status, 200);

    // Health: the node list (this process alone: no cluster), this node's readiness and gauges.
    browser.goto(&format!("{}/console/#health", server.admin_url));
    browser.wait_for("document.body.dataset.health === 'ready'", "health");
    assert_eq!(browser.text("[data-fact=ready]"), "ready");
    assert!(browser.text("#nodes").contains("Not a cluster"), "{}", browser.text("#nodes"));
    assert!(browser.text("#gauges").contains("resizer_ready"));
    browser.screenshot("operator-health");
}

/// In a lab, the operator console at the identity service lists every api node with what it
/// says of itself, and shows a killed one as silent.
#[test]
fn the_operator_console_at_the_identity_service_shows_the_health_of_every_api_node() {
    browser_programs();
    let lab = common::cluster::Lab::up(&["--workers", "1"]);
    let dir = TempDir::new();
    let browser = Browser::start(&dir.0, "lab-operator");
    let admin_url = lab.field("admin_url");
    browser.goto(&format!("{admin_url}/console/#health"));
    browser.type_into("#token", &format!("{}\u{E007}", lab.field("admin_token")));
    browser.wait_for("document.body.dataset.health === 'ready'", "the health page");
    let row = |node: &str| format!("#nodes tr[data-node^=\"{node}/\"]");
    // A node is ready before it has seen the job stream's leader (it answers 503 to a resize
    // until then), and each announces once a second: Refresh until both say everything.
    let started = std::time::Instant::now();
    loop {
        let texts: Vec<String> = ["api-0", "api-1"].iter().map(|node| browser.text(&row(node))).collect();
        if texts.iter().all(|text| ["in rotation", "ready", "live", "elected"].iter().all(|word| text.contains(word))) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "after 20 s the nodes say: {texts:?}");
        std::thread::sleep(Duration::from_millis(500));
        browser.click("#health-refresh");
    }
    browser.screenshot("operator-health-cluster");

    lab.signal("api-1", lab::Signal::Kill);
    // Three announcements missed make a node silent; the page reads the list again on Refresh.
    std::thread::sleep(Duration::from_millis(3500));
    browser.click("#health-refresh");
    browser.wait_for(
        "document.querySelector('#nodes tr[data-node^=\"api-1/\"]')?.dataset.rotation === 'silent'",
        "api-1 shown silent after kill -9",
    );
    let text = browser.text(&row("api-1"));
    assert!(text.contains("silent"), "{text}");
    assert!(browser.text(&row("api-0")).contains("in rotation"));
}

const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

/// axe-core's browser build, which scripts/test.sh installs from npm into target/axe
/// (`RESIZER_TEST_AXE` names another axe.min.js); the test fails, never skips, without it.
fn axe_source() -> String {
    let path = std::env::var_os("RESIZER_TEST_AXE").map(std::path::PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/axe/node_modules/axe-core/axe.min.js")
    });
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "this test needs axe-core at {} ({e}): run scripts/test.sh, which installs it with \
             `npm install --prefix target/axe axe-core@<version>`",
            path.display()
        )
    })
}

/// Both consoles are used by keyboard alone (Tab to a field, type, Enter; Tab to a link, Enter)
/// and every page passes axe-core with no serious or critical violation (WCAG 2 A and AA rules
/// among the rest: labels, contrast, names, landmarks).
#[test]
fn the_consoles_work_by_keyboard_and_pass_axe_with_no_serious_violations() {
    browser_programs();
    let axe = axe_source();
    let dir = TempDir::new();
    let server = DevServer::start(&["usage.batch_max_age_ms=100"]).expect("resizer dev");
    let (tenant, key) = server.tenant_with_key("console-a11y", json!({}));
    assert_eq!(server.resize("width=40", Some(&key), &png(120, 80), &[]).status, 200);
    wait_for_usage(&server, &key, 1);
    let mut violations = Vec::new();
    let mut check = |browser: &Browser, page: &str| {
        for v in browser.axe_violations(&axe) {
            violations.push(format!("{page}: {v}"));
        }
    };

    let browser = Browser::start(&dir.0, "a11y-tenant");
    browser.goto(&format!("{}/console/", server.api_url));
    browser.wait_for("document.getElementById('key')", "the sign-in form");
    check(&browser, "tenant sign-in");
    browser.tab_to("#key");
    browser.press(&format!("{key}{ENTER}"));
    browser.wait_for("document.body.dataset.usage === 'ready'", "the usage charts, signed in by keyboard");
    check(&browser, "tenant usage");
    for (link, section) in [("limits", "limits"), ("try", "try"), ("usage", "usage")] {
        browser.tab_to(&format!("nav a[href='#{link}']"));
        browser.press(ENTER);
        browser.wait_for(&format!("!document.getElementById('{section}').hidden"), &format!("#{section} by keyboard"));
        check(&browser, &format!("tenant {section}"));
    }
    drop(browser);

    let browser = Browser::start(&dir.0, "a11y-operator");
    browser.goto(&format!("{}/console/", server.admin_url));
    browser.wait_for("document.getElementById('token')", "the sign-in form");
    check(&browser, "operator sign-in");
    browser.tab_to("#token");
    browser.press(&format!("{}{ENTER}", server.admin_token));
    browser.wait_for("document.body.dataset.tenants === 'ready'", "the tenants, signed in by keyboard");
    check(&browser, "operator tenants");
    browser.tab_to(&format!("#tenant-table tr[data-tenant='{tenant}'] a"));
    browser.press(ENTER);
    browser.wait_for("document.body.dataset.tenant === 'ready'", "the tenant's page by keyboard");
    check(&browser, "operator tenant");
    browser.tab_to("nav a[href='#health']");
    browser.press(ENTER);
    browser.wait_for("document.body.dataset.health === 'ready'", "health by keyboard");
    check(&browser, "operator health");
    assert!(violations.is_empty(), "axe-core found serious or critical violations:\n{}", violations.join("\n"));
}
