//! AVIF against WebP on photos, one thread: each photo resized to `--width` (512) and encoded as
//! WebP and as AVIF at several efforts, all at the same `quality=`; prints per setting the
//! conversion's CPU time (this thread's, so other work on the machine inflates it little), the
//! bytes, and SSIM against the same resize written losslessly (PNG), so only the encoder's loss
//! is scored. AVIF is decoded by libavif's `avifdec` (Debian's libavif-bin), WebP by libwebp.
//!
//! With `--write OUT`, every output is also written for bench/avif_peers.py, which scores it and
//! other encoders' files with one SSIM: `OUT/ref/<stem>.png` (the lossless resize),
//! `OUT/ours-q<Q>-<setting>/<stem>.<ext>`, and one line per photo and setting appended to
//! `OUT/ours.tsv` (quality, setting, stem, pipeline CPU ms, encode-only CPU ms, bytes, SSIM). The
//! encode-only time is the lossless resize's PNG decoded and encoded at its size (as sharp's
//! "encode" mode is timed), the fastest of the rounds, on this thread's CPU clock. The AVIF
//! encoder is the one `imaging` chooses (`RESIZER_AVIF_ENCODER=rav1e` or `aom` to pick).
//!
//! cargo run -p imaging --example avif_bench [--features avif-asm] -- DIR [--width 512]
//!     [--quality 80] [--efforts 0,2,4] [--every 6] [--rounds 3] [--write OUT]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use imaging::{Limits, ResizeSpec};

struct Row {
    name: String,
    cpu: Duration,
    bytes: u64,
    ssim: f64,
    images: u32,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let (mut width, mut quality, mut efforts, mut every, mut rounds) = (512u32, 80u8, vec![0u8, 2, 4], 6usize, 3u32);
    let mut write: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        let mut value = || args.next().expect("a value after the flag");
        match a.as_str() {
            "--width" => width = value().parse().expect("width"),
            "--quality" => quality = value().parse().expect("quality"),
            "--efforts" => efforts = value().split(',').map(|e| e.parse().expect("effort")).collect(),
            "--every" => every = value().parse().expect("every"),
            "--rounds" => rounds = value().parse().expect("rounds"),
            "--write" => write = Some(PathBuf::from(value())),
            _ => dir = Some(PathBuf::from(a)),
        }
    }
    let dir = dir.expect("usage: avif_bench DIR [--width N] [--quality Q] [--efforts 0,2,4] [--every N] [--rounds N]");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("photos dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    files.sort();
    let files: Vec<PathBuf> = files.into_iter().step_by(every.max(1)).collect();
    let mut settings = vec![("webp".to_owned(), format!("width={width}&format=webp&quality={quality}"))];
    for e in &efforts {
        settings.push((format!("avif effort {e}"), format!("width={width}&format=avif&quality={quality}&effort={e}")));
    }
    let mut tsv = write.as_ref().map(|out| {
        std::fs::create_dir_all(out.join("ref")).expect("--write dir");
        std::fs::OpenOptions::new().create(true).append(true).open(out.join("ours.tsv")).expect("ours.tsv")
    });
    let limits = Limits::default();
    let mut rows: Vec<Row> = settings
        .iter()
        .map(|(n, _)| Row { name: n.clone(), cpu: Duration::ZERO, bytes: 0, ssim: 0.0, images: 0 })
        .collect();
    for file in &files {
        let input = std::fs::read(file).expect("read photo");
        let reference = imaging::process(
            &input,
            &ResizeSpec::from_query(&format!("width={width}&format=png")).expect("spec"),
            &limits,
        )
        .expect("reference");
        let stem = file.file_stem().expect("stem").to_string_lossy().into_owned();
        if let Some(out) = &write {
            std::fs::write(out.join("ref").join(format!("{stem}.png")), &reference.bytes).expect("write ref");
        }
        let reference_png = reference.bytes;
        let reference_rgba = png_rgba(&reference_png);
        let reference = luma(&reference_rgba);
        for ((name, query), row) in settings.iter().zip(rows.iter_mut()) {
            let spec = ResizeSpec::from_query(query).expect("spec");
            // The fastest of `rounds` runs: the least disturbed by the machine's other work.
            let mut best = Duration::MAX;
            let mut bytes = Vec::new();
            for _ in 0..rounds.max(1) {
                let out = imaging::process(&input, &spec, &limits).expect("convert");
                best = best.min(out.report.cpu_time);
                bytes = out.bytes;
            }
            let decoded = if query.contains("avif") { avifdec(&bytes) } else { webp_rgba(&bytes) };
            let score = ssim(&reference, &luma(&decoded));
            row.cpu += best;
            row.bytes += bytes.len() as u64;
            row.ssim += score;
            row.images += 1;
            if let (Some(out), Some(tsv)) = (&write, tsv.as_mut()) {
                use std::io::Write;
                // rav1e's files apart from libaom's, so one OUT holds both encoders' runs.
                let encoder = if imaging::avif_encoder().starts_with("rav1e") { "rav1e" } else { "avif" };
                let (setting, ext) = match name.strip_prefix("avif effort ") {
                    Some(e) => (format!("{encoder}-e{e}"), "avif"),
                    None => (name.clone(), "webp"),
                };
                let dir = out.join(format!("ours-q{quality}-{setting}"));
                std::fs::create_dir_all(&dir).expect("out dir");
                std::fs::write(dir.join(format!("{stem}.{ext}")), &bytes).expect("write output");
                let encode_ms = match name.strip_prefix("avif effort ") {
                    Some(e) => {
                        encode_only(&reference_png, reference_rgba.0, quality, e.parse().expect("effort"), rounds)
                            .as_secs_f64()
                            * 1e3
                    }
                    None => f64::NAN,
                };
                writeln!(
                    tsv,
                    "{quality}\t{setting}\t{stem}\t{:.3}\t{encode_ms:.3}\t{}\t{score:.6}",
                    best.as_secs_f64() * 1e3,
                    bytes.len()
                )
                .expect("ours.tsv");
            }
        }
    }
    println!(
        "{} photos from {} (every {every}th JPEG), width {width}, quality {quality}, one thread, best of {rounds}; AVIF by {}",
        files.len(),
        dir.display(),
        imaging::avif_encoder()
    );
    println!("| output | CPU ms / image | images / s / core | KiB / image | SSIM (luma, vs lossless) | CPU vs WebP | bytes vs WebP |");
    println!("|---|---|---|---|---|---|---|");
    let (webp_cpu, webp_bytes) = (rows[0].cpu.as_secs_f64(), rows[0].bytes as f64);
    for r in &rows {
        let n = f64::from(r.images.max(1));
        let ms = r.cpu.as_secs_f64() * 1e3 / n;
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.4} | {:.2}× | {:.2}× |",
            r.name,
            ms,
            1e3 / ms,
            r.bytes as f64 / n / 1024.0,
            r.ssim / n,
            r.cpu.as_secs_f64() / webp_cpu,
            r.bytes as f64 / webp_bytes
        );
    }
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The AVIF encoder alone, as sharp's "encode" mode is timed: the lossless resize's PNG through
/// `imaging::process` at its own size (PNG decode, then the encoder this process chose, with
/// `encode/avif.rs`'s settings): the fastest of `rounds`, this thread's CPU.
fn encode_only(reference_png: &[u8], width: u32, quality: u8, effort: u8, rounds: u32) -> Duration {
    let query = format!("width={width}&format=avif&quality={quality}&effort={effort}");
    let spec = ResizeSpec::from_query(&query).expect("spec");
    let mut best = Duration::MAX;
    for _ in 0..rounds.max(1) {
        let start = thread_cpu();
        let out = imaging::process(reference_png, &spec, &Limits::default()).expect("encode");
        best = best.min(thread_cpu() - start);
        std::hint::black_box(out);
    }
    best
}

