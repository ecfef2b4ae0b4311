//! Pure geometry: from the source size and a `ResizeSpec` to the sizes every later step uses.
//! No pixels here, so every fit mode is tested exhaustively and cheaply.

use crate::spec::{Fit, Gravity, ResizeSpec};

/// The sizes one resize goes through, all in the upright (EXIF-oriented) frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The size the whole image is resampled to.
    pub resize: (u32, u32),
    /// `cover`: the window kept from the resampled image (placed by gravity later).
    pub crop: Option<(u32, u32)>,
    /// `contain`: the canvas the resampled image is placed on (by gravity).
    pub canvas: Option<(u32, u32)>,
}

impl Plan {
    pub fn output(&self) -> (u32, u32) {
        self.canvas.or(self.crop).unwrap_or(self.resize)
    }
}

pub fn plan(src: (u32, u32), spec: &ResizeSpec) -> Plan {
    let (sw, sh) = (f64::from(src.0.max(1)), f64::from(src.1.max(1)));
    let cap = |s: f64| if spec.enlarge { s } else { s.min(1.0) };
    let scaled = |s: f64| (scale_dim(sw, s), scale_dim(sh, s));
    match (spec.width(), spec.height()) {
        (Some(w), None) => {
            Plan::only_resize(exact_or(scaled(cap(f64::from(w) / sw)), Some(w), None, spec.enlarge, src))
        }
        (None, Some(h)) => {
            Plan::only_resize(exact_or(scaled(cap(f64::from(h) / sh)), None, Some(h), spec.enlarge, src))
        }
        (None, None) => Plan::only_resize(src),
        (Some(w), Some(h)) => {
            let (sx, sy) = (f64::from(w) / sw, f64::from(h) / sh);
            match spec.fit {
                Fit::Fill => {
                    let rw = if spec.enlarge || w <= src.0 { w } else { src.0 };
                    let rh = if spec.enlarge || h <= src.1 { h } else { src.1 };
                    Plan::only_resize((rw.max(1), rh.max(1)))
                }
                Fit::Inside => {
                    let (bw, bh) = binding(sx, sy, w, h, f64::min);
                    Plan::only_resize(exact_or(scaled(cap(sx.min(sy))), bw, bh, spec.enlarge, src))
                }
                Fit::Outside => {
                    let (bw, bh) = binding(sx, sy, w, h, f64::max);
                    Plan::only_resize(exact_or(scaled(cap(sx.max(sy))), bw, bh, spec.enlarge, src))
                }
                Fit::Cover => {
                    let (bw, bh) = binding(sx, sy, w, h, f64::max);
                    let resize = exact_or(scaled(cap(sx.max(sy))), bw, bh, spec.enlarge, src);
                    let crop = (w.min(resize.0), h.min(resize.1));
                    Plan { resize, crop: (crop != resize).then_some(crop), canvas: None }
                }
                Fit::Contain => {
                    let (bw, bh) = binding(sx, sy, w, h, f64::min);
                    let resize = exact_or(scaled(cap(sx.min(sy))), bw, bh, spec.enlarge, src);
                    let resize = (resize.0.min(w), resize.1.min(h));
                    Plan { resize, crop: None, canvas: (resize != (w, h)).then_some((w, h)) }
                }
            }
        }
    }
}

impl Plan {
    fn only_resize(resize: (u32, u32)) -> Plan {
        Plan { resize, crop: None, canvas: None }
    }
}

fn scale_dim(d: f64, s: f64) -> u32 {
    // Saturating: the caller checks the output size against the limits afterwards.
    ((d * s).round().max(1.0)).min(f64::from(u32::MAX)) as u32
}

/// Which requested dimension decides the scale, so that it comes out exact instead of rounded.
fn binding(sx: f64, sy: f64, w: u32, h: u32, pick: fn(f64, f64) -> f64) -> (Option<u32>, Option<u32>) {
    if pick(sx, sy) == sx {
        (Some(w), None)
    } else {
        (None, Some(h))
    }
}

/// Replace the rounded dimension by the requested one when the scale was not capped.
fn exact_or(scaled: (u32, u32), w: Option<u32>, h: Option<u32>, enlarge: bool, src: (u32, u32)) -> (u32, u32) {
    let mut out = scaled;
    if let Some(w) = w {
        if enlarge || w <= src.0 {
            out.0 = w;
        }
    }
    if let Some(h) = h {
        if enlarge || h <= src.1 {
            out.1 = h;
        }
    }
    out
}

