import Foundation
import XCTest

@testable import Televisit

final class CallTests: XCTestCase {
    func testPatientWaitsConnectsExchangesVideoAndChatSeesMuteAndGetsTheDuration() async throws {
        let visit = try TestVisit.create()
        // This phone prefers H.264; the doctor's side offers VP8 only, and the offer decides.
        let call = try TelevisitCall(link: visit.patientLink, options: CallOptions(videoCodecs: [.h264, .vp8]))
        defer { call.close() }
        let log = EventLog(call)
        let role = try await call.join()
        XCTAssertEqual(role, .patient)
        _ = try await log.await("waiting room") { $0 == .stateChanged(state: .waitingRoom) }
        XCTAssertThrowsError(try call.shareScreen(true)) { error in
            guard case CallError.NotAllowed = error else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try call.examine(true)) { error in
            guard case CallError.NotAllowed = error else { return XCTFail("\(error)") }
        }
        try call.setVideoPreference(.detail)

        let doctor = try visit.headless(
            visit.doctorLink, ["--seconds", "6", "--chat", "Hello from the doctor", "--mute-after-seconds", "1"])
        _ = try await log.await("connected") { $0 == .stateChanged(state: .connected) }
        _ = try await log.await("told to encode VP8") { $0 == .videoCodec(codec: .vp8) }
        let camera = Task.detached {
            var n: UInt32 = 0
            while !Task.isCancelled {
                try? call.sendFrame(syntheticVideo(n))
                n += 1
                try? await Task.sleep(nanoseconds: 33_000_000)
            }
        }
        defer { camera.cancel() }
        let chat = try await log.await("the doctor's chat") {
            if case let .chatReceived(message) = $0 { return message.from == .doctor }
            return false
        }
        guard case let .chatReceived(message) = chat else { return XCTFail() }
        XCTAssertEqual(message.text, "Hello from the doctor")
        try call.sendChat("Hello from the patient")
        _ = try await log.await("own chat echoed") {
            if case let .chatReceived(message) = $0 { return message.from == .patient }
            return false
        }
        _ = try await log.await("the doctor muted") {
            if case let .peerMediaChanged(microphoneOn, cameraOn) = $0 { return !microphoneOn && cameraOn }
            return false
        }

        let ended = try await log.await("ended") {
            if case .ended = $0 { return true }
            return false
        }
        camera.cancel()
        guard case let .ended(reason) = ended, case let .callEnded(endedBy, duration) = reason else {
            return XCTFail("\(ended)")
        }
        XCTAssertEqual(endedBy, .doctor)
        XCTAssertTrue((5...30).contains(duration), "duration \(duration)")
        let awaited = try await call.awaitEnd()
        XCTAssertEqual(awaited, reason)

        // The doctor's camera is live VP8 (the core's software encoder): the app would hand these frames
        // to its decoder. Real keyframes with a picture size from the ladder must be among them.
        let video = log.videoFrames
        XCTAssertGreaterThanOrEqual(video.count, 60, "two seconds of the doctor's video arrived")
        let sizes = video.filter(\.keyframe).compactMap { vp8KeyframeSize($0.data) }
        XCTAssertFalse(sizes.isEmpty, "VP8 keyframes arrived")
        XCTAssertTrue(sizes.allSatisfy { ladderSizes.contains($0) }, "VP8 keyframe sizes: \(sizes)")
        // Each frame has its RTP timestamp and, from the doctor's first sender report on, the time the
        // doctor sent it on the doctor's clock (this machine's here): what lip sync compares.
        XCTAssertTrue(video.allSatisfy { $0.rtpTimestamp != nil }, "every frame has its RTP timestamp")
        let sentAt = video.compactMap(\.captureTimeUs)
        XCTAssertGreaterThanOrEqual(sentAt.count * 2, video.count, "\(sentAt.count) of \(video.count) frames dated")
        let nowUs = Int64(Date().timeIntervalSince1970 * 1_000_000)
        XCTAssertTrue(sentAt.allSatisfy { (0...60_000_000).contains(nowUs - $0) }, "sent within the last minute")
        XCTAssertTrue(zip(sentAt, sentAt.dropFirst()).allSatisfy { $0 <= $1 }, "in the order sent")
        let status = try await doctor.wait(seconds: 20)
        XCTAssertEqual(status, 0, doctor.output)
        XCTAssertTrue(doctor.output.contains("event: chat from patient: Hello from the patient"), doctor.output)
        let summary = doctor.output.split(separator: "\n").first { $0.hasPrefix("summary: video frames received ") }
        let received = Int(summary?.dropFirst("summary: video frames received ".count).split(separator: ",").first ?? "") ?? 0
        XCTAssertGreaterThanOrEqual(received, 30, "the doctor received the app's video:\n\(doctor.output)")
    }

    func testDoctorEndsTheCallAndGetsTheDuration() async throws {
        let visit = try TestVisit.create()
        let call = try TelevisitCall(link: visit.doctorLink)
        defer { call.close() }
        let log = EventLog(call)
        let role = try await call.join()
        XCTAssertEqual(role, .doctor)
        let patient = try visit.headless(visit.patientLink)
        _ = try await log.await("connected") { $0 == .stateChanged(state: .connected) }
        _ = try await log.await("a video frame") {
            if case let .remoteFrame(frame) = $0 { return frame.kind == .video }
            return false
        }
        try call.examine(true) // the patient's camera keeps its resolution from now on
        try await Task.sleep(nanoseconds: 1_500_000_000)
        let end = try await call.hangUp()
        guard case let .callEnded(endedBy, duration) = end else { return XCTFail("\(end)") }
        XCTAssertEqual(endedBy, .doctor)
        XCTAssertGreaterThanOrEqual(duration, 1)
        let status = try await patient.wait(seconds: 20)
        XCTAssertEqual(status, 0, patient.output)
        XCTAssertTrue(patient.output.contains("ended: CallEnded { ended_by: Some(Doctor)"), patient.output)
        XCTAssertTrue(patient.output.contains("event: examination mode on"), patient.output)
    }

