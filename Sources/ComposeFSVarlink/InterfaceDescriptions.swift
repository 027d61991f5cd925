// The interface definitions (varlink IDL) GetInterfaceDescription returns: the methods,
// parameters, replies and errors of composefs-rs 0.9's org.composefs.Repository and
// org.composefs.Oci, as its service declares them.

enum InterfaceDescriptions {
    /// What a consistency check reports: FsckReply's fields, which Repository's Fsck method
    /// lists again as its reply, as composefs-rs's description does.
    private static let fsckFields = """
          ok: bool,
          has_metadata: bool,
          objects_checked: int,
          objects_corrupted: int,
          streams_checked: int,
          streams_corrupted: int,
          images_checked: int,
          images_corrupted: int,
          broken_links: int,
          missing_objects: int,
          errors: []string
        """

    /// Both interfaces define it, as composefs-rs's do.
    private static let fsckReply = """
        # Result of a repository consistency check.
        type FsckReply (
        \(fsckFields)
        )
        """

    static let repository = """
        # Repository lifecycle, integrity checks, garbage collection and mounting.
        # Repositories are reached through handles from OpenRepository.
        interface org.composefs.Repository

        \(fsckReply)

        # What garbage collection removed (or would remove).
        type GcResult (
          objects_removed: int,
          objects_bytes: int,
          images_pruned: int,
          streams_pruned: int
        )

        type EnsureStatus (Opened, Created, Upgraded)

        type ImageRefEntry (name: string, digest: string)

        # Mount options; with overlay, the call passes the upperdir and workdir descriptors.
        type MountParams (overlay: ?bool, read_write: ?bool)

        # Initialize a new repository at the given path, or verify that an existing one
        # matches the requested algorithm (idempotent).
        method InitRepository(path: string, algorithm: ?string, insecure: ?bool) -> (created: bool)

        # Ensure a repository exists: open it as-is, initialize it, or upgrade an old one.
        method EnsureRepository(path: string, algorithm: ?string, insecure: ?bool) -> (status: EnsureStatus)

        # Open and validate a repository, returning an opaque handle.
        # Exactly one of path, user, system must be set.
        method OpenRepository(path: ?string, user: ?bool, system: ?bool) -> (
          handle: int,
          hash_algorithm: ?string,
          objects_device_id: ?int
        )

        # Close a previously opened repository handle.
        method CloseRepository(handle: int) -> ()

        # Check repository integrity and return the structured result.
        method Fsck(handle: int, metadata_only: ?bool) -> (
        \(fsckFields)
        )

        # Run garbage collection (or a dry run) and return what was removed.
        method Gc(handle: int, dry_run: bool, roots: []string) -> (result: GcResult, dry_run: bool)

        # List the objects referenced by a single image.
        method ImageObjects(handle: int, name: string) -> (object_ids: []string)

        # List all named image references in the repository.
        method ListImageRefs(handle: int) -> (images: []ImageRefEntry)

        # Create a detached mount of an image and return the mount fd.
        method Mount(handle: int, name: string, options: MountParams) -> (fd_index: int)

        # The repository could not be found or opened at the configured path.
        error RepoNotFound (message: string)

        # The given handle does not refer to an open repository.
        error InvalidHandle (handle: int)

        # The request did not specify a valid repository selector.
        error InvalidSpec (message: string)

        # The named image/ref does not exist in the repository.
        error NoSuchRef (reference: string)

        # An unexpected internal error occurred while servicing the request.
        error InternalError (message: string)

        """

