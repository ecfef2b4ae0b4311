//! The decoded pixels travelling between steps: 8 bits per sample, rows packed, no padding.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Gray,
    GrayAlpha,
    Rgb,
    Rgba,
    /// Straight from a CMYK JPEG, Adobe-inverted samples already undone (0 = no ink).
    Cmyk,
}

impl Layout {
    pub fn channels(self) -> usize {
        match self {
            Layout::Gray => 1,
            Layout::GrayAlpha => 2,
            Layout::Rgb => 3,
            Layout::Rgba | Layout::Cmyk => 4,
        }
    }
    pub fn has_alpha(self) -> bool {
        matches!(self, Layout::GrayAlpha | Layout::Rgba)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub data: Vec<u8>,
}

impl Bitmap {
    pub fn new(width: u32, height: u32, layout: Layout, data: Vec<u8>) -> Bitmap {
        debug_assert_eq!(data.len(), width as usize * height as usize * layout.channels());
        Bitmap { width, height, layout, data }
    }

    pub fn filled(width: u32, height: u32, layout: Layout, pixel: &[u8]) -> Bitmap {
        debug_assert_eq!(pixel.len(), layout.channels());
        let data = pixel.repeat(width as usize * height as usize);
        Bitmap { width, height, layout, data }
    }

    pub fn stride(&self) -> usize {
        self.width as usize * self.layout.channels()
    }

    /// True when some pixel is not fully opaque (decides whether alpha survives).
    pub fn uses_alpha(&self) -> bool {
        match self.layout {
            Layout::GrayAlpha => self.data.chunks_exact(2).any(|p| p[1] != 255),
            Layout::Rgba => self.data.chunks_exact(4).any(|p| p[3] != 255),
            _ => false,
        }
    }

    /// A copy of the `w` x `h` window at `(x, y)`; the window must lie inside the bitmap.
    pub fn crop(&self, x: u32, y: u32, w: u32, h: u32) -> Bitmap {
        assert!(x + w <= self.width && y + h <= self.height, "crop window outside the bitmap");
        let c = self.layout.channels();
        let stride = self.stride();
        let mut data = Vec::with_capacity(w as usize * h as usize * c);
        for row in y..y + h {
            let start = row as usize * stride + x as usize * c;
            data.extend_from_slice(&self.data[start..start + w as usize * c]);
        }
        Bitmap::new(w, h, self.layout, data)
    }

    /// Copies `src` (same layout) onto `self` at `(x, y)`; `src` must fit.
    pub fn paste(&mut self, src: &Bitmap, x: u32, y: u32) {
        assert_eq!(self.layout, src.layout);
        assert!(x + src.width <= self.width && y + src.height <= self.height);
        let c = self.layout.channels();
        let dst_stride = self.stride();
        let src_stride = src.stride();
        for row in 0..src.height as usize {
            let d = (y as usize + row) * dst_stride + x as usize * c;
            let s = row * src_stride;
            self.data[d..d + src_stride].copy_from_slice(&src.data[s..s + src_stride]);
        }
    }
}
