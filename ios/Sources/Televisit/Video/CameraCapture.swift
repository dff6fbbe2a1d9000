#if canImport(AVFoundation) && canImport(UIKit)
import AVFoundation
import UIKit

/// The phone's camera into the call: an `AVCaptureSession` whose NV12 pictures are pushed into
/// the core's `VideoSource` with the rotation that makes them upright and their capture time; the
/// core fits them to the ladder and encodes them. Needs the camera permission
/// (`NSCameraUsageDescription`).
public final class CameraCapture: NSObject, AVCaptureVideoDataOutputSampleBufferDelegate, @unchecked Sendable {
    private let session = AVCaptureSession()
    private let source: VideoSource
    private let queue = DispatchQueue(label: "televisit-camera")
    private let position: AVCaptureDevice.Position

    /// Pictures pushed so far, and those the core refused.
    public private(set) var picturesPushed = 0
    public private(set) var picturesRefused = 0

    public init(source: VideoSource, position: AVCaptureDevice.Position = .front) {
        self.source = source
        self.position = position
    }

    /// Starts the camera (720p, NV12); throws if there is none or it cannot be used.
    public func start() throws {
        guard let camera = AVCaptureDevice.default(.builtInWideAngleCamera, for: .video, position: position) else {
            throw VideoError.NoCodec(reason: "no camera at the \(position == .front ? "front" : "back")")
        }
        let input = try AVCaptureDeviceInput(device: camera)
        let output = AVCaptureVideoDataOutput()
        output.videoSettings = [kCVPixelBufferPixelFormatTypeKey as String: kCVPixelFormatType_420YpCbCr8BiPlanarVideoRange]
        output.alwaysDiscardsLateVideoFrames = true
        output.setSampleBufferDelegate(self, queue: queue)
        session.beginConfiguration()
        session.sessionPreset = .hd1280x720
        guard session.canAddInput(input), session.canAddOutput(output) else {
            session.commitConfiguration()
            throw VideoError.NoCodec(reason: "the camera cannot capture 720p video")
        }
        session.addInput(input)
        session.addOutput(output)
        session.commitConfiguration()
        queue.async { self.session.startRunning() }
    }

    /// Stops the camera.
    public func stop() {
        queue.async { self.session.stopRunning() }
    }

    public func captureOutput(_ output: AVCaptureOutput, didOutput sample: CMSampleBuffer, from connection: AVCaptureConnection) {
        guard let buffer = CMSampleBufferGetImageBuffer(sample) else { return }
        let time = CMSampleBufferGetPresentationTimeStamp(sample)
        do {
            try source.pushI420(
                picture: picture(of: buffer),
                rotationDegrees: Self.rotation(UIDevice.current.orientation, front: position == .front),
                captureTimeUs: Int64(CMTimeGetSeconds(time) * 1_000_000))
            picturesPushed += 1
        } catch {
            picturesRefused += 1
        }
    }

    /// How far clockwise the sensor's landscape picture turns to be upright for a phone held so.
    static func rotation(_ orientation: UIDeviceOrientation, front: Bool) -> Int32 {
        switch orientation {
        case .landscapeLeft: return front ? 180 : 0
        case .landscapeRight: return front ? 0 : 180
        case .portraitUpsideDown: return 270
        default: return 90
        }
    }
}
#endif
