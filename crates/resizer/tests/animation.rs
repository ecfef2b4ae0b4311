//! Animations through the real `resizer dev`: an animated GIF answered as an animated WebP to a
//! browser that names WebP, as a GIF to one that does not or that asks `format=gif`, as a still
//! with `frames=1`; the 413s before decoding (summed pixels, frame counts); and the usage
//! record billing the pixels of every frame.

mod common;

use std::time::{Duration, Instant};

use common::{wait_for, DevServer};
use serde_json::json;

type Result = anyhow::Result<()>;

/// Chromium's `Accept` for `<img>`.
const CHROMIUM: &str = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";

/// An animated GIF of a `w` x `h` screen: `frames` solid frames (red, green, blue, red, …) of
/// `frame` pixels at the top left, each shown `delay_cs` hundredths of a second, looping forever.
fn gif(w: u16, h: u16, frame: (u16, u16), frames: usize, delay_cs: u16) -> Vec<u8> {
    let palette = [255, 0, 0, 0, 255, 0, 0, 0, 255];
    let mut out = Vec::new();
    {
        let mut encoder = gif::Encoder::new(&mut out, w, h, &palette).expect("gif header");
        encoder.set_repeat(gif::Repeat::Infinite).expect("repeat");
        for i in 0..frames {
            let pixels = vec![(i % 3) as u8; usize::from(frame.0) * usize::from(frame.1)];
            let mut f = gif::Frame::from_indexed_pixels(frame.0, frame.1, pixels, None);
            f.delay = delay_cs;
            encoder.write_frame(&f).expect("gif frame");
        }
    }
    out
}

/// The durations (ms) of an animated WebP's ANMF chunks, in order.
fn webp_durations(webp: &[u8]) -> Vec<u32> {
    assert!(webp.starts_with(b"RIFF") && &webp[8..12] == b"WEBP", "not a WebP");
    let (mut pos, mut durations) = (12, Vec::new());
    while pos + 8 <= webp.len() {
        let len = u32::from_le_bytes(webp[pos + 4..pos + 8].try_into().expect("4 bytes")) as usize;
        if &webp[pos..pos + 4] == b"ANMF" {
            let d = &webp[pos + 8 + 12..pos + 8 + 15];
            durations.push(u32::from(d[0]) | u32::from(d[1]) << 8 | u32::from(d[2]) << 16);
        }
        pos += 8 + len + (len & 1);
    }
    durations
}

/// A GIF's frame delays (ms) and frame size, read by the `gif` crate.
fn gif_frames(bytes: &[u8]) -> (Vec<u32>, (u16, u16)) {
    let mut decoder = gif::DecodeOptions::new().read_info(bytes).expect("a GIF");
    let size = (decoder.width(), decoder.height());
    let mut delays = Vec::new();
    while let Some(frame) = decoder.read_next_frame().expect("a frame") {
        delays.push(u32::from(frame.delay) * 10);
    }
    (delays, size)
}

#[test]
fn an_animated_gif_is_answered_as_an_animation_the_client_can_show() -> Result {
    let server = DevServer::start(&[])?;
    let key = Some(server.demo_key.as_str());
    let input = gif(60, 40, (60, 40), 3, 10);
    // Chromium names WebP: an animated WebP, every frame kept, varying with Accept.
    let r = server.resize("width=30", key, &input, &[("accept", CHROMIUM)]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("image/webp"), "never AVIF for an animation");
    assert_eq!((r.header("x-image-width"), r.header("x-image-height")), (Some("30"), Some("20")));
    assert_eq!(r.header("vary"), Some("Accept"));
    assert_eq!(webp_durations(&r.body), [100, 100, 100]);
    assert_eq!(imaging::probe(&r.body).expect("probe").frames, 3);
    // A client that names no WebP (curl's `*/*`), or none at all: the GIF stays a GIF.
    for accept in [vec![("accept", "*/*")], vec![]] {
        let r = server.resize("width=30&format=auto", key, &input, &accept);
        assert_eq!(r.header("content-type"), Some("image/gif"), "{accept:?}");
        assert_eq!(gif_frames(&r.body), (vec![100, 100, 100], (30, 20)), "{accept:?}");
    }
    // `format=gif` by name, whatever Accept says.
    let r = server.resize("width=30&format=gif", key, &input, &[("accept", CHROMIUM)]);
    assert_eq!((r.status, r.header("content-type"), r.header("vary")), (200, Some("image/gif"), None));
    assert_eq!(gif_frames(&r.body).0.len(), 3);
    // `frames=1`: the first frame, a still WebP for Chromium.
    let r = server.resize("width=30&frames=1", key, &input, &[("accept", CHROMIUM)]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("image/avif"), "a still may be AVIF");
    let r = server.resize("width=30&frames=1&format=webp", key, &input, &[]);
    assert_eq!((r.header("content-type"), webp_durations(&r.body).len()), (Some("image/webp"), 0));
    assert_eq!(imaging::probe(&r.body).expect("probe").frames, 1);
    // A still format gets the first frame.
    let r = server.resize("width=30&format=png", key, &input, &[]);
    assert_eq!((r.status, r.header("content-type")), (200, Some("image/png")));
    let r = server.resize("width=30&frames=2", key, &input, &[]);
    assert_eq!((r.status, r.problem_type()), (400, "bad-parameter".to_owned()));
    Ok(())
}

