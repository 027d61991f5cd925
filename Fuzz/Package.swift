// swift-tools-version: 6.1
// libFuzzer harnesses for the parsers of untrusted input. A separate package so
// the root package's builds and tests never need the fuzzer runtime; run.sh
// builds them with -sanitize=fuzzer,address.
import PackageDescription

let harnessDependencies: [Target.Dependency] = [
    "CLibFuzzer",
    .product(name: "ComposeFS", package: "main"),
    .product(name: "Dumpfile", package: "main"),
]

let package = Package(
    name: "composefs-fuzz",
    dependencies: [.package(path: "..")],
    targets: [
        // Declares LLVMFuzzerRunDriver; the fuzzer runtime itself comes with -sanitize=fuzzer.
        .systemLibrary(name: "CLibFuzzer"),
        .executableTarget(name: "FuzzDumpfile", dependencies: harnessDependencies),
        .executableTarget(name: "FuzzImage", dependencies: harnessDependencies),
        .executableTarget(
            name: "FuzzLayer",
            dependencies: harnessDependencies + [
                .product(name: "OCI", package: "main"), .product(name: "Repository", package: "main"),
            ]),
        .executableTarget(name: "FuzzDocument", dependencies: ["CLibFuzzer", .product(name: "OCI", package: "main")]),
    ]
)
