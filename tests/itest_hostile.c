/* SPDX-License-Identifier: MIT */
/*
 * Hostile and crashing clients against a real pagerd.
 *
 * Every case sends pagerd something it must refuse, checks the exact -errno
 * in the reply, checks that pagerd kept no descriptor or mapping of what it
 * refused, and then checks that pagerd is alive and still serves a
 * well-behaved libpager client (in a child, under a deadline, so a wedged
 * daemon fails the test instead of hanging it).  Crash cases kill clients
 * mid-fault and check that pagerd drops everything it held for them while
 * another client keeps being served.
 *
 * Waiting is always for an event: a reply, a byte on a pipe, a child's exit
 * (pidfd), or the client count in pagerd's STATUS.  pagerd's open fds are
 * counted behind a barrier: a fresh control connection whose hello has been
 * answered.  pagerd accepts it in the same accept loop as any connection
 * made before it, and can read its hello only in a later batch of events
 * than the one it was accepted in, by which time every connection that was
 * closed before it has been seen at end of stream.  (Two round trips on one
 * connection are no barrier: pagerd reads up to 32 requests a callback.)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <grp.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "../daemon/log.h" /* the rate limits */
#include "fd.h"
#include "harness.h"
#include "pager.h"
#include "proto.h"
#include "uffd_compat.h"

/* pagerd's limits in this run (see group_setup). */
/* A client's hello leaves pagerd holding its uffd and its /proc/PID/pagemap
 * (the Clock hand reads references there). */
#define HELLO_FDS 2
#define MAX_REGIONS     16
#define MAX_REGION      (512ull << 20)
#define MAX_REGION_ARG  "512M"

/* Deadlines: only reached when pagerd stops answering. */
#define DEADLINE_MS     20000

/* A fake address for regions of raw clients: pagerd never touches the
 * client's address space unless it faults, so it need not be mapped. */
#define RAW_ADDR        0x100000000000ull

struct ctx {
	struct test_pagerd d;
	bool running;
	int base_fds;     /* pagerd's open fds with no client connected */
	size_t ps;
	/* For the per-test teardown: what a failed test leaves behind is
	 * cleaned up so that the next test does not inherit it. */
	bool fd_open_at_start[1024];
	pid_t kids[4];
};

/* ---- waiting for children and pipes ---------------------------------- */

/* Waits for child `pid` to exit, at most `ms`.  Returns its exit code,
 * 128 + signal if it was killed, or -ETIMEDOUT (the child is then killed
 * and reaped). */
static int wait_child(pid_t pid, int ms)
{
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0), st;
	struct pollfd p = { .fd = pfd, .events = POLLIN };
	int r;

	if (pfd >= 0) {
		do
			r = poll(&p, 1, ms);
		while (r < 0 && errno == EINTR);
		close(pfd);
		if (r == 0) {
			fprintf(stderr, "child %d: no exit within %d ms, killing it\n",
				(int)pid, ms);
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return -ETIMEDOUT;
		}
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Runs fn(arg) in a child; returns what wait_child() returns. */
static int run_child(int (*fn)(const struct ctx *), const struct ctx *c, int ms)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0)
		_exit(fn(c));
	return wait_child(pid, ms);
}

/* Reads one byte from `fd`, waiting at most `ms`; returns it or -errno. */
static int read_byte(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	unsigned char b;
	int r;

	do
		r = poll(&p, 1, ms);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		return -ETIMEDOUT;
	if (r < 0)
		return -errno;
	r = (int)read(fd, &b, 1);
	if (r == 1)
		return b;
	return r == 0 ? -EPIPE : -errno;
}

/* ---- pagerd's state -------------------------------------------------- */

/* Returns pagerd's open fd count once every connection made or closed
 * before the call is seen (see the top of the file). */
static int pagerd_fds(const struct ctx *c)
{
	int barrier = test_control_connect(c->d.sock), n;

	assert_true(barrier >= 0);
	n = test_count_fds(c->d.pid);
	close(barrier);
	return n - 1;
}

/* What each of pagerd's fds is, for a failure message. */
static void dump_fds(pid_t pid)
{
	char path[64], target[256];
	struct dirent *e;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	dir = opendir(path);
	if (!dir)
		return;
	while ((e = readdir(dir))) {
		ssize_t n;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/fd/%.16s", (int)pid, e->d_name);
		n = readlink(path, target, sizeof(target) - 1);
		target[n > 0 ? n : 0] = '\0';
		fprintf(stderr, "pagerd fd %s -> %s\n", e->d_name, target);
	}
	closedir(dir);
}

/* pagerd holds exactly `want` fds (a macro, so that a failure names the
 * caller's line). */
#define assert_fds(c, want)                                  \
	do {                                                 \
		int n_ = pagerd_fds(c), want_ = (want);       \
		if (n_ != want_)                              \
			dump_fds((c)->d.pid);                 \
		assert_int_equal(n_, want_);                  \
	} while (0)

/*
 * The well-behaved client: a region whose pages are first touched in a
 * scattered order (one fault each) and sequentially (fault-around), every
 * byte written and verified, and an untouched part that must read zero.
 * Runs in a child; returns 0 or a code saying which step failed.
 */
static int well_behaved(const struct ctx *c)
{
	struct pager_opts o = {
		.sz = sizeof(o), .socket_path = c->d.sock,
		.flags = PAGER_OPEN_NO_PRIVATE,
	};
	struct pager_region_opts ro = { .sz = sizeof(ro), .name = "well-behaved" };
	size_t len = 8u << 20, words = c->ps / 8, n = len / c->ps, half = n / 2;
	struct pager_region *r;
	struct pager *p;
	uint64_t *mem;
	int e;

	e = pager_open(&p, &o);
	if (e < 0) {
		fprintf(stderr, "well-behaved: pager_open: %s\n", strerror(-e));
		return 10;
	}
	e = pager_region_create(p, len, &ro, &r);
	if (e < 0) {
		fprintf(stderr, "well-behaved: pager_region_create: %s\n", strerror(-e));
		return 12;
	}
	mem = pager_region_addr(r);
	/* 7 is coprime with the power of two `half`: every page once. */
	for (size_t k = 0; k < half; k++) {
		size_t pg = k * 7 % half;

		for (size_t w = 0; w < words; w++)
			mem[pg * words + w] = (pg << 20) ^ w ^ 0x5eed;
	}
	for (size_t pg = half; pg < n - n / 4; pg++)
		for (size_t w = 0; w < words; w++)
			mem[pg * words + w] = (pg << 20) ^ w ^ 0x5eed;
	for (size_t pg = 0; pg < n; pg++)
		for (size_t w = 0; w < words; w++) {
			uint64_t want = pg < n - n / 4 ? (pg << 20) ^ w ^ 0x5eed : 0;

			if (mem[pg * words + w] != want) {
				fprintf(stderr, "well-behaved: page %zu word %zu reads %#llx, wrote %#llx\n",
					pg, w, (unsigned long long)mem[pg * words + w],
					(unsigned long long)want);
				return 13;
			}
		}
	e = pager_region_destroy(r);
	pager_close(p);
	if (e < 0) {
		fprintf(stderr, "well-behaved: pager_region_destroy: %s\n", strerror(-e));
		return 14;
	}
	return 0;
}

/* pagerd is alive and serves a well-behaved client. */
static void assert_served(const struct ctx *c)
{
	assert_true(test_pagerd_alive((struct test_pagerd *)&c->d));
	assert_int_equal(run_child(well_behaved, c, DEADLINE_MS), 0);
	assert_true(test_pagerd_alive((struct test_pagerd *)&c->d));
}

/* Every client but our control connection is gone and left nothing: no
 * fd beyond the baseline, no memfd mapped, no region counted. */
static void assert_clean(const struct ctx *c)
{
	struct proto_reply st;

	assert_int_equal(test_wait_clients(c->d.sock, 0, DEADLINE_MS), 0);
	assert_fds(c, c->base_fds);
	assert_int_equal(test_count_memfd_maps(c->d.pid), 0);
	assert_int_equal(test_status(c->d.sock, &st), 0);
	assert_int_equal(st.clients, 0);
	assert_int_equal(st.regions, 0);
	assert_int_equal(st.mapped_bytes, 0);
}

/* ---- a raw (hostile) client ------------------------------------------- */

/* A userfaultfd with `features` negotiated by UFFDIO_API, or -errno. */
static int uffd_open(uint64_t features)
{
	int flags = O_CLOEXEC | O_NONBLOCK, fd = -1, dev, e;
	struct uffdio_api api = { .api = UFFD_API, .features = features };

	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
		close(dev);
	}
	if (fd < 0)
		fd = (int)syscall(SYS_userfaultfd, flags);
	if (fd < 0 && errno == EPERM)
		fd = (int)syscall(SYS_userfaultfd, flags | UFFD_USER_MODE_ONLY);
	if (fd < 0)
		return -errno;
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

static void hello_body(const struct ctx *c, struct proto_msg *m, uint32_t flags)
{
	memset(m, 0, sizeof(*m));
	m->body.hello.flags = flags;
	m->body.hello.page_size = (uint32_t)c->ps;
	m->body.hello.uffd_features = PAGER_UFFD_FEATURES_REQUIRED;
}

/* A hello carrying a real uffd with the required features.  The uffd is
 * returned in *ret_uffd if wanted, else closed (pagerd has its own copy). */
static int raw_hello(const struct ctx *c, int s, int *ret_uffd)
{
	struct proto_msg m;
	int uffd = uffd_open(PAGER_UFFD_FEATURES_REQUIRED), e;

	assert_true(uffd >= 0);
	hello_body(c, &m, 0);
	e = test_raw_call(s, &m, PROTO_HELLO, 0, &uffd, 1, NULL);
	if (ret_uffd)
		*ret_uffd = uffd;
	else
		close(uffd);
	return e;
}

/* A raw client that said hello with a real uffd. */
static int hostile_client(const struct ctx *c)
{
	int s = test_raw_connect(c->d.sock);

	assert_true(s >= 0);
	assert_int_equal(raw_hello(c, s, NULL), 0);
	return s;
}

/* A memfd of `len` bytes with `seals` added. */
static int memfd_sized(size_t len, unsigned seals)
{
	int fd = memfd_create("hostile", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)len), 0);
	if (seals)
		assert_int_equal(fcntl(fd, F_ADD_SEALS, seals), 0);
	return fd;
}

/* The seals pagerd requires: final, so that none can be added later. */
#define SEALED (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

