//! What the caller asks for: a `ResizeSpec` that cannot hold an invalid combination, parsed from
//! the same `key=value` pairs by the HTTP API and the CLI. A query string is parsed in one place,
//! [`ResizeSpec::from_query`]: the api node's admission and the worker that runs the job both
//! call it, so the two cannot read the same parameters differently.

use crate::error::{ImagingError, LimitExceeded};
use crate::probe::ImageFormat;

/// How the image is fitted into the `width` x `height` box (sharp's meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fit {
    /// Keep the aspect ratio; as large as possible within both dimensions.
    #[default]
    Inside,
    /// Keep the aspect ratio; cover both dimensions, cropping the overflow (see `Gravity`).
    Cover,
    /// Keep the aspect ratio; fit within both dimensions and pad to exactly the box.
    Contain,
    /// Ignore the aspect ratio; stretch to exactly the box.
    Fill,
    /// Keep the aspect ratio; as small as possible while covering both dimensions.
    Outside,
}

/// Which part of the image `cover` keeps and where `contain` places it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gravity {
    #[default]
    Center,
    North,
    NorthEast,
    East,
    SouthEast,
    South,
    SouthWest,
    West,
    NorthWest,
    /// `cover` only: keep the window with the most luminance entropy (the busiest detail).
    Entropy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Jpeg,
    Png,
    Webp,
    /// AV1 in HEIF (8-bit 4:4:4, alpha as an auxiliary image), encoded by rav1e: only in a build
    /// with imaging's `avif` feature (see [`AVIF_OUTPUT`]).
    Avif,
    /// GIF89a: 256 colours a frame (each frame quantised on its own), 1-bit transparency;
    /// animations keep their frames, delays and loop count.
    Gif,
}

/// Whether this build encodes AVIF (imaging's default-on `avif` feature). Without it
/// `format=avif` is refused at parse time and `format=auto` never picks AVIF.
pub const AVIF_OUTPUT: bool = cfg!(feature = "avif");

/// The AVIF encoder's effort, sharp's scale: 0 the fastest (libaom speed 9, rav1e speed 10) to
/// 9 the slowest (libaom speed 0, rav1e speed 1). The default is fast: measured on photos at
/// 512 px (docs/benchmarks.md, "After the switch"), libaom's effort 1 costs 2.5× effort 0's CPU
/// for 16 % fewer bytes at equal SSIM, and is where AVIF's bytes come down to WebP's.
pub const MAX_EFFORT: u8 = 9;
pub const DEFAULT_EFFORT: u8 = 1;

/// What a deployment allows of AVIF output. The api node applies it at admission (a worker is
/// only ever handed requests it admitted, so it needs no copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvifPolicy {
    /// `format=auto` may pick AVIF when `Accept` names it.
    pub auto: bool,
    /// The highest `effort=` a request may ask; above it the request is refused (400), so one
    /// request cannot buy minutes of CPU. At least [`DEFAULT_EFFORT`], so the default is
    /// always allowed.
    pub max_effort: u8,
    /// The most pixels an AVIF answer may have: the effort cap bounds the CPU per pixel, this
    /// bounds the pixels (AVIF costs several times WebP's CPU per pixel, docs/formats.md).
    pub max_pixels: u64,
}

impl Default for AvifPolicy {
    fn default() -> Self {
        AvifPolicy { auto: AVIF_OUTPUT, max_effort: DEFAULT_MAX_EFFORT, max_pixels: DEFAULT_AVIF_MAX_PIXELS }
    }
}

/// The cap a deployment has unless it sets its own: effort 2 (rav1e speed 8), about 3× the
/// default's CPU; each step above costs more for a few percent of bytes.
pub const DEFAULT_MAX_EFFORT: u8 = 2;
/// The most pixels of an AVIF answer unless the deployment sets its own: 3840x2160 (4K UHD). At
/// the default cap without rav1e's assembly that is about 40 s of one core (docs/formats.md).
pub const DEFAULT_AVIF_MAX_PIXELS: u64 = 3840 * 2160;
// The default effort is always allowed, and the default cap is a real effort.
const _: () = assert!(DEFAULT_EFFORT <= DEFAULT_MAX_EFFORT && DEFAULT_MAX_EFFORT <= MAX_EFFORT);

