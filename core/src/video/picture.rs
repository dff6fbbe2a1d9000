//! Raw pictures: [`I420Frame`], the layout every encoder and decoder of the core takes and gives,
//! and what cameras hand over ([`CameraPicture`]: I420 or NV12, turned by the sensor's rotation),
//! turned upright into I420 before encoding ([`CameraPicture::upright`]).

use super::codecs::CodecError;

/// A raw picture in I420 (YUV 4:2:0 planar, 8 bits): a full-size luma plane and two chroma planes
/// of half width and half height (rounded up), each stored without padding.
#[derive(Clone, PartialEq, Eq)]
pub struct I420Frame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Luma, `width × height` bytes, row after row.
    pub y: Vec<u8>,
    /// Blue-difference chroma, `chroma_width × chroma_height` bytes.
    pub u: Vec<u8>,
    /// Red-difference chroma, `chroma_width × chroma_height` bytes.
    pub v: Vec<u8>,
}

impl std::fmt::Debug for I420Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "I420Frame({}x{})", self.width, self.height)
    }
}

impl I420Frame {
    /// A picture of one colour (`y`, `u`, `v`) at this size.
    pub fn filled(width: u32, height: u32, (y, u, v): (u8, u8, u8)) -> I420Frame {
        let (cw, ch) = chroma_size(width, height);
        I420Frame {
            width,
            height,
            y: vec![y; (width * height) as usize],
            u: vec![u; (cw * ch) as usize],
            v: vec![v; (cw * ch) as usize],
        }
    }

    /// Checks that the planes have the sizes that `width` and `height` say.
    pub fn check(&self) -> Result<(), CodecError> {
        let (cw, ch) = chroma_size(self.width, self.height);
        if self.width == 0 || self.height == 0 {
            return Err(CodecError::BadInput(format!("empty picture {}x{}", self.width, self.height)));
        }
        if self.y.len() != (self.width * self.height) as usize
            || self.u.len() != (cw * ch) as usize
            || self.v.len() != (cw * ch) as usize
        {
            return Err(CodecError::BadInput(format!(
                "planes of {}/{}/{} bytes do not make a {}x{} I420 picture",
                self.y.len(),
                self.u.len(),
                self.v.len(),
                self.width,
                self.height
            )));
        }
        Ok(())
    }

    /// This picture scaled to `width × height` (nearest neighbour: cheap, enough for a test
    /// camera and for following a rung change).
    pub fn scaled(&self, width: u32, height: u32) -> I420Frame {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let (cw, ch) = chroma_size(self.width, self.height);
        let (ncw, nch) = chroma_size(width, height);
        I420Frame {
            width,
            height,
            y: scale_plane(&self.y, self.width, self.height, width, height),
            u: scale_plane(&self.u, cw, ch, ncw, nch),
            v: scale_plane(&self.v, cw, ch, ncw, nch),
        }
    }

    /// The mean luma over a rectangle (clipped to the picture); `None` if nothing is left.
    pub fn mean_luma(&self, x: u32, y: u32, width: u32, height: u32) -> Option<f64> {
        let (x1, y1) = ((x + width).min(self.width), (y + height).min(self.height));
        if x >= x1 || y >= y1 {
            return None;
        }
        let mut sum = 0u64;
        for row in y..y1 {
            let start = (row * self.width) as usize;
            sum += self.y[start + x as usize..start + x1 as usize].iter().map(|&p| u64::from(p)).sum::<u64>();
        }
        Some(sum as f64 / f64::from((x1 - x) * (y1 - y)))
    }

