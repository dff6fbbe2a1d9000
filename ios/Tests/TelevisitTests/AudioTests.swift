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

/// The 16-bit little-endian samples of a PCM frame.
func samples(_ pcm: Data) -> [Int16] {
    stride(from: 0, to: pcm.count - 1, by: 2).map { i in
        Int16(bitPattern: UInt16(pcm[pcm.startIndex + i]) | UInt16(pcm[pcm.startIndex + i + 1]) << 8)
    }
}

/// The signal's power at `hz` (Goertzel).
func goertzel(_ samples: [Int16], _ hz: Double) -> Double {
    let coefficient = 2 * cos(2 * Double.pi * hz / 48_000)
    var (s1, s2) = (0.0, 0.0)
    for sample in samples {
        let s0 = Double(sample) + coefficient * s1 - s2
        (s2, s1) = (s1, s0)
    }
    return s1 * s1 + s2 * s2 - coefficient * s1 * s2
}

func rms(_ samples: [Int16]) -> Double {
    (samples.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(samples.count)).squareRoot()
}

final class AudioTests: XCTestCase {
    func testTheAppPushesMicrophonePcmAndPullsTheDoctorsVoiceAsPcm() async throws {
        let visit = try TestVisit.create()
        let call = try TelevisitCall(link: visit.patientLink)
        defer { call.close() }
        let log = EventLog(call)
        let role = try await call.join()
        XCTAssertEqual(role, .patient)
        let source = try call.audioSource()
        let sink = try call.audioSink()
        XCTAssertThrowsError(try source.push(pcm: Data(count: 100))) { error in
            guard case let AudioError.WrongFrameSize(expected, got) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(expected, 480)
            XCTAssertEqual(got, 50)
        }
        XCTAssertThrowsError(try source.push(pcm: Data(count: 961))) { error in
            guard case AudioError.OddByteCount = error else { return XCTFail("\(error)") }
        }

        // The doctor is `televisit join`: it sends a 440 Hz tone and decodes what it gets.
        let doctor = try visit.headless(visit.doctorLink, ["--seconds", "5"])
        _ = try await log.await("connected") { $0 == .stateChanged(state: .connected) }
        // Three seconds of the devices in real time: a 660 Hz microphone, a speaker pulling.
        var played: [Int16] = []
        let start = Date()
        for n in 0..<300 {
            try source.push(pcm: toneFrame(660, n))
            let frame = try sink.pull()
            XCTAssertEqual(frame.count, 960)
            played += samples(frame)
            let wait = start.addingTimeInterval(Double(n + 1) / 100).timeIntervalSinceNow
            if wait > 0 { try await Task.sleep(nanoseconds: UInt64(wait * 1e9)) }
        }
        let lastSecond = Array(played[(200 * 480)...])
        let stats = sink.stats()
        XCTAssertGreaterThan(rms(lastSecond), 3000, "the doctor's tone is loud: \(stats)")
        let ratio = goertzel(lastSecond, 440) / goertzel(lastSecond, 660)
        XCTAssertGreaterThan(ratio, 1000, "the doctor's 440 Hz, not our 660 Hz: \(stats)")
        XCTAssertGreaterThanOrEqual(stats.packetsReceived, 75, "\(stats)")
        // The sound playing is dated on the doctor's clock (this machine's), for lip sync: it was sent a
        // jitter buffer and a network ago, not in the future nor minutes ago.
        let playingSentAt = try XCTUnwrap(sink.playingCaptureTimeUs(), "the sound playing is dated")
        let agoMs = (Int64(Date().timeIntervalSince1970 * 1_000_000) - playingSentAt) / 1000
        XCTAssertTrue((0...2_000).contains(agoMs), "playing sound sent \(agoMs) ms ago")

        let status = try await doctor.wait(seconds: 20)
        XCTAssertEqual(status, 0, doctor.output)
        let decoded = doctor.output.split(separator: "\n").first { $0.contains("summary:") }
            .flatMap { line in line.range(of: #"audio frames decoded (\d+)"#, options: .regularExpression).map { line[$0] } }
            .flatMap { Int($0.split(separator: " ").last!) }
        XCTAssertGreaterThanOrEqual(decoded ?? 0, 100, "the doctor decoded our Opus:\n\(doctor.output)")

        call.close()
        XCTAssertThrowsError(try sink.pull()) { error in
            guard case AudioError.Closed = error else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try source.push(pcm: toneFrame(660, 0))) { error in
            guard case AudioError.Closed = error else { return XCTFail("\(error)") }
        }
    }

    func testBeforeAnyoneSpeaksTheSinkGivesWholeFramesOfSilence() async throws {
        let visit = try TestVisit.create()
        let call = try TelevisitCall(link: visit.patientLink)
        defer { call.close() }
        _ = try await call.join()
        // The patient waits for the doctor: the speaker still gets a whole 10 ms frame, of silence.
        let frame = try call.audioSink().pull()
        XCTAssertEqual(frame.count, 960)
        XCTAssertTrue(frame.allSatisfy { $0 == 0 }, "silence before anyone speaks")
    }
}
