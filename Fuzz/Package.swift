// swift-tools-version:6.1
// SwiftXen's coverage-guided fuzz targets: one executable, `swiftxen-fuzz TARGET [libFuzzer options] [corpus]`,
// with one target per input an untrusted peer controls. A package of its own, depending on the main package
// by path, so the main build never sees the fuzzer: `make fuzz` builds it in release with
// `-sanitize=fuzzer,address -enable-testing` (scripts/fuzz.sh) and runs each target for FUZZ_SECONDS.
import PackageDescription

let package = Package(
    name: "SwiftXenFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "SwiftXen", path: "..")],
    targets: [
        // libFuzzer's entry point, which the sanitizer runtime provides (a header, nothing to link).
        .systemLibrary(name: "CLibFuzzer", path: "Sources/CLibFuzzer"),
        .executableTarget(
            name: "swiftxen-fuzz",
            dependencies: [
                "CLibFuzzer",
                .product(name: "XenCore", package: "SwiftXen"),
                .product(name: "XenStoreProtocol", package: "SwiftXen"),
                .product(name: "XenStoreClient", package: "SwiftXen"),
                .product(name: "XenStoreServer", package: "SwiftXen"),
                .product(name: "NBDProtocol", package: "SwiftXen"),
                .product(name: "SharedRing", package: "SwiftXen"),
                .product(name: "BlkifProtocol", package: "SwiftXen"),
                .product(name: "ConsoleBackend", package: "SwiftXen"),
                .product(name: "DomainUserdata", package: "SwiftXen"),
                .product(name: "NetifProtocol", package: "SwiftXen"),
                .product(name: "Vchan", package: "SwiftXen"),
            ]
        ),
    ]
)
