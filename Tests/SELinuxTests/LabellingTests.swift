// Labelling in-memory trees from their policy: labels written or removed, hard links split,
// aliases, and composefs-rs's refusals when the policy is looked up in the tree.

import ComposeFS
import EROFS
import TestSupport
import Testing

@testable import SELinux

private let label = Array("security.selinux".utf8)

@discardableResult
private func directory(_ parent: Inode, _ name: String) throws -> Inode {
    if let existing = parent.entry(named: Array(name.utf8))?.inode { return existing }
    let inode = Inode(mode: FileMode.directory | 0o755)
    try parent.addEntry(Array(name.utf8), inode)
    return inode
}

/// The directory at a "/"-separated path, made as needed.
private func directories(_ root: Inode, _ path: String) throws -> Inode {
    var current = root
    for name in path.split(separator: "/") { current = try directory(current, String(name)) }
    return current
}

@discardableResult
private func file(_ root: Inode, _ path: String, _ content: String = "", mode: UInt32 = FileMode.regular | 0o644) throws -> Inode {
    let parts = path.split(separator: "/")
    let parent = try directories(root, parts.dropLast().joined(separator: "/"))
    let inode = Inode(mode: mode)
    inode.content = Array(content.utf8)
    inode.size = UInt64(content.utf8.count)
    try parent.addEntry(Array(parts.last!.utf8), inode)
    return inode
}

private func link(_ root: Inode, _ path: String, to inode: Inode) throws {
    let parts = path.split(separator: "/")
    try directories(root, parts.dropLast().joined(separator: "/")).addEntry(Array(parts.last!.utf8), inode)
}

private func lookup(_ root: Inode, _ path: String) -> Inode? {
    var current: Inode? = root
    for name in path.split(separator: "/") { current = current?.entry(named: Array(name.utf8))?.inode }
    return current
}

private func labelOf(_ root: Inode, _ path: String) -> String? {
    lookup(root, path)?.xattr(label).map { String(decoding: $0, as: UTF8.self) }
}

/// A tree with a policy of type "t" made of these files (name → content).
private func treeWithPolicy(_ files: [String: String], config: String = "SELINUX=enforcing\nSELINUXTYPE=t\n") throws -> Inode {
    let root = Inode(mode: FileMode.directory | 0o755)
    try file(root, "etc/selinux/config", config)
    for (name, content) in files { try file(root, "etc/selinux/t/contexts/files/" + name, content) }
    return root
}

private func apply(_ root: Inode) throws -> SELinuxLabels.Outcome {
    try SELinuxLabels.apply(to: root, policy: .tree { $0.content ?? [] })
}

private func refusal(_ root: Inode) -> String? {
    do throws(SELinuxError) {
        _ = try SELinuxLabels.apply(to: root, policy: .tree { $0.content ?? [] })
        return nil
    } catch {
        return error.chain.last
    }
}

@Suite struct LabellingTests {
    @Test func labelsFromThePolicy() throws {
        let root = try treeWithPolicy([
            "file_contexts": "/.*\tu:r:default:s0\n/usr(/.*)?\tu:r:usr:s0\n/usr/bin/.*\t--\tu:r:bin:s0\n/tmp/.*\t<<none>>\n",
            "file_contexts.local": "/usr/bin/local\tu:r:local:s0\n",
            "file_contexts.homedirs": "/home/[^/]+\t-d\tu:r:home:s0\n",
        ])
        try file(root, "usr/bin/ls")
        try file(root, "usr/bin/local")
        try file(root, "usr/bin/sh", mode: FileMode.symlink | 0o777)
        try file(root, "tmp/x")
        lookup(root, "tmp/x")?.replaceXattrs(with: {
            var list = XattrList()
            try? list.set(label, Array("stale".utf8), external: true)
            return list
        }())
        try directories(root, "home/user")
        let outcome = try apply(root)
        #expect(outcome.labelled && outcome.copies.isEmpty)
        #expect(labelOf(root, "") == "u:r:default:s0")
        #expect(labelOf(root, "usr") == "u:r:usr:s0")
        #expect(labelOf(root, "usr/bin/ls") == "u:r:bin:s0")
        #expect(labelOf(root, "usr/bin/sh") == "u:r:usr:s0")
        #expect(labelOf(root, "usr/bin/local") == "u:r:local:s0")
        #expect(labelOf(root, "tmp/x") == nil)
        #expect(labelOf(root, "home/user") == "u:r:home:s0")
        // No NUL after the context.
        #expect(lookup(root, "usr")?.xattr(label)?.last == UInt8(ascii: "0"))
    }

