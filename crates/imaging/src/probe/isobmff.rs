//! AVIF and HEIC: HEIF (ISO/IEC 23008-12) images in the ISO base media file format (ISOBMFF,
//! ISO/IEC 14496-12), probed from their boxes before any pixel is decoded.
//!
//! The walk: `ftyp` (brands) first, then the top-level boxes once (`meta`, and `moov` for image
//! sequences); inside `meta` the primary item (`pitm`), its type (`iinf`/`infe`), where its data
//! lies (`iloc`, `idat`), what it derives from (`iref`: `dimg` grid tiles, `auxl` alpha), and its
//! properties (`iprp`: `ipco` + `ipma`): `ispe` (size), `pixi` (bit depth), `irot`/`imir`
//! (orientation), `colr` (nclx or ICC), `auxC` (alpha), `clap`. A `grid` item's own payload gives
//! the displayed size, and its tiles' `ispe` the pixels the decoder really decodes.
//!
//! Hostile input: every box is read from a checked slice of its container, so a size past the
//! end is an error, not a read; only the fixed paths above are descended (no recursion a file
//! can deepen); every count a file declares is checked against the bytes that hold it and
//! against a cap before anything is stored, so no allocation is sized by an untrusted number.
//!
//! Orientation: `irot` and `imir` are folded into the EXIF orientation (1–8) the other formats
//! report, and applied by `orient.rs` after the resize (the decoder is told to ignore them), so
//! `width`/`height` are the stored size as for a rotated JPEG.

use super::ProbeError::{Corrupt, Truncated, Unsupported};
use super::{arr, be16, be32, ImageFormat, Probe, ProbeError};

/// HEIF details; `Some` iff the format is AVIF or HEIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeifInfo {
    /// Items the file declares (`iinf`): images, tiles, thumbnails, alpha planes, metadata.
    pub items: u32,
    /// Grid tiles of the primary image; 1 when it is a single coded image.
    pub tiles: u32,
    /// Size of one coded image (a tile of a grid; the image itself otherwise).
    pub tile_width: u32,
    /// See `tile_width`.
    pub tile_height: u32,
    /// Pixels the decoder decodes: tiles × tile size, which a grid's tiles may make larger than
    /// the displayed width × height (tiles overhang the right and bottom edges).
    pub coded_pixels: u64,
    /// The primary image's clean-aperture crop (`clap`) as (left, top, width, height) in the
    /// coded image (before `irot`/`imir`): `Probe::width`/`height` are its size, and the decoder
    /// copies only it. `None` without a `clap`, or with one that follows a rotation or mirror in
    /// the associations (then not applied: the encoder's padding stays) or lies outside.
    pub clap: Option<[u32; 4]>,
    /// The coded image's size (`ispe`, or the grid's output size): what libheif decodes,
    /// before the `clap` crop.
    pub full_width: u32,
    /// See `full_width`.
    pub full_height: u32,
    /// Chroma of the coded images (`hvcC`/`av1C`): 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4
    /// (also when the box is missing or odd: the costliest).
    pub chroma_format: u8,
    /// The primary image's `colr` of type `nclx`: colour primaries, transfer characteristics
    /// and matrix coefficients (ITU-T H.273 code points).
    pub nclx: Option<[u16; 3]>,
    /// An image sequence (`avis`, `msf1`): `Probe::frames` counts its first track's samples;
    /// the still (primary) image is what is decoded.
    pub sequence: bool,
}

/// More items, properties or references than this is not an image but an attack on whoever
/// indexes them: iPhone grids have about 50 items, a 100 MP panorama in 512-pixel tiles 400.
pub const MAX_ITEMS: u32 = 10_000;
/// Grid tiles come from `rows_minus_one`/`columns_minus_one` bytes: at most 256 × 256.
const MAX_TILES: usize = 256 * 256;
/// Alpha planes referring to the primary image that are looked at.
const MAX_ALPHA_CANDIDATES: usize = 16;
/// Associations of one item with properties (`ipma` holds a byte for their count).
const MAX_ASSOCIATIONS: usize = 255;

