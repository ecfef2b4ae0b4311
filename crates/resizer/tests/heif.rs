//! AVIF and HEIC input through `resizer dev` (issue 25): resized to JPEG or WebP of the right
//! size, a hostile AVIF answered with a typed 4xx within 2 s, and without libheif a 415 whose
//! problem names the package to install. The files are imaging's fixtures (made by heif-enc).

mod common;

use std::time::{Duration, Instant};

use anyhow::Context;
use common::DevServer;

type Result = anyhow::Result<()>;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../imaging/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn probe(bytes: &[u8]) -> (String, u32, u32) {
    match imaging::probe(bytes) {
        Ok(p) => (p.format.as_str().to_owned(), p.width, p.height),
        Err(e) => (format!("not an image: {e}"), 0, 0),
    }
}

#[test]
fn avif_and_heic_are_resized_to_jpeg_and_webp() -> Result {
    let server = DevServer::start(&[])?;
    let key = Some(server.demo_key.as_str());
    // (file, width asked, upright size out): rot90 is stored 64x48 and shown 48x64.
    for (name, query, size) in [
        ("rgb.avif", "width=32", (32, 24)),
        ("rgb.heic", "width=32", (32, 24)),
        ("alpha.avif", "width=32", (32, 24)),
        ("alpha.heic", "width=16", (16, 12)),
        ("rot90.heic", "width=24", (24, 32)),
        ("deep10.avif", "height=12", (16, 12)),
    ] {
        let r = server.resize(query, key, &fixture(name), &[]);
        assert_eq!(r.status, 200, "{name}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(probe(&r.body), ("jpeg".to_owned(), size.0, size.1), "{name} ({query}) → JPEG");
        let r = server.resize(&format!("{query}&format=webp"), key, &fixture(name), &[]);
        assert_eq!(r.status, 200, "{name}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(probe(&r.body), ("webp".to_owned(), size.0, size.1), "{name} ({query}) → WebP");
    }
    Ok(())
}

fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(body);
    b
}

#[test]
fn hostile_avif_files_are_typed_4xx_within_two_seconds() -> Result {
    let server = DevServer::start(&[])?;
    let key = Some(server.demo_key.as_str());
    let good = fixture("rgb.avif");
    // meta's size (after the ftyp box) past the end of the file.
    let ftyp_len = u32::from_be_bytes(good[..4].try_into()?) as usize;
    let mut past_eof = good.clone();
    past_eof[ftyp_len..ftyp_len + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    // The iinf box declaring 2^32 - 1 items (its count follows its version and flags; the
    // fixture's is version 0, a 16-bit count: make it 65535).
    let mut item_bomb = good.clone();
    let at = item_bomb.windows(4).position(|w| w == b"iinf").context("iinf")? + 8;
    item_bomb[at..at + 2].copy_from_slice(&u16::MAX.to_be_bytes());
    // A 100k-deep nest of boxes in place of meta.
    let mut nested = good[..ftyp_len].to_vec();
    let depth = 100_000usize;
    for i in 0..depth {
        nested.extend_from_slice(&(((depth - i) * 8) as u32).to_be_bytes());
        nested.extend_from_slice(b"meta");
    }
    // ispe claiming 65535 x 65535: the decoder memory limit, before decoding.
    let mut huge = good.clone();
    let at = huge.windows(4).position(|w| w == b"ispe").context("ispe")? + 8;
    huge[at..at + 8].copy_from_slice(&[0, 0, 0xFF, 0xFF, 0, 0, 0xFF, 0xFF]);
    let truncated = good[..good.len() - 40].to_vec();
    let mut garbage = bx(b"ftyp", b"avif\0\0\0\0avifmif1");
    garbage.extend_from_slice(&bx(b"mdat", &[0xAB; 1000]));
    for (name, body, status) in [
        ("meta past EOF", past_eof, 422),
        ("item-count bomb", item_bomb, 422),
        ("100k nested boxes", nested, 422),
        ("65535x65535 ispe", huge, 413),
        ("truncated", truncated, 422),
        ("no meta", garbage, 422),
    ] {
        let started = Instant::now();
        let r = server.resize("width=32", key, &body, &[]);
        let took = started.elapsed();
        assert_eq!(r.status, status, "{name}: {}", String::from_utf8_lossy(&r.body));
        let kind = r.problem_type();
        assert!(kind == "corrupt-image" || kind == "too-large", "{name}: {kind}");
        assert!(took < Duration::from_secs(2), "{name}: {took:?}");
    }
    Ok(())
}

/// `resizer dev` with `RESIZER_LIBHEIF` set to a library that does not exist: a machine without
/// libheif.
#[test]
fn without_libheif_avif_and_heic_are_415_naming_the_package() -> Result {
    let server = DevServer::start_with_env(&[("RESIZER_LIBHEIF", "/nonexistent/libheif.so.1")], &[])?;
    for name in ["rgb.avif", "rgb.heic"] {
        let r = server.resize("width=32", Some(&server.demo_key), &fixture(name), &[]);
        assert_eq!(r.status, 415, "{name}");
        let problem = r.json();
        assert!(problem["type"].as_str().unwrap_or("").ends_with("unsupported-image"), "{problem}");
        let detail = problem["detail"].as_str().unwrap_or("");
        assert!(detail.contains("libheif") && detail.contains("apt-get install libheif1"), "{detail}");
    }
    // Other formats are unaffected.
    let r = server.resize("width=8", Some(&server.demo_key), &common::png(16, 16), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(probe(&r.body).0, "png");
    // AVIF is still written, by the built-in rav1e, and /readyz says so.
    let r = server.resize("width=8&format=avif", Some(&server.demo_key), &common::png(16, 16), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[4..12], b"ftypavif");
    let ready = server.get("/readyz").json();
    assert_eq!(ready["avif_encoder"], "rav1e (built in)", "{ready}");
    Ok(())
}
