//! AVIF output through the real `resizer dev`: `format=avif`, `format=auto` with a browser's
//! `Accept`, the deployment's switch for `auto` and its cap on the encoder's effort. The AVIF
//! answers are decoded by an independent decoder, libavif's `avifdec` (Debian's `libavif-bin`,
//! installed by scripts/test.sh).

mod common;

use std::process::Command;

use common::{png, DevServer, TempDir};

type Result = anyhow::Result<()>;

/// Chromium's `Accept` for `<img>` (and what it sends for a navigation to an image URL).
const CHROMIUM: &str = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";

/// `avifdec`'s width and height of `avif`, after decoding it whole.
fn avifdec_size(avif: &[u8]) -> (u32, u32) {
    let dir = TempDir::new();
    let (input, output) = (dir.0.join("in.avif"), dir.0.join("out.png"));
    std::fs::write(&input, avif).expect("write avif");
    let run = Command::new("avifdec").arg(&input).arg(&output).output().unwrap_or_else(|e| {
        panic!("avifdec ({e}): install Debian's libavif-bin (scripts/test.sh does) to check AVIF answers")
    });
    assert!(run.status.success(), "avifdec refused the answer: {}", String::from_utf8_lossy(&run.stderr));
    let png = std::fs::read(&output).expect("avifdec's png");
    let info = png::Decoder::new(std::io::Cursor::new(png)).read_info().expect("png").info().clone();
    (info.width, info.height)
}

#[test]
fn format_avif_answers_an_avif_of_the_asked_size() -> Result {
    let server = DevServer::start(&[])?;
    let r = server.resize("width=120&format=avif&quality=60", Some(&server.demo_key), &png(300, 200), &[]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("image/avif"));
    assert_eq!((r.header("x-image-width"), r.header("x-image-height")), (Some("120"), Some("80")));
    assert_eq!(r.header("vary"), None, "an explicit format does not vary with Accept");
    assert_eq!(&r.body[4..12], b"ftypavif");
    assert_eq!(avifdec_size(&r.body), (120, 80));
    Ok(())
}

#[test]
fn format_auto_gives_chromium_avif_and_other_clients_what_they_name() -> Result {
    let server = DevServer::start(&[])?;
    let input = png(300, 200);
    let auto = |accept: Option<&str>| {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        server.resize("width=90&format=auto", Some(&server.demo_key), &input, &headers)
    };
    let r = auto(Some(CHROMIUM));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("image/avif"));
    assert_eq!(r.header("vary"), Some("Accept"));
    assert_eq!(avifdec_size(&r.body), (90, 60));
    // Without `format`, auto is the default.
    let r = server.resize("width=90", Some(&server.demo_key), &input, &[("accept", CHROMIUM)]);
    assert_eq!(r.header("content-type"), Some("image/avif"));
    // A client that does not name AVIF never gets it, even through `image/*` or `*/*`.
    assert_eq!(auto(Some("image/webp,image/*,*/*;q=0.8")).header("content-type"), Some("image/webp"));
    assert_eq!(auto(Some("image/*,*/*;q=0.8")).header("content-type"), Some("image/png"));
    assert_eq!(auto(None).header("content-type"), Some("image/png"));
    Ok(())
}

#[test]
fn with_avif_off_in_auto_chromium_gets_webp_and_format_avif_still_works() -> Result {
    let server = DevServer::start(&["api.auto_avif=false"])?;
    let input = png(300, 200);
    let r = server.resize("width=90&format=auto", Some(&server.demo_key), &input, &[("accept", CHROMIUM)]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("image/webp"));
    assert_eq!(r.header("vary"), Some("Accept"));
    let r = server.resize("width=90&format=avif", Some(&server.demo_key), &input, &[("accept", CHROMIUM)]);
    assert_eq!(r.header("content-type"), Some("image/avif"), "asked by name, AVIF is still served");
    Ok(())
}

