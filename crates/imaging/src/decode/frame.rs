//! One frame of an animation as the decoders hand it out (a file of its own, so that the
//! per-format sources and `frames.rs`, which chooses among them, both depend on it and not on
//! each other).

use crate::bitmap::Bitmap;

/// One composed frame: the whole canvas in RGBA, and how long it shows.
pub struct Frame {
    pub canvas: Bitmap,
    pub delay_ms: u32,
}
