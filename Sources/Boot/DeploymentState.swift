// The per-deployment state composefs-setup-root mounts over the booted image, made where
// composefs-rs 0.9's `prepare-boot` makes it: ROOT/state/deploy/HEX/ with var/, etc/upper/ and
// etc/work/ (0777 less the umask; existing ones kept), ROOT being the parent of the repository
// given with --repo (/sysroot/composefs's parent otherwise: /sysroot), HEX the image id the
// kernel argument names.

import ComposeFS
import ComposeFSBase

public enum DeploymentState {
    /// Where state/ goes for the repository given with --repo (nil: the default repository).
    /// As Rust's `Path::parent`: the path without its last component (repeated slashes and
    /// inner `.` components ignored), "." for a one-component relative path.
    public static func root(repository: String?) throws(BootError) -> String {
        guard let repository else { return "/sysroot" }
        let components = TreeLookup.components(Array(repository.utf8))
        guard let last = components.last, last != .root else {
            throw .destination(path: repository, reason: "the repository path has no parent directory for state/")
        }
        let parent = components.dropLast().map { (component: TreeLookup.Component) -> [UInt8] in
            switch component {
            case .root: []
            case .current: [0x2E]
            case .parent: [0x2E, 0x2E]
            case let .normal(name): name
            }
        }
        if parent == [[]] { return "/" }
        let joined = Array(parent.joined(separator: [UInt8(ascii: "/")]))
        return joined.isEmpty ? "." : String(decoding: joined, as: UTF8.self)
    }

    /// Makes the state directories of the image `argument` boots; returns ROOT/state/deploy/HEX.
    @discardableResult
    public static func create(in root: String, for argument: BootArgument) throws(BootError) -> String {
        let deployment = (root.hasSuffix("/") ? root : root + "/") + "state/deploy/" + argument.id.hex
        var created: [[UInt8]] = []
        for directory in ["var", "etc/upper", "etc/work"] {
            try makeDirectories(Array((deployment + "/" + directory).utf8), created: &created)
        }
        return deployment
    }
}