    @Test func withoutAPolicyEveryLabelGoes() throws {
        for config in [nil, "SELINUX=disabled\n"] {
            let root = Inode(mode: FileMode.directory | 0o755)
            if let config { try file(root, "etc/selinux/config", config) }
            let labelled = try file(root, "usr/f")
            try labelled.setXattr(label, Array("x".utf8))
            try root.setXattr(label, Array("x".utf8))
            let outcome = try apply(root)
            #expect(!outcome.labelled)
            #expect(labelOf(root, "usr/f") == nil && labelOf(root, "") == nil)
        }
    }

    @Test func hardLinksWithAnotherLabelAreSplit() throws {
        let root = try treeWithPolicy(["file_contexts": "/.*\tu:r:default:s0\n/a/.*\tu:r:a:s0\n/b/.*\tu:r:b:s0\n"])
        let shared = try file(root, "a/1", "content")
        try link(root, "a/2", to: shared)
        try link(root, "b/1", to: shared)
        try link(root, "b/2", to: shared)
        try link(root, "c", to: shared)
        let outcome = try apply(root)
        // The first name keeps the inode; each other name with another label gets a copy of its own.
        #expect(lookup(root, "a/1") === shared && lookup(root, "a/2") === shared)
        #expect(outcome.copies.count == 3)
        #expect(outcome.copies.allSatisfy { $0.original === shared && $0.copy.content == shared.content })
        #expect(lookup(root, "b/1") !== lookup(root, "b/2"))
        #expect(labelOf(root, "a/1") == "u:r:a:s0" && labelOf(root, "b/2") == "u:r:b:s0" && labelOf(root, "c") == "u:r:default:s0")
        ContainerRoot.countLinks(root)
        #expect(shared.nlink == 2 && lookup(root, "b/1")?.nlink == 1)
    }

    @Test func aliasesLabelWholeSubtrees() throws {
        let root = try treeWithPolicy([
            "file_contexts": "/.*\tu:r:default:s0\n/usr/lib(/.*)?\tu:r:lib:s0\n/usr/lib/ld\\.so\tu:r:ld:s0\n/x/y\tu:r:xy:s0\n",
            "file_contexts.subs": "/lib /usr/lib\n/usr/lib/sub /x\n",
            "file_contexts.subs_dist": "/lib /usr/lib\n",
        ])
        try file(root, "lib/ld.so")
        try file(root, "lib/sub/y")
        try file(root, "usr/lib/sub/y")
        _ = try apply(root)
        #expect(labelOf(root, "lib") == "u:r:lib:s0")
        #expect(labelOf(root, "lib/ld.so") == "u:r:ld:s0")
        // Below an alias, paths are the alias's: /lib/sub is /usr/lib/sub, itself an alias of /x.
        #expect(labelOf(root, "lib/sub/y") == "u:r:xy:s0")
        #expect(labelOf(root, "usr/lib/sub/y") == "u:r:xy:s0")
    }