/* REGION_CREATE at addr/len carrying `fd` (none if < 0); returns the
 * reply's status and the region id in *ret_id. */
static int raw_create(int s, uint64_t addr, uint64_t len, int fd,
		      uint64_t *ret_id)
{
	struct proto_msg m = { 0 };
	struct proto_reply rep;
	int e;

	m.body.region_create.addr = addr;
	m.body.region_create.len = len;
	strcpy(m.body.region_create.name, "hostile");
	e = test_raw_call(s, &m, PROTO_REGION_CREATE, 0, &fd, fd >= 0 ? 1 : 0, &rep);
	if (e == 0) {
		assert_true(rep.region_id > 0);
		if (ret_id)
			*ret_id = rep.region_id;
	}
	return e;
}

static int raw_destroy(int s, uint64_t id)
{
	struct proto_msg m = { 0 };

	m.body.region_destroy.region_id = id;
	return test_raw_call(s, &m, PROTO_REGION_DESTROY, 0, NULL, 0, NULL);
}

/*
 * Sends exactly `len` bytes of `buf` with any number of fds, which
 * test_raw_call (through proto_send) refuses to do, and returns the status
 * of the reply or -errno.
 */
static int raw_send_any(int s, const void *buf, size_t len, const int *fds,
			unsigned nfds, struct proto_reply *ret)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * 32)];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct proto_msg rep;
	int rfds[PROTO_MAX_FDS], e;
	unsigned nr;
	ssize_t got;

	assert_true(nfds <= 32);
	if (nfds) {
		struct cmsghdr *cm;

		memset(&cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	if (sendmsg(s, &mh, MSG_NOSIGNAL) != (ssize_t)len)
		return -errno;
	got = proto_recv(s, &rep, rfds, &nr);
	for (unsigned i = 0; i < nr; i++)
		close(rfds[i]);
	if (got <= 0)
		return got == 0 ? -ECONNRESET : (int)got;
	e = proto_validate(&rep, (size_t)got);
	if (e < 0)
		return e;
	if (rep.hdr.type != PROTO_REPLY)
		return -EBADMSG;
	if (ret)
		*ret = rep.body.reply;
	return rep.body.reply.status;
}

/* ---- hello ------------------------------------------------------------ */

static void test_hello_without_uffd(void **state)
{
	const struct ctx *c = *state;
	int s = test_raw_connect(c->d.sock), pfd[2], devnull, memfd, sv[2], fds;
	struct proto_msg m;

	assert_true(s >= 0);
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	assert_true(devnull >= 0);
	memfd = memfd_sized(c->ps, SEALED);
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	fds = pagerd_fds(c);

	const int not_uffd[] = { pfd[0], pfd[1], devnull, memfd, sv[0] };
	for (size_t i = 0; i < sizeof(not_uffd) / sizeof(not_uffd[0]); i++) {
		hello_body(c, &m, 0);
		assert_int_equal(test_raw_call(s, &m, PROTO_HELLO, 0, &not_uffd[i], 1, NULL),
				 -EBADF);
	}
	hello_body(c, &m, 0);
	assert_int_equal(test_raw_call(s, &m, PROTO_HELLO, 0, NULL, 0, NULL), -EBADF);
	assert_fds(c, fds);

	/* Refused hellos leave the connection usable and unconnected. */
	m = (struct proto_msg){ 0 };
	assert_int_equal(test_raw_call(s, &m, PROTO_STATUS, 0, NULL, 0, NULL), -ENOTCONN);
	assert_int_equal(raw_hello(c, s, NULL), 0);
	assert_fds(c, fds + HELLO_FDS); /* what it took from the hello */

	close(s);
	close(pfd[0]);
	close(pfd[1]);
	close(devnull);
	close(memfd);
	close(sv[0]);
	close(sv[1]);
	assert_clean(c);
	assert_served(c);
}

/* A uffd without the features pagerd needs: with none negotiated, with
 * all but one, and one on which UFFDIO_API was never issued. */
static void test_hello_uffd_without_features(void **state)
{
	const struct ctx *c = *state;
	int s = test_raw_connect(c->d.sock), fds, uffd;
	const uint64_t req = PAGER_UFFD_FEATURES_REQUIRED;
	const uint64_t lacking[] = {
		0,
		req & ~(uint64_t)UFFD_FEATURE_MISSING_SHMEM,
		req & ~(uint64_t)UFFD_FEATURE_EVENT_UNMAP,
	};
	struct proto_msg m;

	assert_true(s >= 0);
	fds = pagerd_fds(c);
	for (size_t i = 0; i < sizeof(lacking) / sizeof(lacking[0]); i++) {
		uffd = uffd_open(lacking[i]);
		assert_true(uffd >= 0);
		hello_body(c, &m, 0);
		assert_int_equal(test_raw_call(s, &m, PROTO_HELLO, 0, &uffd, 1, NULL),
				 -EOPNOTSUPP);
		close(uffd);
	}
	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (uffd >= 0) {
		hello_body(c, &m, 0);
		assert_int_equal(test_raw_call(s, &m, PROTO_HELLO, 0, &uffd, 1, NULL),
				 -EOPNOTSUPP);
		close(uffd);
	}
	assert_fds(c, fds);
	close(s);
	assert_clean(c);
	assert_served(c);
}

/* ---- region create ---------------------------------------------------- */

/* Each refused region fd: the right errno, and pagerd keeps neither the fd
 * nor a mapping of it. */
static void test_region_bad_fd(void **state)
{
	const struct ctx *c = *state;
	const size_t len = 16 * c->ps;
	int s = hostile_client(c), fds, fd, pfd[2];
	uint64_t id;

	fds = pagerd_fds(c);

	fd = memfd_sized(len, 0); /* not sealed */
	assert_int_equal(raw_create(s, RAW_ADDR, len, fd, NULL), -EPERM);
	close(fd);
	fd = memfd_sized(len, F_SEAL_SHRINK); /* may still grow */
	assert_int_equal(raw_create(s, RAW_ADDR, len, fd, NULL), -EPERM);
	close(fd);
	fd = memfd_sized(len, F_SEAL_GROW); /* may still shrink */
	assert_int_equal(raw_create(s, RAW_ADDR, len, fd, NULL), -EPERM);
	close(fd);
	/* Seals not final: F_SEAL_FUTURE_WRITE could be added after, and
	 * every punch of an eviction would then fail. */
	fd = memfd_sized(len, F_SEAL_SHRINK | F_SEAL_GROW);
	assert_int_equal(raw_create(s, RAW_ADDR, len, fd, NULL), -EPERM);
	close(fd);
	/* Sealed against writing: pagerd could neither punch nor fill. */
	fd = memfd_sized(len, SEALED | F_SEAL_FUTURE_WRITE);
	assert_int_equal(raw_create(s, RAW_ADDR, len, fd, NULL), -EPERM);
	close(fd);
	fd = memfd_sized(len, SEALED | F_SEAL_WRITE);
	assert_int_equal(raw_create(s, RAW_ADDR, len, fd, NULL), -EPERM);
	close(fd);

	fd = memfd_sized(len / 2, SEALED); /* smaller than declared */
	assert_int_equal(raw_create(s, RAW_ADDR, len, fd, NULL), -EINVAL);
	close(fd);
	fd = memfd_sized(len * 2, SEALED); /* larger than declared */
	assert_int_equal(raw_create(s, RAW_ADDR, len, fd, NULL), -EINVAL);
	close(fd);

	fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600); /* not a memfd */
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)len), 0);
	assert_int_equal(raw_create(s, RAW_ADDR, len, fd, NULL), -EBADF);
	close(fd);
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	assert_int_equal(raw_create(s, RAW_ADDR, len, pfd[0], NULL), -EBADF);
	close(pfd[0]);
	close(pfd[1]);
	fd = uffd_open(PAGER_UFFD_FEATURES_REQUIRED);
	assert_true(fd >= 0);
	assert_int_equal(raw_create(s, RAW_ADDR, len, fd, NULL), -EBADF);
	close(fd);
	/* A hugetlbfs memfd is not shmem (only if the kernel has hugetlbfs). */
	fd = memfd_create("hostile-huge", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB);
	if (fd >= 0) {
		assert_int_equal(ftruncate(fd, 2 << 20), 0);
		assert_int_equal(fcntl(fd, F_ADD_SEALS, SEALED), 0);
		assert_int_equal(raw_create(s, RAW_ADDR, 2 << 20, fd, NULL), -EBADF);
		close(fd);
	}
	assert_int_equal(raw_create(s, RAW_ADDR, len, -1, NULL), -EBADF); /* no fd */

	assert_fds(c, fds);
	assert_int_equal(test_count_memfd_maps(c->d.pid), 0);

	/* The connection still works: a proper region is taken and freed. */
	fd = memfd_sized(len, SEALED);
	assert_int_equal(raw_create(s, RAW_ADDR, len, fd, &id), 0);
	close(fd);
	assert_fds(c, fds + 1);
	assert_int_equal(test_count_memfd_maps(c->d.pid), 1);
	assert_int_equal(raw_destroy(s, id), 0);
	assert_fds(c, fds);
	assert_int_equal(test_count_memfd_maps(c->d.pid), 0);

	close(s);
	assert_clean(c);
	assert_served(c);
}

/* Region geometry and fields: each refused with -EINVAL, a region over
 * --max-region with -EFBIG; exactly --max-region is fine. */