const ALPHA_URNS: [&[u8]; 2] = [b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha", b"urn:mpeg:hevc:2015:auxid:1"];

/// One box: its type, its body (after the header), and whether the body is all there.
#[derive(Clone, Copy)]
struct Bx<'a> {
    kind: [u8; 4],
    body: &'a [u8],
    whole: bool,
}

/// The boxes of one container, in order. Nested (`top == false`), a box that runs past its
/// container or a header cut short is `Corrupt`; at the top level it is the file that ends
/// early, so the last box comes back with `whole == false` and the walk stops.
struct Boxes<'a> {
    data: &'a [u8],
    pos: usize,
    top: bool,
    done: bool,
}

impl<'a> Boxes<'a> {
    fn new(data: &'a [u8], top: bool) -> Self {
        Boxes { data, pos: 0, top, done: false }
    }

    fn header(&self) -> Result<Option<(usize, u64, [u8; 4])>, ProbeError> {
        let d = self.data;
        let at = self.pos;
        let (Some(size), Some(kind)) = (be32(d, at), arr::<4>(d, at + 4)) else {
            return if self.top { Err(Truncated("ISOBMFF box header")) } else { Err(Corrupt("box header cut short")) };
        };
        match size {
            0 => Ok(Some((8, (d.len() - at) as u64, kind))),
            1 => match arr::<8>(d, at + 8).map(u64::from_be_bytes) {
                Some(large) if large < 16 => Err(Corrupt("box size smaller than its header")),
                Some(large) => Ok(Some((16, large, kind))),
                None if self.top => Err(Truncated("ISOBMFF box header")),
                None => Err(Corrupt("box header cut short")),
            },
            2..=7 => Err(Corrupt("box size smaller than its header")),
            n => Ok(Some((8, u64::from(n), kind))),
        }
    }
}

impl<'a> Iterator for Boxes<'a> {
    type Item = Result<Bx<'a>, ProbeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.data.len() {
            return None;
        }
        let (hdr, size, kind) = match self.header() {
            Ok(Some(h)) => h,
            Ok(None) => return None,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let left = (self.data.len() - self.pos) as u64;
        let start = self.pos + hdr;
        if size <= left {
            let end = self.pos + size as usize;
            self.pos = end;
            return Some(Ok(Bx { kind, body: self.data.get(start..end).unwrap_or(&[]), whole: true }));
        }
        self.done = true;
        if !self.top {
            return Some(Err(Corrupt("box larger than its container")));
        }
        Some(Ok(Bx { kind, body: self.data.get(start..).unwrap_or(&[]), whole: false }))
    }
}

/// Children of a box (nested rules: everything must fit).
fn children(body: &[u8]) -> Boxes<'_> {
    Boxes::new(body, false)
}

/// A FullBox's (version, flags, content).
fn full(body: &[u8]) -> Result<(u8, u32, &[u8]), ProbeError> {
    let vf = be32(body, 0).ok_or(Corrupt("full box header cut short"))?;
    Ok(((vf >> 24) as u8, vf & 0xFF_FFFF, &body[4..]))
}

/// A big-endian unsigned number of `n` bytes (0, 2, 4 or 8) at `at`.
fn be_n(d: &[u8], at: usize, n: usize) -> Option<u64> {
    match n {
        0 => Some(0),
        2 => be16(d, at).map(u64::from),
        4 => be32(d, at).map(u64::from),
        8 => arr::<8>(d, at).map(u64::from_be_bytes),
        _ => None,
    }
}

fn is_heif_brand(b: &[u8]) -> Option<ImageFormat> {
    match b {
        b"avif" | b"avis" | b"avio" => Some(ImageFormat::Avif),
        b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" | b"hevm" | b"hevs" => Some(ImageFormat::Heic),
        // Generic HEIF brands: the primary item's coding says which.
        b"mif1" | b"msf1" | b"mif2" | b"miaf" => Some(ImageFormat::Heic),
        _ => None,
    }
}

/// Where an item's data lies (`iloc`), reduced to what the probe needs.
#[derive(Clone, Copy)]
struct Loc {
    id: u32,
    /// 0: file offsets; 1: inside `idat`; 2: another item (not read here).
    method: u8,
    first: (u64, u64),
    extents: u32,
    /// Every extent lies inside the file (method 0) or `idat` (method 1).
    present: bool,
}

