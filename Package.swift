// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "composefs-swift",
    products: [
        .executable(name: "mkcomposefs", targets: ["mkcomposefs"]),
        .executable(name: "composefs-info", targets: ["composefs-info"]),
        .executable(name: "composefs-dump", targets: ["composefs-dump"]),
        .executable(name: "composefs-fuse", targets: ["composefs-fuse"]),
        .executable(name: "mount.composefs", targets: ["mount.composefs"]),
        .executable(name: "cfsctl", targets: ["cfsctl"]),
        .executable(name: "composefs-setup-root", targets: ["composefs-setup-root"]),
        .library(name: "ComposeFSBase", targets: ["ComposeFSBase"]),
        .library(name: "FsVerity", targets: ["FsVerity"]),
        .library(name: "EROFS", targets: ["EROFS"]),
        .library(name: "ComposeFS", targets: ["ComposeFS"]),
        .library(name: "ComposeFSBuild", targets: ["ComposeFSBuild"]),
        .library(name: "Dumpfile", targets: ["Dumpfile"]),
        .library(name: "ComposeFSMount", targets: ["ComposeFSMount"]),
        .library(name: "Repository", targets: ["Repository"]),
        .library(name: "OCI", targets: ["OCI"]),
        .library(name: "Boot", targets: ["Boot"]),
        .library(name: "SELinux", targets: ["SELinux"]),
        // The fuzz harness bodies, for the libFuzzer package in Fuzz/.
        .library(name: "FuzzHarnesses", targets: ["FuzzHarnesses"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
    ],
    targets: [
        // Syscalls and ioctls Swift cannot reach directly (ioctls, variadic syscall()).
        .target(name: "CComposeFSSys"),
        // What every module shares: system errors, owned descriptors and whole-buffer I/O,
        // little-endian records, hex, JSON.
        .target(name: "ComposeFSBase", dependencies: ["CComposeFSSys"]),
        // OpenSSL's libcrypto, for SHA-256 and SHA-512.
        .systemLibrary(name: "CLibcrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .target(name: "FsVerity", dependencies: ["ComposeFSBase", "CComposeFSSys", "CLibcrypto"]),
        // Every EROFS on-disk record, and the validated random-access view of an image.
        .target(name: "EROFS", dependencies: ["ComposeFSBase"]),
        // The tree, the image writer and the image reader; no host file I/O.
        .target(name: "ComposeFS", dependencies: ["EROFS", "FsVerity", "ComposeFSBase"]),
        // Trees of directories on disk: scanning, content digests, object stores, output files.
        .target(name: "ComposeFSBuild", dependencies: ["ComposeFS", "EROFS", "FsVerity", "ComposeFSBase", "CComposeFSSys", "SELinux"]),
        // libpcre2-8, for the file_contexts patterns only PCRE2 accepts (as composefs-rs does).
        .systemLibrary(name: "CPCRE2", pkgConfig: "libpcre2-8", providers: [.apt(["libpcre2-dev"])]),
        // SELinux labels of bootable images from the image's own policy, as composefs-rs 0.9 applies them.
        .target(name: "SELinux", dependencies: ["ComposeFS", "EROFS", "ComposeFSBase", "CPCRE2"]),
        .target(name: "Dumpfile", dependencies: ["ComposeFS", "EROFS", "FsVerity", "ComposeFSBase"]),
        .target(name: "ComposeFSMount", dependencies: ["EROFS", "FsVerity", "ComposeFSBase", "CComposeFSSys"]),
        // libzstd, for the compressed sections of split streams.
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .target(
            name: "Repository",
            dependencies: ["ComposeFS", "ComposeFSBuild", "FsVerity", "ComposeFSBase", "CComposeFSSys", "CZstd"]),
        // zlib, for gzip-compressed OCI layers.
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // OCI images: sources (layouts, archives, registries), tar layers as split streams, rootfs merging.
        .target(
            name: "OCI",
            dependencies: [
                "Repository", "ComposeFS", "EROFS", "FsVerity", "ComposeFSBase", "CZstd", "CZlib", "SELinux",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]),
        // Boot entries: PE/UKI sections, os-release, BLS Type 1 entries, the kernels of an image's
        // tree and writing them to a boot directory, as composefs-rs 0.9's composefs-boot.
        .target(name: "Boot", dependencies: ["ComposeFS", "ComposeFSBuild", "Repository", "FsVerity", "ComposeFSBase"]),
        // libfuse3 glue (option parsing, the session loop); the file system is ComposeFSFuse.
        .target(name: "CFuseShim", linkerSettings: [.linkedLibrary("fuse3")]),
        .target(name: "ComposeFSFuse", dependencies: ["CFuseShim", "EROFS", "FsVerity", "ComposeFSBase"]),
        // The varlink wire protocol: messages, connections with descriptor passing, the server.
        .target(name: "CVarlinkSys"),
        .target(name: "Varlink", dependencies: ["CVarlinkSys", "ComposeFSBase"]),
        // cfsctl's varlink service (org.composefs.Repository and org.composefs.Oci), and the
        // composefs-rs JSON documents it shares with cfsctl's --json output.
        .target(
            name: "ComposeFSVarlink",
            dependencies: [
                "Varlink", "Repository", "OCI", "ComposeFS", "ComposeFSMount", "ComposeFSCLI", "FsVerity", "ComposeFSBase",
            ]),
        // What the fuzzers in Fuzz/ run on each input, shared with the tests that replay the inputs they kept.
        .target(
            name: "FuzzHarnesses",
            dependencies: ["Boot", "ComposeFS", "ComposeFSBase", "Dumpfile", "EROFS", "FsVerity", "OCI", "Repository"]),
        // What the executables share: error reporting, output, progress, running async work.
        .target(
            name: "ComposeFSCLI",
            dependencies: ["ComposeFSBase", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(
            name: "mkcomposefs",
            dependencies: [
                "ComposeFS", "ComposeFSBuild", "ComposeFSBase", "Dumpfile", "FsVerity", "ComposeFSCLI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(
            name: "composefs-info",
            dependencies: [
                "ComposeFS", "ComposeFSBuild", "ComposeFSBase", "Dumpfile", "FsVerity", "ComposeFSCLI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(
            name: "composefs-dump",
            dependencies: [
                "ComposeFS", "ComposeFSBuild", "ComposeFSBase", "Dumpfile", "FsVerity", "ComposeFSCLI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(
            name: "mount.composefs",
            dependencies: [
                "ComposeFSMount", "ComposeFSCLI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(name: "composefs-fuse", dependencies: ["ComposeFSFuse"]),
        .executableTarget(
            name: "cfsctl",
            dependencies: [
                "Boot", "Repository", "OCI", "ComposeFS", "ComposeFSBuild", "ComposeFSBase", "ComposeFSMount", "Dumpfile", "EROFS",
                "FsVerity", "ComposeFSCLI", "ComposeFSVarlink", "Varlink",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        // The initramfs helper: the image named on the kernel command line becomes the root.
        .target(
            name: "SetupRoot",
            dependencies: ["ComposeFS", "ComposeFSBase", "ComposeFSMount", "FsVerity", "Repository", "CComposeFSSys"]),
        // Goes into every initramfs, so in release it is one static executable needing nothing
        // but the kernel (no Foundation, no argument parser), with unused code dropped.
        .executableTarget(
            name: "composefs-setup-root",
            dependencies: ["SetupRoot"],
            linkerSettings: [
                .unsafeFlags(
                    ["-static-executable", "-Xlinker", "--gc-sections", "-Xlinker", "--strip-all"],
                    .when(configuration: .release))
            ]),
        // Helpers shared by the test targets (a reproducible random generator, a scratch repository).
        .target(name: "TestSupport", dependencies: ["Repository"], path: "Tests/TestSupport"),
        .testTarget(name: "SELinuxTests", dependencies: ["SELinux", "ComposeFS", "EROFS", "TestSupport"]),
        .testTarget(name: "FsVerityTests", dependencies: ["FsVerity", "ComposeFSBase", "TestSupport"]),
        .testTarget(name: "RepositoryTests", dependencies: ["Repository", "FsVerity", "TestSupport"]),
        .testTarget(name: "SetupRootTests", dependencies: ["SetupRoot"]),
        .testTarget(
            name: "OCITests", dependencies: ["OCI", "Repository", "ComposeFS", "ComposeFSBase", "FsVerity", "FuzzHarnesses", "TestSupport"],
            // Fuzzer inputs, read through #filePath.
            exclude: ["FuzzRegressions"]),
        .testTarget(
            name: "ComposeFSTests",
            dependencies: [
                "ComposeFS", "Dumpfile", "EROFS", "FsVerity", "FuzzHarnesses", "TestSupport", .product(name: "Crypto", package: "swift-crypto"),
            ],
            // Fuzzer inputs, read through #filePath.
            exclude: ["FuzzRegressions"]),
        .testTarget(
            name: "BootTests", dependencies: ["Boot", "ComposeFS", "ComposeFSBase", "FsVerity", "FuzzHarnesses", "TestSupport"],
            // Fuzzer inputs, read through #filePath.
            exclude: ["FuzzRegressions"]),
        // End-to-end tests of the executables.
        .testTarget(
            name: "ToolTests",
            dependencies: [
                "CComposeFSSys", "ComposeFS", "ComposeFSMount", "Dumpfile", "FsVerity", "TestSupport", "mkcomposefs", "composefs-info", "composefs-dump",
                "composefs-fuse",
                "mount.composefs", "cfsctl", "Varlink", .product(name: "Crypto", package: "swift-crypto"),
            ]),
    ]
)
