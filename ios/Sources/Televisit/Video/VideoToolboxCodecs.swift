#if canImport(VideoToolbox)
import CoreMedia
import CoreVideo
import Foundation
import VideoToolbox

/// How long VideoToolbox keeps between keyframes at most, seconds: the core asks for keyframes
/// when a receiver needs one.
private let keyframeIntervalSeconds = 20

/// An NV12 pixel buffer of `picture`, for an encoder or the view.
func pixelBuffer(_ picture: VideoPicture) throws -> CVPixelBuffer {
    var made: CVPixelBuffer?
    let attributes = [kCVPixelBufferIOSurfacePropertiesKey: [:]] as CFDictionary
    let status = CVPixelBufferCreate(
        nil, Int(picture.width), Int(picture.height), kCVPixelFormatType_420YpCbCr8BiPlanarVideoRange, attributes, &made)
    guard status == kCVReturnSuccess, let buffer = made else {
        throw VideoError.Codec(reason: "no pixel buffer for \(picture.width)x\(picture.height): \(status)")
    }
    CVPixelBufferLockBaseAddress(buffer, [])
    defer { CVPixelBufferUnlockBaseAddress(buffer, []) }
    let lumaRow = CVPixelBufferGetBytesPerRowOfPlane(buffer, 0)
    let uvRow = CVPixelBufferGetBytesPerRowOfPlane(buffer, 1)
    let luma = UnsafeMutableRawBufferPointer(
        start: CVPixelBufferGetBaseAddressOfPlane(buffer, 0), count: lumaRow * CVPixelBufferGetHeightOfPlane(buffer, 0))
    let uv = UnsafeMutableRawBufferPointer(
        start: CVPixelBufferGetBaseAddressOfPlane(buffer, 1), count: uvRow * CVPixelBufferGetHeightOfPlane(buffer, 1))
    YuvPlanes.writeNv12(picture, luma: luma, lumaBytesPerRow: lumaRow, uv: uv, uvBytesPerRow: uvRow)
    return buffer
}

/// The I420 picture in an NV12 pixel buffer (a decoder's output, a camera's picture).
func picture(of buffer: CVPixelBuffer) -> VideoPicture {
    CVPixelBufferLockBaseAddress(buffer, .readOnly)
    defer { CVPixelBufferUnlockBaseAddress(buffer, .readOnly) }
    let lumaRow = CVPixelBufferGetBytesPerRowOfPlane(buffer, 0)
    let uvRow = CVPixelBufferGetBytesPerRowOfPlane(buffer, 1)
    let luma = UnsafeRawBufferPointer(
        start: CVPixelBufferGetBaseAddressOfPlane(buffer, 0), count: lumaRow * CVPixelBufferGetHeightOfPlane(buffer, 0))
    let uv = UnsafeRawBufferPointer(
        start: CVPixelBufferGetBaseAddressOfPlane(buffer, 1), count: uvRow * CVPixelBufferGetHeightOfPlane(buffer, 1))
    return YuvPlanes.i420(
        width: CVPixelBufferGetWidth(buffer), height: CVPixelBufferGetHeight(buffer),
        luma: luma, lumaBytesPerRow: lumaRow, uv: uv, uvBytesPerRow: uvRow)
}

/// The phone's hardware H.264 encoder for the core's video engine:
/// `try call.videoSource(encoder: VideoToolboxEncoder())`. The core calls `configure` whenever the
/// ladder moves (a new size or frame rate makes a new session; a new bitrate goes to the running
/// one), `requestKeyframe` when the peer lost the picture, and `encode` for each upright picture,
/// on its encoder thread. Frames come out in Annex-B form, keyframes with their parameter sets.
public final class VideoToolboxEncoder: PlatformVideoEncoder, @unchecked Sendable {
    private let lock = NSLock()
    private var session: VTCompressionSession?
    private var settings: EncoderSettings?
    private var keyframeNext = true
    private var frames: Int64 = 0

    public init() {}

    deinit { invalidate() }

