#define _GNU_SOURCE
#include "CComposeFSSys.h"

#include <errno.h>
#include <stddef.h>
#include <sched.h>
#include <stdlib.h>
#include <fcntl.h>
#include <sys/xattr.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <linux/fs.h>
#include <linux/fsverity.h>
#include <linux/loop.h>
#include <stdio.h>
#include <sys/mount.h>
#include <dirent.h>
#include <linux/close_range.h>
#include <linux/openat2.h>
#include <sys/mman.h>

struct cfs_dirent64 {
	uint64_t d_ino;
	int64_t d_off;
	uint16_t d_reclen;
	uint8_t d_type;
	char d_name[];
};

int cfs_fsverity_enable(int fd, uint32_t hash_algorithm, uint32_t block_size)
{
	struct fsverity_enable_arg arg;
	memset(&arg, 0, sizeof(arg));
	arg.version = 1;
	arg.hash_algorithm = hash_algorithm;
	arg.block_size = block_size;
	if (ioctl(fd, FS_IOC_ENABLE_VERITY, &arg) != 0)
		return -errno;
	return 0;
}

int cfs_fsverity_measure(int fd, uint16_t *hash_algorithm, uint8_t *digest, uint16_t *digest_size)
{
	union {
		struct fsverity_digest d;
		uint8_t buf[sizeof(struct fsverity_digest) + 64];
	} arg;
	memset(&arg, 0, sizeof(arg));
	arg.d.digest_size = 64;
	if (ioctl(fd, FS_IOC_MEASURE_VERITY, &arg) != 0)
		return -errno;
	if (arg.d.digest_size > *digest_size)
		return -EOVERFLOW;
	memcpy(digest, arg.d.digest, arg.d.digest_size);
	*digest_size = arg.d.digest_size;
	*hash_algorithm = arg.d.digest_algorithm;
	return 0;
}

int cfs_ficlone(int dest_fd, int src_fd)
{
	if (ioctl(dest_fd, FICLONE, src_fd) != 0)
		return -errno;
	return 0;
}

ssize_t cfs_copy_file_range(int fd_in, int fd_out, size_t len)
{
	ssize_t r = copy_file_range(fd_in, NULL, fd_out, NULL, len, 0);
	return r < 0 ? -errno : r;
}

ssize_t cfs_getdents64(int fd, void *buf, size_t len)
{
	long r = syscall(SYS_getdents64, fd, buf, len);
	return r < 0 ? -errno : r;
}

uint16_t cfs_dirent64_reclen(const void *p) { return ((const struct cfs_dirent64 *)p)->d_reclen; }
uint8_t cfs_dirent64_type(const void *p) { return ((const struct cfs_dirent64 *)p)->d_type; }
const char *cfs_dirent64_name(const void *p) { return ((const struct cfs_dirent64 *)p)->d_name; }

ssize_t cfs_llistxattr(const char *path, char *list, size_t size)
{
	ssize_t r = llistxattr(path, list, size);
	return r < 0 ? -errno : r;
}

ssize_t cfs_lgetxattr(const char *path, const char *name, void *value, size_t size)
{
	ssize_t r = lgetxattr(path, name, value, size);
	return r < 0 ? -errno : r;
}

int cfs_lsetxattr(const char *path, const char *name, const void *value, size_t size)
{
	return lsetxattr(path, name, value, size, 0) < 0 ? -errno : 0;
}

