import Foundation
import XCTest

@testable import Televisit

/// 10 ms of a sine tone at `hz` (48 kHz mono, 16-bit little-endian), the `n`-th frame of it.
func toneFrame(_ hz: Double, _ n: Int) -> Data {
    var data = Data(capacity: 960)
    for i in 0..<480 {
        let t = Double(n * 480 + i) / 48_000
        let sample = Int16(sin(2 * Double.pi * hz * t) * 10_000)
        withUnsafeBytes(of: sample.littleEndian) { data.append(contentsOf: $0) }
    }
    return data
}

/// The signal's power at `hz` (Goertzel).
func goertzel(_ samples: [Int16], _ hz: Double) -> Double {
    let coefficient = 2 * cos(2 * Double.pi * hz / 48_000)
    var (s1, s2) = (0.0, 0.0)
    for sample in samples {
        let s0 = Double(sample) + coefficient * s1 - s2
        s2 = s1
        s1 = s0
    }
    return s1 * s1 + s2 * s2 - coefficient * s1 * s2
}

/// Collects raw events (the FFI listener, without the Swift wrapper).
final class RawEvents: CallListener, @unchecked Sendable {
    private let lock = NSLock()
    private var events: [CallEvent] = []
    func onEvent(event: CallEvent) { lock.withLock { events.append(event) } }
    func contains(_ event: CallEvent) -> Bool { lock.withLock { events.contains(event) } }
}

final class AudioTests: XCTestCase {
    func testTheAppPushesMicrophonePcmAndPullsTheDoctorsVoiceAsPcm() async throws {
        let visit = try TestVisit.create()
        let events = RawEvents()
        let call = try Call(link: visit.patientLink, listener: events, options: CallOptions())
        defer { call.release() }
        let role = try await call.join()
        XCTAssertEqual(role, .patient)
        let source = try call.audioSource()
        let sink = try call.audioSink()
        XCTAssertThrowsError(try source.push(pcm: Data(count: 100))) { error in
            guard case AudioError.WrongFrameSize(expected: 480, got: 50) = error else { return XCTFail("\(error)") }
        }

        // The doctor is `televisit join`: it sends a 440 Hz tone and decodes what it gets.
        let doctor = try visit.headless(visit.doctorLink, ["--seconds", "5"])
        for _ in 0..<1500 where !events.contains(.stateChanged(state: .connected)) {
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        XCTAssertTrue(events.contains(.stateChanged(state: .connected)))
        var played: [Int16] = []
        let start = Date()
        for n in 0..<300 {
            try source.push(pcm: toneFrame(660, n))
            let frame = try sink.pull()
            XCTAssertEqual(frame.count, 960)
            frame.withUnsafeBytes { bytes in
                for i in 0..<480 { played.append(Int16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))) }
            }
            let wait = start.addingTimeInterval(Double(n + 1) / 100).timeIntervalSinceNow
            if wait > 0 { try await Task.sleep(nanoseconds: UInt64(wait * 1e9)) }
        }
        let lastSecond = Array(played[(200 * 480)...])
        let rms = (lastSecond.map { Double($0) * Double($0) }.reduce(0, +) / Double(lastSecond.count)).squareRoot()
        let stats = sink.stats()
        XCTAssertGreaterThan(rms, 3000, "\(stats)")
        XCTAssertGreaterThan(goertzel(lastSecond, 440) / goertzel(lastSecond, 660), 1000, "\(stats)")
        XCTAssertGreaterThanOrEqual(stats.packetsReceived, 75)

        let code = try await doctor.wait(seconds: 20)
        XCTAssertEqual(code, 0)
        let decoded = doctor.output.components(separatedBy: "audio frames decoded ").last?
            .prefix(while: { $0.isNumber })
        XCTAssertGreaterThanOrEqual(Int(decoded ?? "") ?? 0, 100, doctor.output)

        call.release()
        XCTAssertThrowsError(try sink.pull()) { error in
            guard case AudioError.Closed = error else { return XCTFail("\(error)") }
        }
    }
}