    public func configure(settings: EncoderSettings) throws {
        lock.lock()
        defer { lock.unlock() }
        guard settings.codec == .h264 else {
            throw VideoError.NoCodec(reason: "VideoToolbox encodes H.264, not \(settings.codec)")
        }
        if let session, let old = self.settings,
           (old.width, old.height, old.fps) == (settings.width, settings.height, settings.fps) {
            VTSessionSetProperty(session, key: kVTCompressionPropertyKey_AverageBitRate, value: NSNumber(value: settings.bitrateBps))
            self.settings = settings
            return
        }
        invalidate()
        var made: VTCompressionSession?
        let status = VTCompressionSessionCreate(
            allocator: nil, width: Int32(settings.width), height: Int32(settings.height),
            codecType: kCMVideoCodecType_H264, encoderSpecification: nil, imageBufferAttributes: nil,
            compressedDataAllocator: nil, outputCallback: nil, refcon: nil, compressionSessionOut: &made)
        guard status == noErr, let made else { throw VideoError.Codec(reason: "VTCompressionSessionCreate: \(status)") }
        VTSessionSetProperty(made, key: kVTCompressionPropertyKey_RealTime, value: kCFBooleanTrue)
        VTSessionSetProperty(made, key: kVTCompressionPropertyKey_ProfileLevel, value: kVTProfileLevel_H264_ConstrainedBaseline_AutoLevel)
        VTSessionSetProperty(made, key: kVTCompressionPropertyKey_AllowFrameReordering, value: kCFBooleanFalse)
        VTSessionSetProperty(made, key: kVTCompressionPropertyKey_AverageBitRate, value: NSNumber(value: settings.bitrateBps))
        VTSessionSetProperty(made, key: kVTCompressionPropertyKey_ExpectedFrameRate, value: NSNumber(value: settings.fps))
        VTSessionSetProperty(made, key: kVTCompressionPropertyKey_MaxKeyFrameIntervalDuration, value: NSNumber(value: keyframeIntervalSeconds))
        VTCompressionSessionPrepareToEncodeFrames(made)
        session = made
        self.settings = settings
        frames = 0
        keyframeNext = true
    }

    public func requestKeyframe() {
        lock.lock()
        keyframeNext = true
        lock.unlock()
    }

    public func encode(picture: VideoPicture) throws -> EncodedVideo? {
        lock.lock()
        defer { lock.unlock() }
        guard let session, let settings else { throw VideoError.Codec(reason: "a picture before the encoder was configured") }
        let buffer = try pixelBuffer(picture)
        let pts = CMTime(value: frames, timescale: Int32(max(settings.fps, 1)))
        frames += 1
        let options: CFDictionary? = keyframeNext ? [kVTEncodeFrameOptionKey_ForceKeyFrame: kCFBooleanTrue] as CFDictionary : nil
        keyframeNext = false
        var encoded: EncodedVideo?
        var failure: OSStatus = noErr
        let status = VTCompressionSessionEncodeFrame(
            session, imageBuffer: buffer, presentationTimeStamp: pts, duration: .invalid,
            frameProperties: options, infoFlagsOut: nil
        ) { status, _, sample in
            guard status == noErr, let sample else { failure = status; return }
            encoded = annexB(sample)
        }
        // Real time and no reordering: completing the frame runs the handler before this returns.
        VTCompressionSessionCompleteFrames(session, untilPresentationTimeStamp: pts)
        guard status == noErr, failure == noErr else { throw VideoError.Codec(reason: "VideoToolbox: \(status) \(failure)") }
        return encoded
    }

    private func invalidate() {
        if let session { VTCompressionSessionInvalidate(session) }
        session = nil
        settings = nil
    }
}

/// An encoded sample as an Annex-B access unit, a keyframe with its SPS and PPS in front.
private func annexB(_ sample: CMSampleBuffer) -> EncodedVideo? {
    guard let block = CMSampleBufferGetDataBuffer(sample) else { return nil }
    var avcc = Data(count: CMBlockBufferGetDataLength(block))
    let copied = avcc.withUnsafeMutableBytes { (bytes: UnsafeMutableRawBufferPointer) in
        CMBlockBufferCopyDataBytes(block, atOffset: 0, dataLength: bytes.count, destination: bytes.baseAddress!)
    }
    guard copied == noErr, var data = try? annexBFromAvcc(avcc: avcc) else { return nil }
    let attachments = CMSampleBufferGetSampleAttachmentsArray(sample, createIfNecessary: false) as? [[CFString: Any]]
    let keyframe = !(attachments?.first?[kCMSampleAttachmentKey_NotSync] as? Bool ?? false)
    if keyframe, let format = CMSampleBufferGetFormatDescription(sample) {
        var sets = Data()
        for index in 0..<2 {
            var pointer: UnsafePointer<UInt8>?
            var size = 0
            if CMVideoFormatDescriptionGetH264ParameterSetAtIndex(
                format, parameterSetIndex: index, parameterSetPointerOut: &pointer, parameterSetSizeOut: &size,
                parameterSetCountOut: nil, nalUnitHeaderLengthOut: nil) == noErr, let pointer {
                sets.append(contentsOf: [0, 0, 0, 1])
                sets.append(pointer, count: size)
            }
        }
        data = sets + data
    }
    return EncodedVideo(data: data, keyframe: keyframe)
}