impl AvifPolicy {
    /// Refuses a spec asking more effort than the deployment allows.
    pub fn check(&self, spec: &ResizeSpec) -> Result<(), ImagingError> {
        match spec.effort {
            Some(effort) if effort > self.max_effort => Err(ImagingError::BadParameter(format!(
                "effort {effort} is over this deployment's maximum of {} for AVIF",
                self.max_effort
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses an AVIF answer of `width` x `height` over [`AvifPolicy::max_pixels`] (413, the
    /// output pixel limit's error); other formats pass.
    pub fn check_output(&self, format: Option<OutputFormat>, width: u32, height: u32) -> Result<(), ImagingError> {
        let actual = u64::from(width) * u64::from(height);
        if format == Some(OutputFormat::Avif) && actual > self.max_pixels {
            return Err(LimitExceeded::OutputPixels { width, height, actual, limit: self.max_pixels }.into());
        }
        Ok(())
    }
}

impl OutputFormat {
    /// Every output format this crate names (AVIF too in a build without its encoder: a name
    /// read from another node is still known).
    pub const ALL: [OutputFormat; 5] =
        [OutputFormat::Jpeg, OutputFormat::Png, OutputFormat::Webp, OutputFormat::Avif, OutputFormat::Gif];

    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
            OutputFormat::Avif => "avif",
            OutputFormat::Gif => "gif",
        }
    }
    pub fn mime(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
            OutputFormat::Webp => "image/webp",
            OutputFormat::Avif => "image/avif",
            OutputFormat::Gif => "image/gif",
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
            OutputFormat::Avif => "avif",
            OutputFormat::Gif => "gif",
        }
    }
    /// The largest width or height the format can store.
    pub fn max_dimension(self) -> u32 {
        match self {
            OutputFormat::Jpeg => 65_500,
            OutputFormat::Png => u32::MAX >> 1,
            OutputFormat::Webp => 16_383,
            // AV1 allows 65,536, but decoders (dav1d, libavif) refuse frames over 16,384 a side
            // by default.
            OutputFormat::Avif => 16_384,
            // The logical screen's fields are 16-bit.
            OutputFormat::Gif => u32::from(u16::MAX),
        }
    }
    pub fn supports_alpha(self) -> bool {
        !matches!(self, OutputFormat::Jpeg)
    }
    /// Whether an animated input keeps its frames in this format (the others get its first).
    pub fn supports_animation(self) -> bool {
        matches!(self, OutputFormat::Webp | OutputFormat::Gif)
    }
    /// The output format that follows an input (`format=auto` with no better hint), knowing
    /// whether the input is animated: an animation stays in its own family (GIF → GIF,
    /// WebP → WebP), so that it stays an animation; a still follows [`OutputFormat::following`].
    pub fn following_image(input: ImageFormat, frames: u32) -> OutputFormat {
        match input {
            ImageFormat::Gif if frames > 1 => OutputFormat::Gif,
            _ => OutputFormat::following(input),
        }
    }
    /// The output format that follows a still input format (`format=auto` with no better
    /// hint). A still GIF becomes a PNG: lossless, full alpha, no 256-colour palette.
    pub fn following(input: ImageFormat) -> OutputFormat {
        match input {
            ImageFormat::Jpeg => OutputFormat::Jpeg,
            ImageFormat::Png | ImageFormat::Gif => OutputFormat::Png,
            ImageFormat::Webp => OutputFormat::Webp,
            // HEIF input has no family encoder of its own here: JPEG, as a camera's photo.
            ImageFormat::Avif | ImageFormat::Heic => OutputFormat::Jpeg,
        }
    }
}

/// An sRGB colour with alpha, for `contain` padding and for flattening alpha onto JPEG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgba(pub [u8; 4]);

impl Rgba {
    pub const WHITE: Rgba = Rgba([255, 255, 255, 255]);
    pub const TRANSPARENT: Rgba = Rgba([0, 0, 0, 0]);

    /// `#rgb`, `#rrggbb`, `#rrggbbaa` (the `#` optional), or `white`, `black`, `transparent`.
    pub fn parse(s: &str) -> Result<Rgba, ImagingError> {
        match s.to_ascii_lowercase().as_str() {
            "white" => return Ok(Rgba::WHITE),
            "black" => return Ok(Rgba([0, 0, 0, 255])),
            "transparent" => return Ok(Rgba::TRANSPARENT),
            _ => {}
        }
        let hex = s.strip_prefix('#').unwrap_or(s);
        let bad = || {
            ImagingError::BadParameter(format!(
                "background '{s}' is not a colour: use #rgb, #rrggbb, #rrggbbaa, white, black or transparent"
            ))
        };
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let nibble = |i: usize| u8::from_str_radix(&hex[i..i + 1], 16).map_err(|_| bad());
        let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad());
        match hex.len() {
            3 => Ok(Rgba([nibble(0)? * 17, nibble(1)? * 17, nibble(2)? * 17, 255])),
            6 => Ok(Rgba([byte(0)?, byte(2)?, byte(4)?, 255])),
            8 => Ok(Rgba([byte(0)?, byte(2)?, byte(4)?, byte(6)?])),
            _ => Err(bad()),
        }
    }
}

/// The largest width or height a caller may ask for; beyond it the request is a 400, not an
/// allocation attempt.
pub const MAX_DIMENSION: u32 = 16_384;

/// A validated resize request. Construct it with [`ResizeSpec::from_query`],
/// [`ResizeSpec::from_pairs`] or [`ResizeSpec::new`]; every combination it can hold is one the
/// pipeline serves.
#[derive(Debug, Clone, PartialEq)]
pub struct ResizeSpec {
    width: Option<u32>,
    height: Option<u32>,
    pub fit: Fit,
    pub gravity: Gravity,
    pub enlarge: bool,
    /// `None` means "follow the input" (the HTTP API resolves `format=auto` from `Accept` first).
    pub format: Option<OutputFormat>,
    /// 1–100; `None` takes the encoder's default (JPEG 80, WebP 80).
    pub quality: Option<u8>,
    pub progressive: bool,
    /// WebP only: lossless encoding.
    pub lossless: bool,
    /// AVIF only: the encoder's effort, 0–[`MAX_EFFORT`]; `None` takes [`DEFAULT_EFFORT`]. A
    /// deployment caps it ([`AvifPolicy`]).
    pub effort: Option<u8>,
    /// Padding colour for `contain`; flattening colour when alpha meets a JPEG. `None`: padding
    /// is transparent where the output has alpha, white otherwise.
    pub background: Option<Rgba>,
    /// Embed the sRGB ICC profile in the output (all other metadata is always stripped).
    pub keep_icc: bool,
    /// `frames=1`: an animated input gives its first frame only, as a still, whatever the
    /// output format. Otherwise an animation stays one where the format holds animations
    /// ([`OutputFormat::supports_animation`]).
    pub first_frame_only: bool,
}

impl ResizeSpec {
    /// A spec asking for `width` and/or `height` (at least one), everything else default.
    pub fn new(width: Option<u32>, height: Option<u32>) -> Result<ResizeSpec, ImagingError> {
        let check = |name: &str, v: Option<u32>| match v {
            Some(0) => Err(ImagingError::BadParameter(format!("{name} must be at least 1"))),
            Some(v) if v > MAX_DIMENSION => {
                Err(ImagingError::BadParameter(format!("{name} {v} is over the maximum of {MAX_DIMENSION}")))
            }
            _ => Ok(()),
        };
        check("width", width)?;
        check("height", height)?;
        if width.is_none() && height.is_none() {
            return Err(ImagingError::BadParameter("give at least one of width and height".into()));
        }
        Ok(ResizeSpec {
            width,
            height,
            fit: Fit::default(),
            gravity: Gravity::default(),
            enlarge: false,
            format: None,
            quality: None,
            progressive: false,
            lossless: false,
            effort: None,
            background: None,
            keep_icc: false,
            first_frame_only: false,
        })
    }

    pub fn width(&self) -> Option<u32> {
        self.width
    }
    pub fn height(&self) -> Option<u32> {
        self.height
    }

    /// Parses a request's query string (`width=300&fit=cover&background=%23fff`): decoded as
    /// `application/x-www-form-urlencoded`, then [`ResizeSpec::from_pairs`]. The one parse of a
    /// query: the api node admits a request with it, and the worker reads the job's parameters
    /// with it again.
    pub fn from_query(query: &str) -> Result<ResizeSpec, ImagingError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        ResizeSpec::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// Parses the query parameters of the contract. Unknown keys are refused so that a typo
    /// (`widht=`) is an error, not a silently ignored parameter.
    pub fn from_pairs<'a, I>(pairs: I) -> Result<ResizeSpec, ImagingError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut width = None;
        let mut height = None;
        let mut rest: Vec<(&str, &str)> = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for (k, v) in pairs {
            // `width=100&width=200` is a client's mistake, not a choice for us to make.
            let name = match k {
                "w" => "width",
                "h" => "height",
                "q" => "quality",
                "bg" => "background",
                other => other,
            };
            if seen.contains(&name) {
                return Err(ImagingError::BadParameter(format!("parameter '{name}' is given more than once")));
            }
            seen.push(name);
            match k {
                "width" | "w" => width = Some(parse_u32("width", v)?),
                "height" | "h" => height = Some(parse_u32("height", v)?),
                _ => rest.push((k, v)),
            }
        }
        let mut spec = ResizeSpec::new(width, height)?;
        for (k, v) in rest {
            match k {
                "fit" => spec.fit = parse_fit(v)?,
                "gravity" => spec.gravity = parse_gravity(v)?,
                "enlarge" => spec.enlarge = parse_bool("enlarge", v)?,
                "format" => spec.format = parse_format(v)?,
                "quality" | "q" => {
                    let q = parse_u32("quality", v)?;
                    if !(1..=100).contains(&q) {
                        return Err(ImagingError::BadParameter(format!("quality must be between 1 and 100, got {q}")));
                    }
                    spec.quality = Some(q as u8);
                }
                "progressive" => spec.progressive = parse_bool("progressive", v)?,
                "lossless" => spec.lossless = parse_bool("lossless", v)?,
                "effort" => {
                    let effort = parse_u32("effort", v)?;
                    if effort > u32::from(MAX_EFFORT) {
                        return Err(ImagingError::BadParameter(format!(
                            "effort must be between 0 and {MAX_EFFORT}, got {effort}"
                        )));
                    }
                    spec.effort = Some(effort as u8);
                }
                "background" | "bg" => spec.background = Some(Rgba::parse(v)?),
                "keep_icc" => spec.keep_icc = parse_bool("keep_icc", v)?,
                "frames" => {
                    spec.first_frame_only = match v {
                        "1" => true,
                        "all" => false,
                        _ => {
                            return Err(ImagingError::BadParameter(format!(
                                "frames must be 1 (the first frame) or all (the default); got '{v}'"
                            )))
                        }
                    }
                }
                other => return Err(ImagingError::BadParameter(format!("unknown parameter '{other}'"))),
            }
        }
        if spec.gravity == Gravity::Entropy && spec.fit != Fit::Cover {
            return Err(ImagingError::BadParameter("gravity=entropy applies to fit=cover only".into()));
        }
        // Refused rather than ignored: a client asking JPEG with an effort expects it to matter.
        if spec.effort.is_some() && spec.format.is_some_and(|f| f != OutputFormat::Avif) {
            return Err(ImagingError::BadParameter("effort applies to format=avif (or auto) only".into()));
        }
        Ok(spec)
    }
}

fn parse_u32(name: &str, v: &str) -> Result<u32, ImagingError> {
    v.trim()
        .parse::<u32>()
        .map_err(|_| ImagingError::BadParameter(format!("{name} must be a positive integer, got '{v}'")))
}

fn parse_bool(name: &str, v: &str) -> Result<bool, ImagingError> {
    match v {
        "true" | "1" | "yes" | "" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ImagingError::BadParameter(format!("{name} must be true or false, got '{v}'"))),
    }
}

