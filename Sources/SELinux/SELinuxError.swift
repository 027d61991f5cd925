// Why labelling a bootable tree failed, told as composefs-rs 0.9's cfsctl tells it: its
// messages, wrapped in the same contexts ("Applying SELinux labels to filesystem", then
// "Building SELinux policy", then the file being read), rendered as anyhow renders a chain.

import ComposeFSBase

/// Where in composefs-rs's `selabel` a failure happened: each stage adds its context.
public enum SELinuxStage: Sendable, Equatable {
    /// Finding /etc/selinux and reading its config.
    case configuration
    /// Opening the policy's files, compiling its patterns.
    case policy
    /// Reading a file_contexts file (`file_contexts`, `.local`, `.homedirs`).
    case specFile(String)
    /// Reading a substitutions file (`file_contexts.subs`, `.subs_dist`).
    case substitutionsFile(String)
    /// Writing a label on a file of the tree (only ours: composefs-rs has no limit to hit).
    case labelling(path: String)
}

/// What went wrong.
public enum SELinuxProblem: Error, Sendable, Equatable {
    /// A system call failed with this errno (shown as Rust shows an OS error).
    case system(Int32)
    /// A line that is not UTF-8.
    case notUTF8
    /// A tree lookup composefs-rs refuses, with its message (`Directory entry "x" is a directory`).
    case treeEntry(String)
    case missingFileContexts
    /// A bad line, numbered from 0 as composefs-rs numbers them.
    case badLine(Int, String)
    /// A pattern neither regex engine accepts: PCRE2's error at `offset`.
    case patternRejected(pattern: String, offset: Int, message: String)
    /// A pattern with a Unicode word boundary, which composefs-rs's lazy DFA refuses.
    case unicodeWordBoundary
    /// A policy file the caller could not read (its own message).
    case unreadable(String)
    /// Something composefs-rs would hang or run out of memory on, refused here instead.
    case refused(String)
}

public struct SELinuxError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Whether the policy came from a directory on disk (`cfsctl compute-id`) rather than the
    /// tree (`create-image`, OCI images): composefs-rs's outermost context says which.
    public var fromDirectory: Bool
    public var stage: SELinuxStage
    public var problem: SELinuxProblem

    public init(fromDirectory: Bool, stage: SELinuxStage, problem: SELinuxProblem) {
        self.fromDirectory = fromDirectory
        self.stage = stage
        self.problem = problem
    }

    /// The contexts and the cause, outermost first.
    public var chain: [String] {
        var chain = [fromDirectory ? "Applying SELinux labels to filesystem from directory" : "Applying SELinux labels to filesystem"]
        switch stage {
        case .configuration: break
        case .policy: chain.append("Building SELinux policy")
        case let .specFile(name): chain += ["Building SELinux policy", "SELinux spec file \(name)"]
        case let .substitutionsFile(name):
            chain += ["Building SELinux policy", "SELinux subs file \(name)", "Processing SELinux substitutions file"]
        case let .labelling(path): chain.append("labelling \(path)")
        }
        switch problem {
        case let .system(code): chain.append("\(SystemError.message(code)) (os error \(code))")
        case .notUTF8: chain.append("stream did not contain valid UTF-8")
        case let .treeEntry(message): chain.append(message)
        case .missingFileContexts: chain.append("SELinux policy is missing mandatory file_contexts file")
        case let .badLine(line, reason): chain.append("\(line): \(reason)")
        case let .patternRejected(pattern, offset, message):
            chain += ["Compiling PCRE2 regex: \(pattern)", "PCRE2: error compiling pattern at offset \(offset): \(message)"]
        case .unicodeWordBoundary:
            chain.append(
                "unsupported regex feature for DFAs: cannot build lazy DFAs for regexes with Unicode word boundaries; "
                    + "switch to ASCII word boundaries, or heuristically enable Unicode word boundaries or use a different regex engine")
        case let .unreadable(message): chain.append(message)
        case let .refused(message): chain.append(message)
        }
        return chain
    }

    /// The chain as cfsctl prints it after "Error: ".
    public var description: String {
        let chain = self.chain
        guard chain.count > 1 else { return chain[0] }
        if chain.count == 2 { return chain[0] + "\n\nCaused by:\n    " + chain[1] }
        return chain[0] + "\n\nCaused by:" + chain.dropFirst().enumerated().map { "\n    \($0.offset): \($0.element)" }.joined()
    }
}
