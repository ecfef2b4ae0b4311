//! EXIF orientation: an image stored in any of the eight orientations comes out upright, at the
//! size asked for in the upright frame, cropped in the upright frame, and without the tag.

mod common;

use common::*;

const RED: [u8; 4] = [255, 0, 0, 255];
const WHITE: [u8; 4] = [255, 255, 255, 255];

/// What a viewer should see: white, with a red block over the left third and the top 30%.
fn upright(width: u32, height: u32) -> Image {
    Image::new(width, height, |x, y| if 3 * x < width && 10 * y < 3 * height { RED } else { WHITE })
}

/// Where the stored pixel (sx, sy) appears once the image is shown upright (`w` x `h`), straight
/// from the EXIF definitions of what the 0th row and 0th column of the stored image are.
fn shown_at(orientation: u16, (sx, sy): (u32, u32), (w, h): (u32, u32)) -> (u32, u32) {
    match orientation {
        1 => (sx, sy),                 // 0th row = top, 0th column = left
        2 => (w - 1 - sx, sy),         // 0th row = top, 0th column = right
        3 => (w - 1 - sx, h - 1 - sy), // 0th row = bottom, 0th column = right
        4 => (sx, h - 1 - sy),         // 0th row = bottom, 0th column = left
        5 => (sy, sx),                 // 0th row = left, 0th column = top
        6 => (w - 1 - sy, sx),         // 0th row = right, 0th column = top
        7 => (w - 1 - sy, h - 1 - sx), // 0th row = right, 0th column = bottom
        8 => (sy, h - 1 - sx),         // 0th row = left, 0th column = bottom
        _ => unreachable!(),
    }
}

/// The pixels a camera would store for `view` with the given orientation tag.
fn stored(view: &Image, orientation: u16) -> Image {
    let (w, h) = view.size();
    let (sw, sh) = if orientation >= 5 { (h, w) } else { (w, h) };
    Image::new(sw, sh, |sx, sy| {
        let (x, y) = shown_at(orientation, (sx, sy), (w, h));
        view.at(x, y)
    })
}

/// The bounding box (x, y, w, h) of the reddish pixels.
fn red_box(img: &Image) -> Option<(u32, u32, u32, u32)> {
    let mut found: Option<(u32, u32, u32, u32)> = None;
    for y in 0..img.height {
        for x in 0..img.width {
            let [r, g, b, _] = img.at(x, y);
            if r > 160 && g < 128 && b < 128 {
                let (x0, y0, x1, y1) = found.unwrap_or((x, y, x, y));
                found = Some((x0.min(x), y0.min(y), x1.max(x), y1.max(y)));
            }
        }
    }
    found.map(|(x0, y0, x1, y1)| (x0, y0, x1 - x0 + 1, y1 - y0 + 1))
}

fn boxes_agree(a: (u32, u32, u32, u32), b: (u32, u32, u32, u32)) -> bool {
    a.0.abs_diff(b.0) <= 1 && a.1.abs_diff(b.1) <= 1 && a.2.abs_diff(b.2) <= 1 && a.3.abs_diff(b.3) <= 1
}

/// For every orientation, stores `upright(size)` as a JPEG tagged with it, runs `query`, and
/// checks the upright output: its size and where the red block is (`None`: cropped away).
#[track_caller]
fn check(size: (u32, u32), query: &str, expected_size: (u32, u32), red: Option<(u32, u32, u32, u32)>) {
    let view = upright(size.0, size.1);
    for orientation in 1..=8 {
        let input = with_exif_orientation(&jpeg(&stored(&view, orientation)), orientation);
        assert_eq!(imaging::probe(&input).unwrap().orientation, orientation as u8);
        let out = run(&input, query);
        let what = format!("orientation {orientation}, {query}");
        assert_eq!((out.report.input_width, out.report.input_height), size, "{what}: upright input size");
        let img = decode_output(&out);
        assert_eq!(img.size(), expected_size, "{what}");
        let found = red_box(&img);
        let agrees = match (found, red) {
            (Some(f), Some(r)) => boxes_agree(f, r),
            (f, r) => f == r,
        };
        assert!(agrees, "{what}: red block at {found:?}, expected {red:?}");
        // Lossless output corners far from the block stay white.
        assert_near(&img.at(img.width - 1, img.height - 1), &WHITE, 12, format!("{what}: bottom-right"));
    }
}

#[test]
fn every_orientation_comes_out_upright() {
    check((60, 40), "width=60&format=png", (60, 40), Some((0, 0, 20, 12)));
}

#[test]
fn the_requested_size_is_the_upright_size() {
    check((60, 40), "width=30&format=png", (30, 20), Some((0, 0, 10, 6)));
    check((60, 40), "height=20&format=png", (30, 20), Some((0, 0, 10, 6)));
    check((60, 40), "width=20&height=20&fit=fill&format=png", (20, 20), Some((0, 0, 7, 6)));
}

#[test]
fn cover_crops_in_the_upright_frame() {
    check((60, 40), "width=40&height=40&fit=cover&gravity=west&format=png", (40, 40), Some((0, 0, 20, 12)));
    check((60, 40), "width=40&height=40&fit=cover&gravity=east&format=png", (40, 40), None);
}

#[test]
fn contain_pads_in_the_upright_frame() {
    check(
        (60, 40),
        "width=60&height=60&fit=contain&gravity=north&format=png&background=white",
        (60, 60),
        Some((0, 0, 20, 12)),
    );
    check(
        (60, 40),
        "width=60&height=60&fit=contain&gravity=south&format=png&background=white",
        (60, 60),
        Some((0, 20, 20, 12)),
    );
}

#[test]
fn orientation_and_shrink_on_load_compose() {
    // 640x480 upright down to 80x60: the stored 480x640 JPEG decodes at 1/4 before rotating.
    check((640, 480), "width=80&format=png", (80, 60), Some((0, 0, 27, 18)));
    let input = with_exif_orientation(&jpeg(&stored(&upright(640, 480), 6)), 6);
    assert_eq!(run(&input, "width=80").report.decode_scale, 4);
}

#[test]
fn the_orientation_tag_is_applied_not_copied() {
    let view = upright(60, 40);
    for orientation in [3, 6, 8] {
        let input = with_exif_orientation(&jpeg(&stored(&view, orientation)), orientation);
        for format in ["jpeg", "png", "webp"] {
            let out = run(&input, &format!("width=30&format={format}"));
            assert_eq!(imaging::probe(&out.bytes).unwrap().orientation, 1, "{format}: output carries an orientation");
        }
    }
}

#[test]
fn png_exif_orientation_is_applied_too() {
    let view = upright(60, 40);
    for orientation in 1..=8u16 {
        let input =
            png_with(&stored(&view, orientation), |info| info.exif_metadata = Some(exif_tiff(orientation).into()));
        assert_eq!(imaging::probe(&input).unwrap().orientation, orientation as u8);
        let img = decode_output(&run(&input, "width=60"));
        assert_eq!(img.size(), (60, 40), "orientation {orientation}");
        assert_eq!(red_box(&img), Some((0, 0, 20, 12)), "orientation {orientation}");
    }
}

#[test]
fn an_invalid_orientation_is_ignored() {
    let view = upright(60, 40);
    for bogus in [0, 9, 255] {
        let input = with_exif_orientation(&jpeg(&view), bogus);
        let img = decode_output(&run(&input, "width=60&format=png"));
        assert_eq!(img.size(), (60, 40));
        assert!(red_box(&img).is_some_and(|b| boxes_agree(b, (0, 0, 20, 12))), "orientation {bogus}");
    }
}
