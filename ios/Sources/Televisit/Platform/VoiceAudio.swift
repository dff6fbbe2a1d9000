#if canImport(AVFoundation) && os(iOS)
import AVFoundation

/// The phone's microphone and speaker for the call: an `AVAudioSession` for voice chat, an
/// `AVAudioEngine` with the system's voice processing (echo cancellation, noise suppression) whose
/// input is cut into 10 ms frames of 48 kHz mono 16-bit PCM for the core's `AudioSource`, and a
/// source node playing the 10 ms frames pulled from its `AudioSink` (jitter buffer, concealment
/// and Opus are in the core). Needs the microphone permission (`NSMicrophoneUsageDescription`).
public final class VoiceAudio: @unchecked Sendable {
    private let engine = AVAudioEngine()
    private let source: AudioSource
    private let sink: AudioSink
    private let format = AVAudioFormat(commonFormat: .pcmFormatInt16, sampleRate: 48_000, channels: 1, interleaved: true)!
    private var pending = Data()
    private var playing = Data()
    private var speaker: AVAudioSourceNode?
    private var running = false

    public init(source: AudioSource, sink: AudioSink) {
        self.source = source
        self.sink = sink
    }

    /// Sets up the session and starts capture and playout. With CallKit (`VisitCallKit`) the
    /// system activates the session itself and this runs from its `didActivate`.
    public func start(activatingSession: Bool = true) throws {
        let session = AVAudioSession.sharedInstance()
        try session.setCategory(.playAndRecord, mode: .voiceChat, options: [.allowBluetooth, .defaultToSpeaker])
        try session.setPreferredSampleRate(48_000)
        try session.setPreferredIOBufferDuration(0.01)
        if activatingSession { try session.setActive(true) }
        guard !running else { return }  // CallKit activates again after a hold

        let input = engine.inputNode
        try input.setVoiceProcessingEnabled(true)
        let converter = AVAudioConverter(from: input.outputFormat(forBus: 0), to: format)
        input.installTap(onBus: 0, bufferSize: 480, format: input.outputFormat(forBus: 0)) { [weak self] buffer, _ in
            guard let self, let converter else { return }
            let capacity = AVAudioFrameCount(Double(buffer.frameLength) * 48_000 / buffer.format.sampleRate) + 1
            guard let out = AVAudioPCMBuffer(pcmFormat: self.format, frameCapacity: capacity) else { return }
            var given = false
            converter.convert(to: out, error: nil) { _, status in
                if given { status.pointee = .noDataNow; return nil }
                given = true
                status.pointee = .haveData
                return buffer
            }
            self.pending.append(Data(bytes: out.int16ChannelData![0], count: Int(out.frameLength) * 2))
            while self.pending.count >= 960 {
                try? self.source.push(pcm: self.pending.prefix(960))
                self.pending.removeFirst(960)
            }
        }

        if speaker == nil { attachSpeaker() }
        try engine.start()
        running = true
    }

    private func attachSpeaker() {
        let speaker = AVAudioSourceNode(format: format) { [weak self] _, _, frameCount, buffers in
            guard let self else { return noErr }
            let wanted = Int(frameCount) * 2
            while self.playing.count < wanted {
                self.playing.append((try? self.sink.pull()) ?? Data(count: 960))
            }
            let out = UnsafeMutableAudioBufferListPointer(buffers)[0]
            self.playing.prefix(wanted).copyBytes(to: out.mData!.assumingMemoryBound(to: UInt8.self), count: wanted)
            self.playing.removeFirst(wanted)
            return noErr
        }
        engine.attach(speaker)
        engine.connect(speaker, to: engine.mainMixerNode, format: format)
        self.speaker = speaker
    }

    /// Stops capture and playout and releases the session (CallKit releases it itself).
    public func stop(deactivatingSession: Bool = true) {
        if running {
            engine.inputNode.removeTap(onBus: 0)
            engine.stop()
            running = false
        }
        if deactivatingSession {
            try? AVAudioSession.sharedInstance().setActive(false, options: .notifyOthersOnDeactivation)
        }
    }
}
#endif
