// What a parsed pattern means, as regex-syntax 0.8 translates it for composefs-rs (Unicode mode
// off unless a (?u) turns it on, bytes not required to be UTF-8, NUL the line terminator):
// byte strings, byte or Unicode-scalar classes, look-around assertions, repetitions. A pattern
// whose translation fails (a non-ASCII character in a byte class, \d in Unicode mode, case
// folding in Unicode mode — composefs-rs's build has no Unicode tables) goes to PCRE2.

/// The look-around assertions the lazy DFA knows.
enum RegexLook: UInt8, CaseIterable {
    case start, end
    /// (?m)^ and (?m)$: the line terminator is "\n" here (the NFA's), although `.` excludes NUL.
    case startLF, endLF
    case startCRLF, endCRLF
    case wordASCII, notWordASCII, wordStartASCII, wordEndASCII, wordStartHalfASCII, wordEndHalfASCII
}

indirect enum RegexHir {
    case empty
    /// Matches nothing (an empty class).
    case fail
    case bytes([UInt8])
    case byteSet(ByteSet)
    /// Unicode scalar values, matched as their UTF-8 encodings.
    case scalarSet(ScalarSet)
    case look(RegexLook)
    /// A Unicode word boundary, which composefs-rs's lazy DFA cannot build.
    case unicodeWordBoundary
    case repetition(min: UInt32, max: UInt32?, RegexHir)
    case concat([RegexHir])
    case alternation([RegexHir])

    /// Whether it can only match the empty string (regex-syntax's `maximum_len() == Some(0)`).
    var matchesOnlyEmpty: Bool {
        switch self {
        case .empty, .look, .unicodeWordBoundary: true
        case let .bytes(bytes): bytes.isEmpty
        case .fail, .byteSet, .scalarSet: false
        case let .repetition(_, max, sub): max == 0 || sub.matchesOnlyEmpty
        case let .concat(items), let .alternation(items): items.allSatisfy(\.matchesOnlyEmpty)
        }
    }

    /// Whether a Unicode word boundary is anywhere in it.
    var hasUnicodeWordBoundary: Bool {
        switch self {
        case .unicodeWordBoundary: true
        case let .repetition(_, _, sub): sub.hasUnicodeWordBoundary
        case let .concat(items), let .alternation(items): items.contains { $0.hasUnicodeWordBoundary }
        default: false
        }
    }
}

/// A set of bytes.
struct ByteSet: Equatable {
    private var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    static let all: ByteSet = {
        var set = ByteSet()
        set.insert(0...255)
        return set
    }()

    init() {}

    init(_ ranges: [ClosedRange<UInt8>]) {
        for range in ranges { insert(range) }
    }

    static func == (a: ByteSet, b: ByteSet) -> Bool { a.words == b.words }

    func contains(_ byte: UInt8) -> Bool {
        let bit = UInt64(1) << UInt64(byte & 63)
        switch byte >> 6 {
        case 0: return words.0 & bit != 0
        case 1: return words.1 & bit != 0
        case 2: return words.2 & bit != 0
        default: return words.3 & bit != 0
        }
    }

    mutating func insert(_ byte: UInt8) {
        let bit = UInt64(1) << UInt64(byte & 63)
        switch byte >> 6 {
        case 0: words.0 |= bit
        case 1: words.1 |= bit
        case 2: words.2 |= bit
        default: words.3 |= bit
        }
    }

    mutating func insert(_ range: ClosedRange<UInt8>) {
        for byte in range { insert(byte) }
    }

    var isEmpty: Bool { words == (0, 0, 0, 0) }

    func union(_ other: ByteSet) -> ByteSet { combine(other) { $0 | $1 } }
    func intersection(_ other: ByteSet) -> ByteSet { combine(other) { $0 & $1 } }
    func subtracting(_ other: ByteSet) -> ByteSet { combine(other) { $0 & ~$1 } }
    func symmetricDifference(_ other: ByteSet) -> ByteSet { combine(other) { $0 ^ $1 } }
    var complement: ByteSet { ByteSet.all.subtracting(self) }

    private func combine(_ other: ByteSet, _ operation: (UInt64, UInt64) -> UInt64) -> ByteSet {
        var result = ByteSet()
        result.words = (
            operation(words.0, other.words.0), operation(words.1, other.words.1), operation(words.2, other.words.2),
            operation(words.3, other.words.3)
        )
        return result
    }