/// The `meta` box's parts, each the first of its kind.
#[derive(Default)]
struct Meta<'a> {
    pitm: Option<&'a [u8]>,
    iinf: Option<&'a [u8]>,
    iloc: Option<&'a [u8]>,
    iref: Option<&'a [u8]>,
    ipco: Option<&'a [u8]>,
    ipma: Vec<&'a [u8]>,
    idat: Option<&'a [u8]>,
}

pub(super) fn probe_isobmff(d: &[u8]) -> Result<Probe, ProbeError> {
    let mut top = Boxes::new(d, true);
    let ftyp = match top.next() {
        Some(Ok(b)) if &b.kind == b"ftyp" && b.whole => b,
        Some(Ok(b)) if &b.kind == b"ftyp" => return Err(Truncated("ftyp box")),
        Some(Err(e)) => return Err(e),
        _ => return Err(Unsupported),
    };
    let major = ftyp.body.get(..4).ok_or(Corrupt("ftyp box too short"))?;
    let compatible = ftyp.body.get(8..).unwrap_or(&[]).chunks_exact(4);
    let brands = || std::iter::once(major).chain(compatible.clone());
    let family = brands().find_map(is_heif_brand).ok_or(Unsupported)?;
    let sequence_brand = brands().any(|b| b == b"avis" || b == b"msf1");

    let (mut meta, mut moov, mut complete) = (None, None, true);
    for b in top {
        let b = match b {
            Ok(b) => b,
            // Boxes after a whole `meta` may be cut: the image data is checked below.
            Err(Truncated(_)) if meta.is_some() => {
                complete = false;
                break;
            }
            Err(e) => return Err(e),
        };
        if !b.whole {
            complete = false;
        }
        match &b.kind {
            b"meta" if meta.is_none() => {
                if !b.whole {
                    return Err(Truncated("meta box"));
                }
                meta = Some(b.body);
            }
            b"moov" if moov.is_none() && b.whole => moov = Some(b.body),
            _ => {}
        }
    }
    let frames = match moov {
        Some(moov) if sequence_brand => sequence_frames(moov)?,
        _ => None,
    };
    let Some(meta) = meta else {
        return Err(if frames.is_some() {
            Unsupported
        } else if complete {
            Corrupt("HEIF file without a meta box")
        } else {
            Truncated("meta box")
        });
    };
    let mut p = probe_meta(d, meta, family)?;
    if let Some(h) = p.heif.as_mut() {
        h.sequence = frames.is_some();
    }
    p.frames = frames.unwrap_or(1).max(1);
    p.complete &= complete;
    Ok(p)
}

