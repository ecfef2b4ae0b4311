//! The one error type of the pipeline, and the one table of how each kind is answered
//! ([`ErrorClass`]: status number, problem slug and title). Each variant says what the caller did
//! wrong (or what the image is), so the answer never depends on the message.
//!
//! The table is plain data: this crate takes no HTTP dependency. The api turns a class into its
//! problem+json (type URI, status code); the CLI prints the number.

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
    /// An animation's pixels summed over its frames, on the input or the output `side`.
    #[error("animation is {actual} {side} pixels summed over its frames; the limit is {limit} pixels (frames=1 asks for the first frame only)")]
    AnimationPixels { side: &'static str, actual: u64, limit: u64 },
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

/// How an [`ImagingError`] is answered: the HTTP status it stands for, and the problem type's
/// slug (the last part of its `type` URI: stable, for clients to branch on) and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorClass {
    pub status: u16,
    pub slug: &'static str,
    pub title: &'static str,
}

impl ImagingError {
    /// The one table of the pipeline's errors: the api answers from it (a worker's failure too,
    /// which comes back as the same variant), and the CLI prints its status.
    pub fn class(&self) -> ErrorClass {
        let class = |status, slug, title| ErrorClass { status, slug, title };
        match self {
            ImagingError::BadParameter(_) => class(400, "bad-parameter", "Bad parameter"),
            ImagingError::LimitExceeded(_) => class(413, "too-large", "Input too large"),
            ImagingError::Unsupported(_) => class(415, "unsupported-image", "Unsupported image format"),
            ImagingError::Corrupt(_) => class(422, "corrupt-image", "Corrupt or undecodable image"),
            ImagingError::Internal(_) => class(500, "internal", "Internal error"),
        }
    }

    /// The HTTP status this error stands for (its [`ErrorClass`]'s).
    pub fn http_status(&self) -> u16 {
        self.class().status
    }
}
