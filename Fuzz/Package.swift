// swift-tools-version: 6.1
// libFuzzer harnesses for the parsers of untrusted input. A separate package so
// the root package's builds and tests never need the fuzzer runtime; run.sh
// builds them with -sanitize=fuzzer,address. The harness bodies are the root
// package's FuzzHarnesses, which its regression tests replay kept inputs through.
import PackageDescription

let package = Package(
    name: "composefs-fuzz",
    // The root package by name, whatever the checkout's directory is called.
    dependencies: [.package(name: "composefs-swift", path: "..")],
    targets: [
        // Declares LLVMFuzzerRunDriver; the fuzzer runtime itself comes with -sanitize=fuzzer.
        .systemLibrary(name: "CLibFuzzer"),
        .target(name: "FuzzDriver", dependencies: ["CLibFuzzer"]),
    ] + ["FuzzDumpfile", "FuzzImage", "FuzzLayer", "FuzzDocument", "FuzzBoot"].map { name in
        .executableTarget(
            name: name,
            dependencies: ["FuzzDriver", .product(name: "FuzzHarnesses", package: "composefs-swift")])
    }
)
