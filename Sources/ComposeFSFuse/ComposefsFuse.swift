// Entry point of composefs-fuse: parse the command line (libfuse's syntax, as the
// reference tool), check and map the image, open the base directory, then mount and
// serve until unmounted.

import CFuseShim
import ComposeFSBase
import EROFS

#if canImport(Glibc)
import Glibc
#endif

public enum ComposefsFuse {
    static let optionsHelp = """
        composefs-fuse options:
            -o source=IMAGE        composefs image to serve (or give it before the mountpoint)
            -o basedir=DIR         directory holding the backing files the image refers to
            -o noacl               ignore the POSIX ACLs stored in the image
            -o verity              check each backing file against the fs-verity digest in
                                   the image, hashing it when the kernel has no fs-verity
                                   measurement for it (by default only kernel measurements
                                   are checked)
            -o open_requests       have the kernel ask before opening any file or directory
                                   (as the reference does: a missing backing file then
                                   fails the open rather than the reads)

        """

    /// Runs the tool with the process's arguments; returns the exit code.
    public static func main() -> Int32 {
        let program = CommandLine.arguments.first.map { String($0.split(separator: "/").last ?? "") } ?? "composefs-fuse"
        var options = cfs_fuse_options()
        var setup: OpaquePointer?
        let parsed = cfs_fuse_parse(CommandLine.argc, CommandLine.unsafeArgv, optionsHelp, &options, &setup)
        defer { cfs_fuse_free(setup) }
        switch Int(parsed) {
        case CFS_FUSE_PARSE_RUN: break
        case CFS_FUSE_PARSE_EXIT_OK: return 0
        default: return 1
        }
        func fail(_ message: String) -> Int32 {
            var bytes = Array("\(program): \(message)\n".utf8)
            _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
            return 1
        }
        guard let sourcePointer = options.source else {
            return fail("no image given (use -o source=IMAGE,basedir=DIR or IMAGE MOUNTPOINT)")
        }
        let source = String(cString: sourcePointer)
        let image: MappedFile
        let view: ImageView
        do throws(SystemError) {
            image = try MappedFile(path: source)
        } catch {
            return fail("failed to \(error.operation) \(source): \(SystemError.message(error.code))")
        }
        do throws(ImageFormatError) {
            view = try ImageView(image.bytes)
            let root = try view.inode(view.rootNid)
            guard root.isDirectory else { throw .invalid("root inode \(view.rootNid) is not a directory") }
        } catch {
            return fail("\(source): \(error.description)")
        }
        var basedir: Int32 = -1
        if let basedirPointer = options.basedir {
            basedir = open(basedirPointer, O_RDONLY | Linux.O_PATH | O_DIRECTORY | O_CLOEXEC)
            if basedir < 0 {
                return fail("failed to open basedir \(String(cString: basedirPointer)): \(String(cString: strerror(errno)))")
            }
        }
        server = Server(
            image: image, view: view, basedir: basedir, useACL: view.hasACL && options.noacl == 0, verifyDigests: options.verity != 0,
            openRequests: options.open_requests != 0)
        var operations = makeOperations()
        // The server (with the mapping and the descriptor) lives until the process exits.
        return cfs_fuse_serve(setup, &operations, nil)
    }
}
