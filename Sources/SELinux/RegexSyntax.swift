// The regular expression syntax composefs-rs's lazy DFA accepts: that of Rust's regex-syntax
// 0.8 as composefs-rs configures it (no Unicode mode, bytes not required to be UTF-8, NUL as
// the line terminator, nesting limited to 250). A pattern this parser refuses is one
// composefs-rs hands to PCRE2 instead, so acceptance must be exactly regex-syntax's:
// - escapes: meta characters and any other ASCII punctuation stand for themselves; \a \f \t \n
//   \r \v; \xNN, \x{…}, \uNNNN, \u{…}, \UNNNNNNNN, \U{…}; \d \s \w and their negations; \A \z
//   \b \B \< \> \b{start} \b{end} \b{start-half} \b{end-half}; \p and \P (never usable here,
//   composefs-rs's build has no Unicode tables); a digit (backreference/octal) is an error;
// - groups (…), (?:…), (?P<name>…), (?<name>…) with unique names, flags (?imsUuxR-…) and
//   (?flags:…); look-around is an error;
// - classes […] and [^…] with ranges, nested classes, [:ascii:] classes inside a class,
//   && -- ~~ operations, a leading ] or -s literal;
// - repetitions ? * + {n} {n,} {n,m} with an optional lazy ?, applicable to anything but
//   nothing or a flag group; `{` must start a valid counted repetition;
// - x mode: white space and # comments skipped where regex-syntax skips them.
// The tree is checked for depth as regex-syntax does; parsing stops as soon as the depth is
// over the limit, so no tree built here is deep.

/// The flags a group or flag directive sets; nil leaves a flag as it was.
struct RegexFlags: Equatable {
    var caseInsensitive: Bool?
    var multiLine: Bool?
    var dotMatchesNewLine: Bool?
    var unicode: Bool?
    var crlf: Bool?
    var ignoreWhitespace: Bool?
}

/// A literal character; `isHexByte` for the \xNN form, which (outside Unicode mode) stands
/// for the byte NN rather than the character.
struct RegexLiteral {
    var scalar: Unicode.Scalar
    var isHexByte = false
}

enum RegexAssertion {
    case startLine, endLine, startText, endText
    case wordBoundary, notWordBoundary, wordStart, wordEnd, wordStartHalf, wordEndHalf
}

enum PerlClassKind { case digit, space, word }

enum ASCIIClassKind: String {
    case alnum, alpha, ascii, blank, cntrl, digit, graph, lower, print, punct, space, upper, word, xdigit
}

enum ClassOperation { case intersection, difference, symmetricDifference }

/// A parsed pattern; `height` is the nesting depth regex-syntax's limit counts.
struct RegexAST {
    indirect enum Node {
        case empty
        case flags(RegexFlags)
        case literal(RegexLiteral)
        case dot
        case assertion(RegexAssertion)
        case perlClass(PerlClassKind, negated: Bool)
        case bracketed(negated: Bool, ClassSet)
        case repetition(min: UInt32, max: UInt32?, RegexAST)
        /// A group; `flags` for a non-capturing group's (?flags:…).
        case group(flags: RegexFlags?, RegexAST)
        case alternation([RegexAST])
        case concat([RegexAST])
    }

    var node: Node
    var height: Int

    static func leaf(_ node: Node) -> RegexAST { RegexAST(node: node, height: 0) }
}

/// What a bracketed class holds: items, or an operation on two sets.
struct ClassSet {
    indirect enum Node {
        case item(ClassItem)
        case operation(ClassOperation, ClassSet, ClassSet)
    }

    var node: Node
    var height: Int
}

struct ClassItem {
    indirect enum Node {
        case empty
        case literal(RegexLiteral)
        case range(RegexLiteral, RegexLiteral)
        case ascii(ASCIIClassKind, negated: Bool)
        case perl(PerlClassKind, negated: Bool)
        case bracketed(negated: Bool, ClassSet)
        case union([ClassItem])
    }

    var node: Node
    var height: Int

    static func leaf(_ node: Node) -> ClassItem { ClassItem(node: node, height: 0) }
}