/// The phone's hardware H.264 decoder for the core's video engine:
/// `try call.videoSink(decoder: VideoToolboxDecoder())`. A session is made from each keyframe's
/// parameter sets (again when they change); frames are decoded synchronously into NV12 and
/// handed back as I420.
public final class VideoToolboxDecoder: PlatformVideoDecoder, @unchecked Sendable {
    private let lock = NSLock()
    private var session: VTDecompressionSession?
    private var format: CMVideoFormatDescription?
    private var sets: H264ParameterSets?

    public init() {}

    deinit { invalidate() }

    public func configure(codec: VideoCodec) throws {
        lock.lock()
        defer { lock.unlock() }
        guard codec == .h264 else { throw VideoError.NoCodec(reason: "VideoToolbox decodes H.264 here, not \(codec)") }
        invalidate()
    }

    public func decode(data: Data) throws -> VideoPicture? {
        lock.lock()
        defer { lock.unlock() }
        if let found = h264ParameterSets(annexB: data), found != sets { try start(found) }
        guard let session, let format else { throw VideoError.Codec(reason: "a frame before the first keyframe") }
        var avcc = avccFromAnnexB(annexB: data)
        var block: CMBlockBuffer?
        var sample: CMSampleBuffer?
        let made = avcc.withUnsafeMutableBytes { (bytes: UnsafeMutableRawBufferPointer) -> OSStatus in
            var status = CMBlockBufferCreateWithMemoryBlock(
                allocator: nil, memoryBlock: nil, blockLength: bytes.count, blockAllocator: nil,
                customBlockSource: nil, offsetToData: 0, dataLength: bytes.count, flags: 0, blockBufferOut: &block)
            guard status == noErr, let block else { return status }
            status = CMBlockBufferReplaceDataBytes(with: bytes.baseAddress!, blockBuffer: block, offsetIntoDestination: 0, dataLength: bytes.count)
            guard status == noErr else { return status }
            var size = bytes.count
            return CMSampleBufferCreateReady(
                allocator: nil, dataBuffer: block, formatDescription: format, sampleCount: 1,
                sampleTimingEntryCount: 0, sampleTimingArray: nil, sampleSizeEntryCount: 1,
                sampleSizeArray: &size, sampleBufferOut: &sample)
        }
        guard made == noErr, let sample else { throw VideoError.Codec(reason: "no sample buffer: \(made)") }
        var decoded: VideoPicture?
        var failure: OSStatus = noErr
        let status = VTDecompressionSessionDecodeFrame(session, sampleBuffer: sample, flags: [], infoFlagsOut: nil) {
            status, _, image, _, _ in
            guard status == noErr, let image else { failure = status; return }
            decoded = picture(of: image)
        }
        guard status == noErr, failure == noErr else { throw VideoError.Codec(reason: "VideoToolbox: \(status) \(failure)") }
        return decoded
    }

    private func start(_ found: H264ParameterSets) throws {
        invalidate()
        var description: CMVideoFormatDescription?
        let status = found.sps.withUnsafeBytes { (sps: UnsafeRawBufferPointer) in
            found.pps.withUnsafeBytes { (pps: UnsafeRawBufferPointer) in
                let pointers = [sps.bindMemory(to: UInt8.self).baseAddress!, pps.bindMemory(to: UInt8.self).baseAddress!]
                let sizes = [found.sps.count, found.pps.count]
                return CMVideoFormatDescriptionCreateFromH264ParameterSets(
                    allocator: nil, parameterSetCount: 2, parameterSetPointers: pointers,
                    parameterSetSizes: sizes, nalUnitHeaderLength: 4, formatDescriptionOut: &description)
            }
        }
        guard status == noErr, let description else { throw VideoError.Codec(reason: "bad parameter sets: \(status)") }
        let output = [kCVPixelBufferPixelFormatTypeKey: kCVPixelFormatType_420YpCbCr8BiPlanarVideoRange] as CFDictionary
        var made: VTDecompressionSession?
        let created = VTDecompressionSessionCreate(
            allocator: nil, formatDescription: description, decoderSpecification: nil,
            imageBufferAttributes: output, outputCallback: nil, decompressionSessionOut: &made)
        guard created == noErr, let made else { throw VideoError.Codec(reason: "VTDecompressionSessionCreate: \(created)") }
        session = made
        format = description
        sets = found
    }

    private func invalidate() {
        if let session { VTDecompressionSessionInvalidate(session) }
        session = nil
        format = nil
        sets = nil
    }
}
#endif