    static let oci = """
        # OCI container image operations: listing, pulling, inspecting, tagging, mounting.
        interface org.composefs.Oci

        # Summary of a stored OCI image.
        type ImageEntry (
          name: string,
          manifest_digest: string,
          is_container: bool,
          architecture: string,
          os: string,
          created: ?string,
          layer_count: int,
          referrer_count: int
        )

        \(fsckReply)

        type XattrFiltering (AllowlistOnly, KeepUserXattrs)

        type ProgressUnit (Bytes, Items)

        type Started (id: string, total: ?int, unit: ProgressUnit)

        type Progress (id: string, fetched: int, total: ?int)

        type Skipped (id: string)

        type Done (id: string, transferred: int)

        # The result of a completed pull.
        type Completed (
          manifest_digest: string,
          config_digest: string,
          manifest_verity: string,
          config_verity: string,
          stats: string,
          boot_image: ?string,
          boot_image_mode: ?string,
          boot_image_format_version: ?string
        )

        # Mount options; with overlay, the call passes the upperdir and workdir descriptors.
        type MountParams (overlay: ?bool, read_write: ?bool)

        type StorageLocator (storage_path: string, layer_id: string)

        type GetLayerParams (diff_id: ?string, storage: ?StorageLocator, consumer_has_cap_dac_override: ?bool)

        type LayerRef (diff_id: string, layer_verity: string)

        # List tagged OCI images, those whose name contains filter when given.
        method ListImages(handle: int, filter: ?string) -> (images: []ImageEntry)

        # Run an OCI-aware consistency check on the repository.
        method Check(handle: int, image: ?string) -> (
          ok: bool,
          images_checked: int,
          images_corrupted: int,
          errors: []string,
          repo: FsckReply
        )

        # Inspect a single OCI image.
        method Inspect(handle: int, image: string) -> (
          manifest: string,
          config: string,
          referrers: []string,
          composefs_erofs: ?string,
          composefs_boot_erofs: ?string
        )

        # Tag a manifest digest with a name.
        method Tag(handle: int, manifest_digest: string, name: string) -> ()

        # Remove a tag.
        method Untag(handle: int, name: string) -> ()

        # Compute the composefs image ID for an OCI image.
        method ComputeId(handle: int, image: string, verity: ?string, bootable: bool, xattrs: ?XattrFiltering) -> (image_id: string)

        # Pull an OCI image into the repository, streaming progress: zero or more frames
        # with one event set, then one with completed.
        method Pull(
          handle: int,
          image: string,
          name: ?string,
          local_fetch: string,
          storage_root: ?string,
          bootable: bool,
          xattrs: ?XattrFiltering,
          expected_digest: ?string
        ) -> (
          started: ?Started,
          progress: ?Progress,
          skipped: ?Skipped,
          done: ?Done,
          message: ?string,
          completed: ?Completed
        )

        # Mount an OCI image and return the detached mount fd.
        method OciMount(handle: int, image: string, bootable: bool, options: MountParams) -> (fd_index: int)

        # Return the capability tokens supported by this service.
        method GetInfo() -> (features: []string)

        # Check whether the layer splitstream for diff_id is present.
        method HasLayer(handle: int, diff_id: string) -> (present: bool, layer_verity: ?string)

        # Stream the layer as a splitdirfdstream over a pipe.
        method GetLayer(handle: int, params: GetLayerParams) -> (dir_count: int)

        # Receive a layer as a splitdirfdstream from the client and import it.
        method PutLayer(handle: int, diff_id: string, zerocopy: bool) -> (
          layer_verity: string,
          already_present: bool,
          objects_reflinked: int,
          objects_hardlinked: int,
          objects_copied: int,
          objects_already_present: int
        )

        # Finalize an OCI image after all layers have been imported.
        method FinalizeImage(handle: int, manifest_json: string, config_json: string, layers: []LayerRef, name: ?string) -> (
          manifest_digest: string,
          manifest_verity: string,
          config_digest: string,
          config_verity: string
        )

        # The repository could not be found or opened at the configured path.
        error RepoNotFound (message: string)

        # The given handle does not refer to an open repository.
        error InvalidHandle (handle: int)

        # The named OCI image/reference does not exist.
        error NoSuchImage (image: string)

        # An unexpected internal error occurred while servicing the request.
        error InternalError (message: string)

        # The requested layer (by diff-id) is not present in the repository.
        error NoSuchLayer (diff_id: string)

        # A supplied digest/diff-id string was malformed.
        error InvalidDigest (message: string)

        # Received layer content did not hash to the declared diff-id.
        error DiffIdMismatch (expected: string, actual: string)

        # The request was malformed (e.g. wrong fd count).
        error InvalidRequest (message: string)

        # The total fd count exceeds the per-frame limit for a more=false call.
        error FdLimitExceeded (fd_count: int, max_per_frame: int)

        # No combination of xattr filtering mode and EROFS format version produced a boot
        # image matching expected.
        error BootImageMismatch (expected: string, tried: int)

        """
}
