//! The software codec path (feature `software-codec`): VP8 and Opus in software, for the headless
//! participant (`televisit join`), the tests and the benchmark. Phones encode and decode with
//! their hardware codecs and build the core without this feature.
//!
//! - [`video`]: raw I420 pictures ([`I420Frame`]) → VP8 [`EncodedFrame`](crate::frame::EncodedFrame)s
//!   following the adaptive ladder's [`EncoderTarget`](crate::call::ladder::EncoderTarget), and back.
//! - [`audio`]: 48 kHz mono 20 ms PCM → Opus packets, and back.
//! - [`pattern`]: a moving test picture carrying a frame counter that survives lossy compression
//!   and can be read back from a *decoded* picture, and a synthetic microphone (a sine tone).
//!
//! ## Why these crates
//!
//! - **VP8: `env-libvpx-sys`** (raw bindings, pre-generated for Debian's libvpx 1.12, linked with
//!   pkg-config: no bindgen, no network at build time) under our own safe wrapper,
//!   `codec::vpx` (the core's one module with `unsafe`, documented there). The safe crates do not
//!   fit: `vpx-rs` (encoder and decoder) calls a libvpx 1.13-only control and does not build on
//!   Debian 12; `vpx-encode` has no decoder; neither can change the bitrate of a running encoder.
//! - **Opus**: the audio engine's (`crate::audio::opus`, `opusic-c` over a bundled libopus built
//!   with cmake), so the core links one libopus and needs no system Opus.

pub mod audio;
pub mod pattern;
pub mod video;
mod vpx;

/// A codec failure. Bad input (a corrupt frame, a picture of the wrong shape) is an error, never
/// a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The codec library refused to start (e.g. an impossible size).
    #[error("cannot start the {codec} codec: {reason}")]
    Init {
        /// `"VP8 encoder"`, `"Opus decoder"`, ...
        codec: &'static str,
        /// What the library said.
        reason: String,
    },
    /// A picture or a PCM buffer whose shape does not match what it claims.
    #[error("bad input: {0}")]
    BadInput(String),
    /// Encoding failed.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// The bitstream could not be decoded (corrupt, truncated, or an inter frame before any
    /// keyframe).
    #[error("decoding failed: {0}")]
    Decode(String),
}

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
}