static void test_region_bad_geometry(void **state)
{
	const struct ctx *c = *state;
	const uint64_t ps = c->ps, len = 4 * ps;
	int s = hostile_client(c), fds, fd = memfd_sized(len, SEALED), big;
	struct proto_msg m;
	uint64_t id;

	fds = pagerd_fds(c);
	assert_int_equal(raw_create(s, RAW_ADDR, len + 1, fd, NULL), -EINVAL);
	assert_int_equal(raw_create(s, RAW_ADDR, len - 1, fd, NULL), -EINVAL);
	assert_int_equal(raw_create(s, RAW_ADDR + 1, len, fd, NULL), -EINVAL);
	assert_int_equal(raw_create(s, RAW_ADDR + ps / 2, len, fd, NULL), -EINVAL);
	assert_int_equal(raw_create(s, 0, len, fd, NULL), -EINVAL);
	assert_int_equal(raw_create(s, RAW_ADDR, 0, fd, NULL), -EINVAL);
	assert_int_equal(raw_create(s, UINT64_MAX - ps + 1, len, fd, NULL), -EINVAL);

	/* Fields other than the geometry. */
	memset(&m, 0, sizeof(m));
	m.body.region_create.addr = RAW_ADDR;
	m.body.region_create.len = len;
	m.body.region_create.flags = 1;
	assert_int_equal(test_raw_call(s, &m, PROTO_REGION_CREATE, 0, &fd, 1, NULL), -EINVAL);
	m.body.region_create.flags = 0;
	memset(m.body.region_create.name, 'x', PROTO_NAME_MAX); /* unterminated */
	assert_int_equal(test_raw_call(s, &m, PROTO_REGION_CREATE, 0, &fd, 1, NULL), -EINVAL);
	strcpy(m.body.region_create.name, "bad\nname");
	assert_int_equal(test_raw_call(s, &m, PROTO_REGION_CREATE, 0, &fd, 1, NULL), -EINVAL);

	/* Over the limit: a correctly sized, sealed (sparse) memfd, so that
	 * the size limit is the only thing wrong. */
	big = memfd_sized(MAX_REGION + ps, SEALED);
	assert_int_equal(raw_create(s, RAW_ADDR, MAX_REGION + ps, big, NULL), -EFBIG);
	close(big);
	assert_int_equal(raw_create(s, RAW_ADDR, 1ull << 62, fd, NULL), -EFBIG);
	assert_fds(c, fds);
	assert_int_equal(test_count_memfd_maps(c->d.pid), 0);

	big = memfd_sized(MAX_REGION, SEALED);
	assert_int_equal(raw_create(s, RAW_ADDR, MAX_REGION, big, &id), 0);
	close(big);
	assert_int_equal(raw_destroy(s, id), 0);

	close(fd);
	close(s);
	assert_clean(c);
	assert_served(c);
}

/* Regions of one client cannot overlap; touching ones are fine. */
static void test_region_overlap(void **state)
{
	const struct ctx *c = *state;
	const uint64_t ps = c->ps, a = RAW_ADDR + 64 * ps, len = 16 * ps;
	const struct { uint64_t addr, len; } overlap[] = {
		{ a, len },                    /* the same */
		{ a + 4 * ps, 4 * ps },        /* inside */
		{ a - 8 * ps, 16 * ps },       /* over the start */
		{ a + 8 * ps, 16 * ps },       /* over the end */
		{ a - 8 * ps, 32 * ps },       /* around */
		{ a + len - ps, ps },          /* the last page */
		{ a - ps, 2 * ps },            /* the first page */
	};
	int s = hostile_client(c), fds, fd;
	uint64_t id[3];

	fd = memfd_sized(len, SEALED);
	assert_int_equal(raw_create(s, a, len, fd, &id[0]), 0);
	close(fd);
	fds = pagerd_fds(c);
	for (size_t i = 0; i < sizeof(overlap) / sizeof(overlap[0]); i++) {
		fd = memfd_sized(overlap[i].len, SEALED);
		assert_int_equal(raw_create(s, overlap[i].addr, overlap[i].len, fd, NULL),
				 -EEXIST);
		close(fd);
	}
	assert_fds(c, fds);
	assert_int_equal(test_count_memfd_maps(c->d.pid), 1);

	fd = memfd_sized(len, SEALED);
	assert_int_equal(raw_create(s, a - len, len, fd, &id[1]), 0); /* just below */
	close(fd);
	fd = memfd_sized(len, SEALED);
	assert_int_equal(raw_create(s, a + len, len, fd, &id[2]), 0); /* just above */
	close(fd);
	assert_int_equal(test_count_memfd_maps(c->d.pid), 3);

	for (int i = 0; i < 3; i++)
		assert_int_equal(raw_destroy(s, id[i]), 0);
	assert_int_equal(raw_destroy(s, id[0]), -ENOENT); /* twice */
	close(s);
	assert_clean(c);
	assert_served(c);
}

/* ---- malformed messages ---------------------------------------------- */

static void test_malformed_messages(void **state)
{
	const struct ctx *c = *state;
	int s = test_raw_connect(c->d.sock), fds, memfd = memfd_sized(c->ps, SEALED);
	const size_t hello_len = sizeof(struct proto_hdr) + sizeof(struct proto_hello);
	unsigned char big[4096];
	struct proto_msg m;

	assert_true(s >= 0);
	fds = pagerd_fds(c);

	/* Shorter than a header. */
	hello_body(c, &m, PROTO_HELLO_CONTROL);
	proto_finish(&m, PROTO_HELLO, 1);
	assert_int_equal(test_raw_call(s, &m, PROTO_HELLO, 1, NULL, 0, NULL), -EBADMSG);
	assert_int_equal(test_raw_call(s, &m, PROTO_HELLO, sizeof(m.hdr) - 1, NULL, 0, NULL),
			 -EBADMSG);
	/* A header claiming more than was sent. */
	assert_int_equal(test_raw_call(s, &m, PROTO_HELLO, hello_len - 4, NULL, 0, NULL),
			 -EBADMSG);
	assert_int_equal(test_raw_call(s, &m, PROTO_HELLO, sizeof(m.hdr), NULL, 0, NULL),
			 -EBADMSG);
	/* Size consistent with what was sent, not with the type. */
	m.hdr.size = (uint32_t)(hello_len - 4);
	assert_int_equal(test_raw_call(s, &m, PROTO_HELLO, hello_len - 4, NULL, 0, NULL),
			 -EBADMSG);
	/* Truncated and carrying a descriptor: refused, descriptor dropped. */
	assert_int_equal(test_raw_call(s, &m, PROTO_HELLO, 6, &memfd, 1, NULL), -EBADMSG);
	/* Bad magic. */
	proto_finish(&m, PROTO_HELLO, 2);
	m.hdr.magic = ~PROTO_MAGIC;
	assert_int_equal(test_raw_call(s, &m, PROTO_HELLO, hello_len, NULL, 0, NULL), -EBADMSG);

	/* Bigger than any message. */
	memset(big, 0, sizeof(big));
	proto_finish(&m, PROTO_HELLO, 3);
	memcpy(big, &m, hello_len);
	assert_int_equal(raw_send_any(s, big, sizeof(struct proto_msg) + 1, NULL, 0, NULL),
			 -EMSGSIZE);
	assert_int_equal(raw_send_any(s, big, sizeof(big), NULL, 0, NULL), -EMSGSIZE);
	assert_int_equal(raw_send_any(s, big, sizeof(big), &memfd, 1, NULL), -EMSGSIZE);

	/* Another protocol version. */
	for (uint16_t v = 0; v < 4; v++) {
		if (v == PROTO_VERSION)
			continue;
		proto_finish(&m, PROTO_HELLO, 4);
		m.hdr.version = v;
		assert_int_equal(test_raw_call(s, &m, PROTO_HELLO, hello_len, NULL, 0, NULL),
				 -EPROTONOSUPPORT);
	}
	/* Unknown types, with a size that is right for an empty body. */
	const uint16_t unknown[] = { 0, PROTO_TYPE_MAX_REQUEST + 1, 99, 101, 0xffff };
	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
		memset(&m, 0, sizeof(m));
		proto_finish(&m, PROTO_STATUS, 5);
		m.hdr.type = unknown[i];
		assert_int_equal(test_raw_call(s, &m, PROTO_STATUS, sizeof(m.hdr), NULL, 0, NULL),
				 -EOPNOTSUPP);
	}
	/* Bad fields of a well-formed hello. */
	hello_body(c, &m, 1u << 7);
	assert_int_equal(test_raw_call(s, &m, PROTO_HELLO, 0, NULL, 0, NULL), -EINVAL);
	hello_body(c, &m, PROTO_HELLO_CONTROL);
	m.body.hello.page_size = (uint32_t)c->ps * 2;
	assert_int_equal(test_raw_call(s, &m, PROTO_HELLO, 0, NULL, 0, NULL), -EINVAL);
	m.body.hello.page_size = 3000;
	assert_int_equal(test_raw_call(s, &m, PROTO_HELLO, 0, NULL, 0, NULL), -EINVAL);

	assert_fds(c, fds);

	/* None of it wedged the connection: a proper hello still works, and
	 * a reply sent to the daemon is refused as an unknown request. */
	assert_int_equal(raw_hello(c, s, NULL), 0);
	memset(&m, 0, sizeof(m));
	assert_int_equal(test_raw_call(s, &m, PROTO_REPLY, 0, NULL, 0, NULL), -EOPNOTSUPP);

	close(memfd);
	close(s);
	assert_clean(c);
	assert_served(c);
}

/* More descriptors than a message may carry: all of them closed. */
static void test_too_many_fds(void **state)
{
	const struct ctx *c = *state;
	int s = test_raw_connect(c->d.sock), fds, many[20];
	int uffd = uffd_open(PAGER_UFFD_FEATURES_REQUIRED);
	const size_t hello_len = sizeof(struct proto_hdr) + sizeof(struct proto_hello);
	const size_t create_len = sizeof(struct proto_hdr) + sizeof(struct proto_region_create);
	struct proto_msg m;
	uint64_t id;

	assert_true(s >= 0);
	assert_true(uffd >= 0);
	for (int i = 0; i < 20; i++)
		many[i] = memfd_sized(c->ps, SEALED);
	fds = pagerd_fds(c);

	/* A hello with its uffd and one or two more (a message may carry
	 * three, a snapshot's image, its IMAGE.crc and its IMAGE.order:
	 * refused by the hello), and with three more (refused as the
	 * message arrives). */
	hello_body(c, &m, 0);
	proto_finish(&m, PROTO_HELLO, 1);
	int two[2] = { uffd, many[0] }, three[3] = { uffd, many[0], many[1] };
	int four[4] = { uffd, many[0], many[1], many[2] };
	assert_int_equal(raw_send_any(s, &m, hello_len, two, 2, NULL), -EBADF);
	assert_fds(c, fds);
	assert_int_equal(raw_send_any(s, &m, hello_len, three, 3, NULL), -EBADF);
	assert_fds(c, fds);
	assert_int_equal(raw_send_any(s, &m, hello_len, four, 4, NULL), -EMSGSIZE);
	assert_fds(c, fds);
	/* Not taken as a hello: the connection is still unconnected. */
	memset(&m, 0, sizeof(m));
	assert_int_equal(test_raw_call(s, &m, PROTO_STATUS, 0, NULL, 0, NULL), -ENOTCONN);
	assert_int_equal(raw_hello(c, s, NULL), 0);
	fds += HELLO_FDS; /* the uffd and the pagemap */
	assert_fds(c, fds);

	/* A region create with two memfds, three, four, then twenty (more
	 * than pagerd's control buffer holds: the kernel truncates). */
	memset(&m, 0, sizeof(m));
	m.body.region_create.addr = RAW_ADDR;
	m.body.region_create.len = c->ps;
	proto_finish(&m, PROTO_REGION_CREATE, 2);
	assert_int_equal(raw_send_any(s, &m, create_len, many, 2, NULL), -EBADF);
	assert_int_equal(raw_send_any(s, &m, create_len, many, 3, NULL), -EBADF);
	assert_int_equal(raw_send_any(s, &m, create_len, many, 4, NULL), -EMSGSIZE);
	assert_int_equal(raw_send_any(s, &m, create_len, many, 20, NULL), -EMSGSIZE);
	assert_fds(c, fds);
	assert_int_equal(test_count_memfd_maps(c->d.pid), 0);

	/* A descriptor on a message that takes none. */
	memset(&m, 0, sizeof(m));
	m.body.region_destroy.region_id = 12345;
	assert_int_equal(test_raw_call(s, &m, PROTO_REGION_DESTROY, 0, &many[0], 1, NULL),
			 -EBADF);
	memset(&m, 0, sizeof(m));
	assert_int_equal(test_raw_call(s, &m, PROTO_STATUS, 0, &many[0], 1, NULL), -EBADF);
	assert_fds(c, fds);

	/* The connection still creates a region with one memfd. */
	assert_int_equal(raw_create(s, RAW_ADDR, c->ps, many[0], &id), 0);
	assert_int_equal(raw_destroy(s, id), 0);

	for (int i = 0; i < 20; i++)
		close(many[i]);
	close(uffd);
	close(s);
	assert_clean(c);
	assert_served(c);
}

