// Which way the new root's tree is built: detached from Linux 6.15 on, staged before.

import Testing

@testable import SetupRoot

@Suite struct KernelVersionTests {
    @Test(arguments: [
        ("6.15.0", true), ("6.18.44-fc-v669", true), ("7.0.1", true), ("6.14.11-300.fc42.x86_64", false),
        ("5.14.0-427.13.1.el9_4.x86_64", false), ("6", false), ("", false), ("99999999999999999999999.1", true),
    ])
    func detachedTreesFrom615(release: String, supported: Bool) {
        #expect(DetachedTree.isSupported(kernelRelease: Array(release.utf8)) == supported)
    }
}
