//! The job message on the queue and the result a worker hands back, as JSON. A job is small (no
//! image bytes: those stay staged on the api node); a result's image travels as the body of one
//! HTTP request and its description in the [`RESULT_HEADER`] header.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dispatch::DispatchError;
use imaging::{ImageFormat, ImagingError, LimitExceeded, OutputFormat, Report};
use serde::{Deserialize, Serialize};

/// The header of a result upload that carries its [`ResultMeta`] as JSON.
pub const RESULT_HEADER: &str = "resizer-result";

/// One resize to run, as published to `<prefix>.<lane>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobMessage {
    /// Unique per request; also the JetStream message id (a retried publish is deduplicated).
    pub job_id: String,
    /// The request's id, for the worker's logs.
    pub request_id: String,
    /// The api node's internal base URL (`http://host:port`): source and result live there.
    pub origin: String,
    /// The capability for this job's source and result on `origin`.
    pub token: String,
    /// The request's query string (the resize parameters), parsed again by the worker.
    pub params: String,
    /// The output format the api negotiated when the parameters named none.
    pub format: Option<String>,
    pub max_input_bytes: u64,
    pub max_input_pixels: u64,
    /// width × height from the api's probe (the lane).
    pub pixels: u64,
    pub input_bytes: u64,
    /// Past this (ms since the epoch) nobody waits: a worker drops the job unrun.
    pub deadline_unix_ms: u64,
    /// When the api published it (µs since the epoch): the queue hop is measured from here.
    pub published_unix_us: u64,
}

/// What a worker reports with a result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResultMeta {
    /// The worker node's id (usage records name it).
    pub worker: String,
    /// JetStream's delivery count of the job when this worker got it (1 = first delivery).
    pub attempt: u32,
    /// From publish to this worker receiving the job.
    pub queue_wait_us: u64,
    /// Fetching the source bytes from the api node.
    pub fetch_us: u64,
    /// Set on success: the body is the image.
    pub report: Option<WireReport>,
    /// Set on failure: the body is empty.
    pub failure: Option<Failure>,
}

/// `imaging::Report` on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WireReport {
    pub input_format: String,
    pub input_width: u32,
    pub input_height: u32,
    pub input_bytes: u64,
    pub format: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub decode_scale: u32,
    pub cpu_us: u64,
    pub wall_us: u64,
}

/// Why a job failed on a worker, as the api needs it to answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    Unsupported,
    Corrupt,
    LimitExceeded,
    BadParameter,
    /// The pipeline failed on a valid bitmap (our bug).
    Internal,
    /// The pipeline panicked (our bug; the worker lived on).
    Panicked,
    /// The job was delivered more than `max_attempts` times: it kept killing or losing workers.
    Poison,
    /// The deadline passed before the worker could run it.
    Expired,
}

/// A successful remote conversion as the api receives it.
#[derive(Debug)]
pub struct RemoteDone {
    pub image: Bytes,
    pub meta: ResultMeta,
    pub report: Report,
}

impl WireReport {
    pub fn from_report(r: &Report) -> WireReport {
        WireReport {
            input_format: r.input_format.as_str().to_owned(),
            input_width: r.input_width,
            input_height: r.input_height,
            input_bytes: r.input_bytes,
            format: r.format.as_str().to_owned(),
            width: r.width,
            height: r.height,
            bytes: r.bytes,
            decode_scale: r.decode_scale,
            cpu_us: micros(r.cpu_time),
            wall_us: micros(r.wall_time),
        }
    }

    /// `None` when a format name is not one this build knows (a worker of another version).
    pub fn to_report(&self) -> Option<Report> {
        let input_format = ImageFormat::ALL.into_iter().find(|f| f.as_str() == self.input_format)?;
        Some(Report {
            input_format,
            input_width: self.input_width,
            input_height: self.input_height,
            input_bytes: self.input_bytes,
            format: output_format(&self.format)?,
            width: self.width,
            height: self.height,
            bytes: self.bytes,
            decode_scale: self.decode_scale,
            cpu_time: Duration::from_micros(self.cpu_us),
            wall_time: Duration::from_micros(self.wall_us),
        })
    }
}