/// (width, height, RGBA)
type Rgba = (u32, u32, Vec<u8>);

fn png_rgba(bytes: &[u8]) -> Rgba {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("png");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let frame = reader.next_frame(&mut buf).expect("frame");
    let data = &buf[..frame.buffer_size()];
    let rgba = match frame.color_type {
        png::ColorType::Rgb => data.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect(),
        png::ColorType::Rgba => data.to_vec(),
        png::ColorType::Grayscale => data.iter().flat_map(|&v| [v, v, v, 255]).collect(),
        other => panic!("png {other:?}"),
    };
    (frame.width, frame.height, rgba)
}

fn webp_rgba(bytes: &[u8]) -> Rgba {
    let (mut w, mut h) = (0, 0);
    // SAFETY: libwebp allocates the buffer, which is copied and then freed with WebPFree.
    unsafe {
        let p = libwebp_sys::WebPDecodeRGBA(bytes.as_ptr(), bytes.len(), &mut w, &mut h);
        assert!(!p.is_null(), "webp decode");
        let data = std::slice::from_raw_parts(p, (w * h * 4) as usize).to_vec();
        libwebp_sys::WebPFree(p.cast());
        (w as u32, h as u32, data)
    }
}

fn avifdec(bytes: &[u8]) -> Rgba {
    let dir = std::env::temp_dir().join(format!("avif-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (input, output) = (dir.join("in.avif"), dir.join("out.png"));
    std::fs::write(&input, bytes).expect("write");
    let run = Command::new("avifdec").args(["--depth", "8"]).arg(&input).arg(&output).output().expect("avifdec");
    assert!(run.status.success(), "avifdec: {}", String::from_utf8_lossy(&run.stderr));
    png_rgba(&std::fs::read(&output).expect("avifdec's png"))
}

/// Rec. 601 luma as f64, with the size.
fn luma((w, h, rgba): &Rgba) -> (u32, u32, Vec<f64>) {
    let y = rgba.chunks_exact(4).map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]));
    (*w, *h, y.collect())
}

/// Mean SSIM over 8x8 windows every 4 pixels (uniform weights; Wang et al.'s constants).
fn ssim(a: &(u32, u32, Vec<f64>), b: &(u32, u32, Vec<f64>)) -> f64 {
    assert_eq!((a.0, a.1), (b.0, b.1), "same size");
    let (w, h) = (a.0 as usize, a.1 as usize);
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let (mut total, mut windows) = (0.0, 0u32);
    for y0 in (0..h.saturating_sub(7)).step_by(4) {
        for x0 in (0..w.saturating_sub(7)).step_by(4) {
            let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for y in y0..y0 + 8 {
                for x in x0..x0 + 8 {
                    let (va, vb) = (a.2[y * w + x], b.2[y * w + x]);
                    sa += va;
                    sb += vb;
                    saa += va * va;
                    sbb += vb * vb;
                    sab += va * vb;
                }
            }
            let n = 64.0;
            let (ma, mb) = (sa / n, sb / n);
            let (va, vb, cov) = (saa / n - ma * ma, sbb / n - mb * mb, sab / n - ma * mb);
            total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            windows += 1;
        }
    }
    total / f64::from(windows.max(1))
}