    /// The picture as RGBA bytes (4 per pixel, row after row, alpha opaque) for a view that
    /// draws bitmaps: BT.601 limited range, what cameras and video codecs give.
    pub fn rgba(&self) -> Vec<u8> {
        let (cw, _) = chroma_size(self.width, self.height);
        let mut out = Vec::with_capacity((self.width * self.height * 4) as usize);
        for row in 0..self.height {
            for column in 0..self.width {
                let y = i32::from(self.y[(row * self.width + column) as usize]) - 16;
                let chroma = ((row / 2) * cw + column / 2) as usize;
                let (u, v) = (i32::from(self.u[chroma]) - 128, i32::from(self.v[chroma]) - 128);
                // Fixed point, ×256: R = 1.164 Y + 1.596 V, G = 1.164 Y − 0.392 U − 0.813 V, B = 1.164 Y + 2.017 U.
                let channel = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
                let luma = 298 * y;
                out.extend([
                    channel(luma + 409 * v),
                    channel(luma - 100 * u - 208 * v),
                    channel(luma + 516 * u),
                    255,
                ]);
            }
        }
        out
    }

    /// This picture turned clockwise by `rotation`.
    pub fn rotated(&self, rotation: Rotation) -> I420Frame {
        if rotation == Rotation::None {
            return self.clone();
        }
        let (cw, ch) = chroma_size(self.width, self.height);
        let (width, height) = match rotation {
            Rotation::Quarter | Rotation::ThreeQuarters => (self.height, self.width),
            _ => (self.width, self.height),
        };
        I420Frame {
            width,
            height,
            y: rotate_plane(&self.y, self.width, self.height, rotation),
            u: rotate_plane(&self.u, cw, ch, rotation),
            v: rotate_plane(&self.v, cw, ch, rotation),
        }
    }

    /// The size to encode this picture at for a rung of `box_width × box_height`: the picture's
    /// own shape (a portrait camera stays portrait, the box turned to match), shrunk to fit the
    /// box, never enlarged, in even numbers (VP8 and H.264 encoders in I420 need them).
    pub fn fitted_size(&self, box_width: u32, box_height: u32) -> Option<(u32, u32)> {
        if box_width < 2 || box_height < 2 {
            return None;
        }
        let (long, short) = (box_width.max(box_height), box_width.min(box_height));
        let (bw, bh) = if self.height > self.width { (short, long) } else { (long, short) };
        let scale = f64::min(
            1.0,
            f64::min(f64::from(bw) / f64::from(self.width), f64::from(bh) / f64::from(self.height)),
        );
        let even = |x: f64| ((x.round() as u32) & !1).max(2);
        Some((even(f64::from(self.width) * scale), even(f64::from(self.height) * scale)))
    }
}

/// The size of the chroma planes of a `width × height` I420 picture.
pub fn chroma_size(width: u32, height: u32) -> (u32, u32) {
    (width.div_ceil(2), height.div_ceil(2))
}

fn scale_plane(plane: &[u8], width: u32, height: u32, new_width: u32, new_height: u32) -> Vec<u8> {
    let columns: Vec<usize> =
        (0..new_width).map(|x| (u64::from(x) * u64::from(width) / u64::from(new_width)) as usize).collect();
    let mut out = Vec::with_capacity((new_width * new_height) as usize);
    for row in 0..new_height {
        let source = (u64::from(row) * u64::from(height) / u64::from(new_height)) as usize * width as usize;
        out.extend(columns.iter().map(|&c| plane[source + c]));
    }
    out
}

fn rotate_plane(plane: &[u8], width: u32, height: u32, rotation: Rotation) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let mut out = vec![0; w * h];
    match rotation {
        Rotation::None => out.copy_from_slice(plane),
        // Clockwise: the source's bottom-left corner becomes the top-left; the output is h wide.
        Rotation::Quarter => {
            for (row, line) in plane.chunks_exact(w).enumerate() {
                for (column, &pixel) in line.iter().enumerate() {
                    out[column * h + (h - 1 - row)] = pixel;
                }
            }
        }
        Rotation::Half => {
            for (i, &pixel) in plane.iter().enumerate() {
                out[w * h - 1 - i] = pixel;
            }
        }
        Rotation::ThreeQuarters => {
            for (row, line) in plane.chunks_exact(w).enumerate() {
                for (column, &pixel) in line.iter().enumerate() {
                    out[(w - 1 - column) * h + row] = pixel;
                }
            }
        }
    }
    out
}