fn probe_meta(d: &[u8], meta: &[u8], family: ImageFormat) -> Result<Probe, ProbeError> {
    let (_, _, meta) = full(meta)?;
    let mut m = Meta::default();
    for b in children(meta) {
        let b = b?;
        match &b.kind {
            b"pitm" => _ = m.pitm.get_or_insert(b.body),
            b"iinf" => _ = m.iinf.get_or_insert(b.body),
            b"iloc" => _ = m.iloc.get_or_insert(b.body),
            b"iref" => _ = m.iref.get_or_insert(b.body),
            b"idat" => _ = m.idat.get_or_insert(b.body),
            b"iprp" => {
                for c in children(b.body) {
                    let c = c?;
                    match &c.kind {
                        b"ipco" => _ = m.ipco.get_or_insert(c.body),
                        b"ipma" if m.ipma.len() < 4 => m.ipma.push(c.body),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let primary = {
        let (v, _, c) = full(m.pitm.ok_or(Corrupt("no primary item (pitm)"))?)?;
        let id = if v == 0 { be16(c, 0).map(u32::from) } else { be32(c, 0) };
        id.ok_or(Corrupt("pitm box too short"))?
    };
    let (items, types) = item_types(m.iinf.ok_or(Corrupt("no item information (iinf)"))?)?;
    let type_of = |id: u32| types.iter().find(|t| t.0 == id).map(|t| t.1);
    let primary_type = type_of(primary).ok_or(Corrupt("primary item not in iinf"))?;
    let refs = references(m.iref, primary)?;
    let locs = locations(m.iloc.ok_or(Corrupt("no item locations (iloc)"))?, d.len() as u64, m.idat)?;
    let loc_of = |id: u32| locs.iter().find(|l| l.id == id).copied();
    let props = properties(m.ipco.ok_or(Corrupt("no item properties (ipco)"))?)?;

    // The grid, if the primary is one: its tiles, in order, and the output size.
    let grid = if &primary_type == b"grid" {
        let loc = loc_of(primary).ok_or(Corrupt("grid item has no location"))?;
        let payload = item_bytes(d, m.idat, loc)?;
        let (rows, cols, w, h) = grid_payload(payload)?;
        if refs.tiles.len() != rows * cols {
            return Err(Corrupt("grid tile count disagrees with its dimg references"));
        }
        Some((rows as u32, cols as u32, w, h))
    } else {
        None
    };
    let coded_type = match grid {
        Some(_) => {
            let first = *refs.tiles.first().ok_or(Corrupt("grid without tiles"))?;
            type_of(first).ok_or(Corrupt("grid tile not in iinf"))?
        }
        None => primary_type,
    };
    let format = match &coded_type {
        b"av01" => ImageFormat::Avif,
        b"hvc1" => ImageFormat::Heic,
        _ => return Err(Unsupported),
    };
    debug_assert!(family == ImageFormat::Avif || family == ImageFormat::Heic);

    // One pass over the associations for the items that matter.
    let mut sorted_tiles = refs.tiles.clone();
    sorted_tiles.sort_unstable();
    let mut primary_props: Vec<u16> = Vec::new();
    let mut tile_size: Option<(u32, u32)> = None;
    let mut tile_bits = None;
    let mut tile_chroma = None;
    let mut alpha = false;
    let mut tiles_seen = 0usize;
    for ipma in &m.ipma {
        for_each_association(ipma, |item, assoc| {
            if item == primary {
                primary_props.clear();
                primary_props.extend_from_slice(assoc);
            }
            if sorted_tiles.binary_search(&item).is_ok() {
                tiles_seen += 1;
                for &i in assoc {
                    match prop(&props, i) {
                        Some((k, body)) if &k == b"ispe" => {
                            let size = ispe(body)?;
                            match tile_size {
                                None => tile_size = Some(size),
                                Some(s) if s != size => return Err(Corrupt("grid tiles differ in size")),
                                _ => {}
                            }
                        }
                        Some((k, body)) if &k == b"pixi" => _ = tile_bits.get_or_insert(pixi(body)),
                        Some((k, body)) if &k == b"hvcC" || &k == b"av1C" => {
                            _ = tile_chroma.get_or_insert(chroma_format(&k, body))
                        }
                        _ => {}
                    }
                }
            }
            if refs.alpha.contains(&item)
                && assoc.iter().any(|&i| matches!(prop(&props, i), Some((k, body)) if &k == b"auxC" && is_alpha(body)))
            {
                alpha = true;
            }
            Ok(())
        })?;
    }

    let mut p = Probe::new(format);
    let mut orientation = 1u8;
    let mut size = None;
    let mut clap = None;
    let mut transformed = false;
    let mut bits = None;
    let mut chroma = None;
    let mut nclx = None;
    for &i in &primary_props {
        let Some((kind, body)) = prop(&props, i) else { return Err(Corrupt("item property index out of range")) };
        match &kind {
            b"ispe" => size = Some(ispe(body)?),
            b"pixi" => bits = Some(pixi(body)),
            b"irot" => {
                let angle = body.first().ok_or(Corrupt("irot box too short"))? & 3;
                orientation = then(orientation, [1, 8, 3, 6][usize::from(angle)]);
                transformed = true;
            }
            b"imir" => {
                // 0: top-bottom, 1: left-right, as libheif and libavif read it (ISO/IEC
                // 23008-12:2022 calls it `mode`; the 2017 text's "vertical axis" for 0 was
                // read the other way by no one who writes these files).
                let axis = body.first().ok_or(Corrupt("imir box too short"))? & 1;
                orientation = then(orientation, if axis == 0 { 4 } else { 2 });
                transformed = true;
            }
            b"colr" => match body.get(..4) {
                Some(b"prof" | b"rICC") => p.has_icc = true,
                Some(b"nclx") => {
                    if let (Some(cp), Some(tc), Some(mc)) = (be16(body, 4), be16(body, 6), be16(body, 8)) {
                        nclx.get_or_insert([cp, tc, mc]);
                    }
                }
                _ => {}
            },
            b"clap" if !transformed => clap = clean_aperture(body),
            b"hvcC" | b"av1C" => chroma = Some(chroma_format(&kind, body)),
            _ => {}
        }
    }
    let (tiles, (tw, th), (w, h)) = match grid {
        Some((rows, cols, w, h)) => {
            if tiles_seen < refs.tiles.len() {
                return Err(Corrupt("grid tile without properties"));
            }
            let (tw, th) = tile_size.ok_or(Corrupt("grid tile without ispe"))?;
            if u64::from(cols) * u64::from(tw) < u64::from(w) || u64::from(rows) * u64::from(th) < u64::from(h) {
                return Err(Corrupt("grid tiles do not cover the grid"));
            }
            bits = bits.or(tile_bits);
            chroma = chroma.or(tile_chroma);
            (rows * cols, (tw, th), (w, h))
        }
        None => {
            let s = size.ok_or(Corrupt("primary image without ispe"))?;
            (1, s, s)
        }
    };
    if w == 0 || h == 0 {
        return Err(Corrupt("zero image dimension"));
    }
    // Is the coded data of the primary (or of every tile) in the file?
    let mut present = loc_of(primary).is_some_and(|l| l.present);
    for &t in &refs.tiles {
        present &= loc_of(t).is_some_and(|l| l.present);
    }
    let clap = clap.and_then(|f| f(w, h));
    (p.width, p.height) = clap.map_or((w, h), |[_, _, cw, ch]| (cw, ch));
    p.orientation = orientation;
    p.has_alpha = alpha;
    p.bit_depth = bits.unwrap_or(8);
    p.complete = present;
    let coded_pixels = u64::from(tiles).saturating_mul(u64::from(tw) * u64::from(th));
    p.heif = Some(HeifInfo {
        items,
        tiles,
        tile_width: tw,
        tile_height: th,
        coded_pixels,
        clap,
        full_width: w,
        full_height: h,
        chroma_format: chroma.unwrap_or(3),
        nclx,
        sequence: false,
    });
    Ok(p)
}

/// The EXIF orientation of doing `first`, then `second` (each 1–8). Worked out on a 3×2 sample
/// (orientations are the 8 symmetries of a rectangle, and the sample tells them all apart).
fn then(first: u8, second: u8) -> u8 {
    use crate::bitmap::{Bitmap, Layout};
    use crate::orient::apply;
    let sample = || Bitmap::new(3, 2, Layout::Gray, (0..6).collect());
    let both = apply(apply(sample(), first), second);
    (1..=8).find(|&o| apply(sample(), o) == both).unwrap_or(1)
}

/// An item's id and type (`av01`, `hvc1`, `grid`, `Exif`, …).
type ItemType = (u32, [u8; 4]);

/// A property box: its type and body.
type Property<'a> = ([u8; 4], &'a [u8]);

/// (declared item count, (id, type) of each `infe` of version 2 or 3).
fn item_types(iinf: &[u8]) -> Result<(u32, Vec<ItemType>), ProbeError> {
    let (v, _, c) = full(iinf)?;
    let (count, rest) = if v == 0 { (be16(c, 0).map(u32::from), c.get(2..)) } else { (be32(c, 0), c.get(4..)) };
    let (Some(count), Some(rest)) = (count, rest) else { return Err(Corrupt("iinf box too short")) };
    if count > MAX_ITEMS {
        return Err(Corrupt("iinf declares too many items"));
    }
    let mut types = Vec::new();
    for b in children(rest) {
        let b = b?;
        if &b.kind != b"infe" {
            continue;
        }
        if types.len() >= count as usize {
            return Err(Corrupt("iinf holds more items than it declares"));
        }
        let (v, _, c) = full(b.body)?;
        let entry = match v {
            2 => be16(c, 0).map(u32::from).zip(arr::<4>(c, 4)),
            3 => be32(c, 0).zip(arr::<4>(c, 6)),
            _ => None,
        };
        match entry {
            Some(e) => types.push(e),
            None if v >= 2 => return Err(Corrupt("infe box too short")),
            None => {}
        }
    }
    if types.len() < count as usize {
        return Err(Corrupt("iinf declares more items than it holds"));
    }
    Ok((count, types))
}

struct Refs {
    /// `dimg` from the primary: its grid tiles, in order.
    tiles: Vec<u32>,
    /// Items with an `auxl` reference to the primary (alpha planes, depth maps, …).
    alpha: Vec<u32>,
}

fn references(iref: Option<&[u8]>, primary: u32) -> Result<Refs, ProbeError> {
    let mut refs = Refs { tiles: Vec::new(), alpha: Vec::new() };
    let Some(iref) = iref else { return Ok(refs) };
    let (v, _, c) = full(iref)?;
    let n = if v == 0 { 2 } else { 4 };
    let id = |d: &[u8], at: usize| be_n(d, at, n).map(|x| x as u32).ok_or(Corrupt("iref entry cut short"));
    for b in children(c) {
        let b = b?;
        let from = id(b.body, 0)?;
        let count = usize::from(be16(b.body, n).ok_or(Corrupt("iref entry cut short"))?);
        let to = |i: usize| id(b.body, n + 2 + i * n);
        // The last reference must be there before any is taken: the count is the file's word.
        to(count.saturating_sub(1))?;
        match &b.kind {
            b"dimg" if from == primary => {
                if !refs.tiles.is_empty() || count > MAX_TILES {
                    return Err(Corrupt("grid references too many tiles"));
                }
                refs.tiles = (0..count).map(to).collect::<Result<_, _>>()?;
            }
            b"auxl" if refs.alpha.len() < MAX_ALPHA_CANDIDATES && (0..count).map(to).any(|t| t == Ok(primary)) => {
                refs.alpha.push(from)
            }
            _ => {}
        }
    }
    Ok(refs)
}

fn locations(iloc: &[u8], file_len: u64, idat: Option<&[u8]>) -> Result<Vec<Loc>, ProbeError> {
    let short = Corrupt("iloc box cut short");
    let (v, _, c) = full(iloc)?;
    if v > 2 {
        return Err(Corrupt("unknown iloc version"));
    }
    let (Some(&a), Some(&b)) = (c.first(), c.get(1)) else { return Err(short) };
    let (off_size, len_size, base_size) = (usize::from(a >> 4), usize::from(a & 15), usize::from(b >> 4));
    let index_size = if v == 0 { 0 } else { usize::from(b & 15) };
    if [off_size, len_size, base_size, index_size].iter().any(|s| ![0, 4, 8].contains(s)) {
        return Err(Corrupt("iloc field size not 0, 4 or 8"));
    }
    let (count, mut at) = if v < 2 { (be16(c, 2).map(u32::from), 4) } else { (be32(c, 2), 6) };
    let count = count.ok_or(short)?;
    if count > MAX_ITEMS {
        return Err(Corrupt("iloc declares too many items"));
    }
    let idat_len = idat.map_or(0, |i| i.len() as u64);
    let mut locs = Vec::new();
    for _ in 0..count {
        let (id, n) = if v < 2 { (be16(c, at).map(u32::from), 2) } else { (be32(c, at), 4) };
        let id = id.ok_or(short)?;
        at += n;
        let method = if v == 0 {
            0
        } else {
            at += 2;
            (be16(c, at - 2).ok_or(short)? & 15) as u8
        };
        at += 2; // data_reference_index
        let base = be_n(c, at, base_size).ok_or(short)?;
        at += base_size;
        let extents = be16(c, at).ok_or(short)?;
        at += 2;
        let limit = if method == 1 { idat_len } else { file_len };
        let (mut first, mut present) = ((0, 0), method != 2);
        for e in 0..extents {
            at += index_size;
            let off = be_n(c, at, off_size).ok_or(short)?;
            let len = be_n(c, at + off_size, len_size).ok_or(short)?;
            at += off_size + len_size;
            let start = base.saturating_add(off);
            // Length 0: the rest of the file (or idat).
            let len = if len == 0 { limit.saturating_sub(start) } else { len };
            if e == 0 {
                first = (start, len);
            }
            present &= start.saturating_add(len) <= limit;
        }
        locs.push(Loc { id, method, first, extents: u32::from(extents), present });
    }
    Ok(locs)
}

/// A small item's bytes (a grid's payload): one extent, in the file or in `idat`.
fn item_bytes<'a>(d: &'a [u8], idat: Option<&'a [u8]>, loc: Loc) -> Result<&'a [u8], ProbeError> {
    if loc.extents != 1 {
        return Err(Corrupt("grid payload not in one extent"));
    }
    let src = match loc.method {
        0 => d,
        1 => idat.ok_or(Corrupt("item in idat without idat"))?,
        _ => return Err(Corrupt("grid payload stored in another item")),
    };
    let (start, len) = loc.first;
    let start = usize::try_from(start).map_err(|_| Truncated("grid payload"))?;
    let len = usize::try_from(len.min(64)).unwrap_or(64);
    src.get(start..start.saturating_add(len)).ok_or(Truncated("grid payload"))
}

/// (rows, columns, output width, output height).
fn grid_payload(g: &[u8]) -> Result<(usize, usize, u32, u32), ProbeError> {
    let short = Corrupt("grid payload too short");
    let (Some(&v), Some(&flags), Some(&rows), Some(&cols)) = (g.first(), g.get(1), g.get(2), g.get(3)) else {
        return Err(short);
    };
    if v != 0 {
        return Err(Corrupt("unknown grid version"));
    }
    let (w, h) =
        if flags & 1 == 0 { (be16(g, 4).map(u32::from), be16(g, 6).map(u32::from)) } else { (be32(g, 4), be32(g, 8)) };
    let (Some(w), Some(h)) = (w, h) else { return Err(short) };
    Ok((usize::from(rows) + 1, usize::from(cols) + 1, w, h))
}

/// The property boxes of `ipco`, in order (associations number them from 1).
fn properties(ipco: &[u8]) -> Result<Vec<Property<'_>>, ProbeError> {
    let mut props = Vec::new();
    for b in children(ipco) {
        let b = b?;
        if props.len() >= MAX_ITEMS as usize {
            return Err(Corrupt("too many item properties"));
        }
        props.push((b.kind, b.body));
    }
    Ok(props)
}

fn prop<'a>(props: &[Property<'a>], index: u16) -> Option<Property<'a>> {
    props.get(usize::from(index).checked_sub(1)?).copied()
}