/* ---- protocol state ---------------------------------------------------- */

static void test_protocol_state(void **state)
{
	const struct ctx *c = *state;
	int s = test_raw_connect(c->d.sock), fds, memfd = memfd_sized(c->ps, SEALED), uffd;
	struct proto_msg m;

	assert_true(s >= 0);
	fds = pagerd_fds(c);

	/* Requests before hello. */
	memset(&m, 0, sizeof(m));
	assert_int_equal(test_raw_call(s, &m, PROTO_STATUS, 0, NULL, 0, NULL), -ENOTCONN);
	m.body.region_destroy.region_id = 1;
	assert_int_equal(test_raw_call(s, &m, PROTO_REGION_DESTROY, 0, NULL, 0, NULL),
			 -ENOTCONN);
	assert_int_equal(raw_create(s, RAW_ADDR, c->ps, memfd, NULL), -ENOTCONN);
	assert_fds(c, fds);
	assert_int_equal(test_count_memfd_maps(c->d.pid), 0);

	/* A control hello carrying a descriptor. */
	uffd = uffd_open(PAGER_UFFD_FEATURES_REQUIRED);
	assert_true(uffd >= 0);
	hello_body(c, &m, PROTO_HELLO_CONTROL);
	assert_int_equal(test_raw_call(s, &m, PROTO_HELLO, 0, &uffd, 1, NULL), -EINVAL);
	assert_fds(c, fds);

	/* A client hello, then a second one of either kind. */
	assert_int_equal(raw_hello(c, s, NULL), 0);
	assert_int_equal(raw_hello(c, s, NULL), -EISCONN);
	hello_body(c, &m, PROTO_HELLO_CONTROL);
	assert_int_equal(test_raw_call(s, &m, PROTO_HELLO, 0, NULL, 0, NULL), -EISCONN);
	assert_fds(c, fds + HELLO_FDS); /* only the first hello's kept */

	/* What a client may not do. */
	memset(&m, 0, sizeof(m));
	assert_int_equal(test_raw_call(s, &m, PROTO_STATUS, 0, NULL, 0, NULL), -EACCES);
	assert_int_equal(raw_destroy(s, 1), -ENOENT);
	assert_int_equal(raw_destroy(s, UINT64_MAX), -ENOENT);
	assert_int_equal(raw_destroy(s, 0), -EINVAL);
	close(s);

	/* A control connection: a second hello, and no regions. */
	s = test_control_connect(c->d.sock);
	assert_true(s >= 0);
	hello_body(c, &m, PROTO_HELLO_CONTROL);
	assert_int_equal(test_raw_call(s, &m, PROTO_HELLO, 0, NULL, 0, NULL), -EISCONN);
	assert_int_equal(test_raw_call(s, &m, PROTO_HELLO, 0, &uffd, 1, NULL), -EISCONN);
	assert_int_equal(raw_create(s, RAW_ADDR, c->ps, memfd, NULL), -EBADF);
	assert_int_equal(raw_destroy(s, 1), -EBADF);
	assert_int_equal(test_count_memfd_maps(c->d.pid), 0);
	close(s);

	close(uffd);
	close(memfd);
	assert_clean(c);
	assert_served(c);
}

/* A client cannot destroy another client's region: ids are per client. */
static void test_destroy_foreign_region(void **state)
{
	const struct ctx *c = *state;
	int a = hostile_client(c), b = hostile_client(c), fd = memfd_sized(c->ps, SEALED);
	uint64_t id;

	assert_int_equal(raw_create(a, RAW_ADDR, c->ps, fd, &id), 0);
	close(fd);
	assert_int_equal(raw_destroy(b, id), -ENOENT);
	assert_int_equal(test_count_memfd_maps(c->d.pid), 1);
	assert_int_equal(raw_destroy(a, id), 0);
	close(a);
	close(b);
	assert_clean(c);
	assert_served(c);
}

/* ---- requests for eviction, snapshots, the agent ------------------------ */

static int raw_req(int s, enum proto_type type, struct proto_msg *m, int fd)
{
	return test_raw_call(s, m, type, 0, fd >= 0 ? &fd : NULL, fd >= 0 ? 1 : 0, NULL);
}

/*
 * Every newer request checks its fields and descriptors: wrong ids, bad
 * ranges, descriptors of the wrong kind (a read-only file for an image, a
 * pipe, a file for the agent's socket), control requests from an
 * application and application requests from pagerctl, fault injection
 * without --test-hooks, and a message only pagerd may send.  Each is
 * refused with its own errno; nothing is leaked; pagerd serves on.
 */
static void test_new_requests_refused(void **state)
{
	const struct ctx *c = *state;
	int s = hostile_client(c), ctl = test_control_connect(c->d.sock);
	int mfd = memfd_sized(4 * c->ps, SEALED), pfd[2], ro, small;
	char path[] = "/tmp/pagerd-hostile.XXXXXX";
	struct proto_msg m;
	uint64_t id;

	assert_true(ctl >= 0);
	assert_int_equal(raw_create(s, RAW_ADDR, 4 * c->ps, mfd, &id), 0);
	close(mfd);
	assert_int_equal(pipe(pfd), 0);
	ro = mkstemp(path);
	assert_true(ro >= 0);
	close(ro);
	ro = open(path, O_RDONLY | O_CLOEXEC);
	small = open(path, O_RDWR | O_CLOEXEC);
	assert_true(ro >= 0 && small >= 0);
	unlink(path);

	/* Discard: unknown region, misaligned, past the end. */
	memset(&m, 0, sizeof(m));
	m.body.region_discard = (struct proto_region_discard){ id + 100, 0, c->ps };
	assert_int_equal(raw_req(s, PROTO_REGION_DISCARD, &m, -1), -ENOENT);
	m.body.region_discard = (struct proto_region_discard){ id, 1, c->ps };
	assert_int_equal(raw_req(s, PROTO_REGION_DISCARD, &m, -1), -EINVAL);
	m.body.region_discard = (struct proto_region_discard){ id, 2 * c->ps, 4 * c->ps };
	assert_int_equal(raw_req(s, PROTO_REGION_DISCARD, &m, -1), -EINVAL);
	m.body.region_discard = (struct proto_region_discard){ id, 0, 0 };
	assert_int_equal(raw_req(s, PROTO_REGION_DISCARD, &m, -1), -EINVAL);
	/* Limits and stats of a region that is not ours. */
	memset(&m, 0, sizeof(m));
	m.body.region_set_limit = (struct proto_region_set_limit){ id + 100, 1 << 20 };
	assert_int_equal(raw_req(s, PROTO_REGION_SET_LIMIT, &m, -1), -ENOENT);
	memset(&m, 0, sizeof(m));
	m.body.region_ref.region_id = id + 100;
	assert_int_equal(raw_req(s, PROTO_REGION_STATS, &m, -1), -ENOENT);
	/* Snapshots: no image, a read-only one, a pipe, an unknown region. */
	memset(&m, 0, sizeof(m));
	m.body.snapshot.region_id = id;
	assert_int_equal(raw_req(s, PROTO_SNAPSHOT_START, &m, -1), -EBADF);
	assert_int_equal(raw_req(s, PROTO_SNAPSHOT_START, &m, ro), -EBADF);
	assert_int_equal(raw_req(s, PROTO_SNAPSHOT_START, &m, pfd[1]), -EBADF);
	m.body.snapshot.flags = 2; /* only PROTO_SNAPSHOT_ORDER is known */
	assert_int_equal(raw_req(s, PROTO_SNAPSHOT_START, &m, small), -EINVAL);
	m.body.snapshot.flags = PROTO_SNAPSHOT_ORDER; /* and wants a third fd */
	assert_int_equal(raw_req(s, PROTO_SNAPSHOT_START, &m, small), -EBADF);
	m.body.snapshot.flags = 0;
	m.body.snapshot.region_id = id + 100;
	assert_int_equal(raw_req(s, PROTO_SNAPSHOT_START, &m, small), -ENOENT);
	/* Restore from an image of the wrong size. */
	m.body.snapshot.region_id = id;
	assert_int_equal(raw_req(s, PROTO_REGION_SET_IMAGE, &m, small), -EINVAL);
	/* The agent's socket must be a SEQPACKET socket, once. */
	memset(&m, 0, sizeof(m));
	assert_int_equal(raw_req(s, PROTO_AGENT_ATTACH, &m, small), -EBADF);
	assert_int_equal(raw_req(s, PROTO_AGENT_ATTACH, &m, -1), -EBADF);
	/* Control requests from an application, and the reverse. */
	memset(&m, 0, sizeof(m));
	m.body.set_limit.scope = PROTO_LIMIT_GLOBAL;
	assert_int_equal(raw_req(s, PROTO_SET_LIMIT, &m, -1), -EACCES);
	memset(&m, 0, sizeof(m));
	assert_int_equal(raw_req(s, PROTO_REGION_INFO, &m, -1), -EACCES);
	m.body.test_inject = (struct proto_test_inject){ id, 0, PROTO_INJECT_EIO, 0 };
	assert_int_equal(raw_req(s, PROTO_TEST_INJECT, &m, -1), -EACCES);
	/* Fault injection needs --test-hooks, which this pagerd lacks. */
	assert_int_equal(raw_req(ctl, PROTO_TEST_INJECT, &m, -1), -EPERM);
	memset(&m, 0, sizeof(m));
	m.body.set_limit = (struct proto_set_limit){ PROTO_LIMIT_CLIENT, 0, 999, 1 << 20 };
	assert_int_equal(raw_req(ctl, PROTO_SET_LIMIT, &m, -1), -ENOENT);
	m.body.set_limit = (struct proto_set_limit){ 7, 0, 1, 1 << 20 };
	assert_int_equal(raw_req(ctl, PROTO_SET_LIMIT, &m, -1), -EINVAL);
	/* A message only pagerd sends. */
	memset(&m, 0, sizeof(m));
	assert_int_equal(raw_req(s, PROTO_AGENT_DROP, &m, -1), -EOPNOTSUPP);

	close(ro);
	close(small);
	close(pfd[0]);
	close(pfd[1]);
	assert_int_equal(raw_destroy(s, id), 0);
	close(s);
	close(ctl);
	assert_clean(c);
	assert_served(c);
}