int cfs_mkostemp_cloexec(char *template_path)
{
	int fd = mkostemp(template_path, O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int cfs_available_cpus(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return CPU_COUNT(&set);
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)n : 1;
}

int cfs_fsopen(const char *fs_name)
{
	int fd = (int)syscall(SYS_fsopen, fs_name, FSOPEN_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static int fsconfig_call(int fs_fd, unsigned int cmd, const char *key, const void *value, int aux)
{
	if (syscall(SYS_fsconfig, fs_fd, cmd, key, value, aux) != 0)
		return -errno;
	return 0;
}

int cfs_fsconfig_set_string(int fs_fd, const char *key, const char *value)
{
	return fsconfig_call(fs_fd, FSCONFIG_SET_STRING, key, value, 0);
}

int cfs_fsconfig_set_flag(int fs_fd, const char *key)
{
	return fsconfig_call(fs_fd, FSCONFIG_SET_FLAG, key, NULL, 0);
}

int cfs_fsconfig_set_fd(int fs_fd, const char *key, int fd)
{
	return fsconfig_call(fs_fd, FSCONFIG_SET_FD, key, NULL, fd);
}

int cfs_fsconfig_create(int fs_fd)
{
	return fsconfig_call(fs_fd, FSCONFIG_CMD_CREATE, NULL, NULL, 0);
}

int cfs_fsmount(int fs_fd, int read_only)
{
	int fd = (int)syscall(SYS_fsmount, fs_fd, FSMOUNT_CLOEXEC, read_only ? MOUNT_ATTR_RDONLY : 0);
	return fd < 0 ? -errno : fd;
}

int cfs_move_mount_to(int mount_fd, const char *target_path)
{
	if (syscall(SYS_move_mount, mount_fd, "", AT_FDCWD, target_path, MOVE_MOUNT_F_EMPTY_PATH) != 0)
		return -errno;
	return 0;
}

int cfs_o_path(void)
{
	return O_PATH;
}

int cfs_open_tree_clone(int dir_fd, const char *path)
{
	unsigned int flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (path[0] == '\0' ? AT_EMPTY_PATH : 0);
	int fd = (int)syscall(SYS_open_tree, dir_fd, path, flags);
	return fd < 0 ? -errno : fd;
}

int cfs_move_mount_onto(int mount_fd, int to_dir_fd, const char *to_path)
{
	if (syscall(SYS_move_mount, mount_fd, "", to_dir_fd, to_path, MOVE_MOUNT_F_EMPTY_PATH) != 0)
		return -errno;
	return 0;
}

int cfs_mount_bind(const char *source, const char *target)
{
	if (mount(source, target, NULL, MS_BIND, NULL) != 0)
		return -errno;
	return 0;
}

int cfs_mount_make_private(const char *target)
{
	if (mount(NULL, target, NULL, MS_PRIVATE, NULL) != 0)
		return -errno;
	return 0;
}

int cfs_mount_move(const char *source, const char *target)
{
	if (mount(source, target, NULL, MS_MOVE, NULL) != 0)
		return -errno;
	return 0;
}

int cfs_mount_set_idmap(int mount_fd, int userns_fd)
{
	struct mount_attr attr;
	memset(&attr, 0, sizeof(attr));
	attr.attr_set = MOUNT_ATTR_IDMAP;
	attr.userns_fd = (uint64_t)userns_fd;
	if (syscall(SYS_mount_setattr, mount_fd, "", AT_EMPTY_PATH, &attr, sizeof(attr)) != 0)
		return -errno;
	return 0;
}

int cfs_mount_legacy(const char *source, const char *target, const char *fs_type,
		     int read_only, int silent, const char *data)
{
	unsigned long flags = (read_only ? MS_RDONLY : 0) | (silent ? MS_SILENT : 0);
	if (mount(source, target, fs_type, flags, data) != 0)
		return -errno;
	return 0;
}

int cfs_umount(const char *target, int detach)
{
	if (umount2(target, detach ? MNT_DETACH : 0) != 0)
		return -errno;
	return 0;
}

int cfs_loop_attach(int fd, const char *backing_name, char *device_path, size_t device_path_size)
{
	int control_fd = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (control_fd < 0)
		return -errno;
	/* Another process may claim the free device first: LOOP_CONFIGURE then fails with EBUSY. */
	for (int attempt = 0; attempt < 16; attempt++) {
		long number = ioctl(control_fd, LOOP_CTL_GET_FREE);
		if (number < 0) {
			int error = errno;
			close(control_fd);
			return -error;
		}
		snprintf(device_path, device_path_size, "/dev/loop%ld", number);
		int loop_fd = open(device_path, O_RDWR | O_CLOEXEC);
		if (loop_fd < 0) {
			int error = errno;
			close(control_fd);
			return -error;
		}
		struct loop_config config;
		memset(&config, 0, sizeof(config));
		config.fd = (uint32_t)fd;
		config.block_size = 4096;
		config.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_DIRECT_IO | LO_FLAGS_AUTOCLEAR;
		if (backing_name)
			strncpy((char *)config.info.lo_file_name, backing_name, LO_NAME_SIZE - 1);
		if (ioctl(loop_fd, LOOP_CONFIGURE, &config) == 0) {
			close(control_fd);
			return loop_fd;
		}
		int error = errno;
		close(loop_fd);
		if (error != EBUSY) {
			close(control_fd);
			return -error;
		}
	}
	close(control_fd);
	return -EBUSY;
}

int cfs_open_tmpfile(int dir_fd, mode_t mode)
{
	int fd = openat(dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
	return fd < 0 ? -errno : fd;
}

int cfs_link_tmpfile(int fd, int dir_fd, const char *name)
{
	/* Through /proc: linkat with AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH. */
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (linkat(AT_FDCWD, path, dir_fd, name, AT_SYMLINK_FOLLOW) != 0)
		return -errno;
	return 0;
}

int cfs_openat_beneath(int dir_fd, const char *path)
{
	struct open_how how;
	memset(&how, 0, sizeof(how));
	how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY;
	how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
	long fd;
	do {
		fd = syscall(SYS_openat2, dir_fd, path, &how, sizeof(how));
	} while (fd < 0 && errno == EINTR);
	if (fd < 0 && errno == ENOSYS)
		fd = openat(dir_fd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
	return fd < 0 ? -errno : (int)fd;
}

int cfs_pipe_cloexec(int ends[2])
{
	return pipe2(ends, O_CLOEXEC) == 0 ? 0 : -errno;
}

int cfs_memfd(const char *name)
{
	int fd = memfd_create(name, MFD_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int cfs_syncfs(int fd)
{
	if (syncfs(fd) != 0)
		return -errno;
	return 0;
}

int cfs_cloexec_from(int lowest)
{
	if (syscall(SYS_close_range, (unsigned int)lowest, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
		return 0;
	/* Kernels before 5.11: walk the open descriptors instead. */
	DIR *fds = opendir("/proc/self/fd");
	if (fds == NULL)
		return -errno;
	int own = dirfd(fds);
	struct dirent *entry;
	while ((entry = readdir(fds)) != NULL) {
		int fd = atoi(entry->d_name);
		if (entry->d_name[0] != '.' && fd >= lowest && fd != own)
			fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
	}
	closedir(fds);
	return 0;
}