    /// ASCII letters with their other case (regex-syntax's byte-class case folding).
    var caseFolded: ByteSet {
        var result = self
        for byte in UInt8(ascii: "A")...UInt8(ascii: "Z") where contains(byte) { result.insert(byte + 32) }
        for byte in UInt8(ascii: "a")...UInt8(ascii: "z") where contains(byte) { result.insert(byte - 32) }
        return result
    }

    /// Its bytes as maximal ranges, in order.
    var ranges: [ClosedRange<UInt8>] {
        var result: [ClosedRange<UInt8>] = []
        var start: Int?
        for value in 0...256 {
            let inside = value < 256 && contains(UInt8(value))
            if inside, start == nil { start = value }
            if !inside, let first = start {
                result.append(UInt8(first)...UInt8(value - 1))
                start = nil
            }
        }
        return result
    }
}

/// A set of Unicode scalar values, as sorted disjoint ranges (surrogates never included).
struct ScalarSet: Equatable {
    private(set) var ranges: [ClosedRange<UInt32>] = []

    static let all = ScalarSet([0...0xD7FF, 0xE000...0x10FFFF])

    init() {}

    init(_ ranges: [ClosedRange<UInt32>]) {
        self.ranges = ranges
        normalize()
    }

    var isEmpty: Bool { ranges.isEmpty }

    private mutating func normalize() {
        var pieces: [ClosedRange<UInt32>] = []
        for range in ranges {
            // Surrogates are no scalar values.
            if range.lowerBound < 0xD800 { pieces.append(range.lowerBound...min(range.upperBound, 0xD7FF)) }
            if range.upperBound > 0xDFFF { pieces.append(max(range.lowerBound, 0xE000)...range.upperBound) }
        }
        pieces.sort { $0.lowerBound < $1.lowerBound }
        var merged: [ClosedRange<UInt32>] = []
        for piece in pieces {
            if let last = merged.last, piece.lowerBound <= last.upperBound &+ 1 {
                merged[merged.count - 1] = last.lowerBound...max(last.upperBound, piece.upperBound)
            } else {
                merged.append(piece)
            }
        }
        ranges = merged
    }

    func union(_ other: ScalarSet) -> ScalarSet { ScalarSet(ranges + other.ranges) }

    var complement: ScalarSet {
        var result: [ClosedRange<UInt32>] = []
        var next: UInt32 = 0
        for range in ranges {
            if range.lowerBound > next { result.append(next...range.lowerBound - 1) }
            next = range.upperBound + 1
        }
        if next <= 0x10FFFF { result.append(next...0x10FFFF) }
        return ScalarSet(result)
    }

    func intersection(_ other: ScalarSet) -> ScalarSet { complement.union(other.complement).complement }
    func subtracting(_ other: ScalarSet) -> ScalarSet { intersection(other.complement) }
    func symmetricDifference(_ other: ScalarSet) -> ScalarSet { subtracting(other).union(other.subtracting(self)) }
}

/// The flags in force at a point of the pattern.
private struct ActiveFlags {
    var caseInsensitive = false
    var multiLine = false
    var dotMatchesNewLine = false
    var unicode = false
    var crlf = false

    mutating func apply(_ flags: RegexFlags) {
        if let value = flags.caseInsensitive { caseInsensitive = value }
        if let value = flags.multiLine { multiLine = value }
        if let value = flags.dotMatchesNewLine { dotMatchesNewLine = value }
        if let value = flags.unicode { unicode = value }
        if let value = flags.crlf { crlf = value }
    }
}

struct RegexTranslator {
    private var flags = ActiveFlags()

    static func translate(_ ast: RegexAST) throws(RegexSyntaxError) -> RegexHir {
        var translator = RegexTranslator()
        return try translator.translate(ast)
    }

    private static let lineFeed = UInt8(ascii: "\n")
    private static let carriageReturn = UInt8(ascii: "\r")

