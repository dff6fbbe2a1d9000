// swift-tools-version:5.9
// Televisit for Swift apps: the generated bindings (TelevisitFFI, over the C module CTelevisitFFI)
// and a small async/await layer (Televisit). Links libtelevisit_ffi, built from the Rust workspace.
import PackageDescription

let package = Package(
    name: "Televisit",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "Televisit", targets: ["Televisit"]),
    ],
    targets: [
        .systemLibrary(name: "CTelevisitFFI", path: "Sources/CTelevisitFFI"),
        .target(
            name: "TelevisitFFI",
            dependencies: ["CTelevisitFFI"],
            path: "Sources/TelevisitFFI",
            linkerSettings: [.linkedLibrary("televisit_ffi")]
        ),
        .target(name: "Televisit", dependencies: ["TelevisitFFI"], path: "Sources/Televisit"),
        // One app lifetime (join, waiting room, close, exit); scripts/test-ios runs it 20 times.
        .executableTarget(
            name: "TelevisitShutdownCheck",
            dependencies: ["Televisit"],
            path: "Sources/TelevisitShutdownCheck"
        ),
        .testTarget(name: "TelevisitTests", dependencies: ["Televisit"], path: "Tests/TelevisitTests"),
    ]
)