    @Test func lookupsInTheTreeAsComposefsRSRefusesThem() throws {
        let symlinked = Inode(mode: FileMode.directory | 0o755)
        try file(symlinked, "etc/selinux", mode: FileMode.symlink | 0o777)
        #expect(refusal(symlinked) == "Directory entry \"selinux\" is not a subdirectory")

        let configDirectory = Inode(mode: FileMode.directory | 0o755)
        try directories(configDirectory, "etc/selinux/config")
        #expect(refusal(configDirectory) == "Directory entry \"config\" is a directory")

        let configFIFO = Inode(mode: FileMode.directory | 0o755)
        try file(configFIFO, "etc/selinux/config", mode: FileMode.fifo | 0o644)
        #expect(refusal(configFIFO) == "Directory entry \"config\" is not a regular file")

        #expect(refusal(try treeWithPolicy([:])) == "Directory entry \"t\" does not exist")
        #expect(refusal(try treeWithPolicy([:], config: "SELINUXTYPE=./t\n")) == "Invalid filename \"./t\"")
        #expect(refusal(try treeWithPolicy([:], config: "SELINUXTYPE=t/../t\n")) == "Invalid filename \"t/../t\"")
        #expect(refusal(try treeWithPolicy(["x": ""], config: "SELINUXTYPE=t/\"q\"\n")) == "Directory entry \"t/\\\"q\\\"\" does not exist")

        let noContexts = try treeWithPolicy([:])
        try directories(noContexts, "etc/selinux/t/contexts")
        #expect(refusal(noContexts) == "Directory entry \"contexts/files\" does not exist")

        let missing = try treeWithPolicy(["file_contexts.local": "/ x\n"])
        #expect(refusal(missing) == "SELinux policy is missing mandatory file_contexts file")

        let linked = try treeWithPolicy([:])
        try file(linked, "etc/selinux/t/contexts/files/file_contexts", mode: FileMode.symlink | 0o777)
        #expect(refusal(linked) == "Directory entry \"file_contexts\" is not a regular file")

        // A type with a leading "/" and doubled separators still names etc/selinux/t.
        let slashes = try treeWithPolicy(["file_contexts": "/.*\tu:r:d:s0\n"], config: "SELINUXTYPE=/t//\n")
        _ = try apply(slashes)
        #expect(labelOf(slashes, "etc") == "u:r:d:s0")
    }

    @Test func theDFAStartingAgainChangesNoLabel() throws {
        // Each directory keeps where the DFA was after its path: dropping every state before
        // each lookup must give the same labels as keeping them all.
        func build() throws -> Inode {
            let root = try treeWithPolicy([
                "file_contexts": "/.*\tu:r:d:s0\n/a(/.*)?\tu:r:a:s0\n/a/b[0-9]+(/.*)?\t-d\tu:r:b:s0\n/[ab]/.*x\t--\tu:r:x:s0\n/c/.*/y\tu:r:y:s0\n",
                "file_contexts.subs": "/c/q /a\n",
            ])
            var generator = SplitMix64(seed: 3)
            for index in 0..<300 {
                let depth = generator.int(in: 1...4)
                let path = (0..<depth).map { _ in ["a", "b", "c", "q", "b1", "b22", "x", "yx", "y"][generator.int(below: 9)] }.joined(separator: "/")
                guard lookup(root, path) == nil else { continue }
                try file(root, path + "-\(index)", "x")
            }
            return root
        }
        func labels(_ root: Inode) -> [String] {
            var result: [String] = []
            func visit(_ directory: Inode, _ path: String) {
                result.append(path + " " + (directory.xattr(label).map { String(decoding: $0, as: UTF8.self) } ?? "-"))
                for entry in directory.entries {
                    let child = path + "/" + String(decoding: entry.name, as: UTF8.self)
                    if entry.inode.isDirectory { visit(entry.inode, child) } else { result.append(child + " " + (labelOf(entry.inode) ?? "-")) }
                }
            }
            visit(root, "")
            return result
        }
        func labelOf(_ inode: Inode) -> String? { inode.xattr(label).map { String(decoding: $0, as: UTF8.self) } }
        let kept = try build()
        _ = try SELinuxLabels.apply(to: kept, policy: .tree { $0.content ?? [] })
        let dropped = try build()
        _ = try SELinuxLabels.apply(to: dropped, policy: .tree { $0.content ?? [] }, dfaMemoryBudget: 0)
        #expect(labels(kept) == labels(dropped))
        #expect(Set(labels(kept).map { $0.split(separator: " ").last }).count >= 4)
    }

    @Test func errorsReadAsComposefsRSPrintsThem() throws {
        let root = try treeWithPolicy(["file_contexts": "/.*\tu:r:d:s0\n/x -q y\n"])
        #expect(throws: SELinuxError.self) { try apply(root) }
        do throws(SELinuxError) {
            _ = try SELinuxLabels.apply(to: root, policy: .tree { $0.content ?? [] })
        } catch {
            #expect(
                error.description == """
                    Applying SELinux labels to filesystem

                    Caused by:
                        0: Building SELinux policy
                        1: SELinux spec file file_contexts
                        2: 1: invalid type code -q
                    """)
        }
        let subs = try treeWithPolicy(["file_contexts": "/.*\tu:r:d:s0\n", "file_contexts.subs_dist": "/a\n"])
        #expect(refusal(subs) == "0: missing original path")
    }
}
