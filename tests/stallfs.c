/* SPDX-License-Identifier: MIT */
/*
 * A FUSE filesystem in a thread of the test, on /dev/fuse directly (no
 * libfuse), to play a file that stops answering: the image on a FUSE or
 * stalled NFS mount that issue 14 item 5 is about.  It serves a flat
 * directory of a few names, each backed by a real file; while `stall` is
 * set, reads and writes of the file "img" are never answered, until
 * stallfs_release() answers them all with EIO.  While `hold` is set, they
 * wait (everything else is served) and are then served in order when it
 * is cleared: a disk far slower than the writers of a region
 * (stallfs_hold()).
 *
 * The server is a child process (dying with the test), so that a test
 * that fails while its own I/O waits on the file cannot hang on itself:
 * when the server goes, the connection is aborted and whatever waits on
 * it fails.  Its state shared with the test lives in a shared mapping.
 *
 * Included by the itests that use it (it is not in the harness: only a
 * root test can mount).
 */
#include <linux/fuse.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#define STALLFS_NAMES 5
#define STALLFS_MAX_STALLED 256

struct stallfs_shared {
	atomic_bool stall;             /* hold back reads and writes of "img" */
	atomic_uint release;           /* bumped: answer those held back (EIO) */
	atomic_uint released;          /* ... the server caught up with it */
	atomic_uint stalled_total;     /* requests held back, ever */
	atomic_bool hold;              /* reads and writes of "img" wait */
	atomic_uint held_total;        /* requests that waited, ever */
	atomic_uint held_now;          /* requests waiting now */
};

struct stallfs {
	char mnt[160];
	char back[STALLFS_NAMES][200]; /* backing files, by node id - 2 */
	int fd;                        /* /dev/fuse (in the server) */
	pid_t server;
	struct stallfs_shared *sh;     /* shared with the server */
	uint64_t stalled[STALLFS_MAX_STALLED]; /* unique ids held back */
	unsigned nstalled;
	void *held[STALLFS_MAX_STALLED]; /* copies of requests on hold */
	unsigned nheld;
};

/* The image and its sidecars, and the temporary names libpager writes
 * the sidecars under before it renames them into place. */
static const char *const stallfs_names[STALLFS_NAMES] = {
	"img", "img.meta", "img.crc", "img.meta.tmp", "img.crc.tmp",
};

/* The node of a name in the root, or 0. */
static uint64_t stallfs_node(const char *name)
{
	for (unsigned i = 0; i < STALLFS_NAMES; i++)
		if (!strcmp(name, stallfs_names[i]))
			return 2 + i;
	return 0;
}

static void stallfs_reply(struct stallfs *f, uint64_t unique, int error,
			  const void *body, size_t len)
{
	struct fuse_out_header h = {
		.len = (uint32_t)(sizeof(h) + (error ? 0 : len)), .error = error,
		.unique = unique,
	};
	struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)(uintptr_t)body, error ? 0 : len } };

	(void)!writev(f->fd, iov, 2);
}

static int stallfs_attr(struct stallfs *f, uint64_t node, struct fuse_attr *a)
{
	struct stat st;

	memset(a, 0, sizeof(*a));
	a->ino = node;
	a->nlink = 1;
	a->blksize = 4096;
	if (node == FUSE_ROOT_ID) {
		a->mode = S_IFDIR | 0755;
		return 0;
	}
	if (node < 2 || node >= 2 + STALLFS_NAMES || stat(f->back[node - 2], &st) < 0)
		return -ENOENT;
	a->mode = S_IFREG | 0644;
	a->size = (uint64_t)st.st_size;
	a->blocks = (uint64_t)st.st_blocks;
	return 0;
}