/// Why a pattern is not one regex-syntax accepts (which kind does not matter: any sends the
/// pattern to PCRE2).
struct RegexSyntaxError: Error {}

struct RegexParser {
    static let nestLimit = 250

    private let chars: [Unicode.Scalar]
    private var position = 0
    private var ignoreWhitespace = false
    private var captureNames: Set<String> = []
    private var groups: [GroupFrame] = []
    private var classes: [ClassFrame] = []
    private var openGroups = 0
    private var openClasses = 0

    private enum GroupFrame {
        case group(before: [RegexAST], flags: RegexFlags?, ignoreWhitespace: Bool)
        case alternation([RegexAST])
    }

    private enum ClassFrame {
        case open(before: [ClassItem], negated: Bool)
        case operation(ClassOperation, ClassSet)
    }

    /// A primitive: what may stand alone or (some of it) in a class.
    private enum Primitive {
        case literal(RegexLiteral)
        case assertion(RegexAssertion)
        case dot
        case perl(PerlClassKind, negated: Bool)
    }

    static func parse(_ pattern: String) throws(RegexSyntaxError) -> RegexAST {
        var parser = RegexParser(chars: Array(pattern.unicodeScalars))
        return try parser.parse()
    }

    private init(chars: [Unicode.Scalar]) { self.chars = chars }

    // MARK: Position

    private var isEOF: Bool { position == chars.count }
    private var char: Unicode.Scalar { chars[position] }

    /// Moves to the next character; whether there is one.
    @discardableResult
    private mutating func bump() -> Bool {
        if isEOF { return false }
        position += 1
        return !isEOF
    }

    private mutating func bumpIf(_ prefix: String) -> Bool {
        let scalars = Array(prefix.unicodeScalars)
        guard chars.count - position >= scalars.count, Array(chars[position..<position + scalars.count]) == scalars else { return false }
        position += scalars.count
        return true
    }

    private mutating func bumpAndBumpSpace() -> Bool {
        guard bump() else { return false }
        bumpSpace()
        return !isEOF
    }

    /// In x mode, past white space and comments.
    private mutating func bumpSpace() {
        guard ignoreWhitespace else { return }
        while !isEOF {
            if PolicyText.isWhitespace(char) {
                bump()
            } else if char == "#" {
                bump()
                while !isEOF {
                    let c = char
                    bump()
                    if c == "\n" { break }
                }
            } else {
                break
            }
        }
    }

    private func peek() -> Unicode.Scalar? {
        position + 1 < chars.count ? chars[position + 1] : nil
    }

    /// The next character, in x mode after white space and (as regex-syntax does it) comments.
    private func peekSpace() -> Unicode.Scalar? {
        guard ignoreWhitespace else { return peek() }
        guard !isEOF else { return nil }
        var start = position + 1
        var inComment = false
        var index = start
        while index < chars.count {
            let c = chars[index]
            if PolicyText.isWhitespace(c) {
                // skipped
            } else if !inComment && c == "#" {
                inComment = true
            } else if inComment && c == "\n" {
                inComment = false
            } else {
                start = index
                break
            }
            index += 1
        }
        return start < chars.count ? chars[start] : nil
    }

    // MARK: Structure

    private mutating func parse() throws(RegexSyntaxError) -> RegexAST {
        var concat: [RegexAST] = []
        while true {
            bumpSpace()
            if isEOF { break }
            switch char {
            case "(": concat = try pushGroup(concat)
            case ")": concat = try popGroup(concat)
            case "|": concat = try pushAlternate(concat)
            case "[": concat.append(try parseSetClass())
            case "?": concat = try parseUncountedRepetition(concat, min: 0, max: 1)
            case "*": concat = try parseUncountedRepetition(concat, min: 0, max: nil)
            case "+": concat = try parseUncountedRepetition(concat, min: 1, max: nil)
            case "{": concat = try parseCountedRepetition(concat)
            default: concat.append(try ast(of: parsePrimitive()))
            }
        }
        let ast = try popGroupEnd(concat)
        try checkDepth(ast.height)
        return ast
    }

