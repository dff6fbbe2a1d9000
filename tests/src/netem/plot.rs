//! Just enough plotting for the benchmark, with no dependency: line charts drawn into a
//! palette image, labelled with a tiny built-in font, written as an uncompressed PNG.

use std::path::Path;

/// Colours of the palette.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Colour {
    /// The background.
    White = 0,
    /// Axes and text.
    Black = 1,
    /// Grid lines.
    Grey = 2,
    /// A series.
    Blue = 3,
    /// A series.
    Red = 4,
    /// A series.
    Green = 5,
    /// A series.
    Orange = 6,
}

const PALETTE: [[u8; 3]; 7] = [
    [255, 255, 255],
    [0, 0, 0],
    [200, 200, 200],
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [255, 127, 14],
];

/// An image to draw on.
pub struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

/// A chart area on a [`Canvas`]: x from 0 to `x_max`, y from 0 to `y_max`.
#[derive(Debug, Clone, Copy)]
pub struct Panel {
    /// Left edge, pixels.
    pub left: usize,
    /// Top edge, pixels.
    pub top: usize,
    /// Width, pixels.
    pub width: usize,
    /// Height, pixels.
    pub height: usize,
    /// The x value at the right edge.
    pub x_max: f64,
    /// The y value at the top edge.
    pub y_max: f64,
}

impl Canvas {
    /// A white canvas.
    pub fn new(width: usize, height: usize) -> Canvas {
        Canvas { width, height, pixels: vec![Colour::White as u8; width * height] }
    }

    fn set(&mut self, x: i64, y: i64, colour: Colour) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            self.pixels[y as usize * self.width + x as usize] = colour as u8;
        }
    }

    /// A line between two pixels (Bresenham), `thick` pixels wide.
    pub fn line(&mut self, from: (i64, i64), to: (i64, i64), colour: Colour, thick: i64) {
        let (mut x, mut y) = from;
        let (dx, dy) = ((to.0 - x).abs(), -(to.1 - y).abs());
        let (sx, sy) = (if x < to.0 { 1 } else { -1 }, if y < to.1 { 1 } else { -1 });
        let mut err = dx + dy;
        loop {
            for t in 0..thick {
                self.set(x, y + t, colour);
                self.set(x + t, y, colour);
            }
            if (x, y) == to {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text in the built-in 3×5 font (digits, capitals and `. % / - ( )`), `scale` pixels a dot.
    pub fn text(&mut self, at: (i64, i64), text: &str, colour: Colour, scale: i64) {
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c.to_ascii_uppercase());
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) != 0 {
                        for (px, py) in (0..scale).flat_map(|a| (0..scale).map(move |b| (a, b))) {
                            self.set(
                                at.0 + (i as i64 * 4 + col) * scale + px,
                                at.1 + r as i64 * scale + py,
                                colour,
                            );
                        }
                    }
                }
            }
        }
    }

    /// Draws the panel's frame, `ticks` horizontal grid lines labelled with y values, and x labels
    /// every `x_step`, with a title above.
    pub fn axes(&mut self, panel: Panel, title: &str, ticks: usize, x_step: f64) {
        let (l, t, w, h) = (panel.left as i64, panel.top as i64, panel.width as i64, panel.height as i64);
        for i in 0..=ticks {
            let y = t + h - h * i as i64 / ticks as i64;
            self.line((l, y), (l + w, y), if i == 0 { Colour::Black } else { Colour::Grey }, 1);
            let value = panel.y_max * i as f64 / ticks as f64;
            let label = if panel.y_max < 10.0 { format!("{value:.1}") } else { format!("{value:.0}") };
            self.text((l - 6 - 8 * label.len() as i64, y - 5), &label, Colour::Black, 2);
        }
        let mut x = 0.0;
        while x <= panel.x_max + 1e-9 {
            let px = l + (w as f64 * x / panel.x_max) as i64;
            self.line((px, t + h), (px, t + h + 4), Colour::Black, 1);
            let label = format!("{x:.0}");
            self.text((px - 4 * label.len() as i64, t + h + 8), &label, Colour::Black, 2);
            x += x_step;
        }
        self.line((l, t), (l, t + h), Colour::Black, 1);
        self.text((l, t - 16), title, Colour::Black, 2);
    }

    /// A series as connected points (`step`: hold each value until the next point, for rates that
    /// change in steps).
    pub fn series(&mut self, panel: Panel, points: &[(f64, f64)], colour: Colour, step: bool) {
        let to_px = |(x, y): (f64, f64)| {
            let px = panel.left as f64 + panel.width as f64 * (x / panel.x_max).clamp(0.0, 1.0);
            let py =
                (panel.top + panel.height) as f64 - panel.height as f64 * (y / panel.y_max).clamp(0.0, 1.0);
            (px.round() as i64, py.round() as i64)
        };
        for pair in points.windows(2) {
            let (a, b) = (to_px(pair[0]), to_px(pair[1]));
            if step {
                self.line(a, (b.0, a.1), colour, 2);
                self.line((b.0, a.1), b, colour, 2);
            } else {
                self.line(a, b, colour, 2);
            }
        }
    }

    /// Writes the canvas as a PNG file.
    pub fn save_png(&self, path: &Path) -> std::io::Result<()> {
        let mut raw = Vec::with_capacity((self.width + 1) * self.height);
        for row in self.pixels.chunks(self.width) {
            raw.push(0); // filter: none
            raw.extend_from_slice(row);
        }
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&(self.width as u32).to_be_bytes());
        ihdr.extend_from_slice(&(self.height as u32).to_be_bytes());
        ihdr.extend_from_slice(&[8, 3, 0, 0, 0]); // 8-bit palette indices
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        chunk(&mut png, b"IHDR", &ihdr);
        chunk(&mut png, b"PLTE", &PALETTE.concat());
        chunk(&mut png, b"IDAT", &zlib_stored(&raw));
        chunk(&mut png, b"IEND", &[]);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)
    }
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = png.len();
    png.extend_from_slice(kind);
    png.extend_from_slice(data);
    let crc = crc32(&png[start..]);
    png.extend_from_slice(&crc.to_be_bytes());
}

/// A zlib stream of uncompressed ("stored") deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for byte in data {
        a = (a + u32::from(*byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Rows of a 3×5 glyph, the high bit on the left (unknown characters are blank).
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 3, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '/' => [1, 1, 2, 4, 4],
        '%' => [5, 1, 2, 4, 5],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        ':' => [0, 2, 0, 2, 0],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [7, 4, 4, 4, 7],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [7, 4, 5, 5, 7],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [7, 5, 5, 5, 7],
        'P' => [7, 5, 7, 4, 4],
        'Q' => [7, 5, 5, 7, 1],
        'R' => [6, 5, 6, 5, 5],
        'S' => [7, 4, 7, 1, 7],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        _ => [0; 5],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_adler_match_known_values() {
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        let z = zlib_stored(b"Wikipedia");
        assert_eq!(&z[z.len() - 4..], &0x11E6_0398u32.to_be_bytes());
    }
}
