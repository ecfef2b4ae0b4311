//! The usage record: one per answered request of an authenticated tenant, successful or not.
//! It is both the billing input and the audit trail, so it says who, when, what was asked, what
//! came back, and what it cost. Plain data; the spool, the stream and the archive only move it.

use serde::{Deserialize, Serialize};

/// The record's text fields: inline up to 24 bytes (request ids, key ids, node names, formats,
/// most query strings), so building, spooling and dropping a record allocates nothing in the
/// common case. Records are made on every request and freed a second later on another thread.
pub type Text = compact_str::CompactString;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The request id (`X-Request-Id`): unique per request, the audit join key.
    pub request_id: Text,
    pub tenant: u64,
    /// The API key's public id (never its secret).
    pub key_id: Text,
    /// When the answer was decided, milliseconds since the Unix epoch (UTC).
    pub time_ms: i64,
    /// The api node that answered.
    pub node: Text,
    /// The worker that converted (empty when no conversion ran).
    pub worker: Text,
    pub status: u16,
    /// The problem type's last part for an error (`rate-limited`, `corrupt-image`, ...), empty on success.
    pub error: Text,
    /// The query string as the client sent it.
    pub params: Text,
    /// Input format (`jpeg`, `png`, `webp`, `gif`), empty when the body was never probed.
    pub input_format: Text,
    pub input_bytes: u64,
    pub input_width: u32,
    pub input_height: u32,
    pub output_format: Text,
    pub output_bytes: u64,
    pub output_width: u32,
    pub output_height: u32,
    pub queue_wait_us: u64,
    pub wall_us: u64,
    pub cpu_us: u64,
}

impl UsageRecord {
    pub fn input_pixels(&self) -> u64 {
        u64::from(self.input_width) * u64::from(self.input_height)
    }

    pub fn output_pixels(&self) -> u64 {
        u64::from(self.output_width) * u64::from(self.output_height)
    }
}
