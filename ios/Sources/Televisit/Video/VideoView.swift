#if canImport(UIKit)
import UIKit

/// Shows the peer's camera: on every display refresh it takes the newest decoded picture from the
/// core's `VideoSink` and shows it fitted on black (never cropped: the doctor sees everything the
/// patient shows). A software path through an RGBA image.
public final class VideoView: UIView {
    private var sink: VideoSink?
    private var link: CADisplayLink?

    /// The last picture shown, with its capture time for lip sync.
    public private(set) var lastPicture: DecodedPicture?

    public override init(frame: CGRect) {
        super.init(frame: frame)
        backgroundColor = .black
        layer.contentsGravity = .resizeAspect
    }

    required init?(coder: NSCoder) { fatalError("VideoView is made in code") }

    /// Starts showing `sink`'s pictures.
    public func attach(_ sink: VideoSink) {
        self.sink = sink
        link?.invalidate()
        link = CADisplayLink(target: self, selector: #selector(refresh))
        link?.add(to: .main, forMode: .common)
    }

    /// Stops showing pictures.
    public func detach() {
        link?.invalidate()
        link = nil
        sink = nil
    }

    @objc private func refresh() {
        guard let sink else { return }
        var newest: DecodedPicture?
        while let next = try? sink.pull() { newest = next }
        guard let newest, let image = Self.image(of: newest.picture) else { return }
        lastPicture = newest
        layer.contents = image
    }

    /// The picture as a `CGImage`.
    static func image(of picture: VideoPicture) -> CGImage? {
        guard let rgba = try? rgbaPixels(picture: picture), let provider = CGDataProvider(data: rgba as CFData) else { return nil }
        let width = Int(picture.width)
        return CGImage(
            width: width, height: Int(picture.height), bitsPerComponent: 8, bitsPerPixel: 32, bytesPerRow: width * 4,
            space: CGColorSpaceCreateDeviceRGB(), bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.noneSkipLast.rawValue),
            provider: provider, decode: nil, shouldInterpolate: true, intent: .defaultIntent)
    }
}
#endif