/*
 * A client's pagemap (PROTO_PAGEMAP) must be its own /proc/PID/pagemap: a
 * pipe (reads could block pagerd), another file of /proc, or another
 * process's pagemap is refused and not kept; pagerctl has no page tables to
 * send; a second one is refused.
 */
static void test_pagemap_checked(void **state)
{
	const struct ctx *c = *state;
	int s = hostile_client(c), ctl = test_control_connect(c->d.sock);
	int pfd[2], status, other, own;
	struct proto_msg m;
	char path[64];
	pid_t kid;

	assert_true(ctl >= 0);
	assert_int_equal(pipe(pfd), 0);
	kid = fork();
	assert_true(kid >= 0);
	if (kid == 0) {
		char ch;

		close(pfd[1]);
		_exit(read(pfd[0], &ch, 1) < 0);
	}
	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)kid);
	other = open(path, O_RDONLY | O_CLOEXEC);
	status = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	own = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	assert_true(other >= 0 && status >= 0 && own >= 0);

	memset(&m, 0, sizeof(m));
	assert_int_equal(raw_req(s, PROTO_PAGEMAP, &m, pfd[0]), -EBADF);
	assert_int_equal(raw_req(s, PROTO_PAGEMAP, &m, status), -EINVAL);
	assert_int_equal(raw_req(s, PROTO_PAGEMAP, &m, other), -EINVAL);
	assert_int_equal(raw_req(s, PROTO_PAGEMAP, &m, -1), -EBADF);
	assert_int_equal(raw_req(ctl, PROTO_PAGEMAP, &m, own), -EBADF);
	assert_int_equal(raw_req(s, PROTO_PAGEMAP, &m, own), 0);
	assert_int_equal(raw_req(s, PROTO_PAGEMAP, &m, own), -EISCONN);

	close(pfd[1]);
	assert_int_equal(waitpid(kid, NULL, 0), kid);
	close(pfd[0]);
	close(other);
	close(status);
	close(own);
	close(s);
	close(ctl);
	assert_clean(c);
	assert_served(c);
}

/* ---- floods -------------------------------------------------------------- */

/* One client creates regions until refused: the 17th gets -ENOSPC while
 * another client is served; the limit counts live regions. */
static void test_region_count_flood(void **state)
{
	const struct ctx *c = *state;
	const uint64_t ps = c->ps;
	int s = hostile_client(c), fds, fd;
	uint64_t id[MAX_REGIONS];

	for (int i = 0; i < MAX_REGIONS; i++) {
		fd = memfd_sized(ps, SEALED);
		assert_int_equal(raw_create(s, RAW_ADDR + 2 * (uint64_t)i * ps, ps, fd, &id[i]), 0);
		close(fd);
	}
	fds = pagerd_fds(c);
	fd = memfd_sized(ps, SEALED);
	assert_int_equal(raw_create(s, RAW_ADDR + 2 * MAX_REGIONS * ps, ps, fd, NULL), -ENOSPC);
	assert_int_equal(raw_create(s, RAW_ADDR + 2 * MAX_REGIONS * ps, ps, fd, NULL), -ENOSPC);
	assert_fds(c, fds);
	assert_int_equal(test_count_memfd_maps(c->d.pid), MAX_REGIONS);

	/* The limit is per client: others are served meanwhile. */
	assert_served(c);

	assert_int_equal(raw_destroy(s, id[3]), 0);
	assert_int_equal(raw_create(s, RAW_ADDR + 2 * MAX_REGIONS * ps, ps, fd, &id[3]), 0);
	close(fd);
	fd = memfd_sized(ps, SEALED);
	assert_int_equal(raw_create(s, RAW_ADDR + 2 * (MAX_REGIONS + 1) * ps, ps, fd, NULL),
			 -ENOSPC);
	close(fd);
	close(s); /* with its regions: pagerd drops them all */
	assert_clean(c);
	assert_served(c);
}

/*
 * A client that sends requests as fast as it can and never reads a reply
 * must not block pagerd, whatever pagerd then does with it.  It says hello
 * first so that it counts as a client: test_wait_clients() in assert_clean
 * then waits until pagerd has worked through its backlog and let it go.
 */
static void test_never_reads_replies(void **state)
{
	const struct ctx *c = *state;
	int s = hostile_client(c), sent = 0;
	struct proto_msg m = { 0 };
	size_t n;

	m.body.region_destroy.region_id = 42;
	n = proto_finish(&m, PROTO_REGION_DESTROY, 1);
	for (; sent < 100000; sent++)
		if (send(s, &m, n, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)n)
			break;
	assert_true(sent > 0);
	assert_served(c);
	close(s);
	assert_clean(c);
}

/* ---- faults pagerd must refuse ---------------------------------------- */

static void *touch_page(void *arg)
{
	*(volatile char *)arg = 1;
	return NULL;
}

/*
 * Waits for pagerd to drop a client whose thread t faults: the connection
 * ends with no reply.  Closes both ends (our uffd is the last copy: that
 * wakes the thread and unregisters) and joins t.  Returns what the socket
 * read at the end: 0 for end of stream.
 */
static ssize_t await_drop(int s, int uffd, pthread_t t)
{
	struct pollfd p = { .fd = s, .events = POLLIN };
	char buf[8];
	ssize_t got;

	assert_int_equal(poll(&p, 1, DEADLINE_MS), 1);
	got = recv(s, buf, sizeof(buf), MSG_DONTWAIT);
	close(s);
	close(uffd);
	assert_int_equal(pthread_join(t, NULL), 0);
	return got;
}

/*
 * A client whose uffd reports a fault outside every region it declared:
 * pagerd drops the client (fault.c) rather than touch memory it was never
 * given.
 */
static void test_fault_outside_regions(void **state)
{
	const struct ctx *c = *state;
	int s = test_raw_connect(c->d.sock), uffd, fd = memfd_sized(c->ps, SEALED);
	pthread_t t;
	char *anon;
	ssize_t got;

	assert_true(s >= 0);
	assert_int_equal(raw_hello(c, s, &uffd), 0);
	/* A real region elsewhere, so that the client has one to lose. */
	assert_int_equal(raw_create(s, RAW_ADDR, c->ps, fd, NULL), 0);
	close(fd);

	anon = mmap(NULL, c->ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(anon != MAP_FAILED);
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)anon, .len = c->ps },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	assert_int_equal(ioctl(uffd, UFFDIO_REGISTER, &reg), 0);
	assert_int_equal(pthread_create(&t, NULL, touch_page, anon), 0);

	got = await_drop(s, uffd, t);
	munmap(anon, c->ps);
	assert_int_equal(got, 0);

	assert_clean(c);
	assert_served(c);
}

/*
 * A client that registers its region for MINOR faults, which libpager never
 * does (pagerd relies on the kernel mapping what is in the page cache): the
 * first MINOR fault drops the client, with a log line, rather than loop on
 * a page pagerd cannot tell from a discarded one.
 */
static void test_minor_registration(void **state)
{
	const struct ctx *c = *state;
	int s = test_raw_connect(c->d.sock), uffd, fd = memfd_sized(c->ps, SEALED);
	pthread_t t;
	char *map, buf[8];
	ssize_t got;

	assert_true(s >= 0);
	assert_int_equal(raw_hello(c, s, &uffd), 0);
	/* A page in the page cache, not mapped here: touching it is MINOR. */
	memset(buf, 7, sizeof(buf));
	assert_int_equal(pwrite(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	map = mmap(NULL, c->ps, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(map != MAP_FAILED);
	assert_int_equal(raw_create(s, (uintptr_t)map, c->ps, fd, NULL), 0);
	close(fd);
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)map, .len = c->ps },
		.mode = UFFDIO_REGISTER_MODE_MINOR,
	};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
		close(s);
		close(uffd);
		munmap(map, c->ps);
		skip(); /* no MINOR faults on shmem here: nothing to refuse */
	}
	assert_int_equal(pthread_create(&t, NULL, touch_page, map), 0);

	got = await_drop(s, uffd, t);
	assert_int_equal(map[0], 1);
	munmap(map, c->ps);
	assert_int_equal(got, 0);

	assert_clean(c);
	assert_served(c);
}

/* ---- crashing clients ------------------------------------------------------ */

#define CRASH_LEN     (256ul << 20)
#define CRASH_THREADS 4

struct toucher {
	volatile char *base;
	size_t len, ps;
	sem_t *faulting;
};

/* Touches every page of its slice once, in an order that defeats
 * fault-around (stride 7), so nearly every touch is a fault; then discards
 * the slice and starts over, until the process is killed. */
static void *touch_untouched(void *arg)
{
	const struct toucher *t = arg;
	size_t n = t->len / t->ps;
	unsigned long touches = 0;

	for (;;) {
		for (size_t off = 0; off < 7; off++)
			for (size_t pg = off; pg < n; pg += 7) {
				if (pg & 1)
					t->base[pg * t->ps] = 1;
				else
					(void)t->base[pg * t->ps];
				if (++touches == 32)
					sem_post(t->faulting);
			}
		madvise((void *)t->base, t->len, MADV_REMOVE);
	}
	return NULL;
}

