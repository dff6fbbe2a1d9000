import Foundation
import XCTest

@testable import Televisit

/// A stand-in for VideoToolbox: records what the core asks of it and makes frames nobody decodes.
final class RecordingEncoder: PlatformVideoEncoder, @unchecked Sendable {
    private let lock = NSLock()
    private var _settings: [EncoderSettings] = []
    private var _sizes: [String] = []
    var settings: [EncoderSettings] { lock.withLock { _settings } }
    var sizes: [String] { lock.withLock { _sizes } }

    func configure(settings: EncoderSettings) throws { lock.withLock { _settings.append(settings) } }
    func requestKeyframe() {}
    func encode(picture: VideoPicture) throws -> EncodedVideo? {
        let count = lock.withLock { () -> Int in
            _sizes.append("\(picture.width)x\(picture.height)")
            return _sizes.count
        }
        if count == 5 { throw VideoError.Codec(reason: "the codec hiccuped") }
        return EncodedVideo(data: Data(count: 100), keyframe: count == 1)
    }
}

final class VideoTests: XCTestCase {
    func testTheAppPushesCameraPicturesAndPullsTheDoctorsDecodedPictures() async throws {
        let visit = try TestVisit.create()
        let call = try TelevisitCall(link: visit.patientLink)
        defer { call.close() }
        let log = EventLog(call)
        let role = try await call.join()
        XCTAssertEqual(role, .patient)
        let source = try call.videoSource()
        let sink = try call.videoSink()
        let bad = VideoPicture(width: 640, height: 360, y: Data(count: 10), u: Data(), v: Data())
        XCTAssertThrowsError(try source.pushI420(picture: bad, rotationDegrees: 0, captureTimeUs: 0)) { error in
            guard case VideoError.BadPicture = error else { return XCTFail("\(error)") }
        }

        // The doctor is `televisit join`: it sends the test pattern and decodes what it gets.
        let doctor = try visit.headless(visit.doctorLink, ["--seconds", "6"])
        _ = try await log.await("connected") { $0 == .stateChanged(state: .connected) }
        // Four seconds of a 30 fps camera (NV12, as AVCaptureSession gives it), a view pulling every 10 ms.
        var counters: [UInt32] = []
        var last: DecodedPicture?
        var pushed = 0
        let start = Date()
        while Date().timeIntervalSince(start) < 4 {
            if Int(Date().timeIntervalSince(start) * 30) >= pushed {
                let p = testPatternPicture(counter: UInt32(pushed), width: 640, height: 360)
                var uv = Data(count: p.u.count * 2)
                for i in 0..<p.u.count {
                    uv[2 * i] = p.u[p.u.startIndex + i]
                    uv[2 * i + 1] = p.v[p.v.startIndex + i]
                }
                let at = Int64(Date().timeIntervalSince(start) * 1_000_000)
                try source.pushNv12(width: p.width, height: p.height, y: p.y, uv: uv, rotationDegrees: 0, captureTimeUs: at)
                pushed += 1
            }
            while let picture = try sink.pull() {
                if let counter = readTestPattern(picture: picture.picture) { counters.append(counter) }
                last = picture
            }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        let stats = sink.stats()
        let shown = try XCTUnwrap(last, "no picture of the doctor: \(stats)")
        XCTAssertGreaterThanOrEqual(counters.count, 60, "two seconds of the doctor's pictures: \(stats)")
        XCTAssertTrue(zip(counters, counters.dropFirst()).allSatisfy { $0 < $1 }, "in order: \(counters.prefix(20))")
        XCTAssertGreaterThan(shown.picture.width, shown.picture.height, "the doctor's landscape picture")
        let capturedAt = try XCTUnwrap(shown.captureTimeUs, "the picture is dated")
        let agoMs = (Int64(Date().timeIntervalSince1970 * 1_000_000) - capturedAt) / 1000
        XCTAssertTrue((0...2_000).contains(agoMs), "captured \(agoMs) ms ago")
        let sent = source.stats()
        XCTAssertGreaterThanOrEqual(sent.framesSent, 60, "\(sent)")

        let status = try await doctor.wait(seconds: 20)
        XCTAssertEqual(status, 0, doctor.output)
        let summary = doctor.output.split(separator: "\n").first { $0.contains("summary:") }.map(String.init) ?? ""
        func figure(_ name: String) -> Int? {
            summary.range(of: name + #" (\d+)"#, options: .regularExpression)
                .flatMap { Int(summary[$0].split(separator: " ").last!) }
        }
        XCTAssertGreaterThanOrEqual(figure("video frames decoded") ?? 0, 60, "the doctor decoded our pictures:\n\(doctor.output)")
        let counter = figure("last picture counter") ?? -1
        XCTAssertTrue((pushed - 60...pushed).contains(counter), "the doctor saw our counter \(counter) of \(pushed)")

        call.close()
        XCTAssertThrowsError(try sink.pull()) { error in
            guard case VideoError.Closed = error else { return XCTFail("\(error)") }
        }
    }

    func testAPlatformEncoderIsConfiguredFromTheLadderAndFedUprightPictures() async throws {
        let visit = try TestVisit.create()
        let call = try TelevisitCall(link: visit.patientLink)
        defer { call.close() }
        let log = EventLog(call)
        _ = try await call.join()
        let encoder = RecordingEncoder()
        let source = try call.videoSource(encoder: encoder)
        let doctor = try visit.headless(visit.doctorLink, ["--seconds", "3"])
        _ = try await log.await("connected") { $0 == .stateChanged(state: .connected) }
        let start = Date()
        for n in 0..<30 {
            let p = testPatternPicture(counter: UInt32(n), width: 640, height: 360)
            let at = Int64(Date().timeIntervalSince(start) * 1_000_000)
            try source.pushI420(picture: p, rotationDegrees: 90, captureTimeUs: at)
            try await Task.sleep(nanoseconds: 33_000_000)
        }
        // A sensor mounted sideways: the core turns its pictures upright and fits the start rung
        // (360p) to the portrait picture; the doctor's side offers VP8 only.
        let first = try XCTUnwrap(encoder.settings.first)
        XCTAssertEqual(first.codec, .vp8)
        XCTAssertEqual([first.width, first.height, first.fps], [360, 640, 30])
        XCTAssertTrue(encoder.sizes.allSatisfy { $0 == "360x640" }, "\(encoder.sizes.prefix(3))")
        let stats = source.stats()
        XCTAssertEqual(stats.encoderErrors, 1, "the codec's error is counted, not fatal: \(stats)")
        XCTAssertGreaterThanOrEqual(stats.framesSent, 20, "\(stats)")
        _ = try await doctor.wait(seconds: 20)
    }
}
