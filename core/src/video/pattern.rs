//! A synthetic camera whose pictures can be checked after lossy coding.
//!
//! **The picture**: colour bars that slide sideways and a grey square that travels across them,
//! over sensor-like noise in the bottom quarter, under a grey band that carries the frame counter as two rows of 32 large blocks. The top row
//! is the counter (most significant bit on the left, white = 1, black = 0), the row under it is
//! its complement, so a reader can tell a counter from a picture that merely has dark and light
//! patches. Blocks are 1/40 of the picture's width (32 px at 720p, 8 px at 180p): far larger than
//! what VP8 smears at any bitrate of the ladder. [`read_counter`] averages the middle of each
//! block of a *decoded* picture and thresholds it at mid-grey.

use super::picture::{chroma_size, I420Frame};

/// Bits of the counter.
pub const COUNTER_BITS: u32 = 32;

/// Bars (luma, blue chroma, red chroma): white, yellow, cyan, green, magenta, red, blue, black.
const BARS: [(u8, u8, u8); 8] = [
    (235, 128, 128),
    (210, 16, 146),
    (170, 166, 16),
    (145, 54, 34),
    (106, 202, 222),
    (81, 90, 240),
    (41, 240, 110),
    (16, 128, 128),
];
const WHITE: u8 = 235;
const BLACK: u8 = 16;
const GREY: u8 = 128;

/// Where the counter's blocks are in a picture of this size: (block size, left edge, top of the
/// counter row, top of the complement row, height of the grey band).
fn layout(width: u32, height: u32) -> Option<(u32, u32, u32, u32, u32)> {
    let block = width / 40;
    (block >= 4 && block * 5 <= height).then(|| {
        let left = (width - COUNTER_BITS * block) / 2;
        (block, left, block, block * 3, block * 5)
    })
}

/// The moving test picture with a frame counter.
#[derive(Debug, Clone, Default)]
pub struct TestPattern {
    next: u32,
}

impl TestPattern {
    /// A pattern whose first picture carries counter 0.
    pub fn new() -> TestPattern {
        TestPattern::default()
    }

    /// The counter the next picture will carry.
    pub fn next_counter(&self) -> u32 {
        self.next
    }

    /// The next picture at this size (both at least 2; the counter needs a picture at least 160
    /// pixels wide and 5/40 of its width high, smaller ones carry only the moving bars).
    pub fn next_frame(&mut self, width: u32, height: u32) -> I420Frame {
        let picture = picture(self.next, width.max(2), height.max(2));
        self.next = self.next.wrapping_add(1);
        picture
    }
}

/// Picture number `n` of the pattern at this size.
pub fn picture(n: u32, width: u32, height: u32) -> I420Frame {
    let (cw, ch) = chroma_size(width, height);
    let mut frame = I420Frame::filled(width, height, (GREY, GREY, GREY));
    // Sliding bars: one row computed, copied to every row (cheap even in a debug build).
    let shift = (u64::from(n) * u64::from(width) / 160 % u64::from(width)) as u32; // a bar every 20 frames
    let bar = |x: u32| BARS[((u64::from((x + shift) % width) * 8) / u64::from(width)) as usize];
    let luma_row: Vec<u8> = (0..width).map(|x| bar(x).0).collect();
    let u_row: Vec<u8> = (0..cw).map(|x| bar((x * 2).min(width - 1)).1).collect();
    let v_row: Vec<u8> = (0..cw).map(|x| bar((x * 2).min(width - 1)).2).collect();
    let band = layout(width, height).map_or(0, |l| l.4);
    for row in band..height {
        frame.y[(row * width) as usize..((row + 1) * width) as usize].copy_from_slice(&luma_row);
    }
    for row in band.div_ceil(2)..ch {
        frame.u[(row * cw) as usize..((row + 1) * cw) as usize].copy_from_slice(&u_row);
        frame.v[(row * cw) as usize..((row + 1) * cw) as usize].copy_from_slice(&v_row);
    }
    // A grey square travelling diagonally over the bars.
    let side = (height / 6).max(2);
    let travel_x = width.saturating_sub(side).max(1);
    let travel_y = height.saturating_sub(band + side).max(1);
    let (sx, sy) = (
        (u64::from(n) * 7 % u64::from(travel_x)) as u32,
        band + (u64::from(n) * 3 % u64::from(travel_y)) as u32,
    );
    fill_luma(&mut frame, sx, sy, side, side, GREY);
    // Sensor-like noise over the bottom quarter, new in every picture: it makes the encoder spend
    // its bitrate as it would on a real camera instead of idling on flat colours.
    let mut seed = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let noisy = ((height - height / 4) * width) as usize;
    for pixel in &mut frame.y[noisy..] {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *pixel = pixel.saturating_add((seed & 31) as u8).saturating_sub(16);
    }
    // The counter and its complement.
    if let Some((block, left, top, complement_top, _)) = layout(width, height) {
        for bit in 0..COUNTER_BITS {
            let one = n >> (COUNTER_BITS - 1 - bit) & 1 == 1;
            let x = left + bit * block;
            fill_luma(&mut frame, x, top, block, block, if one { WHITE } else { BLACK });
            fill_luma(&mut frame, x, complement_top, block, block, if one { BLACK } else { WHITE });
        }
    }
    frame
}