    private func checkDepth(_ height: Int) throws(RegexSyntaxError) {
        if height > Self.nestLimit { throw RegexSyntaxError() }
    }

    private func ast(of primitive: Primitive) -> RegexAST {
        switch primitive {
        case let .literal(literal): .leaf(.literal(literal))
        case let .assertion(kind): .leaf(.assertion(kind))
        case .dot: .leaf(.dot)
        case let .perl(kind, negated): .leaf(.perlClass(kind, negated: negated))
        }
    }

    private func concatenation(_ items: [RegexAST]) throws(RegexSyntaxError) -> RegexAST {
        switch items.count {
        case 0: return .leaf(.empty)
        case 1: return items[0]
        default:
            let height = 1 + (items.map(\.height).max() ?? 0)
            try checkDepth(height)
            return RegexAST(node: .concat(items), height: height)
        }
    }

    private func alternation(_ items: [RegexAST]) throws(RegexSyntaxError) -> RegexAST {
        let height = 1 + (items.map(\.height).max() ?? 0)
        try checkDepth(height)
        return RegexAST(node: .alternation(items), height: height)
    }

    private mutating func pushAlternate(_ concat: [RegexAST]) throws(RegexSyntaxError) -> [RegexAST] {
        let branch = try concatenation(concat)
        if case let .alternation(branches)? = groups.last {
            groups[groups.count - 1] = .alternation(branches + [branch])
        } else {
            groups.append(.alternation([branch]))
        }
        bump()
        return []
    }

    private mutating func pushGroup(_ concat: [RegexAST]) throws(RegexSyntaxError) -> [RegexAST] {
        switch try parseGroup() {
        case let .setFlags(flags):
            if let x = flags.ignoreWhitespace { ignoreWhitespace = x }
            return concat + [.leaf(.flags(flags))]
        case let .group(flags):
            groups.append(.group(before: concat, flags: flags, ignoreWhitespace: ignoreWhitespace))
            // Each open group will be a level of nesting (or the pattern is unclosed).
            openGroups += 1
            if openGroups > Self.nestLimit { throw RegexSyntaxError() }
            if let x = flags?.ignoreWhitespace { ignoreWhitespace = x }
            return []
        }
    }

    private mutating func popGroup(_ inner: [RegexAST]) throws(RegexSyntaxError) -> [RegexAST] {
        var branches: [RegexAST]?
        if case let .alternation(found)? = groups.last {
            branches = found
            groups.removeLast()
        }
        guard case let .group(before, flags, savedIgnoreWhitespace)? = groups.popLast() else { throw RegexSyntaxError() }
        openGroups -= 1
        ignoreWhitespace = savedIgnoreWhitespace
        bump()
        var sub = try concatenation(inner)
        if let branches { sub = try alternation(branches + [sub]) }
        let height = sub.height + 1
        try checkDepth(height)
        return before + [RegexAST(node: .group(flags: flags, sub), height: height)]
    }

    private mutating func popGroupEnd(_ concat: [RegexAST]) throws(RegexSyntaxError) -> RegexAST {
        let last = try concatenation(concat)
        switch groups.popLast() {
        case nil: return last
        case let .alternation(branches)?:
            guard groups.isEmpty else { throw RegexSyntaxError() }
            return try alternation(branches + [last])
        case .group?: throw RegexSyntaxError()
        }
    }

    private enum GroupStart {
        case setFlags(RegexFlags)
        case group(RegexFlags?)
    }

    private mutating func parseGroup() throws(RegexSyntaxError) -> GroupStart {
        bump()
        bumpSpace()
        if bumpIf("?=") || bumpIf("?!") || bumpIf("?<=") || bumpIf("?<!") { throw RegexSyntaxError() }
        if bumpIf("?P<") || bumpIf("?<") {
            try parseCaptureName()
            return .group(nil)
        }
        if bumpIf("?") {
            if isEOF { throw RegexSyntaxError() }
            let (flags, count) = try parseFlags()
            let end = char
            bump()
            if end == ")" {
                // `(?)` is a repetition missing its operand.
                if count == 0 { throw RegexSyntaxError() }
                return .setFlags(flags)
            }
            return .group(flags)
        }
        return .group(nil)
    }