/// An output format by its name (`jpeg`, `png`, `webp`).
pub fn output_format(name: &str) -> Option<OutputFormat> {
    OutputFormat::ALL.into_iter().find(|f| f.as_str() == name)
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure { kind, message: message.into() }
    }

    pub fn from_imaging(e: &ImagingError) -> Failure {
        let kind = match e {
            ImagingError::Unsupported(_) => FailureKind::Unsupported,
            ImagingError::Corrupt(_) => FailureKind::Corrupt,
            ImagingError::LimitExceeded(_) => FailureKind::LimitExceeded,
            ImagingError::BadParameter(_) => FailureKind::BadParameter,
            ImagingError::Internal(_) => FailureKind::Internal,
        };
        let message = match e {
            // Its Display adds a prefix that the rebuilt error adds again.
            ImagingError::Internal(m) => m.clone(),
            other => other.to_string(),
        };
        Failure::new(kind, message)
    }

    pub fn from_dispatch(e: &DispatchError) -> Failure {
        match e {
            DispatchError::Imaging(e) => Failure::from_imaging(e),
            DispatchError::WorkerPanicked { message } => Failure::new(FailureKind::Panicked, message.clone()),
            DispatchError::DeadlineExceeded => Failure::new(FailureKind::Expired, e.to_string()),
            // The worker's own pool is full or stopping: another delivery will do better. The
            // worker naks these instead of reporting them; this is the fallback wording.
            DispatchError::Overloaded { .. } | DispatchError::ShuttingDown => {
                Failure::new(FailureKind::Internal, e.to_string())
            }
        }
    }

    /// The failure as the dispatcher's error, so the api answers a remote failure exactly as it
    /// answers the same failure in `resizer dev`. `Poison` has no dispatcher equivalent: `None`.
    pub fn to_dispatch_error(&self) -> Option<DispatchError> {
        let m = self.message.clone();
        Some(match self.kind {
            FailureKind::Unsupported => ImagingError::Unsupported(m).into(),
            FailureKind::Corrupt => ImagingError::Corrupt(m).into(),
            FailureKind::LimitExceeded => ImagingError::LimitExceeded(LimitExceeded::Reported(m)).into(),
            FailureKind::BadParameter => ImagingError::BadParameter(m).into(),
            FailureKind::Internal => ImagingError::Internal(m).into(),
            FailureKind::Panicked => DispatchError::WorkerPanicked { message: m },
            FailureKind::Expired => DispatchError::DeadlineExceeded,
            FailureKind::Poison => return None,
        })
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, micros)
}

pub fn unix_millis() -> u64 {
    unix_micros() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_kind_round_trips_to_the_same_status() {
        let cases = [
            (ImagingError::Unsupported("u".into()), 415),
            (ImagingError::Corrupt("c".into()), 422),
            (ImagingError::LimitExceeded(LimitExceeded::Frames { actual: 9, limit: 1 }), 413),
            (ImagingError::BadParameter("b".into()), 400),
            (ImagingError::Internal("i".into()), 500),
        ];
        for (e, status) in cases {
            let wire: Failure =
                serde_json::from_str(&serde_json::to_string(&Failure::from_imaging(&e)).unwrap()).unwrap();
            let Some(DispatchError::Imaging(back)) = wire.to_dispatch_error() else {
                panic!("{e:?}: not an imaging failure")
            };
            assert_eq!(back.http_status(), status, "{e:?}");
            assert_eq!(back.to_string(), e.to_string(), "the message survives");
        }
        assert!(Failure::new(FailureKind::Poison, "p").to_dispatch_error().is_none());
    }

    #[test]
    fn a_report_round_trips() {
        let report = Report {
            input_format: ImageFormat::Gif,
            input_width: 640,
            input_height: 480,
            input_bytes: 1234,
            format: OutputFormat::Webp,
            width: 320,
            height: 240,
            bytes: 99,
            decode_scale: 2,
            cpu_time: Duration::from_micros(1500),
            wall_time: Duration::from_micros(1700),
        };
        let back = WireReport::from_report(&report).to_report().expect("known formats");
        assert_eq!(format!("{back:?}"), format!("{report:?}"));
        let mut unknown = WireReport::from_report(&report);
        unknown.format = "jxl".into();
        assert!(unknown.to_report().is_none());
    }
}
