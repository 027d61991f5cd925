// The patterns' NFA run as a DFA built while searching, with the result composefs-rs's lazy
// DFA gives for an anchored search of all patterns at once: the lowest-numbered pattern with a
// match starting at the beginning of the key (ending anywhere).
//
// A DFA state is the set of NFA states reached by the bytes so far (before their epsilon
// closure) and what the look-arounds need to know of the last byte. The transition on a byte
// (or the end of the key) takes the closure with both neighbours known, notes the lowest
// pattern that matched there, drops the states of that pattern and every later one (they can
// no longer win), and steps over the byte. Bytes are grouped into classes no pattern tells
// apart. States and transitions are kept until they take more than a memory budget; then all
// are dropped at the start of the next search (`generation` counts the drops).

final class LazyDFA {
    /// One search's progress: its state, and the best pattern matched so far (or -1).
    struct Cursor {
        var state: Int32
        var best: Int32
    }

    private let nfa: PatternNFA
    private let classOf: [UInt8]
    /// Transitions per state: one per byte class, then the end of the key.
    private let stride: Int
    /// What each byte, as the last one, tells the look-arounds.
    private let contextOf: [UInt8]

    private var kernels: [[Int32]] = []
    private var contexts: [UInt8] = []
    private var index: [StateKey: Int32] = [:]
    /// Next state per (state, class); -1 until computed.
    private var next: [Int32] = []
    /// The pattern matched just before the byte (or at the end), -1 for none.
    private var matched: [Int32] = []
    private var memory = 0
    private let memoryBudget: Int
    private(set) var generation = 0

    // Scratch space of the closure.
    private var stamps: [UInt32]
    private var stamp: UInt32 = 0
    private var stack: [Int32] = []
    private var consumers: [Int32] = []

    private static let dead: Int32 = 0
    private(set) var start: Int32 = 1

    private enum Context {
        static let atStart: UInt8 = 1
        static let afterWord: UInt8 = 2
        static let afterLF: UInt8 = 4
        static let afterCR: UInt8 = 8
    }

    private struct StateKey: Hashable {
        var kernel: [Int32]
        var context: UInt8

        func hash(into hasher: inout Hasher) {
            kernel.withUnsafeBytes { hasher.combine(bytes: $0) }
            hasher.combine(context)
        }
    }

    init(nfa: PatternNFA, memoryBudget: Int) {
        self.nfa = nfa
        self.memoryBudget = memoryBudget
        let looks = nfa.looksUsed
        let wordLooks: Set<RegexLook> = [.wordASCII, .notWordASCII, .wordStartASCII, .wordEndASCII, .wordStartHalfASCII, .wordEndHalfASCII]
        let usesWord = !looks.isDisjoint(with: wordLooks)
        let usesLF = !looks.isDisjoint(with: [.startLF, .endLF, .startCRLF, .endCRLF])
        let usesCR = !looks.isDisjoint(with: [.startCRLF, .endCRLF])

        // Class boundaries: every range a state consumes, and the bytes the look-arounds test.
        var boundaries = [Bool](repeating: false, count: 257)
        func mark(_ range: ClosedRange<UInt8>) {
            boundaries[Int(range.lowerBound)] = true
            boundaries[Int(range.upperBound) + 1] = true
        }
        for state in nfa.states where state.kind == .byteRange { mark(state.lo...state.hi) }
        for set in nfa.sets { set.ranges.forEach(mark) }
        if usesWord { RegexTranslator.perlBytes(.word).ranges.forEach(mark) }
        if usesLF { mark(0x0A...0x0A) }
        if usesCR { mark(0x0D...0x0D) }
        var classOf = [UInt8](repeating: 0, count: 256)
        var current: UInt8 = 0
        for byte in 0..<256 {
            if byte > 0 && boundaries[byte] { current += 1 }
            classOf[byte] = current
        }
        self.classOf = classOf
        stride = Int(current) + 2

        contextOf = (0..<256).map { byte in
            var context: UInt8 = 0
            if usesWord && Self.wordBytes.contains(UInt8(byte)) { context |= Context.afterWord }
            if usesLF && byte == 0x0A { context |= Context.afterLF }
            if usesCR && byte == 0x0D { context |= Context.afterCR }
            return context
        }
        stamps = [UInt32](repeating: 0, count: nfa.states.count)
        reset()
    }

    /// Drops every state but the dead one and the start.
    private func reset() {
        kernels = []
        contexts = []
        index = [:]
        next = []
        matched = []
        memory = 0
        _ = addState([], context: 0)
        start = addState(nfa.starts.compactMap { $0 }, context: Context.atStart)
        generation += 1
    }

    private func addState(_ kernel: [Int32], context: UInt8) -> Int32 {
        let key = StateKey(kernel: kernel, context: kernel.isEmpty ? 0 : context)
        if let existing = index[key] { return existing }
        let id = Int32(kernels.count)
        kernels.append(key.kernel)
        contexts.append(key.context)
        index[key] = id
        if key.kernel.isEmpty {
            // The dead state goes nowhere and matches nothing.
            next.append(contentsOf: repeatElement(Self.dead, count: stride))
        } else {
            next.append(contentsOf: repeatElement(-1, count: stride))
        }
        matched.append(contentsOf: repeatElement(-1, count: stride))
        memory += stride * 8 + key.kernel.count * 8 + 64
        return id
    }

