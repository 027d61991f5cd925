// All the DFA-compatible patterns of a policy as one Thompson NFA over bytes. Each pattern's
// states are allocated together, after those of every pattern before it, so "the states of
// patterns from k on" is "the states numbered from boundary[k] on": the lazy DFA drops them
// once pattern k has matched.

struct PatternNFA {
    enum Kind: UInt8 {
        /// Consumes a byte in lo...hi.
        case byteRange
        /// Consumes a byte in `sets[aux]`.
        case byteSet
        /// Epsilon to each of `alternatives[aux]`.
        case union
        /// Epsilon to `next` where `look` holds.
        case look
        /// Pattern `aux` has matched.
        case match
        case fail
    }

    struct State {
        var kind: Kind
        var lo: UInt8 = 0
        var hi: UInt8 = 0
        var look: RegexLook = .start
        var next: Int32 = 0
        var aux: Int32 = 0
    }

    /// Beyond this many states a policy is refused (composefs-rs has no limit: it would grind on).
    static let stateLimit = 8_000_000

    private(set) var states: [State] = []
    private(set) var sets: [ByteSet] = []
    private(set) var alternatives: [[Int32]] = []
    /// Each pattern's start state, nil for a pattern not in the NFA.
    private(set) var starts: [Int32?] = []
    /// The first state of each pattern (and of the patterns after it).
    private(set) var boundary: [Int32] = []
    private(set) var looksUsed: Set<RegexLook> = []

    struct TooLarge: Error {}

    /// Adds the next pattern (its number is the count of patterns added before); nil leaves a
    /// gap for a pattern matched elsewhere.
    mutating func add(_ hir: RegexHir?) throws(TooLarge) {
        boundary.append(Int32(states.count))
        guard let hir else {
            starts.append(nil)
            return
        }
        let match = push(State(kind: .match, aux: Int32(starts.count)))
        starts.append(try compile(hir, next: match))
    }

    private mutating func push(_ state: State) -> Int32 {
        states.append(state)
        return Int32(states.count - 1)
    }

    private mutating func union(_ targets: [Int32]) -> Int32 {
        alternatives.append(targets)
        return push(State(kind: .union, aux: Int32(alternatives.count - 1)))
    }

    private mutating func compile(_ hir: RegexHir, next: Int32) throws(TooLarge) -> Int32 {
        if states.count > Self.stateLimit { throw TooLarge() }
        switch hir {
        case .empty:
            return next
        case .fail, .unicodeWordBoundary:
            // Patterns with a Unicode word boundary fail the whole policy before they get here.
            return push(State(kind: .fail))
        case let .bytes(bytes):
            var start = next
            for byte in bytes.reversed() { start = push(State(kind: .byteRange, lo: byte, hi: byte, next: start)) }
            return start
        case let .byteSet(set):
            sets.append(set)
            return push(State(kind: .byteSet, next: next, aux: Int32(sets.count - 1)))
        case let .scalarSet(set):
            var starts: [Int32] = []
            for sequence in UTF8Sequences.of(set) {
                var start = next
                for range in sequence.reversed() {
                    start = push(State(kind: .byteRange, lo: range.lowerBound, hi: range.upperBound, next: start))
                }
                starts.append(start)
            }
            return starts.count == 1 ? starts[0] : union(starts)
        case let .look(look):
            looksUsed.insert(look)
            return push(State(kind: .look, look: look, next: next))
        case let .concat(items):
            var start = next
            for item in items.reversed() { start = try compile(item, next: start) }
            return start
        case let .alternation(items):
            var starts: [Int32] = []
            for item in items { starts.append(try compile(item, next: next)) }
            return union(starts)
        case let .repetition(min, max, sub):
            return try repetition(sub, min: min, max: max, next: next)
        }
    }

    private mutating func repetition(_ sub: RegexHir, min: UInt32, max: UInt32?, next: Int32) throws(TooLarge) -> Int32 {
        var start: Int32
        if let max {
            // The optional copies, each able to stop: (x(x(x)?)?)?.
            start = next
            for _ in 0..<(max - min) {
                let body = try compile(sub, next: start)
                start = union([body, next])
            }
        } else {
            // A loop, entered directly (x*) or through a first copy (x+).
            let loop = union([])
            let body = try compile(sub, next: loop)
            alternatives[Int(states[Int(loop)].aux)] = [body, next]
            if min == 0 { return loop }
            start = body
        }
        let mandatory = max == nil ? min - 1 : min
        for _ in 0..<mandatory { start = try compile(sub, next: start) }
        return start
    }
}

/// The UTF-8 encodings of a set of scalar values, as sequences of byte ranges (one to four),
/// each sequence matching exactly the encodings of a range of scalars.
enum UTF8Sequences {
    static func of(_ set: ScalarSet) -> [[ClosedRange<UInt8>]] {
        var result: [[ClosedRange<UInt8>]] = []
        var pending = set.ranges.reversed().map { ($0.lowerBound, $0.upperBound) }
        while let (low, high) = pending.popLast() {
            // Split where the encoded length changes.
            if let limit = [UInt32(0x7F), 0x7FF, 0xFFFF].first(where: { low <= $0 && $0 < high }) {
                pending.append((limit + 1, high))
                pending.append((low, limit))
                continue
            }
            let length = encodedLength(low)
            // Split until every continuation byte position covers a whole range.
            var split = false
            for index in 1..<max(length, 1) {
                let mask = (UInt32(1) << (6 * UInt32(index))) - 1
                if low & ~mask != high & ~mask {
                    if low & mask != 0 {
                        pending.append(((low | mask) + 1, high))
                        pending.append((low, low | mask))
                        split = true
                        break
                    }
                    if high & mask != mask {
                        pending.append((high & ~mask, high))
                        pending.append((low, (high & ~mask) - 1))
                        split = true
                        break
                    }
                }
            }
            if split { continue }
            let first = encode(low)
            let last = encode(high)
            result.append(zip(first, last).map { $0...$1 })
        }
        return result
    }

    private static func encodedLength(_ value: UInt32) -> Int {
        value <= 0x7F ? 1 : value <= 0x7FF ? 2 : value <= 0xFFFF ? 3 : 4
    }

    private static func encode(_ value: UInt32) -> [UInt8] {
        switch encodedLength(value) {
        case 1: return [UInt8(value)]
        case 2: return [UInt8(0xC0 | value >> 6), UInt8(0x80 | value & 0x3F)]
        case 3: return [UInt8(0xE0 | value >> 12), UInt8(0x80 | value >> 6 & 0x3F), UInt8(0x80 | value & 0x3F)]
        default:
            return [UInt8(0xF0 | value >> 18), UInt8(0x80 | value >> 12 & 0x3F), UInt8(0x80 | value >> 6 & 0x3F), UInt8(0x80 | value & 0x3F)]
        }
    }
}