/// How far clockwise a camera picture must be turned to be upright (Android's
/// `SENSOR_ORIENTATION` combined with the device's, iOS's connection angle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rotation {
    /// Upright already.
    #[default]
    None,
    /// 90°.
    Quarter,
    /// 180°.
    Half,
    /// 270°.
    ThreeQuarters,
}

impl Rotation {
    /// The rotation of `degrees` (0, 90, 180 or 270, any multiple of 360 added).
    pub fn from_degrees(degrees: i32) -> Result<Rotation, CodecError> {
        match degrees.rem_euclid(360) {
            0 => Ok(Rotation::None),
            90 => Ok(Rotation::Quarter),
            180 => Ok(Rotation::Half),
            270 => Ok(Rotation::ThreeQuarters),
            _ => Err(CodecError::BadInput(format!("a rotation of {degrees}° is not a quarter turn"))),
        }
    }
}

/// The planes of a camera picture as the platform delivers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraPlanes {
    /// I420: luma, then the blue and the red chroma planes (Android's `YUV_420_888` read plane by
    /// plane, a decoder's output).
    I420 {
        /// Luma, `width × height` bytes.
        y: Vec<u8>,
        /// Blue chroma, a quarter (rounded up).
        u: Vec<u8>,
        /// Red chroma, a quarter (rounded up).
        v: Vec<u8>,
    },
    /// NV12: luma, then one plane of interleaved blue and red chroma (iOS's
    /// `420YpCbCr8BiPlanar`, most Android camera buffers).
    Nv12 {
        /// Luma, `width × height` bytes.
        y: Vec<u8>,
        /// Interleaved `u, v` pairs, `2 × chroma_width × chroma_height` bytes.
        uv: Vec<u8>,
    },
}

/// A picture from the camera: its planes without row padding, the rotation that makes it upright,
/// and when it was captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraPicture {
    /// Width of the planes as captured, pixels.
    pub width: u32,
    /// Height of the planes as captured, pixels.
    pub height: u32,
    /// The pixels.
    pub planes: CameraPlanes,
    /// How far clockwise to turn the picture to show it upright.
    pub rotation: Rotation,
    /// When the camera captured it, µs on any steady clock of the app's (only differences count).
    pub capture_time_us: i64,
}