    private mutating func translate(_ ast: RegexAST) throws(RegexSyntaxError) -> RegexHir {
        switch ast.node {
        case .empty:
            return .empty
        case let .flags(set):
            // Until the end of the enclosing group, later alternatives included.
            flags.apply(set)
            return .empty
        case let .literal(literal):
            return try self.literal(literal)
        case .dot:
            if flags.unicode {
                if flags.dotMatchesNewLine { return .scalarSet(.all) }
                let excluded: [ClosedRange<UInt32>] = flags.crlf ? [0x0A...0x0A, 0x0D...0x0D] : [0...0]
                return .scalarSet(ScalarSet.all.intersection(ScalarSet(excluded).complement))
            }
            if flags.dotMatchesNewLine { return .byteSet(.all) }
            let excluded = flags.crlf ? ByteSet([Self.lineFeed...Self.lineFeed, Self.carriageReturn...Self.carriageReturn]) : ByteSet([0...0])
            return .byteSet(excluded.complement)
        case let .assertion(kind):
            return assertion(kind)
        case let .perlClass(kind, negated):
            if flags.unicode { throw RegexSyntaxError() }
            let set = Self.perlBytes(kind)
            return .byteSet(negated ? set.complement : set)
        case let .bracketed(negated, set):
            if flags.unicode {
                var scalars = try scalarSet(set)
                if flags.caseInsensitive && !scalars.isEmpty { throw RegexSyntaxError() }
                if negated { scalars = scalars.complement }
                return scalars.isEmpty ? .fail : .scalarSet(scalars)
            }
            var bytes = try byteSet(set)
            if flags.caseInsensitive { bytes = bytes.caseFolded }
            if negated { bytes = bytes.complement }
            return bytes.isEmpty ? .fail : .byteSet(bytes)
        case .repetition(var min, var max, let sub):
            let translated = try translate(sub)
            // As regex-syntax builds repetitions: of the empty string at most one, none is empty.
            if translated.matchesOnlyEmpty {
                min = Swift.min(min, 1)
                max = Swift.min(max ?? 1, 1)
            }
            if min == 0 && max == 0 { return .empty }
            return .repetition(min: min, max: max, translated)
        case let .group(groupFlags, sub):
            let saved = flags
            if let groupFlags { flags.apply(groupFlags) }
            let translated = try translate(sub)
            flags = saved
            return translated
        case let .alternation(items):
            var result: [RegexHir] = []
            for item in items { result.append(try translate(item)) }
            return .alternation(result)
        case let .concat(items):
            var result: [RegexHir] = []
            for item in items { result.append(try translate(item)) }
            return .concat(result)
        }
    }

    private func literal(_ literal: RegexLiteral) throws(RegexSyntaxError) -> RegexHir {
        let scalar = literal.scalar
        if flags.unicode {
            // Case folding needs the Unicode tables composefs-rs's build lacks.
            if flags.caseInsensitive { throw RegexSyntaxError() }
            return .bytes(Array(String(scalar).utf8))
        }
        if literal.isHexByte && scalar.value > 0x7F { return .bytes([UInt8(scalar.value)]) }
        if flags.caseInsensitive, scalar.isASCII, scalar.properties.isAlphabetic {
            return .byteSet(ByteSet([UInt8(scalar.value)...UInt8(scalar.value)]).caseFolded)
        }
        return .bytes(Array(String(scalar).utf8))
    }

    private func assertion(_ kind: RegexAssertion) -> RegexHir {
        switch kind {
        case .startLine: return .look(flags.multiLine ? (flags.crlf ? .startCRLF : .startLF) : .start)
        case .endLine: return .look(flags.multiLine ? (flags.crlf ? .endCRLF : .endLF) : .end)
        case .startText: return .look(.start)
        case .endText: return .look(.end)
        default: break
        }
        if flags.unicode { return .unicodeWordBoundary }
        switch kind {
        case .wordBoundary: return .look(.wordASCII)
        case .notWordBoundary: return .look(.notWordASCII)
        case .wordStart: return .look(.wordStartASCII)
        case .wordEnd: return .look(.wordEndASCII)
        case .wordStartHalf: return .look(.wordStartHalfASCII)
        default: return .look(.wordEndHalfASCII)
        }
    }

    static func perlBytes(_ kind: PerlClassKind) -> ByteSet {
        switch kind {
        case .digit: asciiBytes(.digit)
        case .space: asciiBytes(.space)
        case .word: asciiBytes(.word)
        }
    }

    static func asciiBytes(_ kind: ASCIIClassKind) -> ByteSet {
        ByteSet(asciiRanges(kind).map { UInt8($0.lowerBound)...UInt8($0.upperBound) })
    }