fn parse_fit(v: &str) -> Result<Fit, ImagingError> {
    Ok(match v {
        "inside" => Fit::Inside,
        "cover" => Fit::Cover,
        "contain" => Fit::Contain,
        "fill" => Fit::Fill,
        "outside" => Fit::Outside,
        _ => {
            return Err(ImagingError::BadParameter(format!(
                "fit must be one of inside, cover, contain, fill, outside; got '{v}'"
            )))
        }
    })
}

fn parse_gravity(v: &str) -> Result<Gravity, ImagingError> {
    Ok(match v {
        "center" | "centre" => Gravity::Center,
        "north" | "n" => Gravity::North,
        "northeast" | "ne" => Gravity::NorthEast,
        "east" | "e" => Gravity::East,
        "southeast" | "se" => Gravity::SouthEast,
        "south" | "s" => Gravity::South,
        "southwest" | "sw" => Gravity::SouthWest,
        "west" | "w" => Gravity::West,
        "northwest" | "nw" => Gravity::NorthWest,
        "entropy" => Gravity::Entropy,
        "attention" => {
            return Err(ImagingError::BadParameter(
                "gravity=attention is not supported; use entropy for a content-aware crop".into(),
            ))
        }
        _ => {
            return Err(ImagingError::BadParameter(format!(
                "gravity must be center, a compass point (north, northeast, ...) or entropy; got '{v}'"
            )))
        }
    })
}

