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

uint64_t cfs_dirent64_ino(const void *p) { return ((const struct cfs_dirent64 *)p)->d_ino; }
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
