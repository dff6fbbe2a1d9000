import Foundation

/// Copies between the core's I420 planes (tight rows) and the strided bi-planar NV12 buffers of
/// iOS (`CVPixelBuffer` of `420YpCbCr8BiPlanar…`: a luma plane and an interleaved `u, v` plane,
/// each with its own bytes per row). Plain Swift, so it is tested on Linux too.
public enum YuvPlanes {
    /// The size of the chroma planes of a `width × height` picture (half, rounded up).
    public static func chromaSize(_ width: Int, _ height: Int) -> (Int, Int) { ((width + 1) / 2, (height + 1) / 2) }

    /// The I420 picture in strided NV12 planes: `(luma, lumaBytesPerRow)` and `(uv, uvBytesPerRow)`.
    public static func i420(
        width: Int, height: Int,
        luma: UnsafeRawBufferPointer, lumaBytesPerRow: Int,
        uv: UnsafeRawBufferPointer, uvBytesPerRow: Int
    ) -> VideoPicture {
        let (cw, ch) = chromaSize(width, height)
        var y = Data(count: width * height)
        var u = Data(count: cw * ch)
        var v = Data(count: cw * ch)
        y.withUnsafeMutableBytes { (out: UnsafeMutableRawBufferPointer) in
            for row in 0..<height {
                out.baseAddress!.advanced(by: row * width)
                    .copyMemory(from: luma.baseAddress!.advanced(by: row * lumaBytesPerRow), byteCount: width)
            }
        }
        u.withUnsafeMutableBytes { (uOut: UnsafeMutableRawBufferPointer) in
            v.withUnsafeMutableBytes { (vOut: UnsafeMutableRawBufferPointer) in
                for row in 0..<ch {
                    for column in 0..<cw {
                        uOut[row * cw + column] = uv[row * uvBytesPerRow + 2 * column]
                        vOut[row * cw + column] = uv[row * uvBytesPerRow + 2 * column + 1]
                    }
                }
            }
        }
        return VideoPicture(width: UInt32(width), height: UInt32(height), y: y, u: u, v: v)
    }

    /// Writes an I420 picture into strided NV12 planes (an encoder's `CVPixelBuffer`).
    public static func writeNv12(
        _ picture: VideoPicture,
        luma: UnsafeMutableRawBufferPointer, lumaBytesPerRow: Int,
        uv: UnsafeMutableRawBufferPointer, uvBytesPerRow: Int
    ) {
        let (width, height) = (Int(picture.width), Int(picture.height))
        let (cw, ch) = chromaSize(width, height)
        picture.y.withUnsafeBytes { (y: UnsafeRawBufferPointer) in
            for row in 0..<height {
                luma.baseAddress!.advanced(by: row * lumaBytesPerRow)
                    .copyMemory(from: y.baseAddress!.advanced(by: row * width), byteCount: width)
            }
        }
        picture.u.withUnsafeBytes { (u: UnsafeRawBufferPointer) in
            picture.v.withUnsafeBytes { (v: UnsafeRawBufferPointer) in
                for row in 0..<ch {
                    for column in 0..<cw {
                        uv[row * uvBytesPerRow + 2 * column] = u[row * cw + column]
                        uv[row * uvBytesPerRow + 2 * column + 1] = v[row * cw + column]
                    }
                }
            }
        }
    }
}
