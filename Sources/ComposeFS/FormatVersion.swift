/// composefs-rs's EROFS format versions (the header's composefs_version). V0 and V1 are the
/// C writer's formats (`mkcomposefs --min-version=N --max-version=N`, V1 the default of
/// cfsctl). V2 is composefs-rs's own layout, which nothing in C writes: extended inodes in
/// depth-first order with ino = nid, no 00..ff whiteout stubs, whiteouts stored as they are,
/// whole seconds only, every file's data inline (at most 512 bytes; symlinks 1024) or in a
/// backing object (`ImageWriterV2`).
public enum FormatVersion: Int, Sendable, CaseIterable, Comparable {
    case v0 = 0
    case v1 = 1
    case v2 = 2

    public static func < (a: FormatVersion, b: FormatVersion) -> Bool { a.rawValue < b.rawValue }
}
