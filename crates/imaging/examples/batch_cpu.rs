//! The pipeline's CPU per photo, without the CLI or a server around it: every file of DIR with
//! the extension EXT (default `jpg`) to `width=512` JPEG q80 on one thread, ROUNDS times
//! (default 3); prints this thread's CPU time
//! per image and writes the first round's outputs to OUT (for bench/ssim.py). For comparing two
//! builds of imaging with `farm-bench --vs` (docs/benchmarks.md, "JPEG shrink-on-load in
//! eighths").
//!
//! cargo run --release -p imaging --no-default-features --example batch_cpu -- DIR [OUT] [ROUNDS] [EXT]
use std::path::PathBuf;

fn main() {
    // As `resizer` does for the commands that convert images.
    imaging::keep_heap_between_images();
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: batch_cpu DIR [OUT] [ROUNDS] [EXT]"));
    let out = args.next().map(PathBuf::from);
    let rounds: u32 = args.next().map(|r| r.parse().expect("rounds")).unwrap_or(3);
    let extension = args.next().unwrap_or_else(|| "jpg".into());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| *x == *extension))
        .collect();
    files.sort();
    let inputs: Vec<(PathBuf, Vec<u8>)> =
        files.into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("read"))).collect();
    let spec = imaging::ResizeSpec::from_query("width=512&format=jpeg&quality=80").expect("spec");
    let limits = imaging::Limits::default();
    let mut cpu = std::time::Duration::ZERO;
    for round in 0..rounds {
        for (path, bytes) in &inputs {
            let o = imaging::process(bytes, &spec, &limits).expect("process");
            cpu += o.report.cpu_time;
            if round == 0 {
                if let Some(out) = &out {
                    std::fs::create_dir_all(out).expect("out");
                    let name = path.file_stem().expect("stem").to_string_lossy().to_string();
                    std::fs::write(out.join(format!("{name}.jpg")), &o.bytes).expect("write");
                }
            }
        }
    }
    let n = inputs.len() as u32 * rounds;
    println!(
        "{n} images, {:.3} ms CPU per image, {:.1} images/s per core",
        cpu.as_secs_f64() * 1000.0 / f64::from(n),
        f64::from(n) / cpu.as_secs_f64()
    );
}