/* The crashing client: says 'F' on `fd` once every thread has faulted a
 * few times, then waits to be killed. */
static int crasher(const struct ctx *c, int fd)
{
	struct pager_opts o = {
		.sz = sizeof(o), .socket_path = c->d.sock,
		.flags = PAGER_OPEN_NO_PRIVATE,
	};
	static struct toucher t[CRASH_THREADS];
	static pthread_t th[CRASH_THREADS];
	struct pager_region *r;
	struct pager *p;
	sem_t faulting;
	char *base;

	if (pager_open(&p, &o) < 0 || pager_region_create(p, CRASH_LEN, NULL, &r) < 0)
		return 20;
	base = pager_region_addr(r);
	sem_init(&faulting, 0, 0);
	for (int i = 0; i < CRASH_THREADS; i++) {
		t[i] = (struct toucher){
			.base = base + i * (CRASH_LEN / CRASH_THREADS),
			.len = CRASH_LEN / CRASH_THREADS, .ps = c->ps,
			.faulting = &faulting,
		};
		if (pthread_create(&th[i], NULL, touch_untouched, &t[i]) != 0)
			return 21;
	}
	for (int i = 0; i < CRASH_THREADS; i++)
		while (sem_wait(&faulting) < 0)
			;
	if (write(fd, "F", 1) != 1)
		return 22;
	pthread_join(th[0], NULL);
	return 23;
}

/* True once a thread of `pid` is seen blocked in a userfault. */
static bool wait_mid_fault(pid_t pid, int ms)
{
	struct timespec t0, t;
	char path[96], buf[64];

	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		DIR *dir;
		struct dirent *e;

		snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
		dir = opendir(path);
		if (!dir)
			return false;
		while ((e = readdir(dir))) {
			FILE *f;

			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/proc/%d/task/%.16s/wchan", (int)pid,
				 e->d_name);
			f = fopen(path, "re");
			if (!f)
				continue;
			buf[0] = '\0';
			if (!fgets(buf, sizeof(buf), f))
				buf[0] = '\0';
			fclose(f);
			if (strcmp(buf, "handle_userfault") == 0) {
				closedir(dir);
				return true;
			}
		}
		closedir(dir);
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < ms);
	return false;
}

/*
 * The bystander: a well-behaved client that keeps working while another
 * client crashes.  Each pass verifies a long-lived region (after dropping
 * a window of its PTEs, so that pagerd must map those pages again) and
 * creates, fills, verifies and destroys a fresh region; after each pass it
 * writes 'P' to `prog`.  It stops after the pass during which a byte
 * arrives on `stop`.  Returns 0 or a code saying which step failed.
 */
static int bystander(const struct ctx *c, int prog, int stop)
{
	struct pager_opts o = {
		.sz = sizeof(o), .socket_path = c->d.sock,
		.flags = PAGER_OPEN_NO_PRIVATE,
	};
	const size_t len = 16u << 20, fresh_len = 2u << 20, words = c->ps / 8;
	const size_t n = len / c->ps, fresh_n = fresh_len / c->ps, window = 256;
	struct pager_region *r, *f;
	struct pager *p;
	uint64_t *mem;
	struct pollfd pf = { .fd = stop, .events = POLLIN };

	if (fd_nonblock(prog, true) < 0)
		return 30;
	if (pager_open(&p, &o) < 0 || pager_region_create(p, len, NULL, &r) < 0)
		return 30;
	mem = pager_region_addr(r);
	for (size_t i = 0; i < n * words; i++)
		mem[i] = i * 0x9e3779b97f4a7c15ull;
	if (write(prog, "R", 1) != 1)
		return 31;
	for (unsigned pass = 0;; pass++) {
		size_t first = (pass * window) % n;

		madvise(mem + first * words, window * c->ps, MADV_DONTNEED);
		for (size_t i = 0; i < n * words; i++)
			if (mem[i] != i * 0x9e3779b97f4a7c15ull) {
				fprintf(stderr, "bystander: word %zu lost in pass %u\n", i, pass);
				return 32;
			}
		if (pager_region_create(p, fresh_len, NULL, &f) < 0)
			return 33;
		uint64_t *fm = pager_region_addr(f);
		for (size_t k = 0; k < fresh_n; k++) {
			size_t pg = k * 7 % fresh_n;

			fm[pg * words] = pg + pass;
		}
		for (size_t pg = 0; pg < fresh_n; pg++)
			if (fm[pg * words] != pg + pass || fm[pg * words + 1] != 0) {
				fprintf(stderr, "bystander: fresh page %zu wrong in pass %u\n",
					pg, pass);
				return 34;
			}
		if (pager_region_destroy(f) < 0)
			return 35;
		if (write(prog, "P", 1) < 0 && errno != EAGAIN)
			return 36;
		if (poll(&pf, 1, 0) == 1)
			break;
	}
	if (pager_region_destroy(r) < 0)
		return 37;
	pager_close(p);
	return 0;
}

static pid_t fork_with_pipe(int (*fn)(const struct ctx *, int, int),
			    const struct ctx *c, int out, int in)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(fn(c, out, in));
	return pid;
}

static int crasher2(const struct ctx *c, int out, int in)
{
	(void)in;
	return crasher(c, out);
}

static void drain(int fd)
{
	char buf[256];

	assert_int_equal(fd_nonblock(fd, true), 0);
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	assert_int_equal(fd_nonblock(fd, false), 0);
}

/*
 * A client faulting on a 256 MiB region from several threads is SIGKILLed
 * mid-fault while another client keeps working; pagerd drops everything
 * of the dead one and goes on serving the other.
 */
static void test_crash_mid_fault(void **state)
{
	struct ctx *c = *state;
	int prog[2], stop[2], sig[2], st, r;
	pid_t by, cr;

	assert_int_equal(pipe2(prog, O_CLOEXEC), 0);
	assert_int_equal(pipe2(stop, O_CLOEXEC), 0);
	assert_int_equal(pipe2(sig, O_CLOEXEC), 0);

	by = c->kids[0] = fork_with_pipe(bystander, c, prog[1], stop[0]);
	close(prog[1]);
	close(stop[0]);
	assert_int_equal(read_byte(prog[0], DEADLINE_MS), 'R');

	cr = c->kids[1] = fork_with_pipe(crasher2, c, sig[1], -1);
	close(sig[1]);
	assert_int_equal(read_byte(sig[0], DEADLINE_MS), 'F');
	close(sig[0]);
	assert_true(wait_mid_fault(cr, DEADLINE_MS));
	assert_int_equal(kill(cr, SIGKILL), 0);
	while (waitpid(cr, &st, 0) < 0)
		assert_int_equal(errno, EINTR);
	c->kids[1] = 0;
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGKILL);

	/* Only the bystander is left, and it completes a whole pass that
	 * started after the crash. */
	assert_int_equal(test_wait_clients(c->d.sock, 1, DEADLINE_MS), 0);
	assert_true(test_pagerd_alive((struct test_pagerd *)&c->d));
	drain(prog[0]);
	assert_int_equal(read_byte(prog[0], DEADLINE_MS), 'P');
	assert_int_equal(read_byte(prog[0], DEADLINE_MS), 'P');
	assert_int_equal(write(stop[1], "s", 1), 1);
	r = wait_child(by, DEADLINE_MS);
	c->kids[0] = 0;
	assert_int_equal(r, 0);
	close(prog[0]);
	close(stop[1]);

	assert_clean(c);
	assert_served(c);
}

/* Left here so that nothing reports them as leaked: exit(3) with a live
 * pager and region is the point. */
static struct pager *abandoned_pager;
static struct pager_region *abandoned_region;

static int exit_without_close(const struct ctx *c)
{
	struct pager_opts o = {
		.sz = sizeof(o), .socket_path = c->d.sock,
		.flags = PAGER_OPEN_NO_PRIVATE,
	};
	size_t len = 64u << 20;
	char *mem;

	if (pager_open(&abandoned_pager, &o) < 0 ||
	    pager_region_create(abandoned_pager, len, NULL, &abandoned_region) < 0)
		return 40;
	mem = pager_region_addr(abandoned_region);
	for (size_t i = 0; i < len; i += 3 * c->ps)
		mem[i] = (char)(i >> 12 | 1);
	for (size_t i = 0; i < len; i += 3 * c->ps)
		if (mem[i] != (char)(i >> 12 | 1))
			return 41;
	exit(0);
}

static void test_exit_without_close(void **state)
{
	const struct ctx *c = *state;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(exit_without_close(c));
	assert_int_equal(wait_child(pid, DEADLINE_MS), 0);
	assert_clean(c);
	assert_served(c);
}

/* ---- what a client must not be able to do to the others --------------- */

/* A pagerd of the test's own, started with `args`, its stderr in a file
 * (its path in `log`).  Its pid goes in kids[slot], so that a failed test
 * does not leave it running. */
static void own_pagerd(struct ctx *o, struct ctx *c, int slot,
		       const char *const *args, char *log, size_t loglen)
{
	int saved = dup(STDERR_FILENO), fd, e;

	memset(o, 0, sizeof(*o));
	o->ps = c->ps;
	snprintf(log, loglen, "/tmp/pagerd-hostile-log.XXXXXX");
	fd = mkstemp(log);
	assert_true(saved >= 0 && fd >= 0);
	assert_true(dup2(fd, STDERR_FILENO) >= 0);
	close(fd);
	e = test_pagerd_start(&o->d, args);
	dup2(saved, STDERR_FILENO);
	close(saved);
	assert_int_equal(e, 0);
	c->kids[slot] = o->d.pid;
	o->running = true;
	o->base_fds = pagerd_fds(o);
}

static void own_pagerd_stop(struct ctx *o, struct ctx *c, int slot)
{
	assert_int_equal(test_pagerd_stop(&o->d), 0);
	c->kids[slot] = 0;
}

/* pagerd's log: its whole text (to be freed). */
static char *read_file(const char *path)
{
	FILE *f = fopen(path, "re");
	char *s = NULL;
	size_t n = 0;

	assert_non_null(f);
	assert_true(getdelim(&s, &n, '\0', f) >= 0 || feof(f));
	fclose(f);
	if (!s)
		s = calloc(1, 1);
	return s;
}

