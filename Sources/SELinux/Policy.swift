// A policy's file contexts compiled as composefs-rs 0.9 compiles them: the specifications of
// file_contexts, .local and .homedirs in that order, the last one first (the last line wins);
// every pattern regex-syntax accepts in one lazy DFA, each other one a PCRE2 pattern of its
// own; the context of the first (highest-priority) pattern that matches, `<<none>>` meaning
// no label.

struct Policy {
    /// Path aliases from the substitutions files (exact paths).
    private let aliases: [PathKey: [UInt8]]
    /// The labels the policy gives, each once.
    let labels: [[UInt8]]
    /// Each pattern's label (an index into `labels`), -1 for `<<none>>`.
    private let labelOfPattern: [Int32]
    let dfa: LazyDFA?
    /// The patterns PCRE2 matches, by priority.
    private let fallbacks: [(index: Int32, pattern: PCRE2Pattern)]

    /// What the lazy DFA may keep before it starts again (composefs-rs's keeps 10 MB).
    static let dfaMemoryBudget = 256 << 20

    /// `specifications` in file order; the problem and where it was met on failure.
    static func compile(
        specifications: [(pattern: String, context: String)], aliases: [[UInt8]: [UInt8]], dfaMemoryBudget: Int = dfaMemoryBudget
    ) throws(SELinuxProblem) -> Policy {
        let prioritized = Array(specifications.reversed())
        var labels: [[UInt8]] = []
        var labelIndex: [String: Int32] = [:]
        let labelOfPattern: [Int32] = prioritized.map { specification in
            guard specification.context != "<<none>>" else { return -1 }
            if let known = labelIndex[specification.context] { return known }
            labels.append(Array(specification.context.utf8))
            labelIndex[specification.context] = Int32(labels.count - 1)
            return Int32(labels.count - 1)
        }

        let translated: [RegexHir?] = prioritized.map { specification in
            try? RegexTranslator.translate(RegexParser.parse(specification.pattern))
        }
        var fallbacks: [(index: Int32, pattern: PCRE2Pattern)] = []
        for (index, hir) in translated.enumerated() where hir == nil {
            let pattern = prioritized[index].pattern
            do {
                fallbacks.append((Int32(index), try PCRE2Pattern(Array(pattern.utf8))))
            } catch {
                throw .patternRejected(pattern: pattern, offset: error.offset, message: error.message)
            }
        }
        if translated.contains(where: { $0?.hasUnicodeWordBoundary == true }) { throw .unicodeWordBoundary }

        var dfa: LazyDFA?
        if translated.contains(where: { $0 != nil }) {
            var nfa = PatternNFA()
            do {
                for hir in translated { try nfa.add(hir) }
            } catch {
                throw .refused("the file contexts' patterns need more than \(PatternNFA.stateLimit) automaton states")
            }
            dfa = LazyDFA(nfa: nfa, memoryBudget: dfaMemoryBudget)
        }
        return Policy(
            aliases: Dictionary(uniqueKeysWithValues: aliases.map { (PathKey(bytes: $0.key), $0.value) }), labels: labels,
            labelOfPattern: labelOfPattern, dfa: dfa, fallbacks: fallbacks)
    }

    /// A path as a dictionary key, hashed all at once (a path is looked up for every file).
    private struct PathKey: Hashable {
        var bytes: [UInt8]

        func hash(into hasher: inout Hasher) { bytes.withUnsafeBytes { hasher.combine(bytes: $0) } }
    }

    /// The path `path` is labelled as, when the substitutions alias it.
    func alias(of path: [UInt8]) -> [UInt8]? {
        aliases.isEmpty ? nil : aliases[PathKey(bytes: path)]
    }

    /// The label of the pattern the DFA found (`dfaMatch`, -1 for none) or of a PCRE2 pattern
    /// of higher priority matching `key` (the path and its type byte); -1 for no label.
    func label(dfaMatch: Int32, key: () -> [UInt8]) -> Int32 {
        var found = dfaMatch
        if !fallbacks.isEmpty {
            let bytes = key()
            for fallback in fallbacks {
                if dfaMatch >= 0 && fallback.index >= dfaMatch { break }
                if fallback.pattern.matches(bytes) {
                    found = fallback.index
                    break
                }
            }
        }
        return found >= 0 ? labelOfPattern[Int(found)] : -1
    }

    /// The label of `path` of type `type` from scratch.
    func label(path: [UInt8], type: UInt8) -> Int32 {
        var dfaMatch: Int32 = -1
        if let dfa {
            dfa.maintain()
            var cursor = dfa.startCursor
            dfa.advance(&cursor, over: path)
            dfa.advance(&cursor, type)
            dfaMatch = dfa.finish(cursor)
        }
        return label(dfaMatch: dfaMatch) { path + [type] }
    }
}
