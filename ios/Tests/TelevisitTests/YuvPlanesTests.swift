import Foundation
import XCTest

@testable import Televisit

/// The NV12 ↔ I420 copies the VideoToolbox and camera glue rely on (the glue itself needs Apple's
/// frameworks and is not built on Linux).
final class YuvPlanesTests: XCTestCase {
    func testAPictureSurvivesNv12BuffersWithRowPaddingAndItsCounterReadsBack() {
        let picture = testPatternPicture(counter: 4321, width: 322, height: 182)
        let (cw, ch) = YuvPlanes.chromaSize(322, 182)
        XCTAssertEqual(cw * ch, picture.u.count)
        // Rows padded to 64 bytes, as CVPixelBuffer pads them.
        let (lumaRow, uvRow) = (384, 384) // 322 bytes of samples (161 u, v pairs) padded to 64, as CVPixelBuffer pads rows
        var luma = Data(count: lumaRow * 182)
        var uv = Data(count: uvRow * ch)
        luma.withUnsafeMutableBytes { (l: UnsafeMutableRawBufferPointer) in
            uv.withUnsafeMutableBytes { (c: UnsafeMutableRawBufferPointer) in
                YuvPlanes.writeNv12(picture, luma: l, lumaBytesPerRow: lumaRow, uv: c, uvBytesPerRow: uvRow)
            }
        }
        XCTAssertEqual(uv[1], picture.v[0], "chroma interleaved u, v")
        let back = luma.withUnsafeBytes { (l: UnsafeRawBufferPointer) in
            uv.withUnsafeBytes { (c: UnsafeRawBufferPointer) in YuvPlanes.i420(width: 322, height: 182, luma: l, lumaBytesPerRow: lumaRow, uv: c, uvBytesPerRow: uvRow) }
        }
        XCTAssertEqual(back, picture)
        XCTAssertEqual(readTestPattern(picture: back), 4321)
    }

    func testParameterSetsAndAvccHelpersForVideoToolbox() throws {
        let sps: [UInt8] = [0x67, 0x42, 0xe0, 0x28]
        let pps: [UInt8] = [0x68, 0xce, 0x3c]
        let idr: [UInt8] = [0x65, 0x88, 0x84]
        let start: [UInt8] = [0, 0, 0, 1]
        var bytes: [UInt8] = start
        bytes += sps
        bytes += start
        bytes += pps
        bytes += start
        bytes += idr
        let annexB = Data(bytes)
        XCTAssertEqual(h264ParameterSets(annexB: annexB), H264ParameterSets(sps: Data(sps), pps: Data(pps)))
        let avcc = avccFromAnnexB(annexB: annexB)
        let length: [UInt8] = [0, 0, 0, 3]
        XCTAssertEqual(avcc, Data(length + idr))
        XCTAssertEqual(try annexBFromAvcc(avcc: avcc), Data(start + idr))
        XCTAssertThrowsError(try annexBFromAvcc(avcc: Data([0, 0, 0, 9, 1]))) { error in
            guard case VideoError.BadPicture = error else { return XCTFail("\(error)") }
        }
    }
}