fn fill_luma(frame: &mut I420Frame, x: u32, y: u32, width: u32, height: u32, value: u8) {
    let x1 = (x + width).min(frame.width);
    for row in y..(y + height).min(frame.height) {
        let start = (row * frame.width) as usize;
        frame.y[start + x as usize..start + x1 as usize].fill(value);
    }
}

/// Reads the frame counter from a (decoded) picture of the pattern. `None`: the picture does not
/// carry one (another camera, a picture too small, or blocks too damaged to be sure).
pub fn read_counter(picture: &I420Frame) -> Option<u32> {
    let (block, left, top, complement_top, _) = layout(picture.width, picture.height)?;
    let inset = block / 4;
    let inner = block - 2 * inset;
    let mut counter = 0u32;
    for bit in 0..COUNTER_BITS {
        let x = left + bit * block + inset;
        let value = picture.mean_luma(x, top + inset, inner, inner)?;
        let complement = picture.mean_luma(x, complement_top + inset, inner, inner)?;
        // Each block must be clearly dark or light, and its complement the opposite.
        let one = value > f64::from(GREY);
        let clear = (value - f64::from(GREY)).abs() > 40.0 && (complement - f64::from(GREY)).abs() > 40.0;
        if !clear || one == (complement > f64::from(GREY)) {
            return None;
        }
        counter = counter << 1 | u32::from(one);
    }
    Some(counter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_reads_back_from_the_raw_picture_at_every_rung_size() {
        for (w, h) in [(1920, 1080), (1280, 720), (960, 540), (640, 360), (320, 180), (161, 91)] {
            for n in [0, 1, 0x8000_0001, 123_456_789, u32::MAX] {
                assert_eq!(read_counter(&picture(n, w, h)), Some(n), "{n} at {w}x{h}");
            }
        }
    }

    #[test]
    fn the_picture_moves_from_frame_to_frame() {
        let (a, b) = (picture(10, 640, 360), picture(11, 640, 360));
        let band = layout(640, 360).unwrap().4 as usize * 640;
        assert_ne!(a.y[band..], b.y[band..], "the bars and the square move");
        assert_eq!(a.check(), Ok(()));
    }

    #[test]
    fn a_picture_without_the_pattern_has_no_counter() {
        assert_eq!(read_counter(&I420Frame::filled(1280, 720, (128, 128, 128))), None);
        assert_eq!(read_counter(&I420Frame::filled(1280, 720, (235, 128, 128))), None);
        assert_eq!(read_counter(&picture(7, 100, 60)), None, "too small to carry a counter");
        let mut damaged = picture(7, 640, 360);
        let (block, left, top, _, _) = layout(640, 360).unwrap();
        fill_luma(&mut damaged, left, top, block * 3, block, 128);
        assert_eq!(read_counter(&damaged), None, "grey blocks are not bits");
    }
}
