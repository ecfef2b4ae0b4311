//! The geometry of every fit mode through the real pipeline: the size in the report is the size
//! of the image that comes out, for every input format, and it is sharp's size (the exact rules
//! are documented and unit-tested in `geometry.rs`; these are the same numbers, end to end).

mod common;

use common::*;

/// Resizes a `src`-sized gradient given as PNG, JPEG and lossy WebP (each output in its input's
/// format), and checks that the report and the decoded output are both `expected`.
#[track_caller]
fn check(src: (u32, u32), query: &str, expected: (u32, u32)) {
    let img = gradient(src.0, src.1);
    for (name, input) in [("png", png(&img)), ("jpeg", jpeg(&img)), ("webp", webp(&img, false))] {
        let out = run(&input, query);
        let report = &out.report;
        assert_eq!((report.input_width, report.input_height), src, "{name} {src:?} {query}: input size");
        assert_eq!((report.width, report.height), expected, "{name} {src:?} {query}: reported size");
        assert_eq!(report.input_format.as_str(), name, "{name} {src:?} {query}: output follows the input");
        assert_eq!(decode_output(&out).size(), expected, "{name} {src:?} {query}: decoded size");
    }
}

/// `check` for every fit mode at once: `expected` lists inside, cover, contain, fill, outside.
#[track_caller]
fn check_all_fits(src: (u32, u32), query: &str, expected: [(u32, u32); 5]) {
    for (fit, expected) in ["inside", "cover", "contain", "fill", "outside"].into_iter().zip(expected) {
        check(src, &format!("{query}&fit={fit}"), expected);
    }
}

#[test]
fn inside_fits_within_the_box() {
    check((400, 300), "width=200&height=200", (200, 150));
    check((400, 300), "width=200&height=200&fit=inside", (200, 150));
    check((300, 400), "width=200&height=200&fit=inside", (150, 200));
    check((400, 300), "width=100&height=300&fit=inside", (100, 75));
}

#[test]
fn cover_fills_the_box_and_crops_the_overflow() {
    check((400, 300), "width=200&height=200&fit=cover", (200, 200));
    check((300, 400), "width=200&height=100&fit=cover", (200, 100));
    check((400, 300), "width=50&height=300&fit=cover", (50, 300));
}

#[test]
fn contain_pads_to_exactly_the_box() {
    check((400, 300), "width=200&height=200&fit=contain", (200, 200));
    check((300, 400), "width=300&height=100&fit=contain", (300, 100));
    // Already the box's shape: nothing to pad.
    check((400, 300), "width=200&height=150&fit=contain", (200, 150));
}

#[test]
fn fill_stretches_to_exactly_the_box() {
    check((400, 300), "width=200&height=200&fit=fill", (200, 200));
    check((400, 300), "width=37&height=250&fit=fill", (37, 250));
}

#[test]
fn outside_covers_the_box_without_cropping() {
    check((400, 300), "width=200&height=200&fit=outside", (267, 200));
    check((300, 400), "width=200&height=200&fit=outside", (200, 267));
    check((400, 300), "width=300&height=10&fit=outside", (300, 225));
}

#[test]
fn one_dimension_derives_the_other_whatever_the_fit() {
    for fit in ["inside", "cover", "contain", "fill", "outside"] {
        check((400, 300), &format!("width=100&fit={fit}"), (100, 75));
        check((400, 300), &format!("height=100&fit={fit}"), (133, 100));
    }
}

#[test]
fn a_box_larger_than_the_image_does_not_enlarge_it() {
    // inside, cover, contain (padded, not enlarged), fill (each axis capped), outside.
    check_all_fits(
        (400, 300),
        "width=1000&height=1000",
        [(400, 300), (400, 300), (1000, 1000), (400, 300), (400, 300)],
    );
    check_all_fits((400, 300), "width=1000&height=50", [(67, 50), (400, 50), (1000, 50), (400, 50), (400, 300)]);
    check((400, 300), "width=1000", (400, 300));
    check((400, 300), "height=1000", (400, 300));
}

#[test]
fn enlarge_scales_small_images_up_to_the_box() {
    check_all_fits(
        (400, 300),
        "width=1000&height=1000&enlarge=true",
        [(1000, 750), (1000, 1000), (1000, 1000), (1000, 1000), (1333, 1000)],
    );
    check((400, 300), "width=1000&enlarge=true", (1000, 750));
    check((400, 300), "height=600&enlarge=true", (800, 600));
}