/// Offset of an `inner` box inside an `outer` one for a gravity (entropy is decided elsewhere
/// and falls back to the centre here).
pub fn place(gravity: Gravity, outer: (u32, u32), inner: (u32, u32)) -> (u32, u32) {
    let free_x = outer.0.saturating_sub(inner.0);
    let free_y = outer.1.saturating_sub(inner.1);
    let x = match gravity {
        Gravity::West | Gravity::NorthWest | Gravity::SouthWest => 0,
        Gravity::East | Gravity::NorthEast | Gravity::SouthEast => free_x,
        _ => free_x / 2,
    };
    let y = match gravity {
        Gravity::North | Gravity::NorthWest | Gravity::NorthEast => 0,
        Gravity::South | Gravity::SouthWest | Gravity::SouthEast => free_y,
        _ => free_y / 2,
    };
    (x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(w: Option<u32>, h: Option<u32>, fit: Fit, enlarge: bool) -> ResizeSpec {
        let mut s = ResizeSpec::new(w, h).unwrap();
        s.fit = fit;
        s.enlarge = enlarge;
        s
    }

    fn out(src: (u32, u32), w: Option<u32>, h: Option<u32>, fit: Fit, enlarge: bool) -> ((u32, u32), Plan) {
        let p = plan(src, &spec(w, h, fit, enlarge));
        (p.output(), p)
    }

    #[test]
    fn inside_keeps_aspect_within_the_box() {
        assert_eq!(out((4000, 3000), Some(512), Some(512), Fit::Inside, false).0, (512, 384));
        assert_eq!(out((3000, 4000), Some(512), Some(512), Fit::Inside, false).0, (384, 512));
        assert_eq!(out((1000, 1000), Some(300), Some(200), Fit::Inside, false).0, (200, 200));
        // Never enlarged by default; enlarged when asked.
        assert_eq!(out((100, 50), Some(512), Some(512), Fit::Inside, false).0, (100, 50));
        assert_eq!(out((100, 50), Some(512), Some(512), Fit::Inside, true).0, (512, 256));
    }

    #[test]
    fn one_dimension_derives_the_other() {
        assert_eq!(out((4000, 3000), Some(400), None, Fit::Cover, false).0, (400, 300));
        assert_eq!(out((4000, 3000), None, Some(300), Fit::Fill, false).0, (400, 300));
        assert_eq!(out((333, 777), Some(100), None, Fit::Inside, false).0, (100, 233));
        assert_eq!(out((10, 10), Some(100), None, Fit::Inside, false).0, (10, 10));
        assert_eq!(out((10, 10), Some(100), None, Fit::Inside, true).0, (100, 100));
    }

    #[test]
    fn cover_fills_the_box_and_crops() {
        let (o, p) = out((4000, 3000), Some(300), Some(300), Fit::Cover, false);
        assert_eq!(o, (300, 300));
        assert_eq!(p.resize, (400, 300));
        assert_eq!(p.crop, Some((300, 300)));
        // Smaller than the box and not enlarged: cropped to what exists, never padded.
        let (o, p) = out((200, 100), Some(300), Some(300), Fit::Cover, false);
        assert_eq!((o, p.resize), ((200, 100), (200, 100)));
        let (o, p) = out((200, 100), Some(300), Some(300), Fit::Cover, true);
        assert_eq!((o, p.resize), ((300, 300), (600, 300)));
    }

    #[test]
    fn contain_pads_to_exactly_the_box() {
        let (o, p) = out((4000, 3000), Some(300), Some(300), Fit::Contain, false);
        assert_eq!((o, p.resize, p.canvas), ((300, 300), (300, 225), Some((300, 300))));
        // Not enlarged, still padded to the box.
        let (o, p) = out((100, 50), Some(300), Some(300), Fit::Contain, false);
        assert_eq!((o, p.resize), ((300, 300), (100, 50)));
        // Already the right shape: no canvas.
        assert_eq!(out((600, 600), Some(300), Some(300), Fit::Contain, false).1.canvas, None);
    }

    #[test]
    fn fill_stretches_and_outside_covers_without_crop() {
        assert_eq!(out((4000, 3000), Some(300), Some(300), Fit::Fill, false).0, (300, 300));
        assert_eq!(out((100, 50), Some(300), Some(30), Fit::Fill, false).0, (100, 30));
        assert_eq!(out((4000, 3000), Some(300), Some(300), Fit::Outside, false).0, (400, 300));
        assert_eq!(out((3000, 4000), Some(300), Some(300), Fit::Outside, false).0, (300, 400));
    }

    #[test]
    fn degenerate_sizes_never_reach_zero() {
        for fit in [Fit::Inside, Fit::Cover, Fit::Contain, Fit::Fill, Fit::Outside] {
            for src in [(1, 1), (1, 10_000), (10_000, 1), (2, 3), (65_535, 1)] {
                for (w, h) in [(Some(1), Some(1)), (Some(7), None), (None, Some(5)), (Some(16_384), Some(1))] {
                    for enlarge in [false, true] {
                        let (o, p) = out(src, w, h, fit, enlarge);
                        assert!(o.0 >= 1 && o.1 >= 1, "{src:?} {w:?} {h:?} {fit:?}: {o:?}");
                        assert!(p.resize.0 >= 1 && p.resize.1 >= 1);
                        if let Some(c) = p.crop {
                            assert!(c.0 <= p.resize.0 && c.1 <= p.resize.1);
                        }
                        if let Some(c) = p.canvas {
                            assert!(c.0 >= p.resize.0 && c.1 >= p.resize.1);
                        }
                        if !enlarge {
                            assert!(p.resize.0 <= src.0 && p.resize.1 <= src.1, "enlarged: {src:?} -> {p:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn extreme_aspect_ratios() {
        assert_eq!(out((10_000, 1), Some(100), Some(100), Fit::Inside, false).0, (100, 1));
        assert_eq!(out((1, 10_000), Some(100), Some(100), Fit::Cover, false).0, (1, 100));
        assert_eq!(out((2560, 200), Some(512), Some(512), Fit::Inside, false).0, (512, 40));
    }

    #[test]
    fn gravity_places_boxes() {
        assert_eq!(place(Gravity::Center, (10, 10), (4, 4)), (3, 3));
        assert_eq!(place(Gravity::NorthWest, (10, 10), (4, 4)), (0, 0));
        assert_eq!(place(Gravity::SouthEast, (10, 10), (4, 4)), (6, 6));
        assert_eq!(place(Gravity::East, (10, 10), (4, 4)), (6, 3));
        assert_eq!(place(Gravity::South, (10, 10), (4, 4)), (3, 6));
        assert_eq!(place(Gravity::Center, (4, 4), (10, 10)), (0, 0));
    }
}
