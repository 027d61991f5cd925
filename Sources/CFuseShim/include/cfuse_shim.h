// The libfuse3 pieces Swift cannot use directly: option parsing and the session loop
// (both behind version-selecting macros), and FUSE_BUFVEC_INIT. The file system itself
// is written in Swift against the low-level API declared by <fuse_lowlevel.h>.
#ifndef CFUSE_SHIM_H
#define CFUSE_SHIM_H

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 34
#endif
#include <fuse3/fuse_lowlevel.h>

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* What the command line asked for. Strings stay valid until cfs_fuse_free. */
struct cfs_fuse_options {
	const char *source;     /* -o source=IMAGE, or the first of two positional arguments */
	const char *basedir;    /* -o basedir=DIR */
	const char *mountpoint;
	int noacl;              /* -o noacl */
	int verity;             /* -o verity: check every backing file's digest */
	int open_requests;      /* -o open_requests: no zero-message open/opendir */
	int foreground;
	int singlethread;
	int clone_fd;
	unsigned int max_idle_threads;
};

struct cfs_fuse_setup;

enum {
	CFS_FUSE_PARSE_RUN = 0,   /* mount and serve */
	CFS_FUSE_PARSE_EXIT_OK = 1, /* --help or --version was printed */
	CFS_FUSE_PARSE_ERROR = 2, /* a usage error was printed */
};

/* Parses the command line the way the reference composefs-fuse does (libfuse's own
   options plus source=, basedir=, noacl), also accepting `IMAGE MOUNTPOINT`.
   *setup is set for every result and must be released with cfs_fuse_free. */
int cfs_fuse_parse(int argc, char **argv, const char *extra_help,
		   struct cfs_fuse_options *options, struct cfs_fuse_setup **setup);

/* Creates the session (read-only, kernel permission checks), mounts, daemonizes
   unless in the foreground, and serves until unmounted or signalled.
   Returns the process exit code. */
int cfs_fuse_serve(struct cfs_fuse_setup *setup, const struct fuse_lowlevel_ops *ops,
		   void *userdata);

void cfs_fuse_free(struct cfs_fuse_setup *setup);

/* Replies to a read with `size` bytes at `offset` of fd (spliced when the kernel allows). */
int cfs_fuse_reply_fd(fuse_req_t req, int fd, size_t size, off_t offset);

/* openat2(dirfd, path, O_RDONLY|O_NOFOLLOW|O_CLOEXEC|O_NOCTTY) confined below dirfd
   (RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS); falls back to plain openat where openat2
   is missing. Returns the fd or -errno. */
int cfs_open_beneath(int dirfd, const char *path);

#endif