#[test]
fn an_effort_over_the_deployments_cap_is_refused_before_the_body_is_read() -> Result {
    let server = DevServer::start(&["limits.avif_max_effort=5"])?;
    let input = png(200, 100);
    let r = server.resize("width=50&format=avif&effort=5", Some(&server.demo_key), &input, &[]);
    assert_eq!((r.status, r.header("content-type")), (200, Some("image/avif")), "at the cap");
    let r = server.resize("width=50&format=avif&effort=6", Some(&server.demo_key), &input, &[]);
    assert_eq!(r.status, 400);
    assert_eq!(r.problem_type(), "bad-parameter");
    let detail = r.json()["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains("effort 6 is over this deployment's maximum of 5"), "{detail}");
    // The cap holds for `auto` too (the answer may become AVIF).
    let r = server.resize("width=50&effort=9", Some(&server.demo_key), &input, &[("accept", CHROMIUM)]);
    assert_eq!(r.status, 400);
    // An effort for another format is the client's mistake, whatever the cap.
    let r = server.resize("width=50&format=webp&effort=1", Some(&server.demo_key), &input, &[]);
    assert_eq!((r.status, r.problem_type()), (400, "bad-parameter".to_owned()));
    Ok(())
}

#[test]
fn an_avif_over_the_deployments_pixel_bound_is_refused_or_negotiated_away() -> Result {
    // 200 x 133 = 26,600 pixels: over a bound of 20,000, under it at 100 wide.
    let server = DevServer::start(&["limits.avif_max_output_pixels=20000"])?;
    let input = png(300, 200);
    let r = server.resize("width=200&format=avif", Some(&server.demo_key), &input, &[]);
    assert_eq!((r.status, r.problem_type()), (413, "too-large".to_owned()));
    let detail = r.json()["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains("200x133") && detail.contains("20000"), "{detail}");
    let r = server.resize("width=100&format=avif", Some(&server.demo_key), &input, &[]);
    assert_eq!((r.status, r.header("content-type")), (200, Some("image/avif")));
    // `auto` answers what it would without AVIF: WebP for Chromium.
    let r = server.resize("width=200", Some(&server.demo_key), &input, &[("accept", CHROMIUM)]);
    assert_eq!((r.status, r.header("content-type"), r.header("vary")), (200, Some("image/webp"), Some("Accept")));
    Ok(())
}

/// libaom 3.14 (Debian sid's, which scripts/test.sh keeps under target/libaom) named by
/// `RESIZER_LIBAOM` on a machine whose own libaom is older: `resizer dev` encodes with it,
/// tuned for images, says so in `/readyz`, and its AVIF answers, opaque and with alpha, decode.
#[test]
fn a_newer_libaom_named_by_resizer_libaom_is_used_tuned_for_images() -> Result {
    let libaom = format!("{}/../../target/libaom/libaom.so.3", env!("CARGO_MANIFEST_DIR"));
    assert!(
        std::path::Path::new(&libaom).exists(),
        "{libaom} is missing: scripts/test.sh fetches Debian sid's libaom 3.14 there (amd64)"
    );
    let server = DevServer::start_with_env(&[("RESIZER_LIBAOM", &libaom)], &[])?;
    let ready = server.get("/readyz").json();
    let encoder = ready["avif_encoder"].as_str().unwrap_or_default();
    assert!(encoder.starts_with("libaom (AOMedia Project AV1 Encoder v3.14.1, tune iq) through libheif"), "{ready}");
    assert!(!encoder.contains("not"), "{ready}");
    for (name, body) in [("opaque", png(300, 200)), ("alpha", common::rgba_png(300, 200))] {
        let r = server.resize("width=120&format=avif", Some(&server.demo_key), &body, &[]);
        assert_eq!(r.status, 200, "{name}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(avifdec_size(&r.body), (120, 80), "{name}");
    }
    Ok(())
}
