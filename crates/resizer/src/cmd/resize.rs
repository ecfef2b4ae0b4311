//! `resizer resize`: the imaging pipeline on local files, one or a whole folder. The folder mode
//! is also the conversion benchmark: one process, N threads, images/s printed at the end.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use imaging::{Limits, OutputFormat, ResizeSpec};

#[derive(Args, Debug)]
pub struct ResizeArgs {
    /// Input image (omit with --batch).
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    input: Option<PathBuf>,
    /// Output file; its extension picks the format unless --format is given.
    #[arg(short, long, required_unless_present = "batch", conflicts_with = "batch")]
    output: Option<PathBuf>,
    /// Convert every file in this folder (not recursive).
    #[arg(long, requires = "out")]
    batch: Option<PathBuf>,
    /// Output folder for --batch.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Worker threads for --batch (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the --batch summary as one JSON line.
    #[arg(long)]
    json: bool,

    #[arg(long)]
    width: Option<String>,
    #[arg(long)]
    height: Option<String>,
    /// inside (default) | cover | contain | fill | outside
    #[arg(long)]
    fit: Option<String>,
    /// center (default) | north | northeast | ... | entropy
    #[arg(long)]
    gravity: Option<String>,
    /// Allow upscaling.
    #[arg(long)]
    enlarge: bool,
    /// jpeg | png | webp | gif | avif | auto (auto: from the output file's extension, else the
    /// input's format)
    #[arg(long)]
    format: Option<String>,
    /// 1-100 (JPEG, lossy WebP)
    #[arg(long)]
    quality: Option<String>,
    #[arg(long)]
    progressive: bool,
    /// Lossless WebP.
    #[arg(long)]
    lossless: bool,
    /// 1: an animated GIF or WebP gives its first frame only; all (the default): an animation
    /// stays one where the output format holds animations (WebP, GIF).
    #[arg(long)]
    frames: Option<String>,
    /// Padding for fit=contain and the colour alpha is flattened onto: #rrggbb[aa], white, ...
    #[arg(long)]
    background: Option<String>,
    /// Embed the sRGB ICC profile (all other metadata is always stripped).
    #[arg(long)]
    keep_icc: bool,
}

impl ResizeArgs {
    /// Builds the spec through the same parser the HTTP API uses, so both accept the same things.
    fn spec(&self) -> anyhow::Result<ResizeSpec> {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        let options = [
            ("width", &self.width),
            ("height", &self.height),
            ("fit", &self.fit),
            ("gravity", &self.gravity),
            ("format", &self.format),
            ("quality", &self.quality),
            ("background", &self.background),
            ("frames", &self.frames),
        ];
        for (k, v) in options {
            if let Some(v) = v {
                pairs.push((k, v.as_str()));
            }
        }
        for (k, on) in [
            ("enlarge", self.enlarge),
            ("progressive", self.progressive),
            ("lossless", self.lossless),
            ("keep_icc", self.keep_icc),
        ] {
            if on {
                pairs.push((k, "true"));
            }
        }
        Ok(ResizeSpec::from_pairs(pairs)?)
    }
}

pub fn run(args: ResizeArgs) -> anyhow::Result<ExitCode> {
    let mut spec = args.spec()?;
    let limits = Limits::default();
    if let Some(dir) = &args.batch {
        let out = args.out.as_deref().context("--batch needs --out")?;
        return batch(dir, out, args.threads, args.json, &spec, &limits);
    }
    let (Some(input), Some(output)) = (&args.input, &args.output) else {
        bail!("give INPUT and -o OUTPUT, or --batch DIR --out DIR");
    };
    if spec.format.is_none() {
        spec.format = format_from_extension(output);
        if let (None, Some(extension)) = (spec.format, output.extension()) {
            // Writing JPEG bytes into `x.bmp` would be a surprise found much later.
            bail!(
                "cannot write the format `.{}` names: name the output .jpg, .png, .webp or .gif, or give --format",
                extension.to_string_lossy()
            );
        }
    }
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    match imaging::process(&bytes, &spec, &limits) {
        Ok(done) => {
            std::fs::write(output, &done.bytes).with_context(|| format!("writing {}", output.display()))?;
            let r = done.report;
            eprintln!(
                "{} {}x{} {} B -> {} {}x{} {} B in {:.1} ms (cpu {:.1} ms)",
                r.input_format.as_str(),
                r.input_width,
                r.input_height,
                r.input_bytes,
                r.format.as_str(),
                r.width,
                r.height,
                r.bytes,
                ms(r.wall_time),
                ms(r.cpu_time),
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {}: {e} (HTTP {})", input.display(), e.http_status());
            Ok(ExitCode::from(1))
        }
    }
}

fn format_from_extension(path: &Path) -> Option<OutputFormat> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "jpg" | "jpeg" => Some(OutputFormat::Jpeg),
        "png" => Some(OutputFormat::Png),
        "webp" => Some(OutputFormat::Webp),
        "gif" => Some(OutputFormat::Gif),
        _ => None,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn batch(
    dir: &Path,
    out: &Path,
    threads: Option<usize>,
    json: bool,
    spec: &ResizeSpec,
    limits: &Limits,
) -> anyhow::Result<ExitCode> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).clamp(1, 256);
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let cpu = Mutex::new(Duration::ZERO);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = files.get(i) else { break };
                match convert_one(path, out, spec, limits) {
                    Ok(cpu_time) => *cpu.lock().unwrap_or_else(|p| p.into_inner()) += cpu_time,
                    Err(e) => {
                        failures.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{}: {e:#}", path.display()))
                    }
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    for f in &failures {
        eprintln!("failed: {f}");
    }
    let ok = files.len() - failures.len();
    let rate = ok as f64 / seconds.max(1e-9);
    let cpu = cpu.into_inner().unwrap_or_else(|p| p.into_inner()).as_secs_f64();
    if json {
        println!(
            "{{\"images\":{ok},\"failed\":{},\"threads\":{threads},\"seconds\":{seconds:.6},\"images_per_sec\":{rate:.3},\"cpu_seconds\":{cpu:.6}}}",
            failures.len()
        );
    } else {
        println!(
            "{ok} images ({} failed) in {seconds:.3} s with {threads} threads: {rate:.1} images/s",
            failures.len()
        );
    }
    Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn convert_one(path: &Path, out: &Path, spec: &ResizeSpec, limits: &Limits) -> anyhow::Result<Duration> {
    let bytes = std::fs::read(path)?;
    let done = imaging::process(&bytes, spec, limits).map_err(|e| anyhow::anyhow!("{e} (HTTP {})", e.http_status()))?;
    let stem = path.file_stem().map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
    let target = out.join(format!("{stem}.{}", done.report.format.extension()));
    std::fs::write(&target, &done.bytes).with_context(|| format!("writing {}", target.display()))?;
    Ok(done.report.cpu_time)
}