#[test]
fn odd_sizes_round_to_the_nearest_pixel_and_keep_the_asked_dimension_exact() {
    check((333, 777), "width=100", (100, 233));
    check((333, 777), "height=50", (21, 50));
    check_all_fits((333, 777), "width=101&height=99", [(42, 99), (101, 99), (101, 99), (101, 99), (101, 236)]);
    check((333, 777), "width=7&height=5", (2, 5));
}

#[test]
fn one_pixel_input() {
    check_all_fits((1, 1), "width=50&height=20", [(1, 1), (1, 1), (50, 20), (1, 1), (1, 1)]);
    check_all_fits((1, 1), "width=50&height=20&enlarge=true", [(20, 20), (50, 20), (50, 20), (50, 20), (50, 50)]);
    check((1, 1), "width=100", (1, 1));
    check((1, 1), "width=100&enlarge=true", (100, 100));
    check((1, 1), "height=3&enlarge=true", (3, 3));
}

#[test]
fn one_pixel_output() {
    check_all_fits((400, 300), "width=1&height=1", [(1, 1); 5]);
    check((400, 300), "width=1", (1, 1));
    check((400, 300), "height=1", (1, 1));
    check((2000, 3), "height=1", (667, 1));
    check((3, 2000), "width=1", (1, 667));
}

#[test]
fn extreme_aspect_ratios() {
    check_all_fits((2000, 3), "width=100&height=100", [(100, 1), (100, 3), (100, 100), (100, 3), (2000, 3)]);
    check_all_fits((3, 2000), "width=100&height=100", [(1, 100), (3, 100), (100, 100), (3, 100), (3, 2000)]);
    check((2000, 3), "width=500", (500, 1));
    check((3, 2000), "height=500", (1, 500));
    // Enlarged, the short side is scaled up 33x before the crop.
    check((2000, 3), "width=100&height=100&fit=cover&enlarge=true", (100, 100));
    check((3, 2000), "width=100&height=100&fit=fill&enlarge=true", (100, 100));
}

#[test]
fn big_reductions_shrink_on_load_without_changing_the_geometry() {
    let img = gradient(1600, 1200);
    for (name, input) in [("jpeg", jpeg(&img)), ("webp", webp(&img, false)), ("png", png(&img))] {
        let out = run(&input, "width=100");
        assert_eq!(out.report.decode_scale, 8, "{name}: 16x reduction decodes at 1/8");
        assert_eq!(decode_output(&out).size(), (100, 75), "{name}");
        let out = run(&input, "width=300&height=300&fit=cover");
        assert_eq!(out.report.decode_scale, 2, "{name}: 4x reduction decodes at 1/2");
        assert_eq!(decode_output(&out).size(), (300, 300), "{name}");
    }
    // GIF has no reduced decode.
    assert_eq!(run(&gif_of(&img), "width=100").report.decode_scale, 1);
}

/// The output's corners are the source's corners: the whole image was resampled, not a part.
#[track_caller]
fn check_corners_kept(src: (u32, u32), query: &str) {
    let img = gradient(src.0, src.1);
    let (w, h) = (src.0 - 1, src.1 - 1);
    for (name, input) in [("png", png(&img)), ("jpeg", jpeg(&img)), ("webp", webp(&img, false))] {
        let out = decode_output(&run(&input, query));
        let (ow, oh) = (out.width - 1, out.height - 1);
        for (sx, sy, ox, oy) in [(0, 0, 0, 0), (w, 0, ow, 0), (0, h, 0, oh), (w, h, ow, oh)] {
            assert_near(&out.at(ox, oy), &img.at(sx, sy), 24, format!("{name} {query}: corner ({sx}, {sy})"));
        }
    }
}

#[test]
fn inside_fill_and_outside_keep_the_whole_picture() {
    check_corners_kept((400, 300), "width=200&height=200&fit=inside");
    check_corners_kept((400, 300), "width=100&height=200&fit=fill");
    check_corners_kept((400, 300), "width=200&height=200&fit=outside");
    check_corners_kept((300, 400), "width=100&height=100&fit=fill&enlarge=true");
}
