#if canImport(Network)
import Network

/// Tells the call when the phone's network changes (Wi-Fi ↔ cellular), so it restarts ICE and
/// reconnects signaling at once instead of waiting for timeouts.
public final class NetworkWatcher: @unchecked Sendable {
    private let monitor = NWPathMonitor()
    private let call: TelevisitCall
    private var interfaces: [NWInterface.InterfaceType]?

    public init(call: TelevisitCall) { self.call = call }

    /// Starts watching the path the system routes internet traffic on.
    public func start() {
        monitor.pathUpdateHandler = { [weak self] path in
            guard let self else { return }
            let now = path.availableInterfaces.map(\.type)
            defer { self.interfaces = now }
            if let before = self.interfaces, before.first != now.first || path.status != .satisfied {
                try? self.call.networkChanged()
            }
        }
        monitor.start(queue: DispatchQueue(label: "televisit-network"))
    }

    /// Stops watching.
    public func stop() { monitor.cancel() }
}
#endif
