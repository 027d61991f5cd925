// Progress on stderr while a long command works, drawn only when stderr is a terminal (so
// scripts and logs see none of it): lines of their own, and one line rewritten in place at
// most ten times a second.

import Synchronization

#if canImport(Glibc)
import Glibc
#endif

public final class ProgressReporter: Sendable {
    private struct State {
        var lastDraw: Double = 0
        /// Whether the progress line is on the screen (to be cleared before a message).
        var drawn = false
    }

    private let state = Mutex(State())

    /// nil when stderr is not a terminal.
    public init?() {
        guard isatty(2) == 1 else { return nil }
    }

    /// A line of its own, above the progress line.
    public func message(_ text: String) {
        state.withLock { state in
            writeStandardError((state.drawn ? "\r\u{1B}[K" : "") + text + "\n")
            state.drawn = false
        }
    }

    /// "LABEL: done/total files".
    public func files(_ label: String, done: Int, total: Int) {
        draw(complete: done >= total) { "\(label): \(done)/\(total) files" }
    }

    /// A bar and the bytes done of the total.
    public func bytes(done: UInt64, total: UInt64) {
        draw(complete: done >= total) {
            let width = 40
            let filled = total == 0 ? width : Int(Double(width) * Double(min(done, total)) / Double(total))
            return String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
                + " \(humanBytes(done))/\(humanBytes(total))"
        }
    }

    /// Clears the progress line.
    public func finish() {
        state.withLock { state in
            if state.drawn { writeStandardError("\r\u{1B}[K") }
            state.drawn = false
        }
    }

    private func draw(complete: Bool, _ line: () -> String) {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let seconds = Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
        state.withLock { state in
            guard complete || seconds - state.lastDraw >= 0.1 else { return }
            state.lastDraw = seconds
            state.drawn = true
            writeStandardError("\r" + line() + "\u{1B}[K")
        }
    }
}

/// indicatif's binary units: "N B" below 1 KiB, else two decimals.
public func humanBytes(_ count: UInt64) -> String {
    guard count >= 1024 else { return "\(count) B" }
    var value = Double(count)
    var unit = 0
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    let hundredths = Int((value * 100).rounded())
    let cents = hundredths % 100
    return "\(hundredths / 100).\(cents < 10 ? "0" : "")\(cents) \(units[unit])"
}
