//! What a fetch can end in, with the HTTP status and problem slug the api answers with.
//!
//! Messages name at most the scheme, host and port of a source: never its path or query (a
//! signed URL's query is a secret) nor an address a name resolved to (that would map the
//! network behind the node).

/// A source could not be had; each variant says what was refused and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("bad source URL: {0}")]
    BadUrl(String),
    #[error("source not allowed: {0}")]
    NotAllowed(String),
    #[error("source address forbidden: {0}")]
    ForbiddenAddress(String),
    #[error("the origin answered HTTP {0}")]
    OriginStatus(u16),
    #[error("the origin redirected more times than allowed")]
    TooManyRedirects,
    #[error("origin unreachable: {0}")]
    Unreachable(String),
    #[error("the origin did not answer in time")]
    TooSlow,
    #[error("the source is larger than {limit} bytes")]
    TooLarge { limit: u64 },
}

impl FetchError {
    /// The status the api answers with.
    pub fn status(&self) -> u16 {
        match self {
            FetchError::BadUrl(_) => 400,
            FetchError::NotAllowed(_) | FetchError::ForbiddenAddress(_) => 403,
            FetchError::OriginStatus(404 | 410) => 404,
            FetchError::OriginStatus(_) | FetchError::TooManyRedirects | FetchError::Unreachable(_) => 502,
            FetchError::TooSlow => 504,
            FetchError::TooLarge { .. } => 413,
        }
    }

    /// The problem type's slug (the last segment of its `type` URI).
    pub fn slug(&self) -> &'static str {
        match self {
            FetchError::BadUrl(_) => "bad-source-url",
            FetchError::NotAllowed(_) => "source-not-allowed",
            FetchError::ForbiddenAddress(_) => "source-address-forbidden",
            FetchError::OriginStatus(404 | 410) => "source-not-found",
            FetchError::OriginStatus(_) => "origin-error",
            FetchError::TooManyRedirects => "too-many-redirects",
            FetchError::Unreachable(_) => "origin-unreachable",
            FetchError::TooSlow => "origin-timeout",
            FetchError::TooLarge { .. } => "too-large",
        }
    }

    /// Refused by this node's own rules rather than failed at the origin (counted apart).
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(
            self,
            FetchError::BadUrl(_)
                | FetchError::NotAllowed(_)
                | FetchError::ForbiddenAddress(_)
                | FetchError::TooLarge { .. }
        )
    }
}

/// A [`Fetcher`](crate::Fetcher) that cannot be built from its policy.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("origin.extra_ca: {0}")]
    ExtraCa(#[from] tls::TlsError),
    #[error("TLS configuration for origins: {0}")]
    Tls(#[from] rustls::Error),
    #[error("sources.buckets: bucket {name}: {reason}")]
    Bucket { name: String, reason: String },
}