    static func asciiRanges(_ kind: ASCIIClassKind) -> [ClosedRange<UInt32>] {
        switch kind {
        case .alnum: [0x30...0x39, 0x41...0x5A, 0x61...0x7A]
        case .alpha: [0x41...0x5A, 0x61...0x7A]
        case .ascii: [0x00...0x7F]
        case .blank: [0x09...0x09, 0x20...0x20]
        case .cntrl: [0x00...0x1F, 0x7F...0x7F]
        case .digit: [0x30...0x39]
        case .graph: [0x21...0x7E]
        case .lower: [0x61...0x7A]
        case .print: [0x20...0x7E]
        case .punct: [0x21...0x2F, 0x3A...0x40, 0x5B...0x60, 0x7B...0x7E]
        case .space: [0x09...0x0D, 0x20...0x20]
        case .upper: [0x41...0x5A]
        case .word: [0x30...0x39, 0x41...0x5A, 0x5F...0x5F, 0x61...0x7A]
        case .xdigit: [0x30...0x39, 0x41...0x46, 0x61...0x66]
        }
    }

    // MARK: Byte classes

    /// A class literal's byte: an ASCII character or a \xNN; anything else is refused.
    private func classByte(_ literal: RegexLiteral) throws(RegexSyntaxError) -> UInt8 {
        guard literal.isHexByte || literal.scalar.isASCII else { throw RegexSyntaxError() }
        return UInt8(literal.scalar.value)
    }

    private func byteSet(_ set: ClassSet) throws(RegexSyntaxError) -> ByteSet {
        switch set.node {
        case let .item(item):
            return try byteSet(item)
        case let .operation(operation, lhs, rhs):
            var left = try byteSet(lhs)
            var right = try byteSet(rhs)
            if flags.caseInsensitive {
                left = left.caseFolded
                right = right.caseFolded
            }
            switch operation {
            case .intersection: return left.intersection(right)
            case .difference: return left.subtracting(right)
            case .symmetricDifference: return left.symmetricDifference(right)
            }
        }
    }

    private func byteSet(_ item: ClassItem) throws(RegexSyntaxError) -> ByteSet {
        switch item.node {
        case .empty:
            return ByteSet()
        case let .literal(literal):
            let byte = try classByte(literal)
            return ByteSet([byte...byte])
        case let .range(low, high):
            return ByteSet([try classByte(low)...classByte(high)])
        case let .ascii(kind, negated):
            var set = Self.asciiBytes(kind)
            if flags.caseInsensitive { set = set.caseFolded }
            return negated ? set.complement : set
        case let .perl(kind, negated):
            let set = Self.perlBytes(kind)
            return negated ? set.complement : set
        case let .bracketed(negated, inner):
            var set = try byteSet(inner)
            if flags.caseInsensitive { set = set.caseFolded }
            return negated ? set.complement : set
        case let .union(items):
            var set = ByteSet()
            for item in items { set = set.union(try byteSet(item)) }
            return set
        }
    }

    // MARK: Unicode classes

    private func scalarSet(_ set: ClassSet) throws(RegexSyntaxError) -> ScalarSet {
        switch set.node {
        case let .item(item):
            return try scalarSet(item)
        case let .operation(operation, lhs, rhs):
            let left = try scalarSet(lhs)
            let right = try scalarSet(rhs)
            if flags.caseInsensitive && (!left.isEmpty || !right.isEmpty) { throw RegexSyntaxError() }
            switch operation {
            case .intersection: return left.intersection(right)
            case .difference: return left.subtracting(right)
            case .symmetricDifference: return left.symmetricDifference(right)
            }
        }
    }

    private func scalarSet(_ item: ClassItem) throws(RegexSyntaxError) -> ScalarSet {
        switch item.node {
        case .empty:
            return ScalarSet()
        case let .literal(literal):
            return ScalarSet([literal.scalar.value...literal.scalar.value])
        case let .range(low, high):
            return ScalarSet([low.scalar.value...high.scalar.value])
        case let .ascii(kind, negated):
            if flags.caseInsensitive { throw RegexSyntaxError() }
            let set = ScalarSet(Self.asciiRanges(kind))
            return negated ? set.complement : set
        case .perl:
            throw RegexSyntaxError()
        case let .bracketed(negated, inner):
            let set = try scalarSet(inner)
            if flags.caseInsensitive && !set.isEmpty { throw RegexSyntaxError() }
            return negated ? set.complement : set
        case let .union(items):
            var set = ScalarSet()
            for item in items { set = set.union(try scalarSet(item)) }
            return set
        }
    }
}
