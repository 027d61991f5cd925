// The bootable images `prepare-boot` stores, and the kernel argument that boots them, as
// composefs-rs 0.9 chooses it: the V1 image's id (else the V2 image's), as
// `composefs.digest=v1-…` in a repository that writes V1 images only and as `composefs=`
// otherwise, with the `?` of an insecure repository.

import ComposeFS
import ComposeFSBuild
import FsVerity

extension Repository {
    /// The kernel argument booting the images `ids` (by format) of one tree.
    public func bootArgument(images ids: [FormatVersion: ObjectID]) throws(RepositoryError) -> BootArgument {
        guard let id = ids[.v1] ?? ids[.v2] else { throw .unsupported("commit_images produced no images") }
        return BootArgument(id: id, format: imageFormats == [.v1] ? .v1 : .v2, insecure: !isSecure)
    }

    /// Writes the image of `root` in every format the repository keeps; the default one (the
    /// first) alone gets `name`. Returns their ids by format.
    public func commitImagesByFormat(root: Inode, name: String?) throws(RepositoryError) -> [FormatVersion: ObjectID] {
        var ids: [FormatVersion: ObjectID] = [:]
        for format in imageFormats {
            ids[format] = try writeImage(try Self.image(of: root, format: format), name: ids.isEmpty ? name : nil)
        }
        return ids
    }

    /// Stores every file of `directory` and its bootable images (as `createImage` with
    /// `bootable`); returns the kernel argument booting them.
    public func createBootImages(
        from directory: String, name: String?, containerRoot: XattrFilter?, threads: Int,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil
    ) throws(RepositoryError) -> BootArgument {
        let store = RepositoryObjectStore(repository: self, objects: try objectsDirectory())
        let cache = FileDigestCache(repository: self)
        let root = try Self.tree(
            of: directory, algorithm: algorithm, options: DirectoryImageOptions(containerRoot: containerRoot, bootable: true),
            threads: threads, store: store, cache: cache, progress: progress)
        let argument = try bootArgument(images: try commitImagesByFormat(root: root, name: name))
        // Only a shortcut for next time: failing to save it does not fail the import.
        try? cache.save(in: self)
        return argument
    }
}
