//! The example page of signed URLs (examples/signed-urls/) in a real browser: `resizer dev`, a
//! loopback origin serving the example's JPEGs and the page that make-page.py writes, and headless
//! Chromium (Debian's `chromium`) loading it. The page reports, per image, what the browser got;
//! the test checks that every image arrived decoded at the width its URL asked (for `srcset`, the
//! candidate the browser chose), in the format negotiated from Chromium's `Accept`. The page
//! reads each content type with a second, cross-origin `fetch()` sending an image's `Accept`,
//! which the signed route's CORS headers allow (`Access-Control-Allow-Origin: *`). It also takes
//! the screenshot docs/urls.md shows (`RESIZER_WRITE_SCREENSHOT=1` rewrites
//! docs/images/signed-urls-page.png; otherwise it goes to the test's temporary directory).
//!
//! Chromium runs with its own `--user-data-dir` in the temporary directory, in its own process
//! group, which is killed when the run ends, also when the test fails.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::origin::TestOrigin;
use common::{DevServer, TempDir};
use serde_json::{json, Value};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/signed-urls");
const SCREENSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/images/signed-urls-page.png");
/// The sources' sizes (examples/signed-urls/*.jpg): the answers keep their aspect ratio.
const SOURCES: [(&str, u32, u32); 2] = [("landscape.jpg", 1200, 800), ("blocks.jpg", 960, 1280)];
const WINDOW: (u32, u32) = (1500, 860);

/// Debian's Chromium; the test fails (never skips) without it.
fn chromium() -> PathBuf {
    let path = Path::new("/usr/bin/chromium");
    assert!(
        path.exists(),
        "this test needs headless Chromium at /usr/bin/chromium: install the Debian package `chromium` \
         (apt-get install -y chromium; scripts/test.sh does it)"
    );
    path.to_path_buf()
}