/// Calls `f(item, property indices)` for every `ipma` entry (indices 0, "none", left out).
fn for_each_association(
    ipma: &[u8],
    mut f: impl FnMut(u32, &[u16]) -> Result<(), ProbeError>,
) -> Result<(), ProbeError> {
    let short = Corrupt("ipma box cut short");
    let (v, flags, c) = full(ipma)?;
    let entries = be32(c, 0).ok_or(short)?;
    if entries > MAX_ITEMS {
        return Err(Corrupt("ipma declares too many items"));
    }
    let mut at = 4usize;
    let mut assoc = [0u16; MAX_ASSOCIATIONS];
    for _ in 0..entries {
        let (id, n) = if v < 1 { (be16(c, at).map(u32::from), 2) } else { (be32(c, at), 4) };
        let id = id.ok_or(short)?;
        at += n;
        let count = usize::from(*c.get(at).ok_or(short)?);
        at += 1;
        let mut kept = 0;
        for _ in 0..count {
            let index = if flags & 1 == 1 {
                at += 2;
                be16(c, at - 2).ok_or(short)? & 0x7FFF
            } else {
                at += 1;
                u16::from(c.get(at - 1).ok_or(short)? & 0x7F)
            };
            if index != 0 {
                assoc[kept] = index;
                kept += 1;
            }
        }
        f(id, &assoc[..kept])?;
    }
    Ok(())
}

