// Where the content of the image's files comes from: a repository (the files of an OCI image's
// tree are inline or objects), or the directory an image is being made from (its /boot files
// are not stored: the boot transform drops them).

import ComposeFS
import ComposeFSBase
import ComposeFSBuild
import Repository

#if canImport(Glibc)
import Glibc
#endif

extension BootFileReader {
    /// Files whose content is inline or the repository's object named by their digest.
    public static func repository(_ repository: Repository) -> BootFileReader {
        BootFileReader { (file) throws(BootError) in
            let inode = file.inode
            let bytes: [UInt8]
            if let content = inode.content {
                bytes = content
            } else if let digest = inode.digest {
                do throws(RepositoryError) { bytes = try repository.readObject(digest) } catch {
                    throw .unreadable(path: file.path, reason: error.description)
                }
            } else {
                bytes = []
            }
            guard UInt64(bytes.count) == inode.size else {
                throw .unreadable(path: file.path, reason: "\(bytes.count) bytes where the image says \(inode.size)")
            }
            return bytes
        }
    }

    /// Files of a scanned directory, read from where the scan found them (they must still be
    /// regular files).
    public static func scanned(_ files: [ScannedFile]) -> BootFileReader {
        var paths: [ObjectIdentifier: [UInt8]] = [:]
        for file in files { paths[ObjectIdentifier(file.inode)] = file.path }
        return BootFileReader { (file) throws(BootError) in
            guard let path = paths[ObjectIdentifier(file.inode)] else {
                throw .unreadable(path: file.path, reason: "not a file of the scanned directory")
            }
            let shown = displayBytes(path)
            let fd = callWithPath(path) { open($0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
            guard fd >= 0 else { throw .system(SystemError("open", path: shown)) }
            let descriptor = FileDescriptor(owning: fd, path: shown)
            let status: stat
            do throws(SystemError) { status = try descriptor.status() } catch { throw .system(error) }
            guard (status.st_mode & S_IFMT) == S_IFREG else { throw .unreadable(path: shown, reason: "is no longer a regular file") }
            do throws(SystemError) { return try descriptor.readAll() } catch { throw .system(error) }
        }
    }
}

public enum DirectoryBoot {
    /// The boot entries of `directory`'s tree as `prepare-boot` finds them: the container-root
    /// transform applied when `containerRoot` is given (as for the image), the boot transform
    /// not yet; and the reader of their files.
    public static func entries(of directory: String, containerRoot: XattrFilter?) throws(BootError) -> (
        entries: [BootEntry], reader: BootFileReader
    ) {
        let scanned: (root: Inode, files: [ScannedFile])
        do {
            scanned = try DirectoryScanner.scan(path: Array(directory.utf8), options: ScanOptions(keepHardlinks: true))
            if let containerRoot { try ContainerRoot.prepare(scanned.root, xattrs: containerRoot) }
        } catch {
            throw .source(path: directory, reason: "\(error)")
        }
        let reader = BootFileReader.scanned(scanned.files)
        return (try BootResources.find(in: scanned.root, reader: reader), reader)
    }
}
