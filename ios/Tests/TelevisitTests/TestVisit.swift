import Foundation
import XCTest

@testable import Televisit

/// A demo visit (started call) on the test server that scripts/test-ios runs on the host, plus
/// headless participants (`televisit join`) to play the other side.
struct TestVisit {
    static let bin = ProcessInfo.processInfo.environment["TELEVISIT_BIN"]!
    static let url = ProcessInfo.processInfo.environment["TELEVISIT_TEST_URL"]!
    static let db = ProcessInfo.processInfo.environment["TELEVISIT_TEST_DB"]!

    let doctorLink: String
    let patientLink: String

    /// A new visit with a started call, made by `televisit demo` on the running server's database.
    static func create() throws -> TestVisit {
        let output = try run(bin, ["demo", "--database-url", "sqlite://\(db)", "--public-url", url])
        func link(_ who: String) throws -> String {
            let line = try XCTUnwrap(output.split(separator: "\n").first { $0.contains("\(who)'s link:") })
            return String(try XCTUnwrap(line.split(separator: " ").last))
        }
        return TestVisit(doctorLink: try link("Doctor"), patientLink: try link("Patient"))
    }

    /// Starts `televisit join <link> ...` with loopback ICE.
    func headless(_ link: String, _ args: [String] = []) throws -> Headless {
        try Headless(arguments: ["join", link, "--udp", "127.0.0.1:0"] + args)
    }

    private static func run(_ path: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}

/// A running headless participant; its output goes to a temporary file.
final class Headless {
    let process = Process()
    let outputURL = FileManager.default.temporaryDirectory.appendingPathComponent("headless-\(UUID()).txt")

    init(arguments: [String]) throws {
        _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
        let handle = try FileHandle(forWritingTo: outputURL)
        process.executableURL = URL(fileURLWithPath: TestVisit.bin)
        process.arguments = arguments
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    /// Everything it printed so far.
    var output: String { (try? String(contentsOf: outputURL, encoding: .utf8)) ?? "" }

    /// Waits (up to `seconds`) for it to exit; returns the exit code.
    func wait(seconds: Double) async throws -> Int32 {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning {
            if Date() > deadline {
                process.terminate()
                XCTFail("televisit join still running:\n\(output)")
            }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { process.terminate() }
        try? FileManager.default.removeItem(at: outputURL)
    }
}

/// The link with its token replaced by one of the same shape: `expiry` in Unix seconds, another secret.
func forgeLink(_ link: String, expiry: Int) -> String {
    let parts = link.components(separatedBy: "#token=")
    let secretLength = parts[1].split(separator: ".").last!.count
    return "\(parts[0])#token=tv1.\(expiry).\(String(repeating: "A", count: secretLength))"
}

/// Collects a call's events so a test can wait for one.
final class EventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var collected: [CallEvent] = []

    init(_ call: TelevisitCall) {
        Task.detached { [self] in
            for await event in call.events { self.lock.withLock { self.collected.append(event) } }
        }
    }

    var events: [CallEvent] { lock.withLock { collected } }

    /// Waits up to 30 s for an event matching `predicate`.
    func await(_ what: String, _ predicate: (CallEvent) -> Bool) async throws -> CallEvent {
        for _ in 0..<1500 {
            if let event = events.first(where: predicate) { return event }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        let seen = events.filter {
            if case .remoteFrame = $0 { return false }
            if case .stats = $0 { return false }
            return true
        }
        XCTFail("no event: \(what); got \(seen)")
        throw CancellationError()
    }

    /// The remote video frames received so far.
    var videoFrames: [MediaFrame] {
        events.compactMap { event in
            guard case let .remoteFrame(frame) = event, frame.kind == .video else { return nil }
            return frame
        }
    }
}

/// Picture sizes of the core's video ladder (1080p down to 180p).
let ladderSizes: Set<[Int]> = [[1920, 1080], [1280, 720], [960, 540], [640, 360], [320, 180]]

/// The picture size in a VP8 keyframe's header (RFC 6386 §9.1), or nil if this is not one.
func vp8KeyframeSize(_ data: Data) -> [Int]? {
    let b = [UInt8](data.prefix(10)).map(Int.init)
    guard b.count == 10, b[0] & 1 == 0, b[3] == 0x9d, b[4] == 0x01, b[5] == 0x2a else { return nil }
    return [(b[6] | b[7] << 8) & 0x3fff, (b[8] | b[9] << 8) & 0x3fff]
}

/// A VP8-shaped frame with a readable counter (bytes 2..6), as the headless client sends.
func syntheticVideo(_ n: UInt32) -> MediaFrame {
    let keyframe = n % 30 == 0
    var bytes = [UInt8](repeating: UInt8(n % 251), count: keyframe ? 12_000 : 3_000)
    bytes[0] = keyframe ? 0x10 : 0x11
    bytes[1] = 2
    withUnsafeBytes(of: n.bigEndian) { bytes.replaceSubrange(2..<6, with: $0) }
    return MediaFrame(kind: .video, data: Data(bytes), durationMs: 33, keyframe: keyframe)
}
