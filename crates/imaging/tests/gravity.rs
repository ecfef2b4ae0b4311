//! Where `cover` crops and where `contain` places the image: gravity by compass point, and
//! `entropy` picking the detailed part.

mod common;

use common::*;

/// A 3x3 grid of distinct colours, one per compass region.
const REGIONS: [(&str, [u8; 3]); 9] = [
    ("nw", [255, 0, 0]),
    ("n", [0, 255, 0]),
    ("ne", [0, 0, 255]),
    ("w", [255, 255, 0]),
    ("c", [255, 0, 255]),
    ("e", [0, 255, 255]),
    ("sw", [128, 0, 0]),
    ("s", [0, 128, 0]),
    ("se", [0, 0, 128]),
];

fn region_colour(name: &str) -> [u8; 3] {
    REGIONS.iter().find(|r| r.0 == name).unwrap_or_else(|| panic!("no region {name}")).1
}

fn compass(size: u32) -> Image {
    Image::rgb(size, size, |x, y| REGIONS[(3 * y / size * 3 + 3 * x / size) as usize].1)
}

/// Covers a 600x600 compass (as PNG) with a `width` x `height` box whose long side is the
/// compass's side scaled, and checks the three thirds along the long side show `expected`
/// (region names, left to right or top to bottom).
#[track_caller]
fn check_cover(gravity: &str, (width, height): (u32, u32), expected: &str) {
    let query = format!("width={width}&height={height}&fit=cover&gravity={gravity}");
    let out = decode_output(&run(&png(&compass(600)), &query));
    assert_eq!(out.size(), (width, height), "{query}");
    let expected: Vec<&str> = expected.split(' ').collect();
    for (i, region) in expected.iter().enumerate() {
        let along = (2.0 * i as f64 + 1.0) / 6.0;
        let pixel = if width > height { out.at_fraction(along, 0.5) } else { out.at_fraction(0.5, along) };
        assert_near(&pixel, &region_colour(region), 2, format!("{query}: third {i} should be {region}"));
    }
}

#[test]
fn cover_keeps_the_band_named_by_the_gravity() {
    // A wide box crops top and bottom: only the vertical part of the gravity matters.
    check_cover("center", (150, 50), "w c e");
    check_cover("north", (150, 50), "nw n ne");
    check_cover("south", (150, 50), "sw s se");
    check_cover("east", (150, 50), "w c e");
    check_cover("west", (150, 50), "w c e");
    check_cover("northwest", (150, 50), "nw n ne");
    check_cover("northeast", (150, 50), "nw n ne");
    check_cover("southwest", (150, 50), "sw s se");
    check_cover("southeast", (150, 50), "sw s se");
    // A tall box crops left and right: only the horizontal part matters.
    check_cover("center", (50, 150), "n c s");
    check_cover("north", (50, 150), "n c s");
    check_cover("south", (50, 150), "n c s");
    check_cover("east", (50, 150), "ne e se");
    check_cover("west", (50, 150), "nw w sw");
    check_cover("northwest", (50, 150), "nw w sw");
    check_cover("northeast", (50, 150), "ne e se");
    check_cover("southwest", (50, 150), "nw w sw");
    check_cover("southeast", (50, 150), "ne e se");
}

#[test]
fn gravity_accepts_the_short_compass_names() {
    check_cover("n", (150, 50), "nw n ne");
    check_cover("se", (50, 150), "ne e se");
    check_cover("centre", (50, 150), "n c s");
}

const RED: [u8; 4] = [255, 0, 0, 255];

/// The bounding box (x, y, w, h) of the pixels closer to `colour` than to `other` (RGB).
fn bounding_box(img: &Image, colour: [u8; 4], other: [u8; 4]) -> Option<(u32, u32, u32, u32)> {
    let distance = |a: [u8; 4], b: [u8; 4]| (0..3).map(|i| u32::from(a[i].abs_diff(b[i]))).sum::<u32>();
    let mut found: Option<(u32, u32, u32, u32)> = None;
    for y in 0..img.height {
        for x in 0..img.width {
            let p = img.at(x, y);
            if p[3] >= 128 && distance(p, colour) < distance(p, other) {
                let (x0, y0, x1, y1) = found.unwrap_or((x, y, x, y));
                found = Some((x0.min(x), y0.min(y), x1.max(x), y1.max(y)));
            }
        }
    }
    found.map(|(x0, y0, x1, y1)| (x0, y0, x1 - x0 + 1, y1 - y0 + 1))
}

/// Whether two boxes agree to within `slack` pixels on every edge.
fn same_box(a: (u32, u32, u32, u32), b: (u32, u32, u32, u32), slack: u32) -> bool {
    a.0.abs_diff(b.0) <= slack
        && a.1.abs_diff(b.1) <= slack
        && (a.0 + a.2).abs_diff(b.0 + b.2) <= slack
        && (a.1 + a.3).abs_diff(b.1 + b.3) <= slack
}