fn parse_format(v: &str) -> Result<Option<OutputFormat>, ImagingError> {
    Ok(match v {
        "auto" => None,
        "jpeg" | "jpg" => Some(OutputFormat::Jpeg),
        "png" => Some(OutputFormat::Png),
        "webp" => Some(OutputFormat::Webp),
        "gif" => Some(OutputFormat::Gif),
        "avif" if AVIF_OUTPUT => Some(OutputFormat::Avif),
        "avif" => {
            return Err(ImagingError::BadParameter(
                "format=avif is not available: this build has no AVIF encoder (imaging's `avif` feature)".into(),
            ))
        }
        _ => {
            return Err(ImagingError::BadParameter(format!(
                "format must be jpeg, png, webp, gif, avif or auto; got '{v}'"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<ResizeSpec, ImagingError> {
        ResizeSpec::from_pairs(q.split('&').filter(|s| !s.is_empty()).map(|kv| kv.split_once('=').unwrap_or((kv, ""))))
    }

    #[test]
    fn parses_every_parameter() {
        let s = parse("width=300&height=200&fit=cover&gravity=ne&enlarge=true&format=webp&quality=70&lossless=false&background=%23fff&keep_icc=1")
            .map_err(|e| e.to_string());
        // '%23' is not decoded here (the HTTP layer decodes); use a raw colour instead.
        assert!(s.is_err());
        let s = parse("width=300&height=200&fit=cover&gravity=ne&enlarge=true&format=webp&quality=70&background=ff0000&keep_icc=1").unwrap();
        assert_eq!((s.width(), s.height()), (Some(300), Some(200)));
        assert_eq!(s.fit, Fit::Cover);
        assert_eq!(s.gravity, Gravity::NorthEast);
        assert!(s.enlarge && s.keep_icc);
        assert_eq!(s.format, Some(OutputFormat::Webp));
        assert_eq!(s.quality, Some(70));
        assert_eq!(s.background, Some(Rgba([255, 0, 0, 255])));
    }

    #[test]
    fn refuses_bad_parameters_with_a_clear_message() {
        for (q, needle) in [
            ("", "at least one"),
            ("width=0", "at least 1"),
            ("width=-3", "positive integer"),
            ("width=99999", "maximum"),
            ("width=10&fit=squash", "fit must be"),
            ("width=10&quality=0", "quality"),
            ("width=10&quality=101", "quality"),
            ("width=10&format=bmp", "format must be"),
            ("width=10&frames=2", "frames must be 1"),
            ("width=10&widht=3", "unknown parameter 'widht'"),
            ("width=10&gravity=entropy", "cover only"),
            ("width=10&fit=cover&gravity=attention", "not supported"),
            ("width=10&background=zzz", "not a colour"),
            ("width=10&enlarge=maybe", "true or false"),
        ] {
            let err = parse(q).expect_err(q);
            assert!(matches!(err, ImagingError::BadParameter(_)), "{q}: {err:?}");
            assert!(err.to_string().contains(needle), "{q}: {err}");
        }
    }

    #[test]
    fn a_query_is_decoded_before_it_is_parsed() {
        let s = ResizeSpec::from_query("w=300&fit=cover&background=%23fff&&keep_icc").expect("valid query");
        assert_eq!((s.width(), s.height(), s.fit), (Some(300), None, Fit::Cover));
        assert_eq!(s.background, Some(Rgba::WHITE));
        assert!(s.keep_icc, "a name without `=` has the empty value, which is true");
        let e = ResizeSpec::from_query("width=10&format=we%62p+%zz%C3%A9%FF").expect_err("no such format");
        assert!(e.to_string().contains("got 'webp %zzé\u{fffd}'"), "{e}");
        let e = ResizeSpec::from_query("width=10&wid%74h=20").expect_err("twice");
        assert!(e.to_string().contains("'width' is given more than once"), "{e}");
    }

    #[cfg(feature = "avif")]
    #[test]
    fn avif_and_its_effort() {
        let s = parse("width=10&format=avif&effort=7&quality=60").expect("avif");
        assert_eq!((s.format, s.effort, s.quality), (Some(OutputFormat::Avif), Some(7), Some(60)));
        assert_eq!(parse("width=10&effort=0").expect("auto").effort, Some(0), "auto may become AVIF");
        assert_eq!(parse("width=10&format=avif").expect("default").effort, None);
        for (q, needle) in [
            ("width=10&format=avif&effort=10", "between 0 and 9"),
            ("width=10&format=avif&effort=-1", "positive integer"),
            ("width=10&format=webp&effort=3", "format=avif (or auto) only"),
            ("width=10&format=jpeg&effort=0", "format=avif (or auto) only"),
        ] {
            let err = parse(q).expect_err(q);
            assert!(matches!(err, ImagingError::BadParameter(_)) && err.to_string().contains(needle), "{q}: {err}");
        }
        assert_eq!(OutputFormat::Avif.mime(), "image/avif");
        assert_eq!(OutputFormat::Avif.extension(), "avif");
        assert!(OutputFormat::Avif.supports_alpha());
    }

    #[test]
    fn the_deployment_caps_the_effort() {
        let policy = AvifPolicy { auto: true, max_effort: 4, max_pixels: 100 };
        // `format=auto` (the default): the answer may become AVIF, so the cap applies.
        assert!(policy.check(&parse("width=10&effort=4").unwrap()).is_ok());
        assert!(policy.check(&parse("width=10").unwrap()).is_ok(), "the default is always allowed");
        let err = policy.check(&parse("width=10&effort=5").unwrap()).expect_err("over the cap");
        assert!(matches!(err, ImagingError::BadParameter(_)) && err.to_string().contains("maximum of 4"), "{err}");
        assert!(policy.check_output(Some(OutputFormat::Avif), 10, 10).is_ok());
        let err = policy.check_output(Some(OutputFormat::Avif), 10, 11).expect_err("over the pixels");
        assert_eq!(err.class().status, 413, "{err}");
        assert!(policy.check_output(Some(OutputFormat::Webp), 100, 100).is_ok(), "AVIF only");
        assert!(policy.check_output(None, 100, 100).is_ok(), "not decided yet: the input's family");
    }

    #[cfg(not(feature = "avif"))]
    #[test]
    fn a_build_without_the_encoder_refuses_avif_by_name() {
        let err = parse("width=10&format=avif").expect_err("no encoder");
        assert!(err.to_string().contains("no AVIF encoder"), "{err}");
        assert!(!AvifPolicy::default().auto);
    }

    #[test]
    fn colours() {
        assert_eq!(Rgba::parse("#0f0").unwrap(), Rgba([0, 255, 0, 255]));
        assert_eq!(Rgba::parse("11223344").unwrap(), Rgba([0x11, 0x22, 0x33, 0x44]));
        assert_eq!(Rgba::parse("transparent").unwrap(), Rgba::TRANSPARENT);
        assert!(Rgba::parse("#12345").is_err());
        assert!(Rgba::parse("é1").is_err());
    }
}
