#if canImport(UIKit) && canImport(AVFoundation) && canImport(VideoToolbox)
import AVFoundation
import UIKit

/// Shows the peer's camera: on every display refresh it takes the newest decoded picture from the
/// core's `VideoSink` and enqueues it, as an NV12 pixel buffer, on an `AVSampleBufferDisplayLayer`
/// (the GPU converts and scales it), fitted on black: never cropped, the doctor sees everything
/// the patient shows. When the call is released the last picture stays and the view stops.
public final class VideoView: UIView {
    public override class var layerClass: AnyClass { AVSampleBufferDisplayLayer.self }

    private var displayLayer: AVSampleBufferDisplayLayer { layer as! AVSampleBufferDisplayLayer }
    private var sink: VideoSink?
    private var link: CADisplayLink?

    /// The last picture shown, with its capture time for lip sync.
    public private(set) var lastPicture: DecodedPicture?

    /// Whether it is showing a sink's pictures.
    public var isShowing: Bool { sink != nil }

    public override init(frame: CGRect) {
        super.init(frame: frame)
        backgroundColor = .black
        displayLayer.videoGravity = .resizeAspect
    }

    required init?(coder: NSCoder) { fatalError("VideoView is made in code") }

    /// Starts showing `sink`'s pictures.
    public func attach(_ sink: VideoSink) {
        self.sink = sink
        link?.invalidate()
        link = CADisplayLink(target: self, selector: #selector(refresh))
        link?.add(to: .main, forMode: .common)
    }

    /// Stops showing pictures (the last one stays).
    public func detach() {
        link?.invalidate()
        link = nil
        sink = nil
    }

    @objc private func refresh() {
        guard let sink else { return }
        var newest: DecodedPicture?
        do {
            while let next = try sink.pull() { newest = next }
        } catch {
            detach()  // the call was released
            return
        }
        guard let newest, let sample = try? Self.sampleBuffer(of: newest.picture) else { return }
        if displayLayer.status == .failed { displayLayer.flush() }
        displayLayer.enqueue(sample)
        lastPicture = newest
    }

    /// The picture as a sample buffer the layer shows at once (the view already chose the newest
    /// picture for this refresh; lip sync is the core's, from the capture times).
    static func sampleBuffer(of picture: VideoPicture) throws -> CMSampleBuffer {
        let buffer = try pixelBuffer(picture)
        var format: CMVideoFormatDescription?
        CMVideoFormatDescriptionCreateForImageBuffer(allocator: nil, imageBuffer: buffer, formatDescriptionOut: &format)
        var timing = CMSampleTimingInfo(duration: .invalid, presentationTimeStamp: .zero, decodeTimeStamp: .invalid)
        var made: CMSampleBuffer?
        if let format {
            CMSampleBufferCreateReadyWithImageBuffer(
                allocator: nil, imageBuffer: buffer, formatDescription: format, sampleTiming: &timing, sampleBufferOut: &made)
        }
        guard let sample = made else {
            throw VideoError.Codec(reason: "no sample buffer for \(picture.width)x\(picture.height)")
        }
        if let attachments = CMSampleBufferGetSampleAttachmentsArray(sample, createIfNecessary: true),
           CFArrayGetCount(attachments) > 0 {
            let first = unsafeBitCast(CFArrayGetValueAtIndex(attachments, 0), to: CFMutableDictionary.self)
            CFDictionarySetValue(
                first, Unmanaged.passUnretained(kCMSampleAttachmentKey_DisplayImmediately).toOpaque(),
                Unmanaged.passUnretained(kCFBooleanTrue).toOpaque())
        }
        return sample
    }
}
#endif