/// Contains a 40x20 red PNG (not enlarged) in a 100x100 box and checks where the red lands and
/// what colour the padding is. Lossless outputs must be exact; JPEG's chroma subsampling may
/// move an edge by a pixel.
#[track_caller]
fn check_contain(extra: &str, gravity: &str, at: (u32, u32), padding: [u8; 4]) {
    let query = format!("width=100&height=100&fit=contain&gravity={gravity}{extra}");
    let out = decode_output(&run(&png(&Image::solid(40, 20, RED)), &query));
    assert_eq!(out.size(), (100, 100), "{query}");
    let slack = if query.contains("jpeg") { 1 } else { 0 };
    let found = bounding_box(&out, RED, padding);
    assert!(
        found.is_some_and(|b| same_box(b, (at.0, at.1, 40, 20), slack)),
        "{query}: the image lands at {found:?}, expected {:?}",
        (at.0, at.1, 40, 20)
    );
    // The far corner from the image is always padding.
    let far = (if at.0 > 30 { 0 } else { 99 }, if at.1 > 40 { 0 } else { 99 });
    let pad = out.at(far.0, far.1);
    if padding[3] == 0 {
        // Fully transparent: the colour under it is the encoder's business.
        assert_eq!(pad[3], 0, "{query}: padding {pad:?} should be transparent");
    } else {
        assert_near(&pad, &padding, 3, format!("{query}: padding"));
    }
}

#[test]
fn contain_places_the_image_by_gravity_on_the_background() {
    let blue = [0, 0, 255, 255];
    for (gravity, at) in [
        ("center", (30, 40)),
        ("north", (30, 0)),
        ("northeast", (60, 0)),
        ("east", (60, 40)),
        ("southeast", (60, 80)),
        ("south", (30, 80)),
        ("southwest", (0, 80)),
        ("west", (0, 40)),
        ("northwest", (0, 0)),
    ] {
        check_contain("&background=0000ff", gravity, at, blue);
        check_contain("&background=0000ff&format=jpeg", gravity, at, blue);
    }
}

#[test]
fn contain_pads_with_transparency_where_the_output_has_alpha_and_white_where_not() {
    check_contain("", "northwest", (0, 0), [0, 0, 0, 0]);
    check_contain("&format=webp&lossless=true", "southeast", (60, 80), [0, 0, 0, 0]);
    check_contain("&format=jpeg", "northwest", (0, 0), [255, 255, 255, 255]);
    // A translucent background stays translucent in PNG and is composed onto white in JPEG.
    check_contain("&background=00ff0080", "center", (30, 40), [0, 255, 0, 128]);
    check_contain("&background=00ff0080&format=jpeg", "center", (30, 40), [127, 255, 127, 255]);
}

#[test]
fn contain_places_a_resampled_image_too() {
    // 400x200 into 100x100: the red is 100x50, at the top, middle or bottom.
    for (gravity, top) in [("north", 0), ("center", 25), ("south", 50)] {
        let query = format!("width=100&height=100&fit=contain&gravity={gravity}&background=0000ff");
        let out = decode_output(&run(&jpeg(&Image::solid(400, 200, RED)), &query));
        let found = bounding_box(&out, RED, [0, 0, 255, 255]);
        assert!(found.is_some_and(|b| same_box(b, (0, top, 100, 50), 1)), "{query}: red at {found:?}");
    }
}

/// 300x100 flat grey with a noisy 100x100 square at `patch_x` (1-pixel noise).
fn noisy_patch(patch_x: u32, seed: u64) -> Image {
    let noise: Vec<u8> = {
        let mut rng = Rng(seed);
        (0..100 * 100).map(|_| rng.byte()).collect()
    };
    Image::rgb(300, 100, |x, y| {
        if (patch_x..patch_x + 100).contains(&x) {
            let v = noise[(y * 100 + x - patch_x) as usize];
            [v, v / 2, 255 - v]
        } else {
            [128, 128, 128]
        }
    })
}

fn std_dev(values: &[f64]) -> f64 {
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt()
}

#[test]
fn entropy_keeps_the_detailed_region() {
    for patch_x in [0, 100, 200] {
        let img = noisy_patch(patch_x, 7 + u64::from(patch_x));
        let out = decode_output(&run(&png(&img), "width=100&height=100&fit=cover&gravity=entropy"));
        let expected = Image::new(100, 100, |x, y| img.at(x + patch_x, y));
        assert!(out == expected, "patch at x={patch_x}: entropy did not keep exactly the noisy square");
    }
    // The centre crop of a patch on the right would be flat.
    let out = decode_output(&run(&png(&noisy_patch(200, 1)), "width=100&height=100&fit=cover"));
    assert!(std_dev(&out.luma()) < 1.0);
}

#[test]
fn entropy_keeps_the_detailed_region_of_a_resampled_tall_image() {
    // 200x800, flat except a band of 8x8-pixel random blocks in the bottom quarter; covered to
    // 100x100 the image is resampled to 100x400 first.
    let blocks: Vec<u8> = {
        let mut rng = Rng(99);
        (0..25 * 25).map(|_| rng.byte()).collect()
    };
    let img = Image::rgb(200, 800, |x, y| {
        if y >= 600 {
            let v = blocks[((y - 600) / 8 * 25 + x / 8) as usize];
            [v, v, v]
        } else {
            [40, 90, 160]
        }
    });
    let out = decode_output(&run(&jpeg(&img), "width=100&height=100&fit=cover&gravity=entropy"));
    assert_eq!(out.size(), (100, 100));
    assert!(std_dev(&out.luma()) > 40.0, "entropy crop is not the detailed band: sd {}", std_dev(&out.luma()));
    let centre = decode_output(&run(&jpeg(&img), "width=100&height=100&fit=cover"));
    assert!(std_dev(&centre.luma()) < 3.0);
}

#[test]
fn entropy_is_for_cover_only() {
    let err = try_spec("width=10&height=10&fit=contain&gravity=entropy").unwrap_err();
    assert_eq!(err.http_status(), 400, "{err}");
}