impl CameraPicture {
    /// The upright I420 picture to encode. Planes of the wrong size are refused.
    pub fn upright(self) -> Result<I420Frame, CodecError> {
        let (width, height) = (self.width, self.height);
        let picture = match self.planes {
            CameraPlanes::I420 { y, u, v } => I420Frame { width, height, y, u, v },
            CameraPlanes::Nv12 { y, uv } => {
                let (cw, ch) = chroma_size(width, height);
                if uv.len() != 2 * (cw * ch) as usize {
                    return Err(CodecError::BadInput(format!(
                        "an NV12 chroma plane of {} bytes for a {width}x{height} picture (needs {})",
                        uv.len(),
                        2 * cw * ch
                    )));
                }
                let (u, v) = uv.chunks_exact(2).map(|pair| (pair[0], pair[1])).unzip();
                I420Frame { width, height, y, u, v }
            }
        };
        picture.check()?;
        Ok(picture.rotated(self.rotation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_whose_planes_do_not_match_its_size_is_refused() {
        let mut frame = I420Frame::filled(64, 48, (16, 128, 128));
        assert_eq!(frame.check(), Ok(()));
        frame.u.pop();
        assert!(matches!(frame.check(), Err(CodecError::BadInput(_))));
        assert!(I420Frame::filled(0, 0, (0, 0, 0)).check().is_err());
    }

    #[test]
    fn scaling_keeps_the_picture_and_odd_sizes_round_chroma_up() {
        let mut frame = I420Frame::filled(64, 48, (16, 128, 128));
        for row in 0..24 {
            frame.y[row * 64..row * 64 + 64].fill(235);
        }
        let small = frame.scaled(33, 25);
        assert_eq!(small.check(), Ok(()));
        assert_eq!(chroma_size(33, 25), (17, 13));
        assert_eq!(small.mean_luma(0, 0, 33, 12), Some(235.0));
        assert_eq!(small.mean_luma(0, 13, 33, 12), Some(16.0));
        assert_eq!(small.mean_luma(40, 0, 5, 5), None);
    }

    /// A 4×2 picture whose luma counts 0..8 row by row, chroma 2×1.
    fn numbered() -> I420Frame {
        I420Frame { width: 4, height: 2, y: (0..8).collect(), u: vec![1, 2], v: vec![3, 4] }
    }

    #[test]
    fn rotation_turns_the_planes_clockwise() {
        // 0 1 2 3      quarter: 4 0     half: 7 6 5 4     three quarters: 3 7
        // 4 5 6 7               5 1           3 2 1 0                     2 6
        //                       6 2                                       1 5
        //                       7 3                                       0 4
        let quarter = numbered().rotated(Rotation::Quarter);
        assert_eq!((quarter.width, quarter.height), (2, 4));
        assert_eq!(quarter.y, [4, 0, 5, 1, 6, 2, 7, 3]);
        assert_eq!((quarter.u, quarter.v), (vec![1, 2], vec![3, 4]), "chroma 2x1 turns to 1x2");
        assert_eq!(numbered().rotated(Rotation::Half).y, [7, 6, 5, 4, 3, 2, 1, 0]);
        assert_eq!(numbered().rotated(Rotation::ThreeQuarters).y, [3, 7, 2, 6, 1, 5, 0, 4]);
        assert_eq!(numbered().rotated(Rotation::Half).u, [2, 1]);
        let round = [Rotation::Quarter; 4].iter().fold(numbered(), |p, &r| p.rotated(r));
        assert_eq!(round, numbered());
        assert_eq!(Rotation::from_degrees(-90), Ok(Rotation::ThreeQuarters));
        assert!(Rotation::from_degrees(45).is_err());
    }

    #[test]
    fn nv12_is_deinterleaved_and_a_short_plane_refused() {
        let camera = |uv: Vec<u8>| CameraPicture {
            width: 4,
            height: 2,
            planes: CameraPlanes::Nv12 { y: (0..8).collect(), uv },
            rotation: Rotation::None,
            capture_time_us: 0,
        };
        assert_eq!(camera(vec![1, 3, 2, 4]).upright(), Ok(numbered()));
        assert!(matches!(camera(vec![1, 3, 2]).upright(), Err(CodecError::BadInput(_))));
        let mut portrait = camera(vec![1, 3, 2, 4]);
        portrait.rotation = Rotation::Quarter;
        assert_eq!(portrait.upright().map(|p| (p.width, p.height)), Ok((2, 4)));
    }

    #[test]
    fn rgba_gives_the_colours_a_viewer_sees() {
        let pixel = |yuv| I420Frame::filled(2, 2, yuv).rgba()[..4].to_vec();
        assert_eq!(pixel((235, 128, 128)), [255, 255, 255, 255], "white");
        assert_eq!(pixel((16, 128, 128)), [0, 0, 0, 255], "black");
        let red = pixel((81, 90, 240));
        assert!(red[0] > 250 && red[1] < 5 && red[2] < 5, "the pattern's red bar: {red:?}");
        assert_eq!(I420Frame::filled(3, 3, (16, 128, 128)).rgba().len(), 36);
    }

    #[test]
    fn the_encoded_size_keeps_the_cameras_shape_within_the_rung() {
        let landscape = I420Frame::filled(1920, 1080, (0, 0, 0));
        assert_eq!(landscape.fitted_size(1280, 720), Some((1280, 720)));
        let portrait = I420Frame::filled(720, 1280, (0, 0, 0));
        assert_eq!(portrait.fitted_size(640, 360), Some((360, 640)), "the box turns with the camera");
        let vga = I420Frame::filled(640, 480, (0, 0, 0));
        assert_eq!(vga.fitted_size(1280, 720), Some((640, 480)), "never enlarged");
        assert_eq!(vga.fitted_size(640, 360), Some((480, 360)));
        assert_eq!(vga.fitted_size(0, 0), None, "the audio-only rung");
    }
}
