// Thin wrappers for Linux syscalls and ioctls that Swift cannot call directly
// (variadic ioctl()/syscall(), _GNU_SOURCE-only declarations).
// Every function returns 0 (or a non-negative count) on success and -errno on failure.
#ifndef CCOMPOSEFS_SYS_H
#define CCOMPOSEFS_SYS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* FS_IOC_ENABLE_VERITY with no salt and no signature. */
int cfs_fsverity_enable(int fd, uint32_t hash_algorithm, uint32_t block_size);

/* FS_IOC_MEASURE_VERITY. On entry *digest_size is the capacity of digest;
   on success it holds the digest length and *hash_algorithm the algorithm. */
int cfs_fsverity_measure(int fd, uint16_t *hash_algorithm, uint8_t *digest, uint16_t *digest_size);

/* FICLONE: make dest_fd share all of src_fd's extents. */
int cfs_ficlone(int dest_fd, int src_fd);

/* copy_file_range(2) on the current file offsets. */
ssize_t cfs_copy_file_range(int fd_in, int fd_out, size_t len);

/* getdents64(2): fills buf with struct linux_dirent64 records. */
ssize_t cfs_getdents64(int fd, void *buf, size_t len);

/* Field accessors for one linux_dirent64 record at p. */
uint16_t cfs_dirent64_reclen(const void *p);
uint8_t cfs_dirent64_type(const void *p);
const char *cfs_dirent64_name(const void *p);

/* llistxattr/lgetxattr (<sys/xattr.h> is not part of Swift's Glibc module). */
ssize_t cfs_llistxattr(const char *path, char *list, size_t size);
ssize_t cfs_lgetxattr(const char *path, const char *name, void *value, size_t size);
int cfs_lsetxattr(const char *path, const char *name, const void *value, size_t size);

/* mkostemp(3) with O_CLOEXEC: template ends in XXXXXX and is rewritten. */
int cfs_mkostemp_cloexec(char *template_path);

/* CPUs this process may run on (sched_getaffinity), or the online CPU count. */
int cfs_available_cpus(void);

/* The new mount API (fsopen/fsconfig/fsmount/move_mount/mount_setattr). */
int cfs_fsopen(const char *fs_name);                  /* FSOPEN_CLOEXEC */
int cfs_fsconfig_set_string(int fs_fd, const char *key, const char *value);
int cfs_fsconfig_set_flag(int fs_fd, const char *key);
int cfs_fsconfig_set_fd(int fs_fd, const char *key, int fd);
int cfs_fsconfig_create(int fs_fd);
int cfs_fsmount(int fs_fd, int read_only);             /* FSMOUNT_CLOEXEC */
int cfs_move_mount_to(int mount_fd, const char *target_path); /* MOVE_MOUNT_F_EMPTY_PATH */
int cfs_mount_set_idmap(int mount_fd, int userns_fd);  /* MOUNT_ATTR_IDMAP */
/* O_PATH, a _GNU_SOURCE flag Swift's Glibc module lacks. */
int cfs_o_path(void);
/* open_tree(2) with OPEN_TREE_CLONE: a detached copy of the mount at dir_fd/path (the mount
   of dir_fd itself when path is ""), without the mounts below it. */
int cfs_open_tree_clone(int dir_fd, const char *path);
/* move_mount(2) of the mount mount_fd onto to_dir_fd/to_path (MOVE_MOUNT_F_EMPTY_PATH). */
int cfs_move_mount_onto(int mount_fd, int to_dir_fd, const char *to_path);

/* Legacy mount(2) and umount2(2) (MNT_DETACH when detach is non-zero). */
int cfs_mount_legacy(const char *source, const char *target, const char *fs_type,
		     int read_only, int silent, const char *data);
int cfs_umount(const char *target, int detach);
/* mount(2) with MS_BIND (not recursive), with MS_MOVE, and making a mount MS_PRIVATE. */
int cfs_mount_bind(const char *source, const char *target);
int cfs_mount_move(const char *source, const char *target);
int cfs_mount_make_private(const char *target);

/* Attaches fd read-only to a free loop device with LO_FLAGS_AUTOCLEAR (so the device goes
   away with its last user) and direct I/O. Returns the open loop device fd and writes the
   device path into device_path. */
int cfs_loop_attach(int fd, const char *backing_name, char *device_path, size_t device_path_size);

/* An unnamed file in directory dir_fd (O_TMPFILE | O_RDWR | O_CLOEXEC): it never shows up
   under any name unless cfs_link_tmpfile gives it one, and vanishes if the process dies. */
int cfs_open_tmpfile(int dir_fd, mode_t mode);

/* Gives the open unnamed file fd the name dir_fd/name (fails with -EEXIST if taken). */
int cfs_link_tmpfile(int fd, int dir_fd, const char *name);

/* Opens path read-only below dir_fd with openat2(2): the path may not leave dir_fd
   (RESOLVE_BENEATH), go through /proc's magic links or cross a mount point. Kernels without
   openat2 (ENOSYS, before 5.6) get openat(2) with O_NOFOLLOW. */
int cfs_openat_beneath(int dir_fd, const char *path);

/* pipe2(2) with O_CLOEXEC: ends[0] reads, ends[1] writes. */
int cfs_pipe_cloexec(int ends[2]);

/* memfd_create(2) with MFD_CLOEXEC: an anonymous file in memory. */
int cfs_memfd(const char *name);

/* syncfs(2): flushes the whole file system holding fd. */
int cfs_syncfs(int fd);

/* Marks every descriptor from lowest up close-on-exec, so a program this process becomes
   (a daemon, say) does not hold on to descriptors its caller passed down. */
int cfs_cloexec_from(int lowest);

#endif
