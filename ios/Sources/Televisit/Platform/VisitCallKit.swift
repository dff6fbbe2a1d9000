#if canImport(CallKit) && os(iOS)
import AVFoundation
import CallKit

/// Registers the visit with CallKit as an outgoing video call, so the system treats it as a call:
/// it activates the audio session (and `VoiceAudio` starts only then), a cellular call holds it,
/// and mute and end from the lock screen, CarPlay or a headset reach the `TelevisitCall`. The
/// system shows the same generic name for every visit and keeps it out of the phone's call
/// history (no patient data).
///
/// ```
/// let callKit = VisitCallKit(call: call, voice: voice)
/// try await callKit.start()            // before join(): CallKit owns the audio session
/// let role = try await call.join(); callKit.reportConnected()
/// ```
public final class VisitCallKit: NSObject, CXProviderDelegate, @unchecked Sendable {
    /// What CallKit shows for every visit.
    public static let handle = CXHandle(type: .generic, value: "Video visit")

    private let provider: CXProvider
    private let controller = CXCallController()
    private let call: TelevisitCall
    private let voice: VoiceAudio
    private let id = UUID()
    private let lock = NSLock()
    private var endedHere = false

    public init(call: TelevisitCall, voice: VoiceAudio) {
        let configuration = CXProviderConfiguration()
        configuration.supportsVideo = true
        configuration.maximumCallGroups = 1
        configuration.maximumCallsPerCallGroup = 1
        configuration.supportedHandleTypes = [.generic]
        configuration.includesCallsInRecents = false
        provider = CXProvider(configuration: configuration)
        self.call = call
        self.voice = voice
        super.init()
        provider.setDelegate(self, queue: nil)
    }

    /// Asks CallKit to start the visit; throws CallKit's refusal (another call it cannot hold).
    /// When the call ends from the other side or the server, CallKit is told.
    public func start(video: Bool = true) async throws {
        let action = CXStartCallAction(call: id, handle: Self.handle)
        action.isVideo = video
        try await controller.request(CXTransaction(action: action))
        Task { [weak self] in
            _ = try? await self?.call.awaitEnd()
            self?.reportEnded()
        }
    }

    /// The visit is connected (`join()` returned): the system's call UI starts its clock.
    public func reportConnected() { provider.reportOutgoingCall(with: id, connectedAt: Date()) }

    /// Ends the visit from the app's own button: CallKit runs the hang-up below.
    public func end() async throws { try await controller.request(CXTransaction(action: CXEndCallAction(call: id))) }

    private func reportEnded() {
        lock.lock(); let already = endedHere; endedHere = true; lock.unlock()
        if !already { provider.reportCall(with: id, endedAt: Date(), reason: .remoteEnded) }
    }

    public func providerDidReset(_ provider: CXProvider) { voice.stop(deactivatingSession: false) }

    public func provider(_ provider: CXProvider, perform action: CXStartCallAction) {
        provider.reportOutgoingCall(with: action.callUUID, startedConnectingAt: Date())
        action.fulfill()
    }

    public func provider(_ provider: CXProvider, perform action: CXEndCallAction) {
        lock.lock(); endedHere = true; lock.unlock()
        Task { [call] in _ = try? await call.hangUp() }
        action.fulfill()
    }

    public func provider(_ provider: CXProvider, perform action: CXSetMutedCallAction) {
        do {
            try call.setMicrophoneEnabled(!action.isMuted)
            action.fulfill()
        } catch {
            action.fail()
        }
    }

    /// A cellular call holds the visit: the doctor sees the microphone and camera go off.
    public func provider(_ provider: CXProvider, perform action: CXSetHeldCallAction) {
        try? call.setMicrophoneEnabled(!action.isOnHold)
        try? call.setCameraEnabled(!action.isOnHold)
        action.fulfill()
    }

    public func provider(_ provider: CXProvider, didActivate audioSession: AVAudioSession) {
        try? voice.start(activatingSession: false)
    }

    public func provider(_ provider: CXProvider, didDeactivate audioSession: AVAudioSession) {
        voice.stop(deactivatingSession: false)
    }
}
#endif