    func testTwoPhonesWithThePlatformsDefaultsSendH264() async throws {
        XCTAssertEqual(TelevisitCall.platformVideoCodecs, [.h264, .vp8])
        // Two apps with default options (the doctor's side offers, the patient's answers).
        let visit = try TestVisit.create()
        let doctor = try TelevisitCall(link: visit.doctorLink)
        let patient = try TelevisitCall(link: visit.patientLink)
        defer { doctor.close(); patient.close() }
        let (doctorLog, patientLog) = (EventLog(doctor), EventLog(patient))
        _ = try await patient.join()
        _ = try await doctor.join()
        for log in [doctorLog, patientLog] {
            _ = try await log.await("told to encode H.264") { $0 == .videoCodec(codec: .h264) }
        }
        // The stats name the path ICE chose: on loopback, no relay.
        let event = try await patientLog.await("stats with the selected pair") {
            if case let .stats(stats) = $0 { return stats.localCandidateType != nil && stats.remoteCandidateType != nil }
            return false
        }
        guard case let .stats(stats) = event else { return XCTFail("\(event)") }
        XCTAssertTrue(["host", "prflx"].contains(stats.localCandidateType!), "\(stats)")
        XCTAssertNotNil(stats.remoteCandidateType)
        XCTAssertNil(stats.relayTransport)
        XCTAssertFalse(CallOptions().relayOnly, "relay-only is the app's choice (or the clinic's)")
        _ = try await doctor.hangUp()
    }

    func testAnAppForcedOntoTheHttpSignalingFallbackJoinsChatsAndEnds() async throws {
        let visit = try TestVisit.create()
        let patient = try TelevisitCall(link: visit.patientLink, options: CallOptions(signalingTransport: .httpOnly))
        let doctor = try TelevisitCall(link: visit.doctorLink)
        defer { doctor.close(); patient.close() }
        let (doctorLog, patientLog) = (EventLog(doctor), EventLog(patient))
        let role = try await patient.join()
        XCTAssertEqual(role, .patient)
        _ = try await patientLog.await("waiting room") { $0 == .stateChanged(state: .waitingRoom) }
        _ = try await doctor.join()
        _ = try await patientLog.await("connected") { $0 == .stateChanged(state: .connected) }
        try patient.sendChat("Sent over HTTP")
        _ = try await doctorLog.await("the patient's chat") {
            if case let .chatReceived(message) = $0 { return message.text == "Sent over HTTP" }
            return false
        }
        _ = try await doctor.hangUp()
        let ended = try await patientLog.await("ended") {
            if case .ended = $0 { return true }
            return false
        }
        guard case let .ended(reason) = ended, case let .callEnded(endedBy, _) = reason else {
            return XCTFail("\(ended)")
        }
        XCTAssertEqual(endedBy, .doctor)
    }

    func testAnExpiredLinkAndAWrongLinkRaiseTypedErrors() async throws {
        let visit = try TestVisit.create()
        let now = Int(Date().timeIntervalSince1970)
        XCTAssertThrowsError(try TelevisitCall(link: forgeLink(visit.patientLink, expiry: now - 60))) { error in
            guard case let CallError.LinkExpired(message) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(message.contains("expired"), message)
        }
        XCTAssertThrowsError(try TelevisitCall(link: "https://clinic.example/not-a-link")) { error in
            guard case CallError.LinkInvalid = error else { return XCTFail("\(error)") }
        }
        let call = try TelevisitCall(link: forgeLink(visit.patientLink, expiry: now + 3600))
        defer { call.close() }
        do {
            _ = try await call.join()
            XCTFail("a wrong link joined")
        } catch CallError.LinkInvalid {
            XCTAssertEqual(call.state, .ended)
        }
    }

    func testCallbacksArriveOffTheMainThreadAndStopAtRelease() async throws {
        final class Recorder: CallListener, @unchecked Sendable {
            let lock = NSLock()
            var onMainThread: [Bool] = []
            func onEvent(event: CallEvent) { lock.withLock { onMainThread.append(Thread.isMainThread) } }
            var count: Int { lock.withLock { onMainThread.count } }
        }
        let visit = try TestVisit.create()
        let recorder = Recorder()
        let call = try Call(link: visit.patientLink, listener: recorder, options: CallOptions())
        _ = try await call.join()
        for _ in 0..<500 where call.state() != .waitingRoom { try await Task.sleep(nanoseconds: 20_000_000) }
        call.release()
        let seen = recorder.count
        XCTAssertGreaterThanOrEqual(seen, 2)
        XCTAssertFalse(recorder.lock.withLock { recorder.onMainThread.contains(true) })
        try await Task.sleep(nanoseconds: 500_000_000)
        XCTAssertEqual(recorder.count, seen, "no event after release")
        XCTAssertThrowsError(try call.sendChat(text: "too late")) { error in
            guard case CallError.Closed = error else { return XCTFail("\(error)") }
        }
    }
}