fn ispe(body: &[u8]) -> Result<(u32, u32), ProbeError> {
    let (_, _, c) = full(body)?;
    match (be32(c, 0), be32(c, 4)) {
        (Some(w), Some(h)) if w > 0 && h > 0 => Ok((w, h)),
        (Some(_), Some(_)) => Err(Corrupt("zero image dimension")),
        _ => Err(Corrupt("ispe box too short")),
    }
}

/// Bits of the first channel (8 when the box is odd: the decoder decides).
fn pixi(body: &[u8]) -> u8 {
    let c = body.get(4..).unwrap_or(&[]);
    match (c.first(), c.get(1)) {
        (Some(1..), Some(&bits)) if (1..=16).contains(&bits) => bits,
        _ => 8,
    }
}

/// A `clap` box as the crop it makes of a `w` x `h` image, rounded as libheif 1.15 does (checked
/// against heif-convert): width, height, left and top edges to the nearest pixel, halves up,
/// around the centre moved by the offsets. `None` when it is malformed or reaches outside the image.
fn clean_aperture(body: &[u8]) -> Option<impl Fn(u32, u32) -> Option<[u32; 4]>> {
    let n = |i: usize| be32(body, i * 4);
    let fraction = |i: usize, signed: bool| -> Option<f64> {
        let (num, den) = (n(i)?, n(i + 1)?);
        let num = if signed { f64::from(num as i32) } else { f64::from(num) };
        (den != 0).then(|| num / f64::from(den))
    };
    let (cw, ch) = (fraction(0, false)?, fraction(2, false)?);
    let (dx, dy) = (fraction(4, true)?, fraction(6, true)?);
    Some(move |w: u32, h: u32| {
        let left = (dx + (f64::from(w) - 1.0) / 2.0 - (cw - 1.0) / 2.0 + 0.5).floor();
        let top = (dy + (f64::from(h) - 1.0) / 2.0 - (ch - 1.0) / 2.0 + 0.5).floor();
        let (cw, ch) = (cw.round(), ch.round());
        let inside = left >= 0.0 && top >= 0.0 && cw >= 1.0 && ch >= 1.0;
        (inside && left + cw <= f64::from(w) && top + ch <= f64::from(h)).then_some([
            left as u32,
            top as u32,
            cw as u32,
            ch as u32,
        ])
    })
}

