import Foundation
@_exported import TelevisitFFI

/// One video visit, for Swift apps: async/await, an `AsyncStream` of `CallEvent`s and typed
/// `CallError`s (`.LinkExpired`, `.LinkInvalid`, `.CallEnded`, `.NotAllowed`, ...), over the
/// generated bindings in `TelevisitFFI`.
///
/// ```swift
/// let call = try TelevisitCall(link: link)
/// Task { for await event in call.events { render(event) } }
/// let role = try await call.join()      // .patient: now in the waiting room
/// let end = try await call.awaitEnd()
/// call.close()
/// ```
///
/// Events come from a background thread of the core (never the main thread) and are buffered
/// until read, so none is lost; `events` is meant for one reader. `close()` releases the call,
/// its connections and the listener: no event arrives after it.
///
/// Unless `CallOptions.videoCodecs` says otherwise, the call offers `platformVideoCodecs`: H.264
/// first, which VideoToolbox encodes in hardware (it cannot encode VP8), and VP8 for browsers.
public final class TelevisitCall: @unchecked Sendable {
    /// The video codecs a phone offers, best first: H.264, which iOS's and Android's hardware
    /// encoders favour, at the level that holds the ladder's 1080p rung; then VP8, which every
    /// browser has.
    public static let platformVideoCodecs: [VideoCodec] = [.h264, .vp8]

    /// Every event of the call, in order. Finishes when the call is closed.
    public let events: AsyncStream<CallEvent>
    private let continuation: AsyncStream<CallEvent>.Continuation
    private let call: Call

    /// Checks the link on the device (shape, expiry) and prepares the call.
    public init(link: String, options: CallOptions = CallOptions()) throws {
        let (events, continuation) = AsyncStream<CallEvent>.makeStream(bufferingPolicy: .unbounded)
        self.events = events
        self.continuation = continuation
        var options = options
        if options.videoCodecs?.isEmpty ?? true { options.videoCodecs = Self.platformVideoCodecs }
        call = try Call(link: link, listener: StreamListener(continuation), options: options)
    }

    /// Reads a link without the network: its server, appointment and expiry.
    public static func inspect(link: String) throws -> LinkInfo {
        try checkLink(link: link)
    }

    /// The call's state now.
    public var state: CallState { call.state() }

    /// This side's role, once `join()` returned.
    public var role: Role? { call.role() }

    /// Joins the call; returns this side's role once the server accepted the link.
    public func join() async throws -> Role { try await call.join() }

    /// Ends the call (doctor) or leaves it (patient); returns how it ended, with the duration.
    public func hangUp() async throws -> EndReason { try await call.hangUp() }

    /// Waits until the call is over for this side.
    public func awaitEnd() async throws -> EndReason { try await call.waitForEnd() }

    /// Mutes (false) or unmutes (true) the microphone; the peer is told.
    public func setMicrophoneEnabled(_ enabled: Bool) throws { try call.setMicrophoneEnabled(enabled: enabled) }

    /// Turns the camera off or on; the peer is told.
    public func setCameraEnabled(_ enabled: Bool) throws { try call.setCameraEnabled(enabled: enabled) }

    /// Starts or stops sharing the screen; a patient gets `CallError.NotAllowed`.
    public func shareScreen(_ active: Bool) throws { try call.setScreenShare(active: active) }

    /// Starts or stops the examination mode (the doctor, for a rash or a wound): the patient's
    /// camera keeps its resolution and gives up frame rate when bandwidth is short. A patient
    /// gets `CallError.NotAllowed`.
    public func examine(_ active: Bool) throws { try call.setExamination(active: active) }

    /// What this device's camera gives up first when bandwidth is short (`.detail` keeps resolution).
    public func setVideoPreference(_ preference: VideoPreference) throws {
        try call.setVideoPreference(preference: preference)
    }

    /// Sends a chat message (1 to 2000 characters).
    public func sendChat(_ text: String) throws { try call.sendChat(text: text) }

    /// Sends an encoded frame from the platform's codec (VideoToolbox, Opus).
    public func sendFrame(_ frame: MediaFrame) throws { try call.sendFrame(frame: frame) }

    /// The device's network changed (from `NWPathMonitor`): reconnect now.
    public func networkChanged() throws { try call.networkChanged() }

    /// The microphone's way in: push each 10 ms frame of 48 kHz mono 16-bit PCM (960 bytes) from
    /// the audio engine's input; the core encodes Opus with FEC. Use it or `sendFrame`, not both.
    public func audioSource() throws -> AudioSource { try call.audioSource() }

    /// The speaker's way out: pull a 10 ms frame each time playout asks (always a frame: the
    /// peer's voice, concealment of a loss, or silence), through the core's jitter buffer.
    public func audioSink() throws -> AudioSink { try call.audioSink() }

    /// The camera's way in: push each `AVCaptureSession` picture (`pushNv12`, with the rotation
    /// that makes it upright and its timestamp); the core fits it to the ladder's rung and encodes
    /// it with `encoder` (VideoToolbox; nil: the core's software VP8 where built in), following the
    /// bitrate and the peer's keyframe requests. Use it or `sendFrame`, not both.
    public func videoSource(encoder: PlatformVideoEncoder? = nil) throws -> VideoSource {
        try call.videoSource(encoder: encoder)
    }

    /// The view's way out: pull the doctor's decoded I420 pictures (with their capture time, for
    /// lip sync) from the display link, decoded by `decoder` (nil: software VP8).
    public func videoSink(decoder: PlatformVideoDecoder? = nil) throws -> VideoSink {
        try call.videoSink(decoder: decoder)
    }

    /// Releases everything; idempotent. No event is delivered after this returns.
    public func close() {
        call.release()
        continuation.finish()
    }

    deinit { close() }
}

/// Carries the core's callbacks (on its event thread) into the stream.
private final class StreamListener: CallListener, @unchecked Sendable {
    private let continuation: AsyncStream<CallEvent>.Continuation

    init(_ continuation: AsyncStream<CallEvent>.Continuation) { self.continuation = continuation }

    func onEvent(event: CallEvent) { continuation.yield(event) }
}
