#define _GNU_SOURCE
#include "cfuse_shim.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct cfs_fuse_setup {
	struct fuse_args args;
	struct fuse_cmdline_opts cmdline;
	/* Filled by fuse_opt_parse (strings are malloc'ed by it). */
	char *source;
	char *basedir;
	int noacl;
	int verity;
	int open_requests;
	/* Non-option arguments seen so far. */
	char *positional[2];
	int positional_count;
};

#define CFS_OPT(template, field, value) { template, offsetof(struct cfs_fuse_setup, field), value }

static const struct fuse_opt cfs_fuse_opts[] = {
	CFS_OPT("source=%s", source, 0),
	CFS_OPT("basedir=%s", basedir, 0),
	CFS_OPT("noacl", noacl, 1),
	CFS_OPT("verity", verity, 1),
	CFS_OPT("open_requests", open_requests, 1),
	FUSE_OPT_END
};

/* Takes the first two non-option arguments out of the vector; everything else stays
   for libfuse (which rejects a third non-option argument itself). */
static int cfs_fuse_collect(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct cfs_fuse_setup *setup = data;
	(void)outargs;
	if (key != FUSE_OPT_KEY_NONOPT || setup->positional_count == 2)
		return 1;
	setup->positional[setup->positional_count] = strdup(arg);
	if (setup->positional[setup->positional_count] == NULL)
		return -1;
	setup->positional_count++;
	return 0;
}

static void cfs_fuse_usage(const char *program)
{
	printf("usage: %s [options] <mountpoint>\n", program);
	printf("       %s [options] <image> <mountpoint>\n", program);
	printf("       %s --help\n", program);
}

int cfs_fuse_parse(int argc, char **argv, const char *extra_help,
		   struct cfs_fuse_options *options, struct cfs_fuse_setup **out)
{
	struct cfs_fuse_setup *setup = calloc(1, sizeof(*setup));
	const char *program = argc > 0 ? argv[0] : "composefs-fuse";

	*out = setup;
	memset(options, 0, sizeof(*options));
	if (setup == NULL) {
		fprintf(stderr, "%s: out of memory\n", program);
		return CFS_FUSE_PARSE_ERROR;
	}
	setup->args = (struct fuse_args)FUSE_ARGS_INIT(argc, argv);

	if (fuse_opt_parse(&setup->args, setup, cfs_fuse_opts, cfs_fuse_collect) != 0)
		return CFS_FUSE_PARSE_ERROR;

	const char *mountpoint = NULL;
	if (setup->positional_count == 2) {
		if (setup->source != NULL) {
			fprintf(stderr, "%s: the image is given both as source= and as an argument\n", program);
			return CFS_FUSE_PARSE_ERROR;
		}
		setup->source = setup->positional[0];
		setup->positional[0] = NULL;
		mountpoint = setup->positional[1];
	} else if (setup->positional_count == 1) {
		mountpoint = setup->positional[0];
	}
	if (mountpoint != NULL && fuse_opt_add_arg(&setup->args, mountpoint) != 0)
		return CFS_FUSE_PARSE_ERROR;

	if (fuse_parse_cmdline(&setup->args, &setup->cmdline) != 0)
		return CFS_FUSE_PARSE_ERROR;

	if (setup->cmdline.show_help) {
		cfs_fuse_usage(program);
		printf("\n%s\n", extra_help);
		fuse_cmdline_help();
		fuse_lowlevel_help();
		return CFS_FUSE_PARSE_EXIT_OK;
	}
	if (setup->cmdline.show_version) {
		printf("FUSE library version %s\n", fuse_pkgversion());
		fuse_lowlevel_version();
		return CFS_FUSE_PARSE_EXIT_OK;
	}
	if (setup->cmdline.mountpoint == NULL) {
		cfs_fuse_usage(program);
		return CFS_FUSE_PARSE_ERROR;
	}

	/* Always read-only, and the kernel checks permissions against the modes we report. */
	if (fuse_opt_add_arg(&setup->args, "-o") != 0 ||
	    fuse_opt_add_arg(&setup->args, "ro,default_permissions") != 0)
		return CFS_FUSE_PARSE_ERROR;

	options->source = setup->source;
	options->basedir = setup->basedir;
	options->mountpoint = setup->cmdline.mountpoint;
	options->noacl = setup->noacl;
	options->verity = setup->verity;
	options->open_requests = setup->open_requests;
	options->foreground = setup->cmdline.foreground;
	options->singlethread = setup->cmdline.singlethread;
	options->clone_fd = setup->cmdline.clone_fd;
	options->max_idle_threads = setup->cmdline.max_idle_threads;
	return CFS_FUSE_PARSE_RUN;
}

int cfs_fuse_serve(struct cfs_fuse_setup *setup, const struct fuse_lowlevel_ops *ops, void *userdata)
{
	struct fuse_session *se;
	int ret = 1;

	se = fuse_session_new(&setup->args, ops, sizeof(*ops), userdata);
	if (se == NULL)
		return 1;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_destroy;
	if (fuse_session_mount(se, setup->cmdline.mountpoint) != 0)
		goto out_signals;

	fuse_daemonize(setup->cmdline.foreground);

	if (setup->cmdline.singlethread) {
		ret = fuse_session_loop(se);
	} else {
		struct fuse_loop_config config;
		memset(&config, 0, sizeof(config));
		/* A /dev/fuse descriptor per worker thread, as the reference does. */
		config.clone_fd = 1;
		config.max_idle_threads = setup->cmdline.max_idle_threads;
		ret = fuse_session_loop_mt(se, &config);
	}
	ret = ret != 0 ? 1 : 0;

	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_destroy:
	fuse_session_destroy(se);
	return ret;
}

void cfs_fuse_free(struct cfs_fuse_setup *setup)
{
	if (setup == NULL)
		return;
	free(setup->cmdline.mountpoint);
	free(setup->source);
	free(setup->basedir);
	free(setup->positional[0]);
	free(setup->positional[1]);
	fuse_opt_free_args(&setup->args);
	free(setup);
}

int cfs_fuse_reply_fd(fuse_req_t req, int fd, size_t size, off_t offset)
{
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);

	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = fd;
	buf.buf[0].pos = offset;
	return fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

int cfs_open_beneath(int dirfd, const char *path)
{
	static int have_openat2 = 1;
	int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY;
	int fd;

	if (__atomic_load_n(&have_openat2, __ATOMIC_RELAXED)) {
		struct open_how how;
		memset(&how, 0, sizeof(how));
		how.flags = flags;
		how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
		do {
			fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
		} while (fd < 0 && errno == EINTR);
		if (fd >= 0)
			return fd;
		if (errno != ENOSYS)
			return -errno;
		__atomic_store_n(&have_openat2, 0, __ATOMIC_RELAXED);
	}
	do {
		fd = openat(dirfd, path, flags);
	} while (fd < 0 && errno == EINTR);
	return fd >= 0 ? fd : -errno;
}