static void stallfs_request(struct stallfs *f, const struct fuse_in_header *in,
			    const uint8_t *body, uint8_t *out)
{
	uint64_t node = in->nodeid;
	int e;

	switch (in->opcode) {
	case FUSE_INIT: {
		const struct fuse_init_in *ii = (const void *)body;
		struct fuse_init_out io = {
			.major = FUSE_KERNEL_VERSION, .minor = 31,
			.max_readahead = ii->max_readahead, .max_write = 128 << 10,
			.max_background = 16, .congestion_threshold = 12, .max_pages = 32,
		};
		stallfs_reply(f, in->unique, 0, &io, sizeof(io));
		return;
	}
	case FUSE_LOOKUP: {
		struct fuse_entry_out eo = { 0 };

		if (node == FUSE_ROOT_ID)
			eo.nodeid = stallfs_node((const char *)body);
		if (!eo.nodeid || stallfs_attr(f, eo.nodeid, &eo.attr) < 0) {
			stallfs_reply(f, in->unique, -ENOENT, NULL, 0);
			return;
		}
		stallfs_reply(f, in->unique, 0, &eo, sizeof(eo));
		return;
	}
	/* What committing the sidecars takes: a file created under a
	 * temporary name, renamed into place; an old one unlinked. */
	case FUSE_CREATE: {
		const struct fuse_create_in *ci = (const void *)body;
		struct {
			struct fuse_entry_out eo;
			struct fuse_open_out oo;
		} out_ = { 0 };
		uint64_t n = stallfs_node((const char *)(ci + 1));
		int bfd = n ? open(f->back[n - 2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;

		if (bfd < 0) {
			stallfs_reply(f, in->unique, n ? -errno : -EACCES, NULL, 0);
			return;
		}
		close(bfd);
		out_.eo.nodeid = n;
		stallfs_attr(f, n, &out_.eo.attr);
		out_.oo.fh = n;
		stallfs_reply(f, in->unique, 0, &out_, sizeof(out_));
		return;
	}
	case FUSE_RENAME: {
		const struct fuse_rename_in *ri = (const void *)body;
		const char *from = (const char *)(ri + 1), *to = from + strlen(from) + 1;
		uint64_t a = stallfs_node(from), b = stallfs_node(to);

		e = !a || !b ? -EACCES : rename(f->back[a - 2], f->back[b - 2]) < 0 ? -errno : 0;
		stallfs_reply(f, in->unique, e, NULL, 0);
		return;
	}
	case FUSE_UNLINK: {
		uint64_t n = stallfs_node((const char *)body);

		e = !n ? -ENOENT : unlink(f->back[n - 2]) < 0 ? -errno : 0;
		stallfs_reply(f, in->unique, e, NULL, 0);
		return;
	}
	case FUSE_GETATTR:
	case FUSE_SETATTR: {
		struct fuse_attr_out ao = { 0 };

		if (in->opcode == FUSE_SETATTR) {
			const struct fuse_setattr_in *si = (const void *)body;

			if ((si->valid & FATTR_SIZE) && node >= 2 && node < 2 + STALLFS_NAMES &&
			    truncate(f->back[node - 2], (off_t)si->size) < 0) {
				stallfs_reply(f, in->unique, -errno, NULL, 0);
				return;
			}
		}
		e = stallfs_attr(f, node, &ao.attr);
		stallfs_reply(f, in->unique, e, &ao, sizeof(ao));
		return;
	}
	case FUSE_OPEN:
	case FUSE_OPENDIR: {
		struct fuse_open_out oo = { .fh = node };

		stallfs_reply(f, in->unique, 0, &oo, sizeof(oo));
		return;
	}
	case FUSE_READ:
	case FUSE_WRITE:
		if (node == 2 && atomic_load(&f->sh->stall)) {
			/* The file stops answering. */
			if (f->nstalled < STALLFS_MAX_STALLED)
				f->stalled[f->nstalled++] = in->unique;
			atomic_fetch_add(&f->sh->stalled_total, 1);
			return;
		}
		if (node == 2 && atomic_load(&f->sh->hold) && f->nheld < STALLFS_MAX_STALLED &&
		    (f->held[f->nheld] = malloc(in->len))) {
			/* The disk is slow: this request waits, a copy
			 * kept, until the hold ends (stallfs_serve()). */
			memcpy(f->held[f->nheld++], in, in->len);
			atomic_fetch_add(&f->sh->held_total, 1);
			atomic_fetch_add(&f->sh->held_now, 1);
			return;
		}
		if (node < 2 || node >= 2 + STALLFS_NAMES) {
			stallfs_reply(f, in->unique, -EIO, NULL, 0);
			return;
		}
		if (in->opcode == FUSE_READ) {
			const struct fuse_read_in *ri = (const void *)body;
			int bfd = open(f->back[node - 2], O_RDONLY | O_CLOEXEC);
			ssize_t k = bfd < 0 ? -1 : pread(bfd, out, ri->size, (off_t)ri->offset);

			e = k < 0 ? -errno : 0;
			if (bfd >= 0)
				close(bfd);
			stallfs_reply(f, in->unique, e, out, k < 0 ? 0 : (size_t)k);
		} else {
			const struct fuse_write_in *wi = (const void *)body;
			int bfd = open(f->back[node - 2], O_WRONLY | O_CLOEXEC);
			ssize_t k = bfd < 0 ? -1 : pwrite(bfd, body + sizeof(*wi), wi->size,
							   (off_t)wi->offset);
			struct fuse_write_out wo = { .size = k < 0 ? 0 : (uint32_t)k };

			e = k < 0 ? -errno : 0;
			if (bfd >= 0)
				close(bfd);
			stallfs_reply(f, in->unique, e, &wo, sizeof(wo));
		}
		return;
	case FUSE_STATFS: {
		struct fuse_statfs_out so = { .st = { .bsize = 4096, .frsize = 4096,
						      .namelen = 255 } };

		stallfs_reply(f, in->unique, 0, &so, sizeof(so));
		return;
	}
	case FUSE_FORGET:
	case FUSE_BATCH_FORGET:
	case FUSE_INTERRUPT:
		return; /* no reply */
	case FUSE_RELEASE:
	case FUSE_RELEASEDIR:
	case FUSE_FLUSH:
	case FUSE_FSYNC:
	case FUSE_ACCESS:
		stallfs_reply(f, in->unique, 0, NULL, 0);
		return;
	default:
		/* LSEEK among them: the kernel then treats the file as all
		 * data (no SEEK_DATA). */
		stallfs_reply(f, in->unique, -ENOSYS, NULL, 0);
		return;
	}
}

/* The server's loop, in its own process. */
static void stallfs_serve(struct stallfs *f)
{
	size_t cap = (1 << 20) + 4096;
	uint8_t *buf = malloc(cap), *out = malloc(cap);

	for (;;) {
		struct pollfd pf = { f->fd, POLLIN, 0 };
		unsigned want = atomic_load(&f->sh->release);
		ssize_t n;

		if (want != atomic_load(&f->sh->released)) {
			for (unsigned i = 0; i < f->nstalled; i++)
				stallfs_reply(f, f->stalled[i], -EIO, NULL, 0);
			f->nstalled = 0;
			for (unsigned i = 0; i < f->nheld; i++) {
				stallfs_reply(f, ((struct fuse_in_header *)f->held[i])->unique,
					      -EIO, NULL, 0);
				free(f->held[i]);
			}
			f->nheld = 0;
			atomic_store(&f->sh->held_now, 0);
			atomic_store(&f->sh->released, want);
		}
		if (f->nheld && !atomic_load(&f->sh->hold)) {
			/* The hold ended: served now, in the order they came. */
			for (unsigned i = 0; i < f->nheld; i++) {
				stallfs_request(f, f->held[i], (uint8_t *)f->held[i] +
						sizeof(struct fuse_in_header), out);
				free(f->held[i]);
			}
			f->nheld = 0;
			atomic_store(&f->sh->held_now, 0);
		}
		if (poll(&pf, 1, 5) <= 0 || !(pf.revents & POLLIN))
			continue;
		n = read(f->fd, buf, cap);
		if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == ENOENT))
			continue;
		if (n < (ssize_t)sizeof(struct fuse_in_header))
			break; /* ENODEV: unmounted */
		stallfs_request(f, (const struct fuse_in_header *)buf,
				buf + sizeof(struct fuse_in_header), out);
	}
	_exit(0);
}