/// hvcC: `chroma_format_idc` in byte 16; av1C: `mono_chrome` and the subsampling bits of
/// byte 2.
fn chroma_format(kind: &[u8; 4], body: &[u8]) -> u8 {
    match (kind, body.get(16), body.get(2)) {
        (b"hvcC", Some(&b), _) => b & 3,
        (b"av1C", _, Some(&b)) if b & 0x10 != 0 => 0,
        (b"av1C", _, Some(&b)) => match (b >> 3 & 1, b >> 2 & 1) {
            (1, 1) => 1,
            (1, 0) => 2,
            _ => 3,
        },
        _ => 3,
    }
}

fn is_alpha(auxc: &[u8]) -> bool {
    let urn = auxc.get(4..).unwrap_or(&[]);
    let urn = urn.split(|&b| b == 0).next().unwrap_or(&[]);
    ALPHA_URNS.contains(&urn)
}

/// Frames of an image sequence: the largest sample count of its tracks (`stsz`). `None` when
/// there is no track.
fn sequence_frames(moov: &[u8]) -> Result<Option<u32>, ProbeError> {
    let mut frames = None;
    for trak in children(moov) {
        let trak = trak?;
        if &trak.kind != b"trak" {
            continue;
        }
        let Some(stbl) = path(trak.body, &[b"mdia", b"minf", b"stbl"])? else { continue };
        for b in children(stbl) {
            let b = b?;
            if &b.kind == b"stsz" || &b.kind == b"stz2" {
                let (_, _, c) = full(b.body)?;
                let count = be32(c, 4).ok_or(Corrupt("stsz box too short"))?;
                frames = Some(frames.unwrap_or(0u32).max(count));
            }
        }
    }
    Ok(frames)
}

/// The body of the first box at `path` under `body`, if there is one.
fn path<'a>(mut body: &'a [u8], path: &[&[u8; 4]]) -> Result<Option<&'a [u8]>, ProbeError> {
    for kind in path {
        let mut found = None;
        for b in children(body) {
            let b = b?;
            if &b.kind == *kind {
                found = Some(b.body);
                break;
            }
        }
        match found {
            Some(f) => body = f,
            None => return Ok(None),
        }
    }
    Ok(Some(body))
}
