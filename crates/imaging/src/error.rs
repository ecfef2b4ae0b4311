//! The one error type of the pipeline. Each variant says what the caller did wrong (or what the
//! image is), so the HTTP edge can map it to a status without looking inside the message.

use crate::probe::ProbeError;

#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    /// The bytes are not an image format we read (HTTP 415).
    #[error("{0}")]
    Unsupported(String),
    /// The image is recognised but its data is corrupt, truncated or undecodable (HTTP 422).
    #[error("{0}")]
    Corrupt(String),
    /// A limit was exceeded before any pixel was decoded (HTTP 413).
    #[error("{0}")]
    LimitExceeded(LimitExceeded),
    /// The resize parameters are invalid (HTTP 400).
    #[error("{0}")]
    BadParameter(String),
    /// The resampler or an encoder failed on a valid bitmap: our fault, not the client's (HTTP 500).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Which limit an input broke, with the measured value and the limit, for a precise message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("input is {actual} bytes; the limit is {limit} bytes")]
    InputBytes { actual: u64, limit: u64 },
    #[error("image is {width}x{height} = {actual} pixels; the limit is {limit} pixels")]
    InputPixels { width: u32, height: u32, actual: u64, limit: u64 },
    #[error("image has {actual} frames; the limit is {limit}")]
    Frames { actual: u64, limit: u64 },
    #[error("JPEG has {actual} scans; the limit is {limit}")]
    Scans { actual: u64, limit: u64 },
    #[error("JPEG scans would walk {actual} 8x8 blocks; the limit is {limit}")]
    ScanWork { actual: u64, limit: u64 },
    #[error("decoding needs about {actual} bytes of memory; the limit is {limit} bytes")]
    DecoderMemory { actual: u64, limit: u64 },
    #[error("output would be {width}x{height} = {actual} pixels; the limit is {limit} pixels")]
    OutputPixels { width: u32, height: u32, actual: u64, limit: u64 },
    /// One of the above, found by a remote worker and reported as its message.
    #[error("{0}")]
    Reported(String),
}

impl From<ProbeError> for ImagingError {
    fn from(e: ProbeError) -> Self {
        match e {
            ProbeError::Unsupported => ImagingError::Unsupported(e.to_string()),
            ProbeError::Corrupt(_) | ProbeError::Truncated(_) => ImagingError::Corrupt(e.to_string()),
        }
    }
}

impl From<LimitExceeded> for ImagingError {
    fn from(e: LimitExceeded) -> Self {
        ImagingError::LimitExceeded(e)
    }
}

impl ImagingError {
    /// The HTTP status this error stands for; the single mapping lives at the HTTP edge, this
    /// only keeps the decision next to the variants so CLI and API agree.
    pub fn http_status(&self) -> u16 {
        match self {
            ImagingError::Unsupported(_) => 415,
            ImagingError::Corrupt(_) => 422,
            ImagingError::LimitExceeded(_) => 413,
            ImagingError::BadParameter(_) => 400,
            ImagingError::Internal(_) => 500,
        }
    }
}