static size_t count_str(const char *s, const char *what)
{
	size_t n = 0;

	for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
		n++;
	return n;
}

/* A socketpair made by the test process, which a child inherits: its
 * peer is the test, not the child. */
static int foreign_pair[2] = { -1, -1 };

/*
 * A client tries every socket it has as its agent's.  Its own connection
 * (or any connection to pagerd) would have pagerd hold the client's end,
 * so that pagerd never sees the client leave; a listening or unconnected
 * socket, or one whose peer is another process, is no agent either.  Then
 * a proper one, and the client exits without closing anything.  Returns
 * 0 when each was answered as it must be, else 70 + the first wrong one.
 */
static int agent_tricks(const struct ctx *c)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s = test_raw_connect(c->d.sock), other = test_raw_connect(c->d.sock);
	int lst = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	int unconn = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	int uffd = uffd_open(PAGER_UFFD_FEATURES_REQUIRED), sv[2], fail = 0;
	struct proto_msg m;
	socklen_t salen;

	if (s < 0 || other < 0 || lst < 0 || unconn < 0 || uffd < 0)
		return 60;
	hello_body(c, &m, 0);
	if (test_raw_call(s, &m, PROTO_HELLO, 0, &uffd, 1, NULL) != 0)
		return 61;
	snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "pagerd-hostile-%d", (int)getpid());
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(sa.sun_path + 1));
	if (bind(lst, (struct sockaddr *)&sa, salen) < 0 || listen(lst, 1) < 0)
		return 62;
	const struct { int fd, want; } t[] = {
		{ s, -EPERM },               /* its own connection */
		{ other, -EPERM },           /* another connection to pagerd */
		{ lst, -ENOTCONN },          /* listening */
		{ unconn, -ENOTCONN },       /* not connected */
		{ foreign_pair[1], -EPERM }, /* its peer is another process */
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		int e;

		memset(&m, 0, sizeof(m));
		e = test_raw_call(s, &m, PROTO_AGENT_ATTACH, 0, &t[i].fd, 1, NULL);
		if (e != t[i].want) {
			fprintf(stderr, "agent trick %zu: %d (%s), expected %d\n", i, e,
				strerror(-e), t[i].want);
			if (!fail)
				fail = 70 + (int)i;
		}
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return 63;
	memset(&m, 0, sizeof(m));
	if (!fail && test_raw_call(s, &m, PROTO_AGENT_ATTACH, 0, &sv[1], 1, NULL) != 0)
		fail = 69;
	return fail; /* exits holding everything */
}

/* Whatever socket a client offers as its agent's, its exit tears it down
 * and pagerd is left with exactly the fds it had (a client that attached
 * its own connection used to stay for good, 4 fds, and a slot). */
static void test_agent_socket_tricks(void **state)
{
	const struct ctx *c = *state;
	int code;

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, foreign_pair), 0);
	code = run_child(agent_tricks, c, DEADLINE_MS);
	close(foreign_pair[0]);
	close(foreign_pair[1]);
	assert_clean(c);
	assert_int_equal(code, 0);
	assert_served(c);
}

/* A child as user `uid` that connects `n` times, says 'R' on `out`, and
 * holds its connections until `in` closes. */
static pid_t hold_connections(const struct ctx *c, uid_t uid, int n, int out, int in,
			      int other_end)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char b;

		close(other_end); /* or `in` never reads end of file */
		if (setgroups(0, NULL) < 0 || setgid((gid_t)uid) < 0 || setuid(uid) < 0)
			_exit(80);
		for (int i = 0; i < n; i++)
			if (test_raw_connect(c->d.sock) < 0)
				_exit(81);
		if (write(out, "R", 1) != 1)
			_exit(82);
		while (read(in, &b, 1) > 0)
			;
		_exit(0);
	}
	return pid;
}

/*
 * Ordinary users cannot lock the administrator out: one user gets at most
 * max_user_clients connections, all of them together max_clients, and
 * root still gets in past that (pagerctl, and its own clients), from the
 * slots kept for admins.
 */
static void test_admin_not_starved(void **state)
{
	static const char *const args[] = {
		"--max-clients", "8", "--max-user-clients", "5",
		"--log-level", "warning", NULL,
	};
	struct ctx *c = *state, o;
	int ready[2], stop[2];
	char log[64];
	pid_t a, b;

	if (geteuid() != 0)
		skip(); /* needs other users */
	own_pagerd(&o, c, 0, args, log, sizeof(log));
	assert_int_equal(chmod(o.d.dir, 0711), 0);
	assert_int_equal(chmod(o.d.sock, 0666), 0);
	assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
	assert_int_equal(pipe2(stop, O_CLOEXEC), 0);

	a = c->kids[1] = hold_connections(&o, 65534, 10, ready[1], stop[0], stop[1]);
	assert_int_equal(read_byte(ready[0], DEADLINE_MS), 'R');
	assert_fds(&o, o.base_fds + 5);  /* max_user_clients */
	b = c->kids[2] = hold_connections(&o, 65533, 10, ready[1], stop[0], stop[1]);
	assert_int_equal(read_byte(ready[0], DEADLINE_MS), 'R');
	assert_fds(&o, o.base_fds + 8);  /* max_clients */

	/* Root: pagerctl's control connection, and a client of its own. */
	struct proto_reply st;
	assert_int_equal(test_status(o.d.sock, &st), 0);
	const char *ctl = getenv("PAGERCTL");
	if (ctl) {
		char cmd[512];

		snprintf(cmd, sizeof(cmd), "%s --socket %s status >/dev/null", ctl, o.d.sock);
		assert_int_equal(system(cmd), 0);
	}
	assert_served(&o);

	close(stop[1]);
	assert_int_equal(wait_child(a, DEADLINE_MS), 0);
	assert_int_equal(wait_child(b, DEADLINE_MS), 0);
	c->kids[1] = c->kids[2] = 0;
	assert_fds(&o, o.base_fds);
	close(stop[0]);
	close(ready[0]);
	close(ready[1]);
	own_pagerd_stop(&o, c, 0);
	unlink(log);
}

#define NEIGHBOUR_LEN (8u << 20)
#define ATTACKER_LEN  (32u << 20)

/* A well-behaved client: its region written in full, 'R' on `out`; then,
 * at a byte on `in`, checks every page is still resident and intact. */
static int neighbour(const struct ctx *c, int out, int in)
{
	struct pager_opts o = {
		.sz = sizeof(o), .socket_path = c->d.sock, .flags = PAGER_OPEN_NO_PRIVATE,
	};
	struct pager_region_opts ro = { .sz = sizeof(ro), .name = "neighbour" };
	struct pager_region_stats st = { .sz = sizeof(st) };
	size_t words = NEIGHBOUR_LEN / 8;
	struct pager_region *r;
	struct pager *p;
	uint64_t *mem;

	if (pager_open(&p, &o) < 0 || pager_region_create(p, NEIGHBOUR_LEN, &ro, &r) < 0)
		return 30;
	mem = pager_region_addr(r);
	for (size_t w = 0; w < words; w++)
		mem[w] = w ^ 0xfeed;
	if (write(out, "R", 1) != 1 || read_byte(in, DEADLINE_MS * 3) < 0)
		return 31;
	if (pager_region_stats(r, &st) < 0)
		return 32;
	if (st.resident != st.pages) {
		fprintf(stderr, "neighbour: %llu of %llu pages resident, %llu swapped\n",
			(unsigned long long)st.resident, (unsigned long long)st.pages,
			(unsigned long long)st.swapped);
		return 33;
	}
	for (size_t w = 0; w < words; w++)
		if (mem[w] != (w ^ 0xfeed))
			return 34;
	pager_region_destroy(r);
	pager_close(p);
	return 0;
}

/* The memfd of this process's region called `name`, or -1. */
static int find_memfd(const char *name)
{
	char path[64], target[256], want[128];

	snprintf(want, sizeof(want), "/memfd:%s ", name);
	for (int fd = 3; fd < 1024; fd++) {
		ssize_t n;

		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n = readlink(path, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (strncmp(target, want, strlen(want)) == 0)
			return fd;
	}
	return -1;
}

/*
 * The attacker: a 32 MiB region under a 4 MiB limit whose memfd it makes
 * refuse hole punches, then writes in full and says 'D'.  The seal of the
 * original attack (F_SEAL_FUTURE_WRITE) if it still can; with F_SEAL_SEAL
 * set by libpager it cannot, and root's append-only attribute does the
 * same to a punch.
 */
static int attacker(const struct ctx *c, int out, int in)
{
	struct pager_opts o = {
		.sz = sizeof(o), .socket_path = c->d.sock, .flags = PAGER_OPEN_NO_PRIVATE,
	};
	struct pager_region_opts ro = {
		.sz = sizeof(ro), .name = "attacker", .memory_limit = 4u << 20,
	};
	struct pager_region *r;
	struct pager *p;
	uint64_t *mem;
	int fd, flags = FS_APPEND_FL;

	(void)in;
	if (pager_open(&p, &o) < 0 || pager_region_create(p, ATTACKER_LEN, &ro, &r) < 0)
		return 40;
	fd = find_memfd("attacker");
	if (fd < 0)
		return 41;
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE) == 0)
		fprintf(stderr, "attacker: F_SEAL_FUTURE_WRITE added\n");
	else if (ioctl(fd, FS_IOC_SETFLAGS, &flags) < 0)
		return 42;
	mem = pager_region_addr(r);
	for (size_t w = 0; w < ATTACKER_LEN / 8; w++)
		mem[w] = w | 1;
	if (write(out, "D", 1) != 1)
		return 43;
	pause();
	return 44;
}

/*
 * A client whose memfd refuses hole punches holds memory no limit can take
 * back.  It is dropped at its first refused punch, and its neighbour keeps
 * every page resident (before, the attacker went past its 4 MiB region
 * limit and the 16 MiB global one, and the neighbour was evicted in its
 * stead).
 */
