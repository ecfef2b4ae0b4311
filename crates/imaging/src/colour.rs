//! Colour to sRGB: embedded ICC profiles (RGB and CMYK) through moxcms, CMYK without a profile
//! by the naive formula, grey expanded to RGB. Runs after the resize, on the small image, which
//! is what makes a colour-managed pipeline cheap.

use std::cell::RefCell;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use moxcms::{ColorProfile, DataColorSpace, Layout as CmsLayout, Transform8BitExecutor, TransformOptions};

use crate::bitmap::{Bitmap, Layout};

const MAX_ICC_BYTES: usize = 4 << 20;

/// Converts to sRGB: `Rgb`/`Rgba`, or `Gray`/`GrayAlpha` kept as they are (grey is grey in
/// sRGB, and a one-channel JPEG is a third of the encoding work). A profile that cannot be
/// parsed or applied is ignored and the pixels are taken as sRGB, as browsers do: the image is
/// still served.
pub fn to_srgb(bitmap: Bitmap, icc: Option<&[u8]>) -> Bitmap {
    // Real profiles are kilobytes (rarely a few MiB); anything larger is not worth hashing.
    let icc = icc.filter(|p| p.len() <= MAX_ICC_BYTES);
    let transformed = icc.and_then(|icc| apply_profile(&bitmap, icc));
    if let Some(b) = transformed {
        return b;
    }
    match bitmap.layout {
        Layout::Rgb | Layout::Rgba | Layout::Gray | Layout::GrayAlpha => bitmap,
        Layout::Cmyk => expand(&bitmap, Layout::Rgb, |p, out| {
            let k = 255 - u32::from(p[3]);
            let ch = |c: u8| ((255 - u32::from(c)) * k / 255) as u8;
            out.extend_from_slice(&[ch(p[0]), ch(p[1]), ch(p[2])]);
        }),
    }
}

/// Grey to RGB (alpha kept), for steps and encoders that need colour channels.
pub fn expand_gray(b: Bitmap) -> Bitmap {
    match b.layout {
        Layout::Gray => expand(&b, Layout::Rgb, |p, out| out.extend_from_slice(&[p[0], p[0], p[0]])),
        Layout::GrayAlpha => expand(&b, Layout::Rgba, |p, out| out.extend_from_slice(&[p[0], p[0], p[0], p[1]])),
        _ => b,
    }
}

fn expand(b: &Bitmap, layout: Layout, f: impl Fn(&[u8], &mut Vec<u8>)) -> Bitmap {
    let c = b.layout.channels();
    let mut out = Vec::with_capacity(b.width as usize * b.height as usize * layout.channels());
    for p in b.data.chunks_exact(c) {
        f(p, &mut out);
    }
    Bitmap::new(b.width, b.height, layout, out)
}

fn apply_profile(bitmap: &Bitmap, icc: &[u8]) -> Option<Bitmap> {
    let (src_layout, dst, dst_layout, expected_space) = match bitmap.layout {
        Layout::Rgb => (CmsLayout::Rgb, Layout::Rgb, CmsLayout::Rgb, DataColorSpace::Rgb),
        Layout::Rgba => (CmsLayout::Rgba, Layout::Rgba, CmsLayout::Rgba, DataColorSpace::Rgb),
        // moxcms reads 8-bit CMYK in the RGBA layout.
        Layout::Cmyk => (CmsLayout::Rgba, Layout::Rgb, CmsLayout::Rgb, DataColorSpace::Cmyk),
        // Grey profiles map grey to grey in sRGB: transform to RGB, then keep one channel.
        Layout::Gray => (CmsLayout::Gray, Layout::Rgb, CmsLayout::Rgb, DataColorSpace::Gray),
        Layout::GrayAlpha => (CmsLayout::GrayAlpha, Layout::Rgba, CmsLayout::Rgba, DataColorSpace::Gray),
    };
    let transform = cached_transform(icc, bitmap.layout, src_layout, dst_layout, expected_space)?;
    let mut out = vec![0u8; bitmap.width as usize * bitmap.height as usize * dst.channels()];
    // ICC 8-bit CMYK means 0 = no ink, as our decoded samples do (Adobe inversion undone).
    transform.transform(&bitmap.data, &mut out).ok()?;
    let rgb = Bitmap::new(bitmap.width, bitmap.height, dst, out);
    Some(match bitmap.layout {
        Layout::Gray => {
            let data = rgb.data.chunks_exact(3).map(|p| p[1]).collect();
            Bitmap::new(rgb.width, rgb.height, Layout::Gray, data)
        }
        Layout::GrayAlpha => {
            let data = rgb.data.chunks_exact(4).flat_map(|p| [p[1], p[3]]).collect();
            Bitmap::new(rgb.width, rgb.height, Layout::GrayAlpha, data)
        }
        _ => rgb,
    })
}

/// Keyed by profile hash and our layout: CMYK and RGBA share moxcms' 4-channel layout but not
/// a transform.
type CacheEntry = (u64, Layout, Option<Arc<Transform8BitExecutor>>);

thread_local! {
    /// Building a transform costs far more than applying it to a thumbnail, and a service sees
    /// the same few camera and editor profiles over and over. Failures are cached too.
    static TRANSFORMS: RefCell<Vec<CacheEntry>> = const { RefCell::new(Vec::new()) };
}

const CACHE_SIZE: usize = 16;

fn cached_transform(
    icc: &[u8],
    layout: Layout,
    src: CmsLayout,
    dst: CmsLayout,
    space: DataColorSpace,
) -> Option<Arc<Transform8BitExecutor>> {
    let mut h = DefaultHasher::new();
    icc.hash(&mut h);
    let key = h.finish();
    if let Some(hit) = TRANSFORMS.with_borrow(|c| c.iter().find(|e| e.0 == key && e.1 == layout).map(|e| e.2.clone())) {
        return hit;
    }
    let built = build_transform(icc, src, dst, space);
    TRANSFORMS.with_borrow_mut(|c| {
        if c.len() >= CACHE_SIZE {
            c.remove(0);
        }
        c.push((key, layout, built.clone()));
    });
    built
}

fn build_transform(
    icc: &[u8],
    src: CmsLayout,
    dst: CmsLayout,
    space: DataColorSpace,
) -> Option<Arc<Transform8BitExecutor>> {
    let profile = ColorProfile::new_from_slice(icc).ok()?;
    if profile.color_space != space {
        return None;
    }
    let srgb = ColorProfile::new_srgb();
    profile.create_transform_8bit(src, &srgb, dst, TransformOptions::default()).ok()
}

/// The sRGB profile bytes, for outputs that keep an ICC profile. Encoded once, with a fixed
/// creation date: moxcms stamps a profile with the time it is made, which made the same request
/// answer different bytes from one second to the next (defeating caches and ETags downstream).
pub fn srgb_profile() -> Option<Vec<u8>> {
    static PROFILE: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    PROFILE
        .get_or_init(|| {
            let mut profile = ColorProfile::new_srgb();
            profile.creation_date_time = SRGB_PROFILE_DATE;
            profile.encode().ok()
        })
        .clone()
}

/// The date our sRGB profile carries: IEC 61966-2-1's publication (1999-10-18).
const SRGB_PROFILE_DATE: moxcms::ColorDateTime =
    moxcms::ColorDateTime { year: 1999, month: 10, day_of_the_month: 18, hours: 0, minutes: 0, seconds: 0 };