#[test]
fn animations_over_their_limits_are_413_before_decoding() -> Result {
    let server = DevServer::start(&[])?;
    let key = Some(server.demo_key.as_str());
    let cut = |mut gif: Vec<u8>| {
        // Without its last bytes (the trailer and the end of the last frame's data): decoding
        // would answer 422, so a 413 was decided on the header walk.
        gif.truncate(gif.len() - 4);
        gif
    };
    let cases = [
        // 4000 x 4000 x 20 frames = 320 MP declared: over the tenant's 100 MP, summed.
        ("width=100", cut(gif(4000, 4000, (1, 1), 20, 10)), "320000000 pixels"),
        // 1000 x 1000 x 100 = 100 MP in (allowed), 2000 x 2000 x 100 = 400 MP out: over the
        // pipeline's 250 MP summed over frames.
        ("width=2000&enlarge=true&format=webp", cut(gif(1000, 1000, (1, 1), 100, 10)), "output pixels"),
        // A frame-count bomb: 1,001 frames of one pixel.
        ("width=1", cut(gif(1, 1, (1, 1), 1001, 1)), "1001 frames"),
    ];
    for (query, input, detail) in cases {
        let started = Instant::now();
        let r = server.resize(query, key, &input, &[]);
        assert_eq!((r.status, r.problem_type()), (413, "too-large".to_owned()), "{query}");
        let problem = r.json();
        assert!(problem["detail"].as_str().unwrap_or("").contains(detail), "{query}: {problem}");
        assert!(started.elapsed() < Duration::from_secs(2), "{query}: {:?}", started.elapsed());
    }
    // The same bomb as a still (`frames=1`) is one pixel: served.
    let r = server.resize("width=1&frames=1&format=png", key, &gif(1, 1, (1, 1), 1000, 1), &[]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    Ok(())
}

#[test]
fn usage_bills_the_pixels_of_every_frame() -> Result {
    let server = DevServer::start(&["usage.batch_max_age_ms=100"])?;
    let (tenant, key) = server.tenant_with_key("animated", json!({}));
    let input = gif(60, 40, (60, 40), 3, 10);
    let asks = [
        ("anim-webp", "width=30&format=webp", 3u64),
        ("anim-gif", "width=30&format=gif", 3),
        ("first-frame", "width=30&frames=1&format=webp", 1),
        ("still-png", "width=30&format=png", 1),
    ];
    for (id, query, _) in asks {
        let r = server.resize(query, Some(&key), &input, &[("x-request-id", id)]);
        assert_eq!(r.status, 200, "{query}: {}", String::from_utf8_lossy(&r.body));
    }
    // The audit: each record says how many frames were converted.
    let audit = wait_for(|| {
        let r = server.admin("GET", &format!("/v1/tenants/{tenant}/audit?limit=100"), None);
        (r.status == 200 && r.json()["records"].as_array().is_some_and(|l| l.len() == asks.len())).then(|| r.json())
    })?;
    for (id, _, frames) in asks {
        let record = audit["records"].as_array().expect("records").iter().find(|r| r["request_id"] == id);
        let record = record.unwrap_or_else(|| panic!("no record of {id}: {audit}"));
        assert_eq!(record["frames"].as_u64(), Some(frames), "{id}: {record}");
        assert_eq!((record["input_width"].as_u64(), record["output_width"].as_u64()), (Some(60), Some(30)), "{id}");
    }
    // The bill: 60 x 40 in and 30 x 20 out per frame, 3 + 3 + 1 + 1 frames.
    let usage = wait_for(|| {
        let r = server.get_with_key("/v1/usage?granularity=day", &key);
        (r.status == 200 && r.json()["billable"]["requests"].as_u64() == Some(asks.len() as u64)).then(|| r.json())
    })?;
    let frames: u64 = asks.iter().map(|a| a.2).sum();
    let megapixels = |field: &str| usage["billable"][field].as_f64().unwrap_or(f64::NAN);
    assert!((megapixels("input_megapixels") - (60 * 40 * frames) as f64 / 1e6).abs() < 1e-9, "{usage}");
    assert!((megapixels("output_megapixels") - (30 * 20 * frames) as f64 / 1e6).abs() < 1e-9, "{usage}");
    Ok(())
}
