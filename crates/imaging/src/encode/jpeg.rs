//! JPEG through libjpeg-turbo (mozjpeg's library with its libjpeg-turbo "fastest" profile: the
//! same bytes libjpeg-turbo writes, none of mozjpeg's slow trellis search).

use std::panic::{catch_unwind, AssertUnwindSafe};

use mozjpeg::{ColorSpace, Compress};

use super::EncodeOptions;
use crate::bitmap::{Bitmap, Layout};
use crate::decode::panic_message;
use crate::error::ImagingError;

pub fn encode(b: &Bitmap, o: &EncodeOptions) -> Result<Vec<u8>, ImagingError> {
    let space = match b.layout {
        Layout::Rgb => ColorSpace::JCS_RGB,
        Layout::Gray => ColorSpace::JCS_GRAYSCALE,
        other => return Err(ImagingError::Internal(format!("JPEG cannot hold {other:?} pixels"))),
    };
    let result = catch_unwind(AssertUnwindSafe(|| -> std::io::Result<Vec<u8>> {
        let mut c = Compress::new(space);
        c.set_fastest_defaults();
        c.set_size(b.width as usize, b.height as usize);
        c.set_quality(f32::from(o.quality));
        if o.progressive {
            c.set_progressive_mode();
        }
        let mut started = c.start_compress(Vec::with_capacity(b.data.len() / 8 + 1024))?;
        if let Some(icc) = &o.icc {
            started.write_icc_profile(icc);
        }
        started.write_scanlines(&b.data)?;
        started.finish()
    }));
    match result {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(ImagingError::Internal(e.to_string())),
        Err(panic) => Err(ImagingError::Internal(panic_message(&panic))),
    }
}