    /// Call before a search: drops everything when over budget (cursors then need recomputing).
    func maintain() {
        if memory > memoryBudget { reset() }
    }

    var startCursor: Cursor { Cursor(state: start, best: -1) }

    @inline(__always)
    func advance(_ cursor: inout Cursor, _ byte: UInt8) {
        guard cursor.state != Self.dead else { return }
        let slot = Int(cursor.state) * stride + Int(classOf[Int(byte)])
        if next[slot] < 0 { computeTransition(cursor.state, slot: slot, symbol: Int(byte)) }
        let found = matched[slot]
        if found >= 0 { cursor.best = found }
        cursor.state = next[slot]
    }

    func advance(_ cursor: inout Cursor, over bytes: some Sequence<UInt8>) {
        for byte in bytes {
            if cursor.state == Self.dead { return }
            advance(&cursor, byte)
        }
    }

    /// The result at the end of the key: the lowest pattern that matched anywhere, or -1.
    func finish(_ cursor: Cursor) -> Int32 {
        guard cursor.state != Self.dead else { return cursor.best }
        let slot = Int(cursor.state) * stride + stride - 1
        if next[slot] < 0 { computeTransition(cursor.state, slot: slot, symbol: -1) }
        let found = matched[slot]
        return found >= 0 ? found : cursor.best
    }

    private static let wordBytes = RegexTranslator.perlBytes(.word)

    private func isWordByte(_ byte: Int) -> Bool {
        byte >= 0 && Self.wordBytes.contains(UInt8(byte))
    }

    /// Whether `look` holds between the last byte (as `context` describes it) and `symbol`
    /// (a byte, or -1 for the end).
    private func holds(_ look: RegexLook, context: UInt8, symbol: Int) -> Bool {
        let atStart = context & Context.atStart != 0
        let afterWord = context & Context.afterWord != 0
        let afterLF = context & Context.afterLF != 0
        let afterCR = context & Context.afterCR != 0
        switch look {
        case .start: return atStart
        case .end: return symbol < 0
        case .startLF: return atStart || afterLF
        case .endLF: return symbol < 0 || symbol == 0x0A
        case .startCRLF: return atStart || afterLF || (afterCR && symbol != 0x0A)
        case .endCRLF: return symbol < 0 || symbol == 0x0D || (symbol == 0x0A && !afterCR)
        case .wordASCII: return afterWord != isWordByte(symbol)
        case .notWordASCII: return afterWord == isWordByte(symbol)
        case .wordStartASCII: return !afterWord && isWordByte(symbol)
        case .wordEndASCII: return afterWord && !isWordByte(symbol)
        case .wordStartHalfASCII: return !afterWord
        case .wordEndHalfASCII: return !isWordByte(symbol)
        }
    }

    private func computeTransition(_ from: Int32, slot: Int, symbol: Int) {
        let context = contexts[Int(from)]
        stamp &+= 1
        if stamp == 0 {
            for index in stamps.indices { stamps[index] = 0 }
            stamp = 1
        }
        stack.removeAll(keepingCapacity: true)
        consumers.removeAll(keepingCapacity: true)
        var best = Int32.max
        for state in kernels[Int(from)].reversed() { stack.append(state) }
        nfa.states.withUnsafeBufferPointer { states in
            while let id = stack.popLast() {
                guard stamps[Int(id)] != stamp else { continue }
                stamps[Int(id)] = stamp
                let state = states[Int(id)]
                switch state.kind {
                case .byteRange, .byteSet: consumers.append(id)
                case .union: for target in nfa.alternatives[Int(state.aux)].reversed() { stack.append(target) }
                case .look: if holds(state.look, context: context, symbol: symbol) { stack.append(state.next) }
                case .match: best = min(best, state.aux)
                case .fail: break
                }
            }
        }
        var cutoff = Int32.max
        if best != Int32.max {
            matched[slot] = best
            cutoff = nfa.boundary[Int(best)]
        }
        guard symbol >= 0 else {
            next[slot] = Self.dead
            return
        }
        let byte = UInt8(symbol)
        var targets: [Int32] = []
        for id in consumers where id < cutoff {
            let state = nfa.states[Int(id)]
            let takes = state.kind == .byteRange ? (state.lo...state.hi).contains(byte) : nfa.sets[Int(state.aux)].contains(byte)
            if takes { targets.append(state.next) }
        }
        targets.sort()
        var kernel: [Int32] = []
        kernel.reserveCapacity(targets.count)
        for target in targets where target != kernel.last { kernel.append(target) }
        // Classes share every transition, so the representative's stands for the class.
        next[slot] = addState(kernel, context: contextOf[Int(byte)])
    }
}