/*
 * Mounts the filesystem at `mnt`, names backed by back_dir/back_NAME, its
 * server in a child process.  Returns 0, or -errno (no FUSE here: the
 * caller skips).
 */
static int stallfs_mount(struct stallfs *f, const char *mnt, const char *back_dir)
{
	char opts[128];
	int ready[2], e = 0;

	memset(f, 0, sizeof(*f));
	snprintf(f->mnt, sizeof(f->mnt), "%s", mnt);
	for (unsigned i = 0; i < STALLFS_NAMES; i++)
		snprintf(f->back[i], sizeof(f->back[i]), "%s/back_%s", back_dir, stallfs_names[i]);
	f->sh = mmap(NULL, sizeof(*f->sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		     -1, 0);
	if (f->sh == MAP_FAILED)
		return -errno;
	memset(f->sh, 0, sizeof(*f->sh));
	if (mkdir(mnt, 0755) < 0 && errno != EEXIST)
		return -errno;
	if (pipe2(ready, O_CLOEXEC) < 0)
		return -errno;
	f->server = fork();
	if (f->server < 0)
		return -errno;
	if (f->server == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(ready[0]);
		f->fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
		if (f->fd >= 0) {
			snprintf(opts, sizeof(opts),
				 "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", f->fd);
			if (mount("stallfs", mnt, "fuse.stallfs", MS_NOSUID | MS_NODEV, opts) < 0)
				e = -errno;
		} else {
			e = -errno;
		}
		(void)!write(ready[1], &e, sizeof(e));
		close(ready[1]);
		if (e < 0)
			_exit(1);
		stallfs_serve(f);
	}
	close(ready[1]);
	if (read(ready[0], &e, sizeof(e)) != (ssize_t)sizeof(e))
		e = -EIO;
	close(ready[0]);
	if (e < 0) {
		waitpid(f->server, NULL, 0);
		rmdir(mnt);
	}
	return e;
}

static void stallfs_set_stall(struct stallfs *f, bool on)
{
	atomic_store(&f->sh->stall, on);
}

/* Reads and writes of "img" wait while on, and are served after: turning
 * it off returns once the server has served those that waited.  (A test
 * that held the disk again before then kept them waiting, and the next
 * ftruncate() of the image waited behind them for good.) */
static void stallfs_hold(struct stallfs *f, bool on)
{
	atomic_store(&f->sh->hold, on);
	for (int i = 0; !on && atomic_load(&f->sh->held_now) && i < 30000; i++)
		usleep(1000);
}

static unsigned stallfs_held(struct stallfs *f)
{
	return atomic_load(&f->sh->held_total);
}

static unsigned stallfs_stalled(struct stallfs *f)
{
	return atomic_load(&f->sh->stalled_total);
}

/* Answers every request held back with EIO (and holds back no more). */
static void stallfs_release(struct stallfs *f)
{
	unsigned want;

	atomic_store(&f->sh->stall, false);
	atomic_store(&f->sh->hold, false);
	want = atomic_fetch_add(&f->sh->release, 1) + 1;
	while (atomic_load(&f->sh->released) != want)
		usleep(1000);
}

static void stallfs_unmount(struct stallfs *f)
{
	stallfs_release(f);
	umount2(f->mnt, MNT_DETACH);
	/* The server's descriptor is the connection's last: whatever still
	 * waits on it fails (ENOTCONN). */
	kill(f->server, SIGKILL);
	waitpid(f->server, NULL, 0);
	rmdir(f->mnt);
	munmap(f->sh, sizeof(*f->sh));
}
