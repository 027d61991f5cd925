// A pattern regex-syntax refuses, compiled and matched by PCRE2 as composefs-rs 0.9 does it
// (through the pcre2 crate's defaults): no options (so no UTF mode), no JIT, an unanchored
// search from the start of the key, a matching error counting as no match.

import CPCRE2

/// PCRE2's refusal of a pattern: where and why.
struct PCRE2CompileError: Error {
    var offset: Int
    var message: String
}

final class PCRE2Pattern {
    private let code: OpaquePointer
    private let matchData: OpaquePointer

    init(_ pattern: [UInt8]) throws(PCRE2CompileError) {
        var errorCode: Int32 = 0
        var errorOffset = 0
        // A valid pointer even for an empty pattern.
        let storage = pattern.isEmpty ? [0] : pattern
        let compiled = storage.withUnsafeBufferPointer { buffer in
            pcre2_compile_8(buffer.baseAddress, pattern.count, 0, &errorCode, &errorOffset, nil)
        }
        guard let compiled else { throw PCRE2CompileError(offset: errorOffset, message: Self.message(errorCode)) }
        guard let data = pcre2_match_data_create_from_pattern_8(compiled, nil) else {
            pcre2_code_free_8(compiled)
            throw PCRE2CompileError(offset: 0, message: Self.message(PCRE2_ERROR_NOMEMORY))
        }
        code = compiled
        matchData = data
    }

    deinit {
        pcre2_match_data_free_8(matchData)
        pcre2_code_free_8(code)
    }

    private static func message(_ code: Int32) -> String {
        var buffer = [UInt8](repeating: 0, count: 256)
        let length = buffer.withUnsafeMutableBufferPointer { pcre2_get_error_message_8(code, $0.baseAddress, $0.count) }
        return String(decoding: buffer.prefix(max(Int(length), 0)), as: UTF8.self)
    }

    func matches(_ key: [UInt8]) -> Bool {
        let storage = key.isEmpty ? [0] : key
        return storage.withUnsafeBufferPointer { buffer in
            pcre2_match_8(code, buffer.baseAddress, key.count, 0, 0, matchData, nil) > 0
        }
    }
}
