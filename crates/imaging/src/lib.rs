//! # imaging
//!
//! The image pipeline of resizer: bytes in, bytes out, plus a [`Report`] of what it did and what
//! it cost. It owns probing (format and size from the header, no decoding), the limits that stop
//! decompression bombs before any pixel buffer exists, shrink-on-load decoding, EXIF
//! orientation, colour management to sRGB, Lanczos3 resampling for every fit mode, cropping,
//! padding, alpha flattening and encoding.
//!
//! It must not know about HTTP, tenants, queues or files: it is pure and synchronous, no I/O and
//! no async, so the api, the workers and the CLI all run exactly the same conversion. Decoders
//! written in C (libjpeg-turbo, libwebp) sit behind `catch_unwind` and typed errors: nothing a
//! client sends may panic out of this crate.

mod bitmap;
mod colour;
mod cputime;
mod crop;
mod decode;
mod encode;
mod error;
mod extend;
mod flatten;
mod geometry;
mod heap;
mod jpeg_simd;
mod libheif;
mod limits;
mod orient;
mod pipeline;
mod plane_resize;
mod probe;
mod resize;
mod spec;
mod ycbcr;

pub use encode::avif_encoder;
pub use error::{ErrorClass, ImagingError, LimitExceeded};
pub use geometry::{plan, Plan};
pub use heap::keep_heap_between_images;
pub use jpeg_simd::jpeg_simd;
pub use limits::Limits;
pub use pipeline::{frames_out, process, Output, Report};
pub use probe::{probe, ImageFormat, Probe, ProbeError};
pub use spec::{
    AvifPolicy, Fit, Gravity, OutputFormat, ResizeSpec, Rgba, AVIF_OUTPUT, DEFAULT_AVIF_MAX_PIXELS, DEFAULT_EFFORT,
    DEFAULT_MAX_EFFORT, MAX_DIMENSION, MAX_EFFORT,
};