static void test_unpunchable_client_dropped(void **state)
{
	char swap[64], log[64];
	const char *args[] = {
		"--memory-limit", "16M", "--swap", swap, "--swap-size", "256M", NULL,
	};
	struct ctx *c = *state, o;
	int nout[2], nin[2], aout[2];
	struct proto_reply st;
	pid_t nb, at;
	char *text;

	snprintf(swap, sizeof(swap), "/var/tmp/pagerd-hostile-swap.%d", (int)getpid());
	own_pagerd(&o, c, 0, args, log, sizeof(log));
	unlink(swap);
	assert_int_equal(pipe2(nout, O_CLOEXEC), 0);
	assert_int_equal(pipe2(nin, O_CLOEXEC), 0);
	assert_int_equal(pipe2(aout, O_CLOEXEC), 0);

	nb = c->kids[1] = fork_with_pipe(neighbour, &o, nout[1], nin[0]);
	assert_int_equal(read_byte(nout[0], DEADLINE_MS), 'R');
	at = c->kids[2] = fork_with_pipe(attacker, &o, aout[1], -1);
	/* Until the attacker is through its writes, or gone. */
	for (int waited = 0;; waited += 50) {
		struct pollfd pf = { .fd = aout[0], .events = POLLIN };

		if (poll(&pf, 1, 50) > 0)
			break;
		assert_int_equal(test_status(o.d.sock, &st), 0);
		if (st.clients == 1)
			break;
		assert_true(waited < DEADLINE_MS);
	}
	assert_int_equal(write(nin[1], "c", 1), 1);
	assert_int_equal(wait_child(nb, DEADLINE_MS), 0);
	c->kids[1] = 0;
	assert_int_equal(test_wait_clients(o.d.sock, 0, DEADLINE_MS), 0);
	kill(at, SIGKILL);
	waitpid(at, NULL, 0);
	c->kids[2] = 0;
	assert_served(&o);
	own_pagerd_stop(&o, c, 0);
	text = read_file(log);
	unlink(log);
	assert_non_null(strstr(text, "dropped: its memfd refuses hole punches"));
	free(text);
	for (int i = 0; i < 2; i++) {
		close(nout[i]);
		close(nin[i]);
		close(aout[i]);
	}
}

/*
 * A client sending refused requests as fast as pagerd answers: pagerd's log
 * gets its burst of lines and then about one a second, and the rest is
 * counted in a "similar messages suppressed" line (here when the client
 * goes).  It used to be a line per request.
 */
static void test_refusals_not_flooding(void **state)
{
	static const char *const args[] = { NULL };
	struct ctx *c = *state, o;
	const int n = 5000;
	struct timespec t0, t1;
	struct proto_msg m;
	size_t shown, allowed;
	char log[64], *text, *p;
	unsigned long long held = 0;
	int s;

	own_pagerd(&o, c, 0, args, log, sizeof(log));
	s = hostile_client(&o);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < n; i++) {
		memset(&m, 0, sizeof(m));
		m.body.region_destroy.region_id = 42;
		assert_int_equal(test_raw_call(s, &m, PROTO_REGION_DESTROY, 0, NULL, 0, NULL),
				 -ENOENT);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	close(s);
	assert_int_equal(test_wait_clients(o.d.sock, 0, DEADLINE_MS), 0);
	own_pagerd_stop(&o, c, 0);

	text = read_file(log);
	unlink(log);
	shown = count_str(text, "region-destroy refused");
	allowed = LOG_RL_BURST + 2 + (size_t)(t1.tv_sec - t0.tv_sec) * LOG_RL_PER_SEC;
	if (shown > allowed)
		fprintf(stderr, "%zu lines of refusals for %d requests (%zu allowed)\n",
			shown, n, allowed);
	assert_true(shown <= allowed);
	p = strstr(text, " similar messages suppressed");
	assert_non_null(p);
	while (p > text && p[-1] >= '0' && p[-1] <= '9')
		p--;
	held = strtoull(p, NULL, 10);
	assert_int_equal(held + shown, (unsigned long long)n);
	free(text);
}

/* ---- the end --------------------------------------------------------------- */

static void list_fds(bool open[1024])
{
	DIR *dir = opendir("/proc/self/fd");
	struct dirent *e;

	memset(open, 0, 1024 * sizeof(bool));
	if (!dir)
		return;
	while ((e = readdir(dir))) {
		int fd = atoi(e->d_name);

		if (e->d_name[0] != '.' && fd >= 0 && fd < 1024)
			open[fd] = true;
	}
	closedir(dir);
}

static int test_setup(void **state)
{
	struct ctx *c = *state;

	list_fds(c->fd_open_at_start);
	memset(c->kids, 0, sizeof(c->kids));
	return 0;
}

/* A test that failed midway leaves children and descriptors (its clients'
 * connections) behind: kill and close them, so that only the test that
 * failed fails. */
static int test_teardown(void **state)
{
	struct ctx *c = *state;
	bool now[1024];

	for (size_t i = 0; i < sizeof(c->kids) / sizeof(c->kids[0]); i++) {
		if (c->kids[i] > 0) {
			kill(c->kids[i], SIGKILL);
			waitpid(c->kids[i], NULL, 0);
			c->kids[i] = 0;
		}
	}
	list_fds(now);
	for (int fd = 3; fd < 1024; fd++)
		if (now[fd] && !c->fd_open_at_start[fd])
			close(fd);
	return 0;
}

/* After every hostile client: pagerd's fds at the baseline, no memfd
 * mapped; then it stops in order. */
static void test_fd_hygiene_and_stop(void **state)
{
	struct ctx *c = *state;

	assert_clean(c);
	assert_served(c);
	c->running = false;
	assert_int_equal(test_pagerd_stop(&c->d), 0);
}

static int group_setup(void **state)
{
	static const char *const args[] = {
		"--max-regions", "16", "--max-region", MAX_REGION_ARG,
		/* Not a line per connection test_wait_clients() makes. */
		"--log-level", "warning", NULL,
	};
	struct ctx *c = calloc(1, sizeof(*c));

	_Static_assert(MAX_REGIONS == 16, "--max-regions above");
	if (!c)
		return -1;
	c->ps = (size_t)sysconf(_SC_PAGESIZE);
	*state = c;
	if (test_pagerd_start(&c->d, args) < 0)
		return -1;
	c->running = true;
	c->base_fds = pagerd_fds(c);
	return c->base_fds > 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
	struct ctx *c = *state;
	int r = 0;

	if (!c)
		return 0;
	if (c->running)
		r = test_pagerd_stop(&c->d) == 0 ? 0 : -1;
	free(c);
	return r;
}

/* ---- a client asking for stats over and over ------------------------- */

struct stats_call {
	struct pager_region *r;
	int ret;
};

static void *stats_thread(void *arg)
{
	struct stats_call *sc = arg;
	struct pager_region_stats st = { .sz = sizeof(st) };

	sc->ret = pager_region_stats(sc->r, &st);
	return NULL;
}

/*
 * A region's stats walk its memfd's holes (a syscall per hole: ms on a
 * region mostly swapped out), and a client may ask as often as it likes.
 * That walk must not hold up anyone's faults: here it is held (a test
 * hook) until another client's region has a page in memory, which only a
 * fault served during the walk can put there.  Before the walk let the
 * daemon lock go, the hook gave up after 10 s and said so.
 */
static void test_stats_walk_not_blocking(void **state)
{
	static const char *const args[] = {
		"--test-hooks", "--fault-threads", "2", "--log-level", "info", NULL,
	};
	struct ctx *c = *state, o;
	struct pager_opts po = { .sz = sizeof(po), .flags = PAGER_OPEN_NO_PRIVATE };
	struct pager_region_opts ro = { .sz = sizeof(ro) };
	struct pager *pa, *pb;
	struct pager_region *ra, *rb;
	struct stats_call sc;
	pthread_t t;
	char log[64], *text = NULL;
	volatile char *mem;

	own_pagerd(&o, c, 0, args, log, sizeof(log));
	po.socket_path = o.d.sock;
	assert_int_equal(pager_open(&pa, &po), 0);
	assert_int_equal(pager_open(&pb, &po), 0);
	assert_int_equal(pager_region_create(pa, 64 * o.ps, &ro, &ra), 0);
	assert_int_equal(pager_region_create(pb, 64 * o.ps, &ro, &rb), 0);
	/* Something resident to walk for (an empty region is not walked),
	 * and holes among it. */
	mem = pager_region_addr(ra);
	for (size_t i = 0; i < 64; i += 2)
		mem[i * o.ps] = 1;
	assert_int_equal(test_inject(o.d.sock, (uint64_t)pager_region_id(ra),
				     (uint64_t)pager_region_id(rb),
				     PROTO_INJECT_HOLD_RECONCILE), 0);
	sc.r = ra;
	sc.ret = 1;
	assert_int_equal(pthread_create(&t, NULL, stats_thread, &sc), 0);
	/* Until pagerd is in the walk. */
	for (int ms = 0; ms < DEADLINE_MS; ms += 10) {
		free(text);
		text = read_file(log);
		if (strstr(text, "stats walk of region"))
			break;
		usleep(10000);
	}
	assert_non_null(strstr(text, "stats walk of region"));
	/* A fault of the other client, served meanwhile (zero-fill). */
	mem = pager_region_addr(rb);
	mem[0] = 7;
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(sc.ret, 0);
	free(text);
	text = read_file(log);
	if (strstr(text, "faults were not served"))
		fail_msg("the stats walk held the other client's fault up (see %s)", log);
	free(text);
	pager_region_destroy(ra);
	pager_region_destroy(rb);
	pager_close(pa);
	pager_close(pb);
	own_pagerd_stop(&o, c, 0);
	unlink(log);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_hello_without_uffd, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_stats_walk_not_blocking, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_hello_uffd_without_features, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_region_bad_fd, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_region_bad_geometry, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_region_overlap, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_malformed_messages, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_too_many_fds, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_protocol_state, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_destroy_foreign_region, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_new_requests_refused, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_region_count_flood, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_never_reads_replies, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_fault_outside_regions, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_minor_registration, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_crash_mid_fault, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_exit_without_close, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_pagemap_checked, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_agent_socket_tricks, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_admin_not_starved, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_unpunchable_client_dropped, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_refusals_not_flooding, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_fd_hygiene_and_stop, test_setup, test_teardown),
	};
	int uffd, hold;

	/* test_pagerd_start() hands pagerd its socket with dup2(s, 3), a
	 * no-op that leaves SOCK_CLOEXEC set when the socket already is fd 3
	 * (the lowest free fd): keep fd 3 taken so that it never is. */
	hold = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (hold >= 0 && hold != 3)
		close(hold);
	uffd = uffd_open(PAGER_UFFD_FEATURES_REQUIRED);
	if (uffd < 0) {
		printf("SKIP: no userfaultfd with the features pagerd needs: %s\n",
		       strerror(-uffd));
		return TEST_SKIP;
	}
	close(uffd);
	/* TEST_FILTER=test_agent_* runs only those (a glob). */
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