    private mutating func parseCaptureName() throws(RegexSyntaxError) {
        if isEOF { throw RegexSyntaxError() }
        let start = position
        while true {
            if char == ">" { break }
            guard Self.isCaptureCharacter(char, first: position == start) else { throw RegexSyntaxError() }
            if !bump() { break }
        }
        if isEOF { throw RegexSyntaxError() }
        let name = String(String.UnicodeScalarView(chars[start..<position]))
        bump()
        guard !name.isEmpty, captureNames.insert(name).inserted else { throw RegexSyntaxError() }
    }

    /// Rust's `is_alphabetic` (and `is_alphanumeric`) for capture names.
    private static func isCaptureCharacter(_ c: Unicode.Scalar, first: Bool) -> Bool {
        if c == "_" || c.properties.isAlphabetic { return true }
        if first { return false }
        switch c.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return c == "." || c == "[" || c == "]"
        }
    }

    /// Flags up to the `:` or `)` (left current); how many items there were.
    private mutating func parseFlags() throws(RegexSyntaxError) -> (RegexFlags, Int) {
        var flags = RegexFlags()
        var seen = Set<Unicode.Scalar>()
        var enable = true
        var lastWasNegation = false
        while char != ":" && char != ")" {
            guard seen.insert(char).inserted else { throw RegexSyntaxError() }
            if char == "-" {
                enable = false
                lastWasNegation = true
            } else {
                lastWasNegation = false
                switch char {
                case "i": flags.caseInsensitive = enable
                case "m": flags.multiLine = enable
                case "s": flags.dotMatchesNewLine = enable
                // Greediness changes no match, only where one ends.
                case "U": break
                case "u": flags.unicode = enable
                case "R": flags.crlf = enable
                case "x": flags.ignoreWhitespace = enable
                default: throw RegexSyntaxError()
                }
            }
            if !bump() { throw RegexSyntaxError() }
        }
        if lastWasNegation { throw RegexSyntaxError() }
        return (flags, seen.count)
    }

    // MARK: Repetition

    /// The expression a repetition operator applies to (the last one), and what precedes it.
    private func repeated(_ concat: [RegexAST]) throws(RegexSyntaxError) -> (operand: RegexAST, rest: [RegexAST]) {
        guard let operand = concat.last else { throw RegexSyntaxError() }
        switch operand.node {
        case .empty, .flags: throw RegexSyntaxError()
        default: return (operand, Array(concat.dropLast()))
        }
    }

    private mutating func parseUncountedRepetition(
        _ concat: [RegexAST], min: UInt32, max: UInt32?
    ) throws(RegexSyntaxError) -> [RegexAST] {
        let (operand, rest) = try repeated(concat)
        if bump() && char == "?" { bump() }
        let height = operand.height + 1
        try checkDepth(height)
        return rest + [RegexAST(node: .repetition(min: min, max: max, operand), height: height)]
    }

    private mutating func parseCountedRepetition(_ concat: [RegexAST]) throws(RegexSyntaxError) -> [RegexAST] {
        let (operand, rest) = try repeated(concat)
        guard bumpAndBumpSpace() else { throw RegexSyntaxError() }
        let first = parseDecimal()
        if isEOF { throw RegexSyntaxError() }
        let min: UInt32
        let max: UInt32?
        if char == "," {
            guard bumpAndBumpSpace() else { throw RegexSyntaxError() }
            guard let low = first else { throw RegexSyntaxError() }
            min = low
            if char != "}" {
                guard let high = parseDecimal() else { throw RegexSyntaxError() }
                max = high
            } else {
                max = nil
            }
        } else {
            guard let count = first else { throw RegexSyntaxError() }
            (min, max) = (count, count)
        }
        if isEOF || char != "}" { throw RegexSyntaxError() }
        if bumpAndBumpSpace() && char == "?" { bump() }
        if let max, min > max { throw RegexSyntaxError() }
        let height = operand.height + 1
        try checkDepth(height)
        return rest + [RegexAST(node: .repetition(min: min, max: max, operand), height: height)]
    }

    /// A decimal number with white space around it (always allowed here); nil when there are
    /// no digits or the number does not fit 32 bits.
    private mutating func parseDecimal() -> UInt32? {
        while !isEOF && PolicyText.isWhitespace(char) { bump() }
        var digits: [UInt8] = []
        while !isEOF && ("0"..."9").contains(char) {
            digits.append(UInt8(char.value) - 0x30)
            _ = bumpAndBumpSpace()
        }
        while !isEOF && PolicyText.isWhitespace(char) { _ = bumpAndBumpSpace() }
        guard !digits.isEmpty else { return nil }
        var value: UInt32 = 0
        for digit in digits {
            let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times.addingReportingOverflow(UInt32(digit))
            if overflow1 || overflow2 { return nil }
            value = sum
        }
        return value
    }

    // MARK: Primitives

    private mutating func parsePrimitive() throws(RegexSyntaxError) -> Primitive {
        switch char {
        case "\\": return try parseEscape()
        case ".":
            bump()
            return .dot
        case "^":
            bump()
            return .assertion(.startLine)
        case "$":
            bump()
            return .assertion(.endLine)
        default:
            let c = char
            bump()
            return .literal(RegexLiteral(scalar: c))
        }
    }

    /// regex-syntax's meta characters (escaped, they stand for themselves).
    private static func isMeta(_ c: Unicode.Scalar) -> Bool {
        "\\.+*?()|[]{}^$#&-~".unicodeScalars.contains(c)
    }

    /// Also standing for themselves when escaped: ASCII other than letters, digits, < and >.
    private static func isEscapeable(_ c: Unicode.Scalar) -> Bool {
        if isMeta(c) { return true }
        guard c.isASCII else { return false }
        switch c {
        case "0"..."9", "A"..."Z", "a"..."z", "<", ">": return false
        default: return true
        }
    }

    private mutating func parseEscape() throws(RegexSyntaxError) -> Primitive {
        guard bump() else { throw RegexSyntaxError() }
        let c = char
        switch c {
        case "0"..."9":
            // A backreference (octal is off).
            throw RegexSyntaxError()
        case "x", "u", "U":
            return .literal(try parseHex())
        case "p", "P":
            // A Unicode class: composefs-rs's build has none, and in byte mode they are refused.
            throw RegexSyntaxError()
        case "d", "s", "w", "D", "S", "W":
            bump()
            let kind: PerlClassKind = switch c {
            case "d", "D": .digit
            case "s", "S": .space
            default: .word
            }
            return .perl(kind, negated: c == "D" || c == "S" || c == "W")
        default: break
        }
        bump()
        if Self.isEscapeable(c) { return .literal(RegexLiteral(scalar: c)) }
        switch c {
        case "a": return .literal(RegexLiteral(scalar: "\u{07}"))
        case "f": return .literal(RegexLiteral(scalar: "\u{0C}"))
        case "t": return .literal(RegexLiteral(scalar: "\t"))
        case "n": return .literal(RegexLiteral(scalar: "\n"))
        case "r": return .literal(RegexLiteral(scalar: "\r"))
        case "v": return .literal(RegexLiteral(scalar: "\u{0B}"))
        case "A": return .assertion(.startText)
        case "z": return .assertion(.endText)
        case "b":
            if !isEOF && char == "{", let special = try parseSpecialWordBoundary() { return .assertion(special) }
            return .assertion(.wordBoundary)
        case "B": return .assertion(.notWordBoundary)
        case "<": return .assertion(.wordStart)
        case ">": return .assertion(.wordEnd)
        default: throw RegexSyntaxError()
        }
    }

    /// \b{start} and the like; nil (with the position back at the `{`) when what follows
    /// cannot be one, so it parses as a counted repetition.
    private mutating func parseSpecialWordBoundary() throws(RegexSyntaxError) -> RegexAssertion? {
        let start = position
        guard bumpAndBumpSpace() else { throw RegexSyntaxError() }
        func isNameCharacter(_ c: Unicode.Scalar) -> Bool { ("A"..."Z").contains(c) || ("a"..."z").contains(c) || c == "-" }
        guard isNameCharacter(char) else {
            position = start
            return nil
        }
        var name = ""
        while !isEOF && isNameCharacter(char) {
            name.unicodeScalars.append(char)
            _ = bumpAndBumpSpace()
        }
        if isEOF || char != "}" { throw RegexSyntaxError() }
        bump()
        switch name {
        case "start": return .wordStart
        case "end": return .wordEnd
        case "start-half": return .wordStartHalf
        case "end-half": return .wordEndHalf
        default: throw RegexSyntaxError()
        }
    }

    private static func hexValue(_ c: Unicode.Scalar) -> UInt32? {
        switch c {
        case "0"..."9": c.value - 0x30
        case "a"..."f": c.value - 0x61 + 10
        case "A"..."F": c.value - 0x41 + 10
        default: nil
        }
    }

    private mutating func parseHex() throws(RegexSyntaxError) -> RegexLiteral {
        let digits = switch char {
        case "x": 2
        case "u": 4
        default: 8
        }
        let isX = char == "x"
        guard bumpAndBumpSpace() else { throw RegexSyntaxError() }
        if char == "{" {
            var hex: [UInt32] = []
            while bumpAndBumpSpace() && char != "}" {
                guard let digit = Self.hexValue(char) else { throw RegexSyntaxError() }
                hex.append(digit)
            }
            if isEOF { throw RegexSyntaxError() }
            _ = bumpAndBumpSpace()
            guard !hex.isEmpty, let scalar = Self.scalar(hex) else { throw RegexSyntaxError() }
            return RegexLiteral(scalar: scalar)
        }
        var hex: [UInt32] = []
        for index in 0..<digits {
            if index > 0 && !bumpAndBumpSpace() { throw RegexSyntaxError() }
            guard let digit = Self.hexValue(char) else { throw RegexSyntaxError() }
            hex.append(digit)
        }
        _ = bumpAndBumpSpace()
        guard let scalar = Self.scalar(hex) else { throw RegexSyntaxError() }
        return RegexLiteral(scalar: scalar, isHexByte: isX)
    }

    /// The scalar value of hex digits; nil when it overflows 32 bits or is no scalar value.
    private static func scalar(_ digits: [UInt32]) -> Unicode.Scalar? {
        var value: UInt32 = 0
        for digit in digits {
            guard value <= UInt32.max >> 4 else { return nil }
            value = value << 4 | digit
        }
        return Unicode.Scalar(value)
    }

    // MARK: Classes

    private mutating func parseSetClass() throws(RegexSyntaxError) -> RegexAST {
        var union: [ClassItem] = []
        while true {
            bumpSpace()
            if isEOF { throw RegexSyntaxError() }
            switch char {
            case "[":
                if !classes.isEmpty, let ascii = parseASCIIClass() {
                    union.append(ascii)
                    continue
                }
                union = try pushClassOpen(union)
            case "]":
                switch try popClass(union) {
                case let .nested(parent): union = parent
                case let .done(negated, set):
                    let height = set.height + 1
                    try checkDepth(height)
                    return RegexAST(node: .bracketed(negated: negated, set), height: height)
                }
            case "&" where peek() == "&":
                position += 2
                union = try pushClassOperation(.intersection, union)
            case "-" where peek() == "-":
                position += 2
                union = try pushClassOperation(.difference, union)
            case "~" where peek() == "~":
                position += 2
                union = try pushClassOperation(.symmetricDifference, union)
            default:
                union.append(try parseClassRange())
            }
        }
    }

    private func item(of union: [ClassItem]) throws(RegexSyntaxError) -> ClassItem {
        switch union.count {
        case 0: return .leaf(.empty)
        case 1: return union[0]
        default:
            let height = 1 + (union.map(\.height).max() ?? 0)
            try checkDepth(height)
            return ClassItem(node: .union(union), height: height)
        }
    }

    private mutating func pushClassOpen(_ parent: [ClassItem]) throws(RegexSyntaxError) -> [ClassItem] {
        guard bumpAndBumpSpace() else { throw RegexSyntaxError() }
        var negated = false
        if char == "^" {
            negated = true
            guard bumpAndBumpSpace() else { throw RegexSyntaxError() }
        }
        var union: [ClassItem] = []
        while char == "-" {
            union.append(.leaf(.literal(RegexLiteral(scalar: "-"))))
            guard bumpAndBumpSpace() else { throw RegexSyntaxError() }
        }
        if union.isEmpty && char == "]" {
            union.append(.leaf(.literal(RegexLiteral(scalar: "]"))))
            guard bumpAndBumpSpace() else { throw RegexSyntaxError() }
        }
        classes.append(.open(before: parent, negated: negated))
        openClasses += 1
        if openClasses > Self.nestLimit { throw RegexSyntaxError() }
        return union
    }

    private enum ClassClose {
        case nested([ClassItem])
        case done(negated: Bool, ClassSet)
    }

    private mutating func popClass(_ union: [ClassItem]) throws(RegexSyntaxError) -> ClassClose {
        let last = try item(of: union)
        let set = try popClassOperation(ClassSet(node: .item(last), height: last.height))
        guard case let .open(before, negated)? = classes.popLast() else { throw RegexSyntaxError() }
        openClasses -= 1
        bump()
        if classes.isEmpty { return .done(negated: negated, set) }
        let height = set.height + 1
        try checkDepth(height)
        return .nested(before + [ClassItem(node: .bracketed(negated: negated, set), height: height)])
    }

    private mutating func pushClassOperation(_ operation: ClassOperation, _ union: [ClassItem]) throws(RegexSyntaxError) -> [ClassItem] {
        let last = try item(of: union)
        let lhs = try popClassOperation(ClassSet(node: .item(last), height: last.height))
        classes.append(.operation(operation, lhs))
        return []
    }

    private mutating func popClassOperation(_ rhs: ClassSet) throws(RegexSyntaxError) -> ClassSet {
        guard case let .operation(operation, lhs)? = classes.last else { return rhs }
        classes.removeLast()
        let height = 1 + max(lhs.height, rhs.height)
        try checkDepth(height)
        return ClassSet(node: .operation(operation, lhs, rhs), height: height)
    }

    private mutating func parseClassRange() throws(RegexSyntaxError) -> ClassItem {
        let first = try parseClassPrimitive()
        bumpSpace()
        if isEOF { throw RegexSyntaxError() }
        if char != "-" || peekSpace() == "]" || peekSpace() == "-" {
            switch first {
            case let .literal(literal): return .leaf(.literal(literal))
            case let .perl(kind, negated): return .leaf(.perl(kind, negated: negated))
            case .assertion, .dot: throw RegexSyntaxError()
            }
        }
        guard bumpAndBumpSpace() else { throw RegexSyntaxError() }
        let second = try parseClassPrimitive()
        guard case let .literal(low) = first, case let .literal(high) = second, low.scalar.value <= high.scalar.value else {
            throw RegexSyntaxError()
        }
        return .leaf(.range(low, high))
    }

    private mutating func parseClassPrimitive() throws(RegexSyntaxError) -> Primitive {
        if char == "\\" { return try parseEscape() }
        let c = char
        bump()
        return .literal(RegexLiteral(scalar: c))
    }

    /// `[:name:]` (or `[:^name:]`) at the current `[`; nil, the position unchanged, when it is not one.
    private mutating func parseASCIIClass() -> ClassItem? {
        let start = position
        func fail() -> ClassItem? {
            position = start
            return nil
        }
        guard bump(), char == ":" else { return fail() }
        guard bump() else { return fail() }
        var negated = false
        if char == "^" {
            negated = true
            guard bump() else { return fail() }
        }
        let nameStart = position
        while char != ":" && bump() {}
        if isEOF { return fail() }
        let name = String(String.UnicodeScalarView(chars[nameStart..<position]))
        guard bumpIf(":]"), let kind = ASCIIClassKind(rawValue: name) else { return fail() }
        return .leaf(.ascii(kind, negated: negated))
    }
}
