//! Real images through the public API: the pool's threads run `imaging::process` and pass its
//! answers and its errors through unchanged.

use std::time::{Duration, Instant};

use dispatch::{DispatchConfig, DispatchError, Dispatcher, Job, Lane};
use imaging::{ImageFormat, ImagingError, Limits, ResizeSpec};

const PATIENCE: Duration = Duration::from_secs(30);

/// An RGB gradient, PNG-encoded.
fn png(width: u32, height: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            data.extend([(x * 255 / width) as u8, (y * 255 / height) as u8, 128]);
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&data).unwrap();
    writer.finish().unwrap();
    out
}

/// A job as the api builds it: the lane's pixel count comes from the probe.
fn job(input: Vec<u8>, width: u32) -> Job {
    let pixels = imaging::probe(&input).map_or(0, |p| u64::from(p.width) * u64::from(p.height));
    Job {
        input,
        spec: ResizeSpec::new(Some(width), None).unwrap(),
        limits: Limits::default(),
        pixels,
        deadline: Instant::now() + PATIENCE,
    }
}

async fn submit(d: &Dispatcher, job: Job) -> Result<dispatch::Done, DispatchError> {
    tokio::time::timeout(PATIENCE, d.submit(job)).await.expect("submit did not resolve")
}

#[tokio::test]
async fn resizes_a_png_on_a_pool_thread() {
    let d = Dispatcher::start(DispatchConfig::with_threads(2));
    let done = submit(&d, job(png(64, 48), 16)).await.unwrap();
    assert_eq!(done.lane, Lane::Small);
    assert_eq!((done.output.report.width, done.output.report.height), (16, 12));
    let probe = imaging::probe(&done.output.bytes).unwrap();
    assert_eq!((probe.format, probe.width, probe.height), (ImageFormat::Png, 16, 12));
    assert!(done.queue_wait < PATIENCE);
    let stats = d.stats();
    assert_eq!((stats.completed, stats.busy_threads, stats.lanes.small.queued), (1, 0, 0));
}

#[tokio::test]
async fn a_megapixel_image_travels_in_the_medium_lane() {
    let d = Dispatcher::start(DispatchConfig::with_threads(2));
    let done = submit(&d, job(png(1000, 1000), 100)).await.unwrap();
    assert_eq!(done.lane, Lane::Medium);
    assert_eq!((done.output.report.width, done.output.report.height), (100, 100));
}

#[tokio::test]
async fn imaging_errors_pass_through_as_they_are() {
    let d = Dispatcher::start(DispatchConfig::with_threads(1));

    let err = submit(&d, job(b"not an image at all".to_vec(), 16)).await.unwrap_err();
    assert!(matches!(err, DispatchError::Imaging(ImagingError::Unsupported(_))), "{err:?}");

    let mut truncated = png(64, 48);
    truncated.truncate(truncated.len() - 30);
    let err = submit(&d, job(truncated, 16)).await.unwrap_err();
    assert!(matches!(err, DispatchError::Imaging(ImagingError::Corrupt(_))), "{err:?}");

    let mut over = job(png(64, 48), 16);
    over.limits.max_input_pixels = 1_000;
    let err = submit(&d, over).await.unwrap_err();
    assert!(matches!(err, DispatchError::Imaging(ImagingError::LimitExceeded(_))), "{err:?}");

    // Errors are answers, not failures of the pool: every job counts as completed.
    assert_eq!(d.stats().completed, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_all_complete_and_each_is_counted_once() {
    let d = Dispatcher::start(DispatchConfig::with_threads(2));
    let input = png(48, 48);
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (d, input) = (d.clone(), input.clone());
            tokio::spawn(async move { submit(&d, job(input, 8)).await })
        })
        .collect();
    for task in tasks {
        let done = task.await.unwrap().unwrap();
        assert_eq!(done.output.report.width, 8);
    }
    let stats = d.stats();
    assert_eq!((stats.completed, stats.dropped_expired, stats.cancelled), (40, 0, 0));
    assert_eq!((stats.busy_threads, stats.lanes.small.queued), (0, 0));
}

#[tokio::test]
async fn shutdown_refuses_new_jobs_and_the_threads_exit() {
    let d = Dispatcher::start(DispatchConfig::with_threads(2));
    submit(&d, job(png(32, 32), 8)).await.unwrap();
    d.shutdown();
    let err = submit(&d, job(png(32, 32), 8)).await.unwrap_err();
    assert!(matches!(err, DispatchError::ShuttingDown), "{err:?}");
    tokio::time::timeout(PATIENCE, d.drained()).await.expect("pool threads did not exit");
}
