// composefs-rs 0.9's `selabel` on a tree: with a policy, every inode gets the label of its path
// (security.selinux, the context's bytes without a NUL) or loses its label (no pattern, or
// `<<none>>`); without one, every label goes.
//
// The walk is composefs-rs's: the root ("/", a directory), then each directory's entries in
// name order, into each subdirectory as it comes. A path listed in the substitutions is
// labelled as its alias, and so is everything below it (the alias is the path its entries are
// named under). A file's key is its path and a type byte (- d l b c p s). A hard link whose
// path gets another label than the one its inode got first is split off: it becomes a copy
// of the inode with its own label (one copy per such path).

import ComposeFS
import ComposeFSBase
import EROFS

public enum SELinuxLabels {
    /// security.selinux.
    public static let xattr = OverlayXattr.selinux

    public struct Outcome {
        /// Whether a policy labelled the tree (false: it has none, and no label is left).
        public var labelled: Bool
        /// The hard links split off, each a copy of the inode it named (which keeps its first
        /// name): a copy's content is its original's.
        public var copies: [(original: Inode, copy: Inode)]
    }

    /// Labels `root` (already made bootable) from the policy `source` finds in it.
    public static func apply(to root: Inode, policy source: PolicySource) throws(SELinuxError) -> Outcome {
        try apply(to: root, policy: source, dfaMemoryBudget: Policy.dfaMemoryBudget)
    }

    /// With the DFA's memory budget given (tests make it start again all the time).
    static func apply(to root: Inode, policy source: PolicySource, dfaMemoryBudget: Int) throws(SELinuxError) -> Outcome {
        guard let files = try PolicyReader(source: source, root: root).read() else {
            ContainerRoot.forEachInode(root) { removeLabel($0) }
            return Outcome(labelled: false, copies: [])
        }
        let policy: Policy
        do {
            policy = try Policy.compile(specifications: files.specifications, aliases: files.aliases, dfaMemoryBudget: dfaMemoryBudget)
        } catch {
            throw SELinuxError(fromDirectory: source.isDirectory, stage: .policy, problem: error)
        }
        var walk = Walk(policy: policy, fromDirectory: source.isDirectory)
        try walk.run(root)
        return Outcome(labelled: true, copies: walk.copies)
    }

    static func removeLabel(_ inode: Inode) {
        if inode.xattr(xattr) != nil { inode.filterXattrs { $0 != xattr } }
    }

    /// The type byte of a file's key.
    static func typeByte(_ inode: Inode) -> UInt8 {
        switch inode.fileType {
        case FileMode.directory: UInt8(ascii: "d")
        case FileMode.symlink: UInt8(ascii: "l")
        case FileMode.blockDevice: UInt8(ascii: "b")
        case FileMode.characterDevice: UInt8(ascii: "c")
        case FileMode.fifo: UInt8(ascii: "p")
        case FileMode.socket: UInt8(ascii: "s")
        default: UInt8(ascii: "-")
        }
    }
}

private struct Walk {
    let policy: Policy
    let fromDirectory: Bool
    private(set) var copies: [(original: Inode, copy: Inode)] = []
    /// The label each non-directory inode got first (-1 for none).
    private var firstLabels: [ObjectIdentifier: Int32] = [:]

    init(policy: Policy, fromDirectory: Bool) {
        self.policy = policy
        self.fromDirectory = fromDirectory
    }

    /// A directory being walked: its entries' paths start with `prefix`, for which the DFA is
    /// at `cursor` (valid for the DFA's generation `generation`).
    private struct Frame {
        let directory: Inode
        var next = 0
        let prefix: [UInt8]
        var cursor: LazyDFA.Cursor?
        var generation = 0
    }

    mutating func run(_ root: Inode) throws(SELinuxError) {
        let slash = UInt8(ascii: "/")
        try setLabel(root, policy.label(path: [slash], type: UInt8(ascii: "d")), path: [slash])
        var stack = [Frame(directory: root, prefix: [slash])]
        while let top = stack.indices.last {
            let index = stack[top].next
            guard index < stack[top].directory.entries.count else {
                stack.removeLast()
                continue
            }
            stack[top].next += 1
            let entry = stack[top].directory.entries[index]
            let path = stack[top].prefix + entry.name
            let alias = policy.alias(of: path)
            let effective = alias ?? path
            let type = SELinuxLabels.typeByte(entry.inode)

            // The DFA after the path: from the directory's cursor, or from the start for an alias.
            var cursor: LazyDFA.Cursor?
            if let dfa = policy.dfa {
                dfa.maintain()
                var advanced: LazyDFA.Cursor
                if alias != nil {
                    advanced = dfa.startCursor
                    dfa.advance(&advanced, over: effective)
                } else {
                    if let known = stack[top].cursor, stack[top].generation == dfa.generation {
                        advanced = known
                    } else {
                        advanced = dfa.startCursor
                        dfa.advance(&advanced, over: stack[top].prefix)
                        stack[top].cursor = advanced
                        stack[top].generation = dfa.generation
                    }
                    dfa.advance(&advanced, over: entry.name)
                }
                cursor = advanced
            }
            var dfaMatch: Int32 = -1
            if let dfa = policy.dfa, var typed = cursor {
                dfa.advance(&typed, type)
                dfaMatch = dfa.finish(typed)
            }
            let label = policy.label(dfaMatch: dfaMatch) { effective + [type] }

            if entry.inode.isDirectory {
                try setLabel(entry.inode, label, path: effective)
                // As Rust's PathBuf::push: a separator unless the path (an alias) ends with one.
                let separated = effective.last != slash
                var frame = Frame(directory: entry.inode, prefix: separated ? effective + [slash] : effective)
                if let dfa = policy.dfa, var below = cursor {
                    if separated { dfa.advance(&below, slash) }
                    frame.cursor = below
                    frame.generation = dfa.generation
                }
                stack.append(frame)
                continue
            }
            var labelled = entry.inode
            let identity = ObjectIdentifier(entry.inode)
            if let first = firstLabels[identity] {
                if first != label {
                    labelled = Self.copy(of: entry.inode)
                    stack[top].directory.replaceEntryInode(at: index, with: labelled, isHardlink: false)
                    copies.append((entry.inode, labelled))
                    firstLabels[ObjectIdentifier(labelled)] = label
                }
            } else {
                firstLabels[identity] = label
            }
            try setLabel(labelled, label, path: effective)
        }
    }

    private func setLabel(_ inode: Inode, _ label: Int32, path: [UInt8]) throws(SELinuxError) {
        guard label >= 0 else {
            SELinuxLabels.removeLabel(inode)
            return
        }
        do { try inode.setXattr(SELinuxLabels.xattr, policy.labels[Int(label)], external: false) } catch {
            throw SELinuxError(fromDirectory: fromDirectory, stage: .labelling(path: displayBytes(path)), problem: .refused(error.description))
        }
    }

    /// A new inode with everything of `inode` (a non-directory).
    private static func copy(of inode: Inode) -> Inode {
        let copy = Inode(mode: inode.mode)
        copy.nlink = inode.nlink
        copy.uid = inode.uid
        copy.gid = inode.gid
        copy.rdev = inode.rdev
        copy.size = inode.size
        copy.mtime = inode.mtime
        copy.payload = inode.payload
        copy.content = inode.content
        copy.digest = inode.digest
        copy.replaceXattrs(with: inode.xattrList)
        return copy
    }
}