/// One Chromium run, in its own process group: the whole group is killed when it drops.
struct Browser {
    child: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the process group this test created has no memory-safety preconditions.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Runs headless Chromium on `url` with `extra` arguments and returns its stdout, failing with
/// its stderr if it does not exit successfully within two minutes.
fn run_chromium(dir: &Path, name: &str, url: &str, extra: &[String]) -> String {
    let profile = dir.join(format!("chromium-profile-{name}"));
    let (stdout, stderr) = (dir.join(format!("chromium-{name}.out")), dir.join(format!("chromium-{name}.err")));
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--virtual-time-budget=20000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::from(std::fs::File::create(&stdout).expect("chromium stdout file")))
    .stderr(Stdio::from(std::fs::File::create(&stderr).expect("chromium stderr file")))
    .process_group(0);
    let mut browser = Browser { child: cmd.spawn().expect("start chromium") };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = browser.child.try_wait().expect("wait for chromium") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "chromium ({name}) did not finish within 120 s; stderr:\n{}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(browser); // its children too
    assert!(
        status.success(),
        "chromium ({name}) exited with {status}; stderr:\n{}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    std::fs::read_to_string(&stdout).expect("chromium's output")
}

/// The text of `<pre id="report" data-done="true">` in the dumped DOM.
fn report(dom: &str) -> Option<String> {
    let start = dom.find("<pre id=\"report\" data-done=\"true\">")?;
    let text = &dom[start..];
    let text = &text[text.find('>')? + 1..text.find("</pre>")?];
    Some(text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&amp;", "&"))
}

/// The options segment of a signed URL `<api>/v1/img/<key id>/<signature>/<options>/<source>`,
/// as `name=value` pairs.
fn options(api: &str, url: &str) -> Vec<(String, String)> {
    let path =
        url.strip_prefix(&format!("{api}/v1/img/")).unwrap_or_else(|| panic!("not a signed URL of {api}: {url}"));
    let segments: Vec<&str> = path.split('/').collect();
    assert_eq!(segments.len(), 4, "key id, signature, options, source: {url}");
    segments[2]
        .split(',')
        .map(|pair| {
            let (name, value) = pair.split_once('=').expect("name=value");
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

fn option<'a>(options: &'a [(String, String)], name: &str) -> Option<&'a str> {
    options.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// The URLs of one `<img srcset>` in the generated page, with their width descriptors.
fn srcset_of(page: &str, id: &str) -> Vec<(String, u32)> {
    let img = &page[page.find(&format!("id=\"{id}\"")).expect("the image")..];
    let set = &img[img.find("srcset=\"").expect("a srcset") + 8..];
    let set = &set[..set.find('"').expect("its end")];
    // A candidate's URL runs to whitespace (the options hold commas); a comma ends its descriptor.
    let tokens: Vec<&str> = set.split_whitespace().collect();
    tokens
        .chunks(2)
        .map(|pair| {
            let descriptor = pair.get(1).expect("a width descriptor").trim_end_matches(',');
            (pair[0].to_owned(), descriptor.trim_end_matches('w').parse().expect("a width descriptor"))
        })
        .collect()
}

#[test]
fn the_example_page_gets_every_signed_image_at_its_width_in_the_negotiated_format() {
    chromium(); // fail first, and clearly, without it
    let dir = TempDir::new();
    let origin = TestOrigin::start();
    for (name, _, _) in SOURCES {
        let bytes = std::fs::read(Path::new(EXAMPLE).join(name)).expect("the example's JPEG");
        origin.put_image(&format!("/{name}"), &bytes, &format!("\"{name}\""));
    }
    let server = DevServer::start(&[&format!("sources.allow_private={}", origin.addr)]).expect("resizer dev");

    // The tenant's sources and a signing key, through the admin API (as signed_urls.rs does).
    let created = server.admin(
        "POST",
        "/v1/tenants",
        Some(json!({ "name": "pages", "limits": { "sources": [format!("{}/", origin.base())] } })),
    );
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let tenant = created.json()["id"].as_u64().expect("tenant id");
    let key = server.admin("POST", &format!("/v1/tenants/{tenant}/keys"), Some(json!({ "purpose": "signing" })));
    assert_eq!(key.status, 201, "{}", String::from_utf8_lossy(&key.body));
    let (key_id, secret) = (
        key.json()["id"].as_str().expect("key id").to_owned(),
        key.json()["signing_secret"].as_str().expect("secret").to_owned(),
    );

    // make-page.py writes the page, which the origin serves next to the JPEGs.
    let page_path = dir.0.join("index.html");
    let made = Command::new("python3")
        .arg(Path::new(EXAMPLE).join("make-page.py"))
        .args(["--key-id", &key_id, "--secret", &secret, "--api", &server.api_url, "--origin", &origin.base()])
        .arg("--out")
        .arg(&page_path)
        .output()
        .expect("run python3 (Debian package python3)");
    assert!(made.status.success(), "make-page.py failed:\n{}", String::from_utf8_lossy(&made.stderr));
    let page = std::fs::read_to_string(&page_path).expect("the page");
    origin.put_file("/index.html", page.as_bytes(), "text/html; charset=utf-8");
    let url = format!("{}/index.html", origin.base());

    let dom = run_chromium(&dir.0, "dom", &url, &["--dump-dom".to_owned()]);
    let report = report(&dom)
        .unwrap_or_else(|| panic!("the page wrote no report; DOM:\n{dom}\nresizer's stderr:\n{}", server.stderr()));
    let lines: Vec<Value> =
        report.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect();
    let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap_or("")).collect();
    assert_eq!(ids, ["plain", "responsive", "picture"], "{report}");

    let api = server.api_url.as_str();
    for line in &lines {
        let id = line["id"].as_str().expect("id");
        let current = line["currentSrc"].as_str().expect("currentSrc");
        let opts = options(api, current);
        let width: u32 = option(&opts, "width").expect("a width").parse().expect("a number");
        let source = if id == "picture" { SOURCES[1] } else { SOURCES[0] };
        // For a srcset candidate, naturalWidth is density-corrected (pixels × sizes / descriptor):
        // the pixels themselves when, as here, `sizes` is the chosen descriptor's width at 1x.
        let height = (f64::from(width) * f64::from(source.2) / f64::from(source.1)).round() as u32;
        assert_eq!(
            (line["naturalWidth"].as_u64(), line["naturalHeight"].as_u64()),
            (Some(u64::from(width)), Some(u64::from(height))),
            "{id}: decoded at the size its URL asked ({width} wide, {} aspect): {line}",
            source.0
        );
        let expected_type = match option(&opts, "format") {
            // Chromium's Accept (image/avif,image/webp,...) negotiates AVIF (`api.auto_avif`, on by
            // default), which Chromium decodes at the asked size (checked above).
            Some("auto") => "image/avif",
            Some("webp") => "image/webp",
            Some("jpeg") => "image/jpeg",
            other => panic!("{id}: an unexpected format {other:?}"),
        };
        assert_eq!(line["contentType"].as_str(), Some(expected_type), "{id}: {line}");
        assert_eq!(line["error"], Value::Null, "{id}: {line}");
    }

    // The plain <img>: its own URL.
    let plain = &lines[0];
    assert_eq!(plain["currentSrc"], plain["url"]);
    assert_eq!(option(&options(api, plain["url"].as_str().unwrap()), "format"), Some("auto"));
    // The srcset: one of the three candidates, the one whose descriptor matches what it decoded
    // to; at 1x in a wide window, `sizes` says 640 px, so the 640w candidate.
    let candidates = srcset_of(&page, "responsive");
    assert_eq!(candidates.iter().map(|c| c.1).collect::<Vec<_>>(), [320, 640, 960]);
    let responsive = &lines[1];
    let chosen = candidates
        .iter()
        .find(|(url, _)| responsive["currentSrc"].as_str() == Some(url.as_str()))
        .unwrap_or_else(|| panic!("currentSrc is not a srcset candidate: {responsive}"));
    assert_eq!(responsive["naturalWidth"].as_u64(), Some(u64::from(chosen.1)), "{responsive}");
    assert_eq!(chosen.1, 640, "sizes=640px at 1x picks the 640w candidate: {responsive}");
    // The <picture>: the WebP <source>, not the JPEG fallback in its <img src>.
    let picture = &lines[2];
    assert_eq!(option(&options(api, picture["currentSrc"].as_str().unwrap()), "format"), Some("webp"), "{picture}");
    assert_eq!(option(&options(api, picture["url"].as_str().unwrap()), "format"), Some("jpeg"), "{picture}");

    // The screenshot docs/urls.md shows.
    let shot = if std::env::var_os("RESIZER_WRITE_SCREENSHOT").is_some_and(|v| v == "1") {
        PathBuf::from(SCREENSHOT)
    } else {
        dir.0.join("signed-urls-page.png")
    };
    let _ = std::fs::remove_file(&shot);
    run_chromium(&dir.0, "screenshot", &url, &[format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let size =
        (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()));
    assert_eq!(size, WINDOW, "the screenshot is the window");
}
